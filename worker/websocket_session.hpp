#pragma once
// One WebSocket connection in a worker. Its route decides what a received message does: `echo`
// sends it back, a raw `pubsub` route publishes it to the channel named in the path (the session
// is subscribed to that channel), a JSON `pubsub` route reads subscribe/unsubscribe/publish ops.
// Everything it sends goes through one bounded queue; a client that falls `send_queue_limit`
// bytes behind is disconnected with 1008 instead of growing memory. Owned by shared_ptr captures
// of its own pending operations.

#include <deque>
#include <memory>
#include <optional>
#include <set>
#include <string>

#include "common/net.hpp"
#include "common/tls_stream.hpp"
#include "worker/connection.hpp"
#include "worker/hub.hpp"
#include "worker/response.hpp"
#include "worker/worker.hpp"

namespace sockherd::worker {

class worker;

enum class ws_mode { echo, pubsub_raw, pubsub_json };

template <class Stream> // plain_stream or tls_stream (common/tls_stream.hpp)
class websocket_session final : public connection,
                                public subscriber,
                                public std::enable_shared_from_this<websocket_session<Stream>> {
public:
    // `channel`: the channel of a raw pubsub session (already validated), else empty.
    // `peer`: the client (after PROXY and trusted X-Forwarded-For); `claim`: its count against
    // max_connections_per_ip, held for the session's life.
    // `tls`: the listener's context the stream uses (kept alive with it; null for plain_stream).
    websocket_session(worker& w, Stream stream, std::shared_ptr<net::ssl::context> tls, tcp::endpoint peer,
                      ws_mode mode, std::string channel, std::string route_path, ip_claim claim);
    ~websocket_session();

    // Completes the handshake for `req` (the Upgrade request the http_session read). A raw pubsub
    // session subscribes first and answers the handshake once the subscription is live node-wide.
    void run(request req);

    // subscriber
    wire_format format() const override;
    void deliver(const broadcast& b) override;

    // connection
    void drain(clock::time_point deadline) override;
    std::string_view route_path() const override { return route_path_; }
    void abort() override;

private:
    // One queued outgoing message: `bytes` stay valid while `owner` lives (shared payloads).
    struct out_frame {
        std::shared_ptr<const void> owner;
        std::string_view bytes;
        bool binary = false;
    };

    void do_accept(request req);
    void on_accept(error_code ec);
    void do_read();
    void on_read(error_code ec, std::size_t n);
    void on_json_op(std::string_view text);
    void enqueue(out_frame f);
    void enqueue_text(std::string text);
    void do_write();
    void on_write(error_code ec, std::size_t n);
    void close_with(websocket::close_code code, std::string_view reason);
    void do_close();
    void drop();
    void schedule_keepalive();
    void on_keepalive_timer();
    void subscribe(const std::string& channel, bool reply);
    void fail(error_code ec, std::string_view what);

    worker& worker_;
    std::shared_ptr<net::ssl::context> tls_; // outlives ws_
    websocket::stream<Stream> ws_;
    tcp::endpoint peer_;
    ws_mode mode_;
    std::string route_path_;
    std::string channel_; // raw pubsub
    beast::flat_buffer buffer_;
    net::steady_timer drain_timer_;
    // Keepalive: a ping every ping_interval (sent by do_write between frames); nothing heard for
    // idle_timeout (no message, no pong, no ping) and the connection is dropped.
    net::steady_timer keepalive_timer_;
    clock::time_point last_heard_{};
    clock::time_point next_ping_{};
    bool ping_due_ = false;
    ip_claim ip_claim_;
    clock::time_point opened_at_{};
    clock::time_point close_requested_{}; // when close_pending_ was set

    std::deque<out_frame> queue_;
    std::size_t queued_bytes_ = 0;
    std::set<std::string> subscriptions_;

    bool registered_ = false;
    bool accepted_ = false;
    bool open_ = false;    // handshake done, no close started
    bool writing_ = false;
    std::optional<websocket::close_reason> close_pending_; // sent once the current write completes
};

} // namespace sockherd::worker
