#include "worker/websocket_session.hpp"

#include <random>

#include <spdlog/spdlog.h>

#include "worker/json_ops.hpp"
#include "worker/worker.hpp"

namespace sockherd::worker {
namespace {

constexpr std::chrono::seconds handshake_timeout{10};

} // namespace

template <class Stream>
websocket_session<Stream>::websocket_session(worker& w, Stream stream, std::shared_ptr<net::ssl::context> tls,
                                             tcp::endpoint peer, ws_mode mode, std::string channel,
                                             std::string route_path, ip_claim claim)
    : worker_(w), tls_(std::move(tls)), ws_(std::move(stream)), peer_(peer), mode_(mode), route_path_(std::move(route_path)),
      channel_(std::move(channel)), drain_timer_(ws_.get_executor()), keepalive_timer_(ws_.get_executor()),
      ip_claim_(std::move(claim)) {}

template <class Stream>
websocket_session<Stream>::~websocket_session() {
    for (const auto& c : subscriptions_)
        worker_.unsubscribe(c, *this);
    if (registered_)
        worker_.remove(*this, true);
    if (accepted_ && worker_.cfg().log.access)
        spdlog::info("{} websocket {} closed after {} ms", peer_.address().to_string(), route_path_,
                     std::chrono::duration_cast<std::chrono::milliseconds>(clock::now() - opened_at_).count());
}

template <class Stream>
wire_format websocket_session<Stream>::format() const {
    return mode_ == ws_mode::pubsub_json ? wire_format::json : wire_format::raw;
}

template <class Stream>
void websocket_session<Stream>::run(request req) {
    worker_.add(*this, true);
    registered_ = true;
    ++worker_.stats().ws_sessions_total;

    const auto& cfg = worker_.cfg();
    beast::get_lowest_layer(ws_).expires_never(); // the websocket stream's own timeouts apply
    websocket::stream_base::timeout t{};
    t.handshake_timeout = handshake_timeout; // the opening and the closing handshake
    t.idle_timeout = websocket::stream_base::none(); // schedule_keepalive() does this
    t.keep_alive_pings = false;
    ws_.set_option(t);
    // Pings and pongs from the client count as signs of life (Beast answers pings itself).
    ws_.control_callback([this](websocket::frame_type kind, beast::string_view) {
        if (kind != websocket::frame_type::close) {
            last_heard_ = clock::now();
            return;
        }
        // Beast 1.74 takes any close code from 3000 up and would echo it; 5000 and above are not
        // codes at all (RFC 6455 7.4). Fail the connection: drop it without echoing the code.
        if (const auto code = ws_.reason().code; code >= 5000) {
            worker_.reject(rejection::ws_protocol_error);
            spdlog::info("{}: WebSocket close frame with invalid code {}; connection dropped (protocol error)",
                         peer_.address().to_string(), code);
            drop();
        }
    });
    ws_.read_message_max(cfg.websocket.max_message_size);
    const unsigned slot = worker_.slot();
    ws_.set_option(websocket::stream_base::decorator([slot](websocket::response_type& res) { decorate(res, slot); }));

    if (mode_ == ws_mode::pubsub_raw) {
        // Subscribed before the handshake answers: when the client sees 101, every message
        // published anywhere in the node from then on reaches it.
        subscribe(channel_, false);
        worker_.after_interest_confirmed(
            [self = this->shared_from_this(), req = std::move(req)]() mutable { self->do_accept(std::move(req)); });
        return;
    }
    do_accept(std::move(req));
}

template <class Stream>
void websocket_session<Stream>::do_accept(request req) {
    ws_.async_accept(req, [self = this->shared_from_this()](error_code ec) { self->on_accept(ec); });
}

template <class Stream>
void websocket_session<Stream>::on_accept(error_code ec) {
    if (ec) {
        if (ec == websocket::condition::handshake_failed) {
            // Beast has answered it (400, or 426 naming the version it speaks).
            worker_.reject(rejection::ws_bad_handshake);
            spdlog::info("{}: bad WebSocket handshake on {} ({}); refused", peer_.address().to_string(),
                         route_path_, ec.message());
        } else {
            spdlog::debug("{}: WebSocket handshake failed: {}", peer_.address().to_string(), ec.message());
        }
        return;
    }
    accepted_ = true;
    open_ = true;
    opened_at_ = last_heard_ = clock::now();
    if (worker_.cfg().log.access)
        spdlog::info("{} \"GET {}{}\" 101 websocket", peer_.address().to_string(), route_path_, channel_);
    schedule_keepalive();
    if (close_pending_) { // cut off as a slow consumer before the handshake finished
        do_close();
        return;
    }
    if (worker_.node_stopping()) {
        close_with(websocket::close_code::going_away, "server is draining");
        return;
    }
    if (worker_.draining())
        drain(worker_.drain_deadline()); // this worker retires: 1001 by its deadline, like the others
    if (mode_ == ws_mode::pubsub_json) {
        // Says which worker serves this connection (shown by the demo chat; handy when debugging).
        std::string welcome = "{\"event\":\"welcome\",\"worker\":" + std::to_string(worker_.slot()) + "}";
        auto owned = std::make_shared<const std::string>(std::move(welcome));
        queue_.push_front({owned, *owned, false});
        queued_bytes_ += owned->size();
    }
    do_read();
    do_write(); // the welcome, and deliveries that arrived during the handshake
}

template <class Stream>
void websocket_session<Stream>::do_read() {
    ws_.async_read(buffer_, [self = this->shared_from_this()](error_code ec, std::size_t n) { self->on_read(ec, n); });
}

template <class Stream>
void websocket_session<Stream>::on_read(error_code ec, std::size_t n) {
    if (ec)
        return fail(ec, "read");
    last_heard_ = clock::now();
    auto& stats = worker_.stats();
    ++stats.ws_messages_in;
    stats.bytes_in += n;
    if (!open_)
        return;
    const bool binary = !ws_.got_text();
    std::string payload = beast::buffers_to_string(buffer_.data());
    buffer_.consume(buffer_.size());

    switch (mode_) {
    case ws_mode::echo: {
        auto owned = std::make_shared<const std::string>(std::move(payload));
        enqueue({owned, *owned, binary});
        break;
    }
    case ws_mode::pubsub_raw:
        worker_.publish(std::make_shared<const pubsub_message>(
            pubsub_message{channel_, binary ? payload_kind::binary : payload_kind::text, std::move(payload)}));
        break;
    case ws_mode::pubsub_json:
        if (binary) {
            ++stats.bad_ops;
            enqueue_text(json_ops::encode_error({"binary frames are not ops: send JSON text frames", "", ""}));
        } else {
            on_json_op(payload);
        }
        break;
    }
    if (open_)
        do_read();
}

template <class Stream>
void websocket_session<Stream>::on_json_op(std::string_view text) {
    auto parsed = json_ops::parse(text);
    if (auto* err = std::get_if<json_ops::op_error>(&parsed)) {
        ++worker_.stats().bad_ops;
        enqueue_text(json_ops::encode_error(*err));
        return;
    }
    auto& op = std::get<json_ops::op>(parsed);
    switch (op.kind) {
    case json_ops::op_kind::subscribe:
        if (!subscriptions_.count(op.channel) && subscriptions_.size() >= worker_.cfg().websocket.max_subscriptions) {
            worker_.reject(rejection::subscriptions);
            spdlog::info("{}: subscribe to \"{}\" over max_subscriptions ({}); refused", peer_.address().to_string(),
                         op.channel, worker_.cfg().websocket.max_subscriptions);
            enqueue_text(json_ops::encode_error(
                {"too many subscriptions on one connection (max_subscriptions = " +
                     std::to_string(worker_.cfg().websocket.max_subscriptions) + ")",
                 "subscribe", op.channel}));
            return;
        }
        subscribe(op.channel, true);
        break;
    case json_ops::op_kind::unsubscribe:
        if (subscriptions_.erase(op.channel))
            worker_.unsubscribe(op.channel, *this);
        enqueue_text(json_ops::encode_event("unsubscribed", op.channel));
        break;
    case json_ops::op_kind::publish:
        worker_.publish(std::make_shared<const pubsub_message>(
            pubsub_message{std::move(op.channel), op.data_kind, std::move(op.data)}));
        break;
    }
}

// Subscribes to `channel`; with `reply`, acknowledges once the subscription is live node-wide.
template <class Stream>
void websocket_session<Stream>::subscribe(const std::string& channel, bool reply) {
    if (subscriptions_.insert(channel).second)
        worker_.subscribe(channel, *this);
    if (!reply)
        return;
    worker_.after_interest_confirmed([weak = this->weak_from_this(), channel] {
        if (auto self = weak.lock(); self && self->open_)
            self->enqueue_text(json_ops::encode_event("subscribed", channel));
    });
}

template <class Stream>
void websocket_session<Stream>::deliver(const broadcast& b) {
    const auto& m = b.message();
    if (mode_ == ws_mode::pubsub_json) {
        const auto& json = b.json_form();
        enqueue({json, *json, false});
    } else {
        enqueue({m, m->payload, m->kind == payload_kind::binary});
    }
}

template <class Stream>
void websocket_session<Stream>::enqueue_text(std::string text) {
    auto owned = std::make_shared<const std::string>(std::move(text));
    enqueue({owned, *owned, false});
}

template <class Stream>
void websocket_session<Stream>::enqueue(out_frame f) {
    if (close_pending_ || (accepted_ && !open_))
        return; // closing: nothing more goes out
    const std::size_t limit = worker_.cfg().websocket.send_queue_limit;
    if (queued_bytes_ + f.bytes.size() > limit && !queue_.empty()) {
        // A slow consumer: cut it off rather than let its queue grow. Not from inside the hub's
        // delivery loop, though: closing waits for the next event-loop turn.
        auto& stats = worker_.stats();
        ++stats.slow_consumer_disconnects;
        spdlog::info("{}: send queue over send_queue_limit ({} bytes); disconnecting a slow consumer with 1008",
                     peer_.address().to_string(), limit);
        // Drop what waits, but not the frame being written: the write still reads its bytes.
        const std::size_t keep = writing_ ? 1 : 0;
        stats.send_queue_drops += queue_.size() - keep;
        while (queue_.size() > keep) {
            queued_bytes_ -= queue_.back().bytes.size();
            queue_.pop_back();
        }
        close_pending_ = websocket::close_reason(websocket::close_code::policy_error, "slow consumer");
        close_requested_ = clock::now();
        net::post(ws_.get_executor(), [self = this->shared_from_this()] {
            if (!self->writing_)
                self->do_close();
        });
        return;
    }
    queued_bytes_ += f.bytes.size();
    queue_.push_back(std::move(f));
    if (!writing_ && open_)
        do_write();
}

template <class Stream>
void websocket_session<Stream>::do_write() {
    if (writing_ || !open_)
        return;
    if (ping_due_ && !close_pending_) {
        // Between two frames, never inside a message: a ping never waits behind a long queue
        // for more than one frame.
        ping_due_ = false;
        writing_ = true;
        ws_.async_ping({}, [self = this->shared_from_this()](error_code ec) {
            self->writing_ = false;
            if (ec)
                return self->fail(ec, "ping");
            self->do_write();
        });
        return;
    }
    if (queue_.empty()) {
        if (close_pending_)
            do_close();
        return;
    }
    writing_ = true;
    const auto& f = queue_.front();
    ws_.binary(f.binary);
    ws_.async_write(net::buffer(f.bytes.data(), f.bytes.size()),
                    [self = this->shared_from_this()](error_code ec, std::size_t n) { self->on_write(ec, n); });
}

template <class Stream>
void websocket_session<Stream>::on_write(error_code ec, std::size_t n) {
    writing_ = false;
    if (ec)
        return fail(ec, "write");
    ++worker_.stats().ws_messages_out;
    worker_.stats().bytes_out += n;
    if (!queue_.empty()) {
        queued_bytes_ -= queue_.front().bytes.size();
        queue_.pop_front();
    }
    if (close_pending_) {
        do_close();
        return;
    }
    do_write();
}

template <class Stream>
void websocket_session<Stream>::close_with(websocket::close_code code, std::string_view reason) {
    if (close_pending_)
        return;
    close_pending_ = websocket::close_reason(code, reason);
    close_requested_ = clock::now();
    if (!writing_)
        do_close();
}

template <class Stream>
void websocket_session<Stream>::do_close() {
    if (!open_ || !close_pending_)
        return;
    open_ = false;
    keepalive_timer_.cancel();
    ws_.async_close(*close_pending_, [self = this->shared_from_this()](error_code ec) {
        // Nothing else will end these: a session closed before its first read never fails.
        self->drain_timer_.cancel();
        self->keepalive_timer_.cancel();
        if (ec)
            spdlog::debug("{}: close handshake: {}", self->peer_.address().to_string(), ec.message());
    });
}

// Closes with 1001 at the deadline, a little before it at random so that a node's clients do
// not all reconnect in the same millisecond.
template <class Stream>
void websocket_session<Stream>::drain(clock::time_point deadline) {
    const auto now = clock::now();
    const auto window = deadline > now ? deadline - now : clock::duration::zero();
    const auto spread = std::min<clock::duration>(window / 10, std::chrono::seconds(1));
    static thread_local std::minstd_rand rng{std::random_device{}()};
    const auto jitter = spread.count() > 0
        ? clock::duration(std::uniform_int_distribution<clock::rep>(0, spread.count())(rng))
        : clock::duration::zero();
    drain_timer_.expires_at(deadline - jitter);
    drain_timer_.async_wait([self = this->shared_from_this()](error_code ec) {
        if (ec || !self->open_)
            return;
        self->close_with(websocket::close_code::going_away, "server is shutting down");
    });
}

template <class Stream>
void websocket_session<Stream>::schedule_keepalive() {
    const auto& ws = worker_.cfg().websocket;
    const auto now = clock::now();
    if (ws.ping_interval.count() > 0 && next_ping_ <= now)
        next_ping_ = now + ws.ping_interval;
    auto at = last_heard_ + ws.idle_timeout;
    if (ws.ping_interval.count() > 0)
        at = std::min(at, next_ping_);
    keepalive_timer_.expires_at(at);
    keepalive_timer_.async_wait([self = this->shared_from_this()](error_code ec) {
        if (!ec)
            self->on_keepalive_timer();
    });
}

template <class Stream>
void websocket_session<Stream>::on_keepalive_timer() {
    if (!open_)
        return;
    const auto& ws = worker_.cfg().websocket;
    const auto now = clock::now();
    if (close_pending_ && writing_ && now - close_requested_ >= handshake_timeout) {
        // A close waits for a write the client never lets finish (it stopped reading but keeps
        // sending, so it never looks idle): drop it.
        spdlog::info("{}: a write stalled for {} s with a close pending; connection dropped",
                     peer_.address().to_string(), handshake_timeout.count());
        return drop();
    }
    if (now - last_heard_ >= ws.idle_timeout) {
        worker_.reject(rejection::ws_pong_timeout);
        spdlog::info("{}: nothing from the client for idle_timeout ({} ms), not even a pong; disconnected",
                     peer_.address().to_string(), ws.idle_timeout.count());
        return drop(); // no closing handshake: the client has stopped answering
    }
    if (ws.ping_interval.count() > 0 && now >= next_ping_) {
        ping_due_ = true;
        next_ping_ = now + ws.ping_interval;
        do_write();
    }
    schedule_keepalive();
}

// Ends the connection without a closing handshake; the pending read then fails and unwinds.
template <class Stream>
void websocket_session<Stream>::drop() {
    open_ = false;
    drain_timer_.cancel();
    error_code ignored;
    auto& sock = beast::get_lowest_layer(ws_).socket();
    sock.shutdown(tcp::socket::shutdown_both, ignored);
    sock.close(ignored);
}

template <class Stream>
void websocket_session<Stream>::abort() {
    keepalive_timer_.cancel();
    drain_timer_.cancel();
    error_code ignored;
    beast::get_lowest_layer(ws_).socket().close(ignored);
}

template <class Stream>
void websocket_session<Stream>::fail(error_code ec, std::string_view what) {
    open_ = false;
    drain_timer_.cancel();
    keepalive_timer_.cancel();
    if (ec == websocket::error::closed || ec == net::error::operation_aborted || ec == net::error::eof ||
        ec == net::error::connection_reset || ec == beast::error::timeout)
        return;
    if (ec == websocket::error::message_too_big) {
        worker_.reject(rejection::ws_message_too_big);
        spdlog::info("{}: WebSocket message over max_message_size ({} bytes); closed with 1009",
                     peer_.address().to_string(), worker_.cfg().websocket.max_message_size);
        return;
    }
    if (ec == websocket::error::bad_frame_payload) {
        worker_.reject(rejection::ws_invalid_utf8);
        spdlog::info("{}: WebSocket text that is not UTF-8 ({}); closed with 1007", peer_.address().to_string(),
                     ec.message());
        return;
    }
    if (ec == websocket::condition::protocol_violation) {
        worker_.reject(rejection::ws_protocol_error);
        spdlog::info("{}: WebSocket protocol violation ({}); closed with 1002", peer_.address().to_string(),
                     ec.message());
        return;
    }
    spdlog::debug("{}: WebSocket {}: {}", peer_.address().to_string(), what, ec.message());
}

template class websocket_session<plain_stream>;
template class websocket_session<tls_stream>;

} // namespace sockherd::worker
