#pragma once
// One WebSocket connection in a worker, from the opening handshake (answered here) to the close.
// Its route decides what a received message does: `echo` sends it back, a raw `pubsub` route
// publishes it to the channel named in the path (the session is subscribed to that channel), a
// JSON `pubsub` route reads subscribe/unsubscribe/publish ops. Frames are read and written by the
// session itself (common/ws_frame) on its own stream. A plain connection's socket is watched by
// the worker's poller (worker/poller.hpp), not by Asio: when it is readable it is read into one
// buffer the worker shares, so an idle connection owns no read buffer. What is queued for a socket
// during one event-loop turn leaves in one gather write. The send queue is bounded: a
// client that falls `send_queue_limit` bytes behind is disconnected with 1008 instead of growing
// memory. Owned by shared_ptr captures of its own pending operations.

#include <array>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "common/net.hpp"
#include "common/tls_stream.hpp"
#include "common/unique_fd.hpp"
#include "common/ws_frame.hpp"
#include "worker/connection.hpp"
#include "worker/hub.hpp"
#include "worker/poller.hpp"
#include "worker/response.hpp"
#include "worker/worker.hpp"

namespace sockherd::worker {

class worker;

// Writes what the sessions of this worker queued since the last flush (each in one gather write).
// Runs once per event-loop turn on its own; the poller calls it after each pass.
void flush_pending_writes();

enum class ws_mode : std::uint8_t { echo, pubsub_raw, pubsub_json };

template <class Stream> // plain_stream or tls_stream (common/tls_stream.hpp)
class websocket_session final : public connection,
                                public subscriber,
                                public poller::handler,
                                public std::enable_shared_from_this<websocket_session<Stream>> {
public:
    // `channel`: the channel of a raw pubsub session (already validated), else empty.
    // `peer`: the client (after PROXY and trusted X-Forwarded-For); `claim`: its count against
    // max_connections_per_ip, held for the session's life.
    // `tls`: the listener's context the stream uses (kept alive with it; null for plain_stream).
    websocket_session(worker& w, Stream stream, std::shared_ptr<net::ssl::context> tls, tcp::endpoint peer,
                      ws_mode mode, std::string channel, std::string route_path, ip_claim claim);
    ~websocket_session();

    // Answers the handshake for `req` (the Upgrade request the http_session read and checked:
    // Upgrade, Connection, a valid Sec-WebSocket-Key). A raw pubsub session subscribes first and
    // answers once the subscription is live node-wide.
    void run(const request& req);

    // subscriber
    wire_format format() const override;
    void deliver(const broadcast& b) override;

    // connection
    void drain(clock::time_point deadline) override;
    std::string_view route_path() const override { return route_path_; }
    void abort() override;

    // poller::handler (plain sessions)
    void on_ready(std::uint32_t events) override;

private:
    static constexpr bool with_tls = is_tls<Stream>;
    using executor_type = net::io_context::executor_type;
    // A plain session owns its socket's descriptor outright (the poller watches it).
    using stream_type = std::conditional_t<with_tls, tls_stream, unique_fd>;
    using timer_type = net::basic_waitable_timer<clock, net::wait_traits<clock>, executor_type>;
    using accept_key = std::array<char, 28>; // Sec-WebSocket-Accept

    struct no_tls_state {};
    // What only a TLS session needs: the context, its own read buffer (an ssl stream reads into the
    // buffer it is given, so one shared by all sessions cannot be used), and the write in flight.
    struct tls_state {
        std::shared_ptr<net::ssl::context> context; // outlives stream_
        std::unique_ptr<std::uint8_t[]> read_buffer;
        std::uint32_t read_size = 0;
        std::unique_ptr<std::uint8_t[]> write_copy;   // frames copied together for one write
        std::shared_ptr<const void> write_owner;      // or the one frame written as it is
        std::size_t write_messages = 0;               // counted once the write completes
        std::size_t write_bytes = 0;
    };
    using tls_extra = std::conditional_t<with_tls, tls_state, no_tls_state>;

    enum class phase : std::uint8_t {
        handshake, // no answer to the Upgrade request queued yet
        open,      // messages flow both ways
        closing,   // a close frame is queued or sent; nothing else goes out
        done,      // the socket is closed
    };

    static stream_type initial_stream(Stream& s);
    static executor_type executor_of(stream_type& s, Stream& original);

    // The handshake.
    void do_accept(const accept_key& key);
    void reject_handshake(http::status status, std::string_view why);

    // Reading.
    void do_read();
    bool watch();
    void read_pass();
    void on_tls_read(error_code ec, std::size_t n);
    void on_read_error(error_code ec);
    bool should_read() const;
    void on_bytes(std::uint8_t* data, std::size_t n);
    void on_message(ws::opcode op, std::string_view payload, std::string* owned);
    void on_control(const ws::frame_parser::event& e, std::string_view payload);
    void on_protocol_error(const ws::frame_parser::event& e);
    void on_json_op(std::string_view text);
    void subscribe(const std::string& channel, bool reply);

    // Writing.
    void enqueue(ws::out_frame f);
    void enqueue_text(std::string text);
    void schedule_flush();
    void flush();
    void flush_plain();
    void flush_tls();
    void on_tls_written(error_code ec);
    void wait_writable();
    void on_write_error(error_code ec);
    void count_sent(const ws::out_frame& f);
    void after_writes();

    // Closing.
    void close_with(std::uint16_t code, std::string_view reason);
    void maybe_teardown();
    void close_socket();

    // The one timer: keepalive pings, idle_timeout, the drain deadline, the closing handshake.
    void schedule_timer();
    void on_timer();

    worker& worker_;
    [[no_unique_address]] tls_extra tls_;
    stream_type stream_;
    timer_type timer_;
    tcp::endpoint peer_;
    std::string route_path_;
    std::string channel_;                    // raw pubsub
    std::vector<std::string> subscriptions_; // JSON pubsub (at most max_subscriptions)
    ws::frame_parser parser_;
    ws::send_queue queue_;
    std::string message_; // a message that arrived in pieces, until it is whole (then given away)
    std::string control_; // a control frame's payload that arrived in pieces
    ip_claim ip_claim_;
    // plain: the session's own reference while the poller watches its socket (it then has no
    // pending Asio operation to keep it alive); released, in a posted handler, when it closes.
    std::shared_ptr<websocket_session> self_;
    clock::time_point opened_at_{};
    clock::time_point last_heard_{};       // any message, ping or pong from the client
    clock::time_point next_ping_{};
    clock::time_point drain_at_ = clock::time_point::max();
    clock::time_point close_requested_{}; // when the close frame was queued

    ws_mode mode_;
    phase phase_ = phase::handshake;
    bool registered_ = false;
    bool raw_subscribed_ = false; // pubsub_raw: subscribed to channel_
    bool responded_ = false;     // the answer to the Upgrade request is queued: writing may start
    bool accepted_ = false;      // ... and it was 101
    bool reading_ = false;       // a read is pending (TLS); reads are wanted (plain)
    bool watched_ = false;       // plain: registered with the worker's poller
    bool peer_hung_up_ = false;  // plain: the poller reported the peer's FIN, a hang-up or an error
    bool writing_ = false;       // a write (or a wait for writability) is pending
    bool flush_queued_ = false;  // on the worker's list of sessions to flush this turn
    bool ping_due_ = false;      // a ping goes out before the next frame not yet started
    bool close_queued_ = false;  // our close frame (or a refusal) is the last thing queued
    bool close_sent_ = false;    // ... and it is written
    bool peer_closed_ = false;   // the client's close frame was read
    bool failed_ = false;        // the client broke the protocol (or the handshake): no waiting for it
    bool torn_down_ = false;     // the closing handshake is over; the connection ends
};

} // namespace sockherd::worker
