#pragma once

#include <functional>
// What every scenario in one load generator process shares: the io_context, the options, this
// process's shard, the measured window, the results and the way client sockets are opened.
// Owned by the driver (run_shard); single-threaded like everything on its io_context.

#include <chrono>
#include <cstdint>
#include <optional>
#include <string_view>

#include "bench/options.hpp"
#include "bench/results.hpp"
#include "bench/net.hpp"

namespace sockherd::bench {

using clock = std::chrono::steady_clock;

class load_context {
public:
    load_context(net::io_context& ioc, const options& opt, const shard& part);

    net::io_context& ioc() { return ioc_; }
    const options& opt() const { return opt_; }
    const shard& part() const { return part_; }
    run_result& result() { return result_; }

    // The measured window: operations that complete inside it are counted and timed.
    void open_window(clock::time_point start);
    bool window_open(clock::time_point now = clock::now()) const { return opened_ && now < window_end_; }
    clock::time_point window_start() const { return window_start_; }
    clock::time_point window_end() const { return window_end_; }

    // Counts one completed operation that began at `begin`, if it completed inside the window.
    void record(clock::time_point begin, clock::time_point done);

    // Opens a TCP socket for target `t`, binds it to the next source address (without choosing a
    // port, so a source address's ports are shared by every destination) and turns Nagle off.
    error_code open_socket(tcp::socket& socket, std::size_t t = 0);

    // Counts an error as "<where>:<kind>" (kind: refused, reset, timeout, eof, closed, …).
    // operation_aborted is ours (a cancel or an abort) and is not counted.
    void count_error(std::string_view where, const error_code& ec);
    // Counts a failed TCP connect both as an error and in failed_connects.
    void count_failed_connect(const error_code& ec);

    // The Host header (of the first target, or of target `t`) and the WebSocket timeouts every
    // client stream uses.
    const std::string& host() const { return opt_.host_header; }
    const std::string& host(std::size_t t) const { return t < opt_.host_headers.size() ? opt_.host_headers[t] : host(); }
    const tcp::endpoint& target(std::size_t t) const { return t < opt_.targets.size() ? opt_.targets[t] : opt_.target; }
    template <class Stream>
    void configure(Stream& ws) const {
        websocket::stream_base::timeout t{};
        t.handshake_timeout = opt_.connect_timeout(); // applies to the opening and the closing handshake
        t.idle_timeout = websocket::stream_base::none();
        t.keep_alive_pings = false;
        ws.set_option(t);
        ws.read_message_max(64 * 1024 * 1024);
    }

    // Opens `ws` (a fresh websocket::stream over a beast::tcp_stream) to target `t` (0: the first
    // --target): socket from the next source address, connect and handshake under the connect
    // timeout, errors counted. Calls done(true) once open, done(false) on any failure; `keep`
    // stays alive until then.
    template <class Stream, class Keep>
    void async_open(Stream& ws, Keep keep, std::function<void(bool)> done, std::size_t t = 0) {
        auto& stream = beast::get_lowest_layer(ws);
        if (const auto ec = open_socket(stream.socket(), t)) {
            count_error("socket", ec);
            return net::post(ioc_, [keep, done = std::move(done)] { done(false); });
        }
        stream.expires_after(opt_.connect_timeout());
        stream.async_connect(target(t), [this, &ws, keep, t, done = std::move(done)](error_code ec) mutable {
            if (ec) {
                count_failed_connect(ec);
                return done(false);
            }
            beast::get_lowest_layer(ws).expires_never();
            configure(ws);
            ws.binary(true);
            ws.async_handshake(host(t), opt_.path, [this, keep, done = std::move(done)](error_code e) {
                if (e)
                    count_error("handshake", e);
                done(!e);
            });
        });
    }

    // async_open on a fresh stream emplaced in `ws`. A stream that failed to open is destroyed
    // again, which also cancels its handshake timer (that would otherwise keep the io_context busy
    // until it expires); from a posted handler, never inside one of the stream's own.
    template <class Stream, class Keep>
    void async_open_fresh(std::optional<Stream>& ws, Keep keep, std::function<void(bool)> done, std::size_t t = 0) {
        ws.emplace(ioc_);
        async_open(
            *ws, keep,
            [this, &ws, keep, done = std::move(done)](bool ok) {
                if (!ok)
                    net::post(ioc_, [&ws, keep] { ws.reset(); });
                done(ok);
            },
            t);
    }

private:
    net::io_context& ioc_;
    const options& opt_;
    shard part_;
    run_result result_;
    bool opened_ = false;
    clock::time_point window_start_{};
    clock::time_point window_end_{};
    std::uint64_t next_source_ = 0;
};

// A short, stable name for an error, for the error_kinds map.
std::string error_kind(const error_code& ec);

} // namespace sockherd::bench
