#include "worker/websocket_session.hpp"

#include <random>

#include <spdlog/spdlog.h>

#include "worker/worker.hpp"

namespace sockherd::worker {
namespace {

constexpr std::chrono::seconds handshake_timeout{10};

} // namespace

websocket_session::websocket_session(worker& w, tcp::socket socket, tcp::endpoint peer)
    : worker_(w), ws_(std::move(socket)), peer_(peer), drain_timer_(ws_.get_executor()) {}

websocket_session::~websocket_session() {
    if (registered_)
        worker_.remove(*this, true);
}

void websocket_session::run(request req) {
    worker_.add(*this, true);
    registered_ = true;
    ++worker_.stats().ws_sessions_total;

    const auto& cfg = worker_.cfg();
    beast::get_lowest_layer(ws_).expires_never(); // the websocket stream's own timeouts apply
    websocket::stream_base::timeout t{};
    t.handshake_timeout = handshake_timeout;
    t.idle_timeout = cfg.websocket.idle_timeout;
    t.keep_alive_pings = true; // a ping at half the idle timeout keeps quiet clients alive
    ws_.set_option(t);
    ws_.read_message_max(cfg.websocket.max_message_size);
    const unsigned slot = worker_.slot();
    ws_.set_option(websocket::stream_base::decorator([slot](websocket::response_type& res) {
        res.set(http::field::server, "sockherd");
        res.set("X-Sockherd-Worker", std::to_string(slot));
    }));
    ws_.async_accept(req, [self = shared_from_this()](error_code ec) { self->on_accept(ec); });
}

void websocket_session::on_accept(error_code ec) {
    if (ec) {
        ++worker_.stats().bad_requests;
        spdlog::debug("{}: WebSocket handshake failed: {}", peer_.address().to_string(), ec.message());
        return;
    }
    open_ = true;
    if (worker_.draining()) {
        do_close(websocket::close_code::going_away);
        return;
    }
    do_read();
}

void websocket_session::do_read() {
    ws_.async_read(buffer_, [self = shared_from_this()](error_code ec, std::size_t n) { self->on_read(ec, n); });
}

void websocket_session::on_read(error_code ec, std::size_t n) {
    if (ec)
        return fail(ec, "read");
    auto& stats = worker_.stats();
    ++stats.ws_messages_in;
    stats.bytes_in += n;
    if (close_pending_) {
        do_close(websocket::close_code::going_away);
        return;
    }
    ws_.text(ws_.got_text());
    writing_ = true;
    ws_.async_write(buffer_.data(), [self = shared_from_this()](error_code e, std::size_t w) { self->on_write(e, w); });
}

void websocket_session::on_write(error_code ec, std::size_t n) {
    writing_ = false;
    if (ec)
        return fail(ec, "write");
    ++worker_.stats().ws_messages_out;
    worker_.stats().bytes_out += n;
    buffer_.consume(buffer_.size());
    if (close_pending_) {
        do_close(websocket::close_code::going_away);
        return;
    }
    do_read();
}

// Closes with 1001 at the deadline, a little before it at random so that a node's clients do
// not all reconnect in the same millisecond.
void websocket_session::drain(clock::time_point deadline) {
    const auto now = clock::now();
    const auto window = deadline > now ? deadline - now : clock::duration::zero();
    const auto spread = std::min<clock::duration>(window / 10, std::chrono::seconds(1));
    static thread_local std::minstd_rand rng{std::random_device{}()};
    const auto jitter = spread.count() > 0
        ? clock::duration(std::uniform_int_distribution<clock::rep>(0, spread.count())(rng))
        : clock::duration::zero();
    drain_timer_.expires_at(deadline - jitter);
    drain_timer_.async_wait([self = shared_from_this()](error_code ec) {
        if (ec)
            return;
        if (!self->open_)
            return;
        if (self->writing_) {
            self->close_pending_ = true;
            return;
        }
        self->do_close(websocket::close_code::going_away);
    });
}

void websocket_session::do_close(websocket::close_code code) {
    if (!open_)
        return;
    open_ = false;
    close_pending_ = false;
    ws_.async_close(code, [self = shared_from_this()](error_code ec) {
        if (ec)
            spdlog::debug("{}: close handshake: {}", self->peer_.address().to_string(), ec.message());
    });
}

void websocket_session::abort() {
    drain_timer_.cancel();
    error_code ignored;
    beast::get_lowest_layer(ws_).socket().close(ignored);
}

void websocket_session::fail(error_code ec, std::string_view what) {
    open_ = false;
    drain_timer_.cancel();
    if (ec == websocket::error::closed || ec == net::error::operation_aborted || ec == net::error::eof ||
        ec == net::error::connection_reset || ec == beast::error::timeout)
        return;
    if (ec == websocket::error::message_too_big) {
        ++worker_.stats().limit_hits;
        spdlog::info("{}: WebSocket message over max_message_size ({} bytes); closed with 1009",
                     peer_.address().to_string(), worker_.cfg().websocket.max_message_size);
        return;
    }
    spdlog::debug("{}: WebSocket {}: {}", peer_.address().to_string(), what, ec.message());
}

} // namespace sockherd::worker
