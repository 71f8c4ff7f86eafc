// GCC 12 at -O3 sees a "potential null pointer dereference" inside Asio's own epoll reactor
// (scheduler::compensating_work_started, reached from descriptor_state::do_complete): a false
// positive in a system header that -Werror would turn into a failed Release build.
// Asio is included (first) here, with that warning off for its code alone.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wnull-dereference"
#include "common/net.hpp"
#pragma GCC diagnostic pop

#include "worker/websocket_session.hpp"

#include <openssl/evp.h>
#include <openssl/sha.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <random>

#include <spdlog/spdlog.h>

#include "worker/json_ops.hpp"
#include "worker/worker.hpp"

namespace sockherd::worker {
namespace {

using kind = ws::frame_parser::event_kind;

// The opening handshake's write and the closing handshake, each.
constexpr std::chrono::seconds handshake_timeout{10};

// Plain sessions read into one buffer per worker (each worker is single-threaded) once the poller
// says their socket is readable, and handle everything in it before returning: only a message
// that is not whole yet is copied out, into the session's own buffer, which is released once it
// is handled.
constexpr std::size_t shared_read_size = 64 * 1024;
constexpr int max_read_rounds = 4; // per pass; then other sessions get their turn

// A TLS session reads into a buffer of its own: small while messages are small, larger while a
// read fills it.
constexpr std::uint32_t tls_read_small = 2 * 1024;
constexpr std::uint32_t tls_read_large = 16 * 1024;
constexpr std::size_t tls_write_batch = 64 * 1024; // frames copied together for one TLS write

constexpr std::size_t max_iov = 128;  // iovecs per sendmsg
constexpr int max_write_rounds = 16;  // sendmsg calls per flush; then the next turn

constexpr std::array<std::uint8_t, 2> ping_frame{0x89, 0x00};

std::uint8_t* shared_read_buffer() {
    static std::array<std::uint8_t, shared_read_size> buffer;
    return buffer.data();
}

// Sessions with frames queued during this event-loop turn. One posted handler writes them all
// once the turn's other handlers have run, so that what a turn queues for a socket is one gather
// write. One list per worker process. It does not keep sessions alive: one that ended meanwhile
// is skipped.
struct pending_flush {
    std::weak_ptr<void> session;
    void (*run)(void*);
};

std::vector<pending_flush>& flush_list() {
    static std::vector<pending_flush> list;
    return list;
}

} // namespace

void flush_pending_writes() {
    static std::vector<pending_flush> batch;
    batch.swap(flush_list()); // flushes that queue more go into the next round
    for (auto& f : batch)
        if (const auto session = f.session.lock())
            f.run(session.get());
    batch.clear();
}

namespace {

void add_flush(const net::io_context::executor_type& ex, pending_flush f) {
    auto& list = flush_list();
    list.push_back(std::move(f));
    if (list.size() == 1)
        net::post(ex, &flush_pending_writes);
}

net::io_context& context_of(const net::any_io_executor& ex) {
    // Every stream of a worker runs on the worker's one io_context.
    return static_cast<net::io_context&>(net::query(ex, net::execution::context_as<net::execution_context&>));
}

// Sec-WebSocket-Accept for `key` (RFC 6455 section 4.2.2).
std::array<char, 28> make_accept_key(std::string_view key) {
    static constexpr std::string_view guid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    std::array<unsigned char, 24 + guid.size()> in{};
    const std::size_t n = std::min<std::size_t>(key.size(), 24);
    std::memcpy(in.data(), key.data(), n);
    std::memcpy(in.data() + n, guid.data(), guid.size());
    unsigned char digest[SHA_DIGEST_LENGTH];
    SHA1(in.data(), n + guid.size(), digest);
    unsigned char b64[29]; // 28 characters and a NUL
    EVP_EncodeBlock(b64, digest, SHA_DIGEST_LENGTH);
    std::array<char, 28> out{};
    std::memcpy(out.data(), b64, out.size());
    return out;
}

std::string response_head(http::status status, unsigned slot) {
    std::string s = "HTTP/1.1 " + std::to_string(static_cast<unsigned>(status)) + " ";
    const auto reason = http::obsolete_reason(status);
    s.append(reason.data(), reason.size());
    s += "\r\nServer: sockherd\r\nX-Sockherd-Worker: " + std::to_string(slot) + "\r\n";
    return s;
}

ws::out_frame bytes_frame(std::shared_ptr<const std::string> owned, bool message) {
    ws::out_frame f;
    f.data = reinterpret_cast<const std::uint8_t*>(owned->data());
    f.size = owned->size();
    f.payload = message ? 0 : f.size;
    f.message = message;
    f.owner = std::move(owned);
    return f;
}

// A frame of `op` carrying a copy of `payload`: one allocation, the header kept in the entry.
ws::out_frame copied_frame(ws::opcode op, std::string_view payload, bool message) {
    ws::out_frame f;
    if (!payload.empty()) {
        auto buf = std::make_shared_for_overwrite<std::uint8_t[]>(payload.size());
        std::memcpy(buf.get(), payload.data(), payload.size());
        f.data = buf.get();
        f.owner = std::move(buf);
    }
    f.size = payload.size();
    f.head_size = static_cast<std::uint8_t>(ws::encode_header(f.head.data(), op, payload.size()));
    f.payload = message ? f.size : f.wire_size();
    f.message = message;
    return f;
}

bool quiet_error(error_code ec) {
    return ec == net::error::operation_aborted || ec == net::error::eof || ec == net::error::connection_reset ||
        ec == net::error::broken_pipe || ec == net::ssl::error::stream_truncated;
}

} // namespace

template <class Stream>
auto websocket_session<Stream>::initial_stream(Stream& s) -> stream_type {
    if constexpr (with_tls)
        return std::move(s);
    else
        return unique_fd(); // the descriptor moves in below
}

// `s` is the stream as initialised (TLS: `original` moved into it), `original` the one given.
template <class Stream>
auto websocket_session<Stream>::executor_of(stream_type& s, Stream& original) -> executor_type {
    if constexpr (with_tls)
        return context_of(beast::get_lowest_layer(s).get_executor()).get_executor();
    else
        return context_of(original.get_executor()).get_executor();
}

template <class Stream>
websocket_session<Stream>::websocket_session(worker& w, Stream stream, std::shared_ptr<net::ssl::context> tls,
                                             tcp::endpoint peer, ws_mode mode, std::string channel,
                                             std::string route_path, ip_claim claim)
    : worker_(w), stream_(initial_stream(stream)), timer_(executor_of(stream_, stream)), peer_(peer),
      route_path_(std::move(route_path)), channel_(std::move(channel)), ip_claim_(std::move(claim)), mode_(mode) {
    if constexpr (with_tls) {
        tls_.context = std::move(tls);
    } else {
        // Off the beast stream (its timers and state are not needed here) and out of Asio's
        // reactor: the poller watches the descriptor once the handshake is answered.
        tcp::socket sock = stream.release_socket();
        error_code ec;
        const int fd = sock.release(ec);
        if (!ec) {
            stream_.reset(fd);
            int on = 1;
            if (::ioctl(fd, FIONBIO, &on) != 0)
                ec.assign(errno, boost::system::system_category());
        }
        if (ec) {
            spdlog::debug("{}: WebSocket socket hand-over: {}", peer_.address().to_string(), ec.message());
            phase_ = phase::done;
        }
    }
}

template <class Stream>
websocket_session<Stream>::~websocket_session() {
    if constexpr (!with_tls)
        if (watched_)
            worker_.readiness().remove(stream_.get(), *this);
    if (mode_ == ws_mode::pubsub_raw && raw_subscribed_)
        worker_.unsubscribe(channel_, *this);
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

// ---- the handshake ------------------------------------------------------------------------------

template <class Stream>
void websocket_session<Stream>::run(const request& req) {
    worker_.add(*this, true);
    registered_ = true;
    ++worker_.stats().ws_sessions_total;
    if (phase_ == phase::done)
        return close_socket();

    // What the http_session has not checked (Beast's accept used to): the rest of RFC 6455 4.2.1.
    const auto key = req[http::field::sec_websocket_key];
    if (req.version() != 11)
        return reject_handshake(http::status::bad_request, "not HTTP/1.1");
    if (req.method() != http::verb::get)
        return reject_handshake(http::status::bad_request, "not a GET");
    if (req.count(http::field::host) == 0)
        return reject_handshake(http::status::bad_request, "no Host header");
    if (!http::token_list(req[http::field::connection]).exists("upgrade"))
        return reject_handshake(http::status::bad_request, "no Connection: upgrade");
    if (!http::token_list(req[http::field::upgrade]).exists("websocket"))
        return reject_handshake(http::status::bad_request, "no Upgrade: websocket");
    if (key.empty() || key.size() > 24)
        return reject_handshake(http::status::bad_request, "bad Sec-WebSocket-Key");
    if (req.count(http::field::sec_websocket_version) == 0)
        return reject_handshake(http::status::bad_request, "no Sec-WebSocket-Version");
    if (req[http::field::sec_websocket_version] != "13")
        return reject_handshake(http::status::upgrade_required, "Sec-WebSocket-Version is not 13");

    parser_ = ws::frame_parser(worker_.cfg().websocket.max_message_size);
    const accept_key accept = make_accept_key({key.data(), key.size()});
    if (mode_ == ws_mode::pubsub_raw) {
        // Subscribed before the handshake answers: when the client sees 101, every message
        // published anywhere in the node from then on reaches it.
        subscribe(channel_, false);
        worker_.after_interest_confirmed([self = this->shared_from_this(), accept] { self->do_accept(accept); });
        return;
    }
    do_accept(accept);
}

template <class Stream>
void websocket_session<Stream>::reject_handshake(http::status status, std::string_view why) {
    worker_.reject(rejection::ws_bad_handshake);
    spdlog::info("{}: bad WebSocket handshake on {} ({}); refused", peer_.address().to_string(), route_path_, why);
    auto res = std::make_shared<std::string>(response_head(status, worker_.slot()));
    if (status == http::status::upgrade_required)
        *res += "Sec-WebSocket-Version: 13\r\n";
    *res += "Connection: close\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: " +
        std::to_string(why.size() + 1) + "\r\n\r\n";
    res->append(why);
    *res += '\n';
    queue_.push(bytes_frame(std::move(res), false));
    responded_ = true;
    close_queued_ = true; // nothing else goes out; the connection ends once this is written
    failed_ = true;
    close_requested_ = clock::now();
    phase_ = phase::closing;
    schedule_timer();
    flush();
}

template <class Stream>
void websocket_session<Stream>::do_accept(const accept_key& key) {
    if (phase_ != phase::handshake)
        return; // aborted meanwhile
    const auto& cfg = worker_.cfg();
    auto res = std::make_shared<std::string>(response_head(http::status::switching_protocols, worker_.slot()));
    *res += "Upgrade: websocket\r\nConnection: upgrade\r\nSec-WebSocket-Accept: ";
    res->append(key.data(), key.size());
    *res += "\r\n\r\n";
    queue_.insert(0, bytes_frame(std::move(res), false)); // before deliveries queued meanwhile
    responded_ = true;
    accepted_ = true;
    opened_at_ = last_heard_ = clock::now();
    if (cfg.websocket.ping_interval.count() > 0)
        next_ping_ = opened_at_ + cfg.websocket.ping_interval;
    if (cfg.log.access)
        spdlog::info("{} \"GET {}{}\" 101 websocket", peer_.address().to_string(), route_path_, channel_);
    if (close_queued_) { // cut off as a slow consumer, or drained, before the handshake finished
        phase_ = phase::closing;
    } else {
        phase_ = phase::open;
        if (worker_.node_stopping()) {
            close_with(ws::close_code::going_away, "server is draining");
        } else {
            if (worker_.draining())
                drain(worker_.drain_deadline()); // this worker retires: 1001 by its deadline, like the others
            if (mode_ == ws_mode::pubsub_json) {
                // Says which worker serves this connection (shown by the demo chat; handy when debugging).
                const std::string welcome = "{\"event\":\"welcome\",\"worker\":" + std::to_string(worker_.slot()) + "}";
                queue_.insert(1, copied_frame(ws::opcode::text, welcome, true));
            }
        }
    }
    do_read();
    schedule_timer();
    flush(); // the 101, the welcome, and deliveries that arrived during the handshake
}

// ---- reading ------------------------------------------------------------------------------------

template <class Stream>
bool websocket_session<Stream>::should_read() const {
    if (phase_ == phase::done)
        return false;
    if constexpr (with_tls)
        return !peer_closed_ && !failed_ && !torn_down_; // then the TLS shutdown reads what is left
    else
        return true; // to the end of the stream, discarding what follows a close
}

template <class Stream>
void websocket_session<Stream>::do_read() {
    if (reading_ || !should_read())
        return;
    reading_ = true;
    if constexpr (with_tls) {
        auto& t = tls_;
        if (!t.read_buffer) {
            t.read_size = tls_read_small;
            t.read_buffer = std::make_unique_for_overwrite<std::uint8_t[]>(t.read_size);
        }
        stream_.async_read_some(net::buffer(t.read_buffer.get(), t.read_size),
                                [self = this->shared_from_this()](error_code ec, std::size_t n) {
                                    self->on_tls_read(ec, n);
                                });
    } else {
        // From now on the poller calls on_ready when bytes arrive; what is there already is read
        // at once.
        if (!watch())
            return;
        read_pass();
    }
}

// Plain: registers the socket with the worker's poller (once) and holds the session alive while
// it is registered. False (and the connection closed) if that fails.
template <class Stream>
bool websocket_session<Stream>::watch() {
    if constexpr (!with_tls) {
        if (watched_)
            return true;
        error_code ec;
        if (phase_ == phase::done || !worker_.readiness().add(stream_.get(), *this, ec)) {
            if (ec)
                spdlog::warn("{}: cannot watch the WebSocket's socket: {}", peer_.address().to_string(), ec.message());
            close_socket();
            return false;
        }
        watched_ = true;
        self_ = this->shared_from_this();
    }
    return true;
}

template <class Stream>
void websocket_session<Stream>::on_ready(std::uint32_t events) {
    if constexpr (!with_tls) {
        if (phase_ == phase::done)
            return;
        // The peer's FIN or an error can come with the last bytes in one edge, and no edge after:
        // from then on a read pass goes on to the end of the stream (or the error).
        if ((events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0)
            peer_hung_up_ = true;
        if (reading_ && (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0)
            read_pass();
        if (phase_ != phase::done && writing_ && (events & (EPOLLOUT | EPOLLHUP | EPOLLERR)) != 0) {
            writing_ = false;
            flush();
        }
    }
}

// Plain: reads until the socket is empty (a recv returns less than it asked for: bytes arriving
// later are a new edge for the poller) or this pass's share is used (then another turn). Once the
// peer hung up, a short read is not the end: reading goes on to the EOF (or error) behind it.
template <class Stream>
void websocket_session<Stream>::read_pass() {
    if constexpr (!with_tls) {
        std::uint8_t* buffer = shared_read_buffer();
        for (int round = 0; round < max_read_rounds; ++round) {
            const ssize_t n = ::recv(stream_.get(), buffer, shared_read_size, 0);
            if (n < 0) {
                if (errno == EINTR)
                    continue;
                if (errno == EAGAIN || errno == EWOULDBLOCK)
                    return;
                return on_read_error(error_code(errno, boost::system::system_category()));
            }
            if (n == 0) {
                // The client closed its sending side: what this pass answered still goes out
                // (as far as the socket takes it now), then the connection ends.
                flush();
                return on_read_error(net::error::eof);
            }
            on_bytes(buffer, static_cast<std::size_t>(n));
            if (phase_ == phase::done)
                return;
            if (static_cast<std::size_t>(n) < shared_read_size && !peer_hung_up_)
                return;
        }
        worker_.readiness().again(*this);
    }
}

template <class Stream>
void websocket_session<Stream>::on_tls_read(error_code ec, std::size_t n) {
    reading_ = false;
    if (phase_ == phase::done)
        return;
    if (ec)
        return on_read_error(ec);
    if constexpr (with_tls) {
        auto& t = tls_;
        on_bytes(t.read_buffer.get(), n);
        if (phase_ == phase::done)
            return;
        if (!should_read()) {
            t.read_buffer.reset();
            return maybe_teardown();
        }
        if (n == t.read_size && t.read_size < tls_read_large) {
            t.read_buffer.reset(); // more is coming: a larger buffer
            t.read_size = tls_read_large;
        } else if (n < tls_read_small && t.read_size > tls_read_small) {
            t.read_buffer.reset(); // quiet again: back to a small one
        }
        do_read();
    }
}

template <class Stream>
void websocket_session<Stream>::on_read_error(error_code ec) {
    if (!quiet_error(ec))
        spdlog::debug("{}: WebSocket read: {}", peer_.address().to_string(), ec.message());
    close_socket();
}

template <class Stream>
void websocket_session<Stream>::on_bytes(std::uint8_t* data, std::size_t n) {
    // A message (or control frame) whose every byte is in `data` is handled where it lies; only
    // one that is not is copied, piece by piece, into message_ (control_).
    bool whole_message = false;
    bool whole_control = false;
    std::string_view message;
    std::string_view control;
    std::size_t pos = 0;
    while (!parser_.failed() && !parser_.closed() && phase_ != phase::done) {
        std::size_t used = 0;
        const auto e = parser_.next(data + pos, n - pos, used);
        pos += used;
        switch (e.kind) {
        case kind::need_more: return;
        case kind::header:
            if (ws::is_control(e.op)) {
                whole_control = e.length <= n - pos;
                control = {};
            } else {
                whole_message = e.op != ws::opcode::continuation && e.fin && e.length <= n - pos;
                message = {};
                if (!whole_message) // grows with what arrives, not with what the header promises
                    message_.reserve(message_.size() + std::min<std::uint64_t>(e.length, shared_read_size));
            }
            break;
        case kind::payload: {
            const std::string_view bytes(reinterpret_cast<const char*>(e.data), e.size);
            if (ws::is_control(e.op) && whole_control)
                control = bytes;
            else if (ws::is_control(e.op))
                control_.append(bytes);
            else if (whole_message)
                message = bytes;
            else
                message_.append(bytes);
            break;
        }
        case kind::message_end:
            on_message(e.op, whole_message ? message : std::string_view(message_), whole_message ? nullptr : &message_);
            whole_message = false;
            break;
        case kind::control:
            on_control(e, whole_control ? control : std::string_view(control_));
            std::string().swap(control_);
            break;
        case kind::error: on_protocol_error(e); return;
        }
    }
}

// `payload` is where the message lies; `owned`, when not null, is the buffer holding it, which
// may be given away (and is empty afterwards).
template <class Stream>
void websocket_session<Stream>::on_message(ws::opcode op, std::string_view payload, std::string* owned) {
    last_heard_ = clock::now();
    auto& stats = worker_.stats();
    ++stats.ws_messages_in;
    stats.bytes_in += payload.size();
    const bool binary = op == ws::opcode::binary;
    if (phase_ == phase::open) {
        switch (mode_) {
        case ws_mode::echo:
            if (owned) { // the buffer it arrived in goes out as it is; the header stays in the entry
                auto s = std::make_shared<std::string>(std::move(*owned));
                ws::out_frame f;
                f.data = reinterpret_cast<const std::uint8_t*>(s->data());
                f.size = f.payload = s->size();
                f.head_size = static_cast<std::uint8_t>(ws::encode_header(f.head.data(), op, s->size()));
                f.owner = std::move(s);
                enqueue(std::move(f));
            } else {
                enqueue(copied_frame(op, payload, true));
            }
            break;
        case ws_mode::pubsub_raw:
            worker_.publish(std::make_shared<const pubsub_message>(
                pubsub_message{channel_, binary ? payload_kind::binary : payload_kind::text,
                               owned ? std::move(*owned) : std::string(payload)}));
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
    }
    if (owned)
        std::string().swap(*owned); // an idle connection keeps no message buffer
}

template <class Stream>
void websocket_session<Stream>::on_control(const ws::frame_parser::event& e, std::string_view payload) {
    last_heard_ = clock::now(); // pings and pongs are signs of life too
    switch (e.op) {
    case ws::opcode::ping:
        if (phase_ == phase::open && !close_queued_)
            enqueue(copied_frame(ws::opcode::pong, payload, false));
        break;
    case ws::opcode::close:
        peer_closed_ = true;
        // Answered with the client's own code, as Beast did; the connection then ends.
        close_with(e.code == ws::close_code::none ? ws::close_code::normal : e.code, {});
        maybe_teardown();
        break;
    default: break;
    }
}

template <class Stream>
void websocket_session<Stream>::on_protocol_error(const ws::frame_parser::event& e) {
    failed_ = true;
    const auto client = peer_.address().to_string();
    switch (e.code) {
    case ws::close_code::too_big:
        worker_.reject(rejection::ws_message_too_big);
        spdlog::info("{}: WebSocket message over max_message_size ({} bytes); closed with 1009", client,
                     worker_.cfg().websocket.max_message_size);
        break;
    case ws::close_code::invalid_payload:
        worker_.reject(rejection::ws_invalid_utf8);
        spdlog::info("{}: WebSocket text that is not UTF-8 ({}); closed with 1007", client, e.reason);
        break;
    default:
        worker_.reject(rejection::ws_protocol_error);
        spdlog::info("{}: WebSocket protocol violation ({}); closed with 1002", client, e.reason);
        break;
    }
    close_with(e.code, e.reason);
    maybe_teardown();
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
    const auto subscribed = std::find(subscriptions_.begin(), subscriptions_.end(), op.channel);
    switch (op.kind) {
    case json_ops::op_kind::subscribe:
        if (subscribed == subscriptions_.end() &&
            subscriptions_.size() >= worker_.cfg().websocket.max_subscriptions) {
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
        if (subscribed != subscriptions_.end()) {
            subscriptions_.erase(subscribed);
            worker_.unsubscribe(op.channel, *this);
        }
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
    if (mode_ == ws_mode::pubsub_raw) {
        if (!raw_subscribed_)
            worker_.subscribe(channel, *this);
        raw_subscribed_ = true;
    } else if (std::find(subscriptions_.begin(), subscriptions_.end(), channel) == subscriptions_.end()) {
        subscriptions_.push_back(channel);
        worker_.subscribe(channel, *this);
    }
    if (!reply)
        return;
    worker_.after_interest_confirmed([weak = this->weak_from_this(), channel] {
        if (auto self = weak.lock(); self && self->phase_ == phase::open)
            self->enqueue_text(json_ops::encode_event("subscribed", channel));
    });
}

// ---- writing ------------------------------------------------------------------------------------

template <class Stream>
void websocket_session<Stream>::deliver(const broadcast& b) {
    // The frame every subscriber of this format sends: built once, shared by every queue.
    const auto& frame = b.frame(format());
    ws::out_frame f = bytes_frame(frame, true);
    f.payload = mode_ == ws_mode::pubsub_json ? b.json_form()->size() : b.message()->payload.size();
    enqueue(std::move(f));
}

template <class Stream>
void websocket_session<Stream>::enqueue_text(std::string text) {
    enqueue(copied_frame(ws::opcode::text, text, true));
}

template <class Stream>
void websocket_session<Stream>::enqueue(ws::out_frame f) {
    if (close_queued_ || phase_ == phase::done || (responded_ && phase_ != phase::open))
        return; // closing: nothing more goes out
    const std::size_t limit = worker_.cfg().websocket.send_queue_limit;
    if (queue_.payload_bytes() + f.payload > limit && !queue_.empty()) {
        // A slow consumer: cut it off rather than let its queue grow. Closing waits for the flush,
        // so this is safe from inside the hub's delivery loop.
        auto& stats = worker_.stats();
        ++stats.slow_consumer_disconnects;
        spdlog::info("{}: send queue over send_queue_limit ({} bytes); disconnecting a slow consumer with 1008",
                     peer_.address().to_string(), limit);
        stats.send_queue_drops += queue_.drop_unstarted(); // not a frame being written: it must end whole
        close_with(ws::close_code::policy_violation, "slow consumer");
        return;
    }
    queue_.push(std::move(f));
    schedule_flush();
}

template <class Stream>
void websocket_session<Stream>::schedule_flush() {
    if (flush_queued_ || !responded_ || writing_ || phase_ == phase::done)
        return;
    flush_queued_ = true;
    add_flush(timer_.get_executor(), {this->weak_from_this(), [](void* p) {
                                          auto* self = static_cast<websocket_session*>(p);
                                          self->flush_queued_ = false;
                                          self->flush();
                                      }});
}

template <class Stream>
void websocket_session<Stream>::flush() {
    if (!responded_ || writing_ || phase_ == phase::done)
        return;
    if (ping_due_) {
        // Between two frames, never inside one: a ping waits for at most the frame being written.
        ping_due_ = false;
        if (phase_ == phase::open && !close_queued_) {
            ws::out_frame f;
            f.data = ping_frame.data();
            f.size = f.payload = ping_frame.size();
            f.message = false;
            queue_.insert(0, std::move(f));
        }
    }
    if constexpr (with_tls)
        flush_tls();
    else
        flush_plain();
}

// Everything queued, in as few sendmsg calls as the kernel's buffer allows.
template <class Stream>
void websocket_session<Stream>::flush_plain() {
    if constexpr (!with_tls) {
        const int fd = stream_.get();
        for (int round = 0; round < max_write_rounds && !queue_.empty(); ++round) {
            iovec iov[max_iov];
            const std::size_t k = queue_.gather(iov, max_iov);
            std::size_t want = 0;
            for (std::size_t i = 0; i < k; ++i)
                want += iov[i].iov_len;
            msghdr msg{};
            msg.msg_iov = iov;
            msg.msg_iovlen = k;
            const ssize_t n = ::sendmsg(fd, &msg, MSG_NOSIGNAL);
            if (n < 0) {
                if (errno == EINTR)
                    continue;
                if (errno == EAGAIN || errno == EWOULDBLOCK)
                    return wait_writable();
                return on_write_error(error_code(errno, boost::system::system_category()));
            }
            queue_.consume(static_cast<std::size_t>(n), [this](const ws::out_frame& f) { count_sent(f); });
            if (static_cast<std::size_t>(n) < want)
                return wait_writable(); // the kernel's buffer is full
        }
        if (!queue_.empty())
            return schedule_flush(); // more than a turn's share: the rest in the next turn
        after_writes();
    }
}

// TLS: one buffer per write (each buffer of a sequence would be a TLS record of its own): a lone
// whole frame as it is, else up to tls_write_batch bytes of frames copied together.
template <class Stream>
void websocket_session<Stream>::flush_tls() {
    if constexpr (with_tls) {
        if (queue_.empty())
            return after_writes();
        auto& t = tls_;
        t.write_messages = 0;
        t.write_bytes = 0;
        const auto count = [&t](const ws::out_frame& f) {
            if (f.message) {
                ++t.write_messages;
                t.write_bytes += f.payload;
            }
        };
        iovec iov[max_iov];
        const std::size_t k = queue_.gather(iov, max_iov);
        const std::uint8_t* data = nullptr;
        std::size_t size = 0;
        const auto& front = queue_.front();
        if (!queue_.front_started() && front.head_size == 0 && (k == 1 || front.size >= tls_write_batch)) {
            t.write_owner = front.owner;
            data = front.data;
            size = front.size;
        } else {
            std::size_t total = 0;
            std::size_t used = 0;
            while (used < k && (total == 0 || total + iov[used].iov_len <= tls_write_batch))
                total += iov[used++].iov_len;
            t.write_copy = std::make_unique_for_overwrite<std::uint8_t[]>(total);
            std::size_t at = 0;
            for (std::size_t i = 0; i < used; ++i) {
                if (iov[i].iov_len == 0)
                    continue; // an empty payload has no storage
                std::memcpy(t.write_copy.get() + at, iov[i].iov_base, iov[i].iov_len);
                at += iov[i].iov_len;
            }
            data = t.write_copy.get();
            size = total;
        }
        queue_.consume(size, count); // out of the queue now: a slow-consumer cut keeps what is in flight
        writing_ = true;
        net::async_write(stream_, net::buffer(data, size),
                         [self = this->shared_from_this()](error_code ec, std::size_t) { self->on_tls_written(ec); });
    }
}

template <class Stream>
void websocket_session<Stream>::on_tls_written(error_code ec) {
    writing_ = false;
    if constexpr (with_tls) {
        auto& t = tls_;
        t.write_copy.reset();
        t.write_owner.reset();
        if (phase_ == phase::done)
            return;
        if (ec)
            return on_write_error(ec);
        worker_.stats().ws_messages_out += t.write_messages;
        worker_.stats().bytes_out += t.write_bytes;
        flush();
    }
}

// Plain: the kernel's buffer is full; the poller's EPOLLOUT edge (on_ready) resumes the flush.
template <class Stream>
void websocket_session<Stream>::wait_writable() {
    if constexpr (!with_tls) {
        writing_ = true;
        watch(); // a refusal's answer is written before reads start: the socket may not be watched yet
    }
}

template <class Stream>
void websocket_session<Stream>::on_write_error(error_code ec) {
    if (!quiet_error(ec))
        spdlog::debug("{}: WebSocket write: {}", peer_.address().to_string(), ec.message());
    close_socket();
}

template <class Stream>
void websocket_session<Stream>::count_sent(const ws::out_frame& f) {
    if (f.message) {
        ++worker_.stats().ws_messages_out;
        worker_.stats().bytes_out += f.payload;
    }
}

// The queue is empty: if the close frame (or a refusal) was the last of it, it is written.
template <class Stream>
void websocket_session<Stream>::after_writes() {
    if (!queue_.empty() || !close_queued_ || close_sent_)
        return;
    close_sent_ = true;
    if (!accepted_)
        return close_socket(); // a refused handshake: the answer is all there is
    maybe_teardown();
}

// ---- closing ------------------------------------------------------------------------------------

// Queues a close frame after the frame being written (the rest is dropped); the connection ends
// once the client answers it, or handshake_timeout after this call.
template <class Stream>
void websocket_session<Stream>::close_with(std::uint16_t code, std::string_view reason) {
    if (close_queued_ || phase_ == phase::done)
        return;
    close_queued_ = true;
    close_requested_ = clock::now();
    ping_due_ = false;
    queue_.drop_unstarted();
    auto frame = std::make_shared_for_overwrite<std::uint8_t[]>(ws::max_close_frame);
    ws::out_frame f;
    f.data = frame.get();
    f.size = f.payload = ws::encode_close(frame.get(), code, reason);
    f.message = false;
    f.owner = std::move(frame);
    queue_.push(std::move(f));
    if (phase_ == phase::open)
        phase_ = phase::closing;
    schedule_timer();
    schedule_flush();
}

// Once both close frames are exchanged (or ours is written after the client broke the protocol),
// the connection ends: plain, a FIN, then whatever still arrives is read and dropped until the
// client's FIN; TLS, close_notify both ways. Either within handshake_timeout of the close.
template <class Stream>
void websocket_session<Stream>::maybe_teardown() {
    if (torn_down_ || phase_ == phase::done || !close_sent_ || !(peer_closed_ || failed_))
        return;
    if constexpr (with_tls) {
        if (reading_)
            return; // on_tls_read comes back here
        torn_down_ = true;
        tls_.read_buffer.reset();
        stream_.async_shutdown([self = this->shared_from_this()](error_code) { self->close_socket(); });
    } else {
        torn_down_ = true;
        ::shutdown(stream_.get(), SHUT_WR);
    }
}

template <class Stream>
void websocket_session<Stream>::close_socket() {
    phase_ = phase::done;
    timer_.cancel();
    if constexpr (with_tls) {
        error_code ignored;
        auto& sock = beast::get_lowest_layer(stream_).socket();
        sock.shutdown(tcp::socket::shutdown_both, ignored);
        sock.close(ignored);
    } else {
        if (watched_) {
            worker_.readiness().remove(stream_.get(), *this);
            watched_ = false;
        }
        if (stream_) {
            ::shutdown(stream_.get(), SHUT_RDWR);
            stream_.reset();
        }
        if (self_) // not from inside this call: its callers still look at the session
            net::post(timer_.get_executor(), [self = std::move(self_)] {});
    }
}

template <class Stream>
void websocket_session<Stream>::abort() {
    close_socket();
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
    drain_at_ = deadline - jitter;
    if (phase_ != phase::done && !close_queued_)
        schedule_timer();
}

// ---- the timer ----------------------------------------------------------------------------------

template <class Stream>
void websocket_session<Stream>::schedule_timer() {
    if (phase_ == phase::done)
        return;
    auto at = clock::time_point::max();
    if (close_queued_) {
        at = close_requested_ + handshake_timeout;
    } else {
        at = drain_at_;
        if (phase_ == phase::open) {
            const auto& ws = worker_.cfg().websocket;
            at = std::min(at, last_heard_ + ws.idle_timeout);
            if (ws.ping_interval.count() > 0)
                at = std::min(at, next_ping_);
        }
    }
    if (at == clock::time_point::max())
        return;
    timer_.expires_at(at);
    timer_.async_wait([self = this->shared_from_this()](error_code ec) {
        if (!ec)
            self->on_timer();
    });
}

template <class Stream>
void websocket_session<Stream>::on_timer() {
    if (phase_ == phase::done)
        return;
    const auto now = clock::now();
    if (close_queued_) {
        if (now < close_requested_ + handshake_timeout)
            return schedule_timer();
        if (writing_ && !close_sent_ && accepted_) {
            // A close waits for a write the client never lets finish (it stopped reading but keeps
            // sending, so it never looks idle): drop it.
            spdlog::info("{}: a write stalled for {} s with a close pending; connection dropped",
                         peer_.address().to_string(), handshake_timeout.count());
        } else {
            spdlog::debug("{}: no closing handshake within {} s; connection dropped", peer_.address().to_string(),
                          handshake_timeout.count());
        }
        return close_socket();
    }
    if (now >= drain_at_)
        return close_with(ws::close_code::going_away, "server is shutting down");
    if (phase_ == phase::open) {
        const auto& ws = worker_.cfg().websocket;
        if (now - last_heard_ >= ws.idle_timeout) {
            worker_.reject(rejection::ws_pong_timeout);
            spdlog::info("{}: nothing from the client for idle_timeout ({} ms), not even a pong; disconnected",
                         peer_.address().to_string(), ws.idle_timeout.count());
            return close_socket(); // no closing handshake: the client has stopped answering
        }
        if (ws.ping_interval.count() > 0 && now >= next_ping_) {
            ping_due_ = true;
            next_ping_ = now + ws.ping_interval;
            schedule_flush();
        }
        if (queue_.empty() && !writing_)
            queue_.trim(); // quiet: give back what the queue grew to
    }
    schedule_timer();
}

template class websocket_session<plain_stream>;
template class websocket_session<tls_stream>;

} // namespace sockherd::worker
