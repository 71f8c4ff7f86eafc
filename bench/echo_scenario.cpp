// The echo scenario: --connections WebSocket connections are opened before the window; in the
// window each keeps --inflight binary messages of --size bytes outstanding (a closed loop: every
// echoed message releases the next one). One operation = one message; its time runs from the
// start of its write to the end of reading its echo. Every echo is checked against what was sent.

#include <cstring>
#include <deque>
#include <optional>
#include <utility>
#include <vector>

#include "bench/connection_opener.hpp"
#include "bench/payload.hpp"
#include "bench/scenario.hpp"

namespace sockherd::bench {
namespace {

class echo_connection : public std::enable_shared_from_this<echo_connection> {
public:
    explicit echo_connection(load_context& ctx) : ctx_(ctx), drain_timer_(ctx.ioc()) {}

    // Connects and does the handshake; done(true) once open, done(false) on any failure.
    void open(std::function<void(bool)> done) {
        auto self = shared_from_this();
        ctx_.async_open_fresh(ws_, self, [self, done = std::move(done)](bool ok) {
            self->open_ = ok;
            done(ok);
        });
    }

    void start() {
        if (!open_)
            return;
        running_ = true;
        credit_ = ctx_.opt().inflight;
        do_read();
        do_write();
    }

    void stop() {
        if (!open_ || !running_)
            return;
        running_ = false;
        drain_timer_.expires_after(ctx_.opt().drain_timeout());
        drain_timer_.async_wait([self = shared_from_this()](error_code ec) {
            if (ec || self->closing_ || !self->open_)
                return;
            self->ctx_.result().add_error("drain:timeout");
            self->abort();
        });
        maybe_close();
    }

    void abort() {
        running_ = false;
        open_ = false;
        drain_timer_.cancel();
        if (ws_)
            beast::get_lowest_layer(*ws_).close();
    }

private:
    void do_write() {
        if (writing_ || credit_ == 0 || !running_)
            return;
        --credit_;
        fill_payload(send_seq_++, ctx_.opt().size, out_);
        sent_.push_back(clock::now());
        writing_ = true;
        ws_->async_write(net::buffer(out_), [self = shared_from_this()](error_code ec, std::size_t) {
            self->writing_ = false;
            if (ec)
                return self->fail("write", ec);
            if (self->running_)
                return self->do_write();
            self->maybe_close();
        });
    }

    void do_read() {
        ws_->async_read(in_, [self = shared_from_this()](error_code ec, std::size_t) { self->on_read(ec); });
    }

    void on_read(error_code ec) {
        if (ec)
            return fail("read", ec);
        const auto now = clock::now();
        if (sent_.empty()) {
            ctx_.result().add_error("echo:unexpected_message");
        } else {
            const auto began = sent_.front();
            sent_.pop_front();
            fill_payload(recv_seq_++, ctx_.opt().size, expected_);
            const auto got = in_.cdata();
            if (!ws_->got_binary() || got.size() != expected_.size() ||
                std::memcmp(got.data(), expected_.data(), expected_.size()) != 0)
                ctx_.result().add_error("echo:mismatch");
            else
                ctx_.record(began, now);
        }
        in_.consume(in_.size());
        if (running_) {
            ++credit_;
            do_write();
        } else {
            maybe_close();
        }
        do_read();
    }

    // After stop(): close once every message has come back and no write is in flight.
    void maybe_close() {
        if (running_ || closing_ || !open_ || writing_ || !sent_.empty())
            return;
        closing_ = true;
        ws_->async_close(websocket::close_code::normal, [self = shared_from_this()](error_code ec) {
            self->drain_timer_.cancel();
            self->open_ = false;
            if (ec)
                self->ctx_.count_error("close", ec);
            else if (self->ws_->reason().code != websocket::close_code::normal)
                self->ctx_.result().add_error("close_code:" + std::to_string(self->ws_->reason().code));
        });
    }

    void fail(std::string_view where, const error_code& ec) {
        const bool ours = closing_ || !open_;
        if (!ours) {
            if (ec == websocket::error::closed)
                ctx_.result().add_error("unexpected_close:" + std::to_string(ws_->reason().code));
            else
                ctx_.count_error(where, ec);
        }
        // A read that ends because our own close completed is the normal end.
        if (closing_ && ec == websocket::error::closed)
            return;
        if (open_ && !closing_) {
            abort();
        }
    }

    load_context& ctx_;
    std::optional<websocket::stream<beast::tcp_stream>> ws_; // while open (or opening)
    net::steady_timer drain_timer_;
    std::deque<clock::time_point> sent_; // start times of the messages not yet echoed, oldest first
    std::uint64_t send_seq_ = 0;
    std::uint64_t recv_seq_ = 0;
    unsigned credit_ = 0; // messages that may be sent now
    std::string out_;
    std::string expected_;
    beast::flat_buffer in_;
    bool open_ = false;
    bool running_ = false;
    bool writing_ = false;
    bool closing_ = false;
};

class echo_scenario final : public scenario {
public:
    explicit echo_scenario(load_context& ctx) : ctx_(ctx) {}

    void prepare(std::function<void()> ready) override {
        for (unsigned i = 0; i < ctx_.part().connections; ++i)
            conns_.push_back(std::make_shared<echo_connection>(ctx_));
        opener_.open_all(
            ctx_.ioc(), conns_,
            [this](bool ok) {
                if (ok)
                    ++ctx_.result().connections;
            },
            std::move(ready));
    }

    void start() override {
        for (auto& c : conns_)
            c->start();
    }

    void stop() override {
        for (auto& c : conns_)
            c->stop();
    }

    void abort() override {
        for (auto& c : conns_)
            c->abort();
    }

private:
    load_context& ctx_;
    std::vector<std::shared_ptr<echo_connection>> conns_;
    connection_opener opener_;
};

} // namespace

std::unique_ptr<scenario> make_echo_scenario(load_context& ctx) { return std::make_unique<echo_scenario>(ctx); }

} // namespace sockherd::bench
