// The connect scenario: each of --concurrency loops opens a TCP connection, does the WebSocket
// handshake on --path, closes with 1000 and waits for the server's close, then starts again
// until the window ends. One operation = one open+close; its time runs from connect() to the
// end of the closing handshake and TCP teardown.

#include <optional>
#include <vector>

#include "bench/scenario.hpp"

namespace sockherd::bench {
namespace {

// After an error a loop waits this long before the next attempt, so a refusing server does not
// turn the load generator into a busy loop.
constexpr std::chrono::milliseconds error_backoff{10};

class connect_loop : public std::enable_shared_from_this<connect_loop> {
public:
    explicit connect_loop(load_context& ctx) : ctx_(ctx), backoff_(ctx.ioc()) {}

    void next() {
        if (stopping_ || !ctx_.window_open())
            return;
        ws_.emplace(ctx_.ioc());
        auto& stream = beast::get_lowest_layer(*ws_);
        if (const auto ec = ctx_.open_socket(stream.socket())) {
            ctx_.count_error("socket", ec);
            return retry_later();
        }
        began_ = clock::now();
        stream.expires_after(ctx_.opt().connect_timeout());
        stream.async_connect(ctx_.opt().target, [self = shared_from_this()](error_code ec) { self->on_connect(ec); });
    }

    void stop() {
        stopping_ = true;
        backoff_.cancel();
    }

    void abort() {
        stopping_ = true;
        backoff_.cancel();
        if (ws_)
            beast::get_lowest_layer(*ws_).close();
    }

private:
    void on_connect(error_code ec) {
        if (ec) {
            ctx_.count_failed_connect(ec);
            return retry_later();
        }
        beast::get_lowest_layer(*ws_).expires_never(); // the WebSocket stream's own timeouts apply
        ctx_.configure(*ws_);
        ws_->async_handshake(ctx_.host(), ctx_.opt().path,
                             [self = shared_from_this()](error_code e) { self->on_handshake(e); });
    }

    void on_handshake(error_code ec) {
        if (ec) {
            ctx_.count_error("handshake", ec);
            return retry_later();
        }
        ws_->async_close(websocket::close_code::normal, [self = shared_from_this()](error_code e) { self->on_close(e); });
    }

    void on_close(error_code ec) {
        const auto done = clock::now();
        if (ec) {
            ctx_.count_error("close", ec);
            return retry_later();
        }
        if (ws_->reason().code != websocket::close_code::normal)
            ctx_.result().add_error("close_code:" + std::to_string(ws_->reason().code));
        ctx_.record(began_, done);
        end_cycle(clock::duration::zero());
    }

    // Ends the current cycle. The stream is replaced from a posted handler, never inside one of
    // its own completion handlers.
    void retry_later() { end_cycle(error_backoff); }

    void end_cycle(clock::duration pause) {
        net::post(ctx_.ioc(), [self = shared_from_this(), pause] {
            self->ws_.reset();
            if (self->stopping_ || !self->ctx_.window_open())
                return;
            if (pause == clock::duration::zero())
                return self->next();
            self->backoff_.expires_after(pause);
            self->backoff_.async_wait([self](error_code ec) {
                if (!ec)
                    self->next();
            });
        });
    }

    load_context& ctx_;
    std::optional<websocket::stream<beast::tcp_stream>> ws_;
    net::steady_timer backoff_;
    clock::time_point began_{};
    bool stopping_ = false;
};

class connect_scenario final : public scenario {
public:
    explicit connect_scenario(load_context& ctx) : ctx_(ctx) {}

    void prepare(std::function<void()> ready) override {
        for (unsigned i = 0; i < ctx_.part().concurrency; ++i)
            loops_.push_back(std::make_shared<connect_loop>(ctx_));
        net::post(ctx_.ioc(), std::move(ready));
    }

    void start() override {
        for (auto& l : loops_)
            l->next();
    }

    void stop() override {
        for (auto& l : loops_)
            l->stop();
    }

    void abort() override {
        for (auto& l : loops_)
            l->abort();
    }

private:
    load_context& ctx_;
    std::vector<std::shared_ptr<connect_loop>> loops_;
};

} // namespace

std::unique_ptr<scenario> make_connect_scenario(load_context& ctx) { return std::make_unique<connect_scenario>(ctx); }

} // namespace sockherd::bench
