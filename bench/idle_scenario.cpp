// The idle scenario: what idle WebSocket connections cost the server. --connections sessions on
// --path (spread over the --procs processes) are opened before the window and then held for the
// whole --duration without sending anything. Each keeps one read pending, so the server's pings
// are answered (the WebSocket stream does that while it reads) and a close or reset by the server
// is noticed. After the window every session still open is closed with 1000 (the closing
// handshake within --drain-timeout, else the socket is dropped).
//
// The script measuring memory waits for the window to open (--ready-file) and samples the
// server's RSS while the sessions are held; this only opens, holds and counts:
//   count          sessions still open when the window ended (rate = count / window: meaningless)
//   connections    sessions open when the window started
//   idle.opened / idle.failed    opening attempts that succeeded / failed (error_kinds: where)
//   idle.not_attempted           not tried after the server refused 2 x 64 opens in a row in one
//                                process (it is at a limit: waiting out every remaining open
//                                would only make the run long), counted as not held
//   idle.closed_in_window        sessions the server closed (or reset) while they were held
//   idle.messages                data messages received (an idle server sends none; pings are
//                                control frames and not counted)
// The counters travel as "idle.*" entries of run_result::errors; main reports them.

#include <optional>
#include <utility>
#include <vector>

#include "bench/connection_opener.hpp"
#include "bench/scenario.hpp"

namespace sockherd::bench {
namespace {

// Failed opens in a row (in one process) after which the rest are not attempted.
constexpr std::uint64_t give_up_after = 2 * connection_opener::parallelism;

struct idle_counters {
    explicit idle_counters(run_result& r)
        : opened(slot(r, "opened")), failed(slot(r, "failed")), not_attempted(slot(r, "not_attempted")),
          closed_in_window(slot(r, "closed_in_window")), messages(slot(r, "messages")) {}

    std::uint64_t& opened;
    std::uint64_t& failed;
    std::uint64_t& not_attempted;
    std::uint64_t& closed_in_window;
    std::uint64_t& messages;

private:
    // std::map never moves its elements, so the references stay valid.
    static std::uint64_t& slot(run_result& r, std::string_view name) {
        return r.errors[std::string(idle_counter_prefix) + std::string(name)];
    }
};

struct idle_state {
    explicit idle_state(load_context& c) : ctx(c), counts(c.result()) {}

    load_context& ctx;
    idle_counters counts;
    std::uint64_t failures_in_a_row = 0;
    bool given_up = false;
};

class idle_connection : public std::enable_shared_from_this<idle_connection> {
public:
    explicit idle_connection(idle_state& st) : st_(st), ctx_(st.ctx) {}

    void open(std::function<void(bool)> done) {
        auto self = shared_from_this();
        if (st_.given_up) {
            ++st_.counts.not_attempted;
            return net::post(ctx_.ioc(), [done = std::move(done)] { done(false); });
        }
        ctx_.async_open_fresh(ws_, self, [self, done = std::move(done)](bool ok) {
            self->open_ = ok;
            auto& st = self->st_;
            if (ok) {
                ++st.counts.opened;
                st.failures_in_a_row = 0;
            } else {
                ++st.counts.failed;
                if (++st.failures_in_a_row >= give_up_after)
                    st.given_up = true;
            }
            done(ok);
        });
    }

    bool is_open() const { return open_ && !closing_; }

    void start() {
        if (open_)
            do_read();
    }

    // After the window: the closing handshake; done() once it has ended either way.
    void close(std::function<void()> done) {
        if (!open_ || closing_)
            return net::post(ctx_.ioc(), std::move(done));
        closing_ = true;
        ws_->async_close(websocket::close_code::normal, [self = shared_from_this(), done = std::move(done)](error_code ec) {
            self->open_ = false;
            if (ec)
                self->ctx_.count_error("close", ec);
            done();
        });
    }

    void abort() {
        open_ = false;
        if (ws_)
            beast::get_lowest_layer(*ws_).close();
    }

private:
    void do_read() {
        ws_->async_read(in_, [self = shared_from_this()](error_code ec, std::size_t) { self->on_read(ec); });
    }

    void on_read(error_code ec) {
        if (ec) {
            if (closing_ || !open_) // our own close, or an abort
                return;
            open_ = false;
            if (ctx_.window_open())
                ++st_.counts.closed_in_window;
            if (ec == websocket::error::closed)
                ctx_.result().add_error("server_close:" + std::to_string(ws_->reason().code));
            else
                ctx_.count_error("hold", ec);
            return;
        }
        ++st_.counts.messages;
        in_.consume(in_.size());
        do_read();
    }

    idle_state& st_;
    load_context& ctx_;
    std::optional<websocket::stream<beast::tcp_stream>> ws_;
    beast::flat_buffer in_;
    bool open_ = false;
    bool closing_ = false;
};

class idle_scenario final : public scenario {
public:
    explicit idle_scenario(load_context& ctx) : ctx_(ctx), st_(ctx), drain_timer_(ctx.ioc()) {}

    void prepare(std::function<void()> ready) override {
        for (unsigned i = 0; i < ctx_.part().connections; ++i)
            conns_.push_back(std::make_shared<idle_connection>(st_));
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
        // Held through the whole window: still open now.
        for (auto& c : conns_) {
            if (c->is_open())
                ++ctx_.result().count;
        }
        std::size_t pending = conns_.size();
        closing_left_ = pending;
        if (pending == 0)
            return;
        drain_timer_.expires_after(ctx_.opt().drain_timeout());
        drain_timer_.async_wait([this](error_code ec) {
            if (ec || closing_left_ == 0)
                return;
            ctx_.result().add_error("close:drain_timeout", closing_left_);
            abort();
        });
        for (auto& c : conns_) {
            c->close([this] {
                if (closing_left_ > 0 && --closing_left_ == 0)
                    drain_timer_.cancel();
            });
        }
    }

    void abort() override {
        drain_timer_.cancel();
        for (auto& c : conns_)
            c->abort();
    }

private:
    load_context& ctx_;
    idle_state st_;
    std::vector<std::shared_ptr<idle_connection>> conns_;
    connection_opener opener_;
    net::steady_timer drain_timer_;
    std::size_t closing_left_ = 0;
};

} // namespace

std::unique_ptr<scenario> make_idle_scenario(load_context& ctx) { return std::make_unique<idle_scenario>(ctx); }

} // namespace sockherd::bench
