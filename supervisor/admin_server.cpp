// The admin HTTP listener: see supervisor/admin_server.hpp.

#include "supervisor/admin_server.hpp"

#include <fcntl.h>

#include <cerrno>
#include <chrono>
#include <optional>
#include <sstream>
#include <system_error>
#include <unordered_set>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

namespace sockherd::supervisor {
namespace {

using clock = std::chrono::steady_clock;
using request = http::request<http::empty_body>; // no route takes a body, so none is ever read
using response = http::response<http::string_body>;

constexpr std::size_t max_connections = 64;
constexpr std::uint32_t max_header_bytes = 8 * 1024;
constexpr std::size_t max_buffer_bytes = 16 * 1024;       // header plus pipelined bytes
constexpr auto request_timeout = std::chrono::seconds(10); // first byte to whole header; also a write
constexpr auto idle_timeout = std::chrono::seconds(30);    // keep-alive wait for the next request
constexpr auto accept_retry_delay = std::chrono::milliseconds(100);
constexpr auto linger_timeout = std::chrono::seconds(2);
constexpr std::size_t linger_max_bytes = 64 * 1024;
constexpr auto log_interval = std::chrono::seconds(10);

std::string to_string(const tcp::endpoint& ep) {
    std::ostringstream s;
    s << ep;
    return s.str();
}

// Takes time that depends on the length of `given` only, never on where it differs from
// `expected` (a timing side channel would let a client guess the token byte by byte).
bool equal_constant_time(std::string_view given, std::string_view expected) {
    std::size_t diff = given.size() ^ expected.size();
    for (std::size_t i = 0; i < given.size(); ++i) {
        const auto e = expected.empty() ? 0u : static_cast<unsigned char>(expected[i % expected.size()]);
        diff |= static_cast<unsigned char>(given[i]) ^ e;
    }
    return diff == 0;
}

// `Authorization: Bearer <token>` (the scheme is case-insensitive, RFC 7235).
bool authorized(const request& req, std::string_view token) {
    if (token.empty())
        return true;
    const auto it = req.find(http::field::authorization);
    if (it == req.end())
        return false;
    std::string_view v = it->value();
    constexpr std::string_view scheme = "bearer ";
    if (v.size() < scheme.size() || !beast::iequals(v.substr(0, scheme.size()), scheme))
        return false;
    v.remove_prefix(scheme.size());
    while (!v.empty() && (v.front() == ' ' || v.front() == '\t'))
        v.remove_prefix(1);
    while (!v.empty() && (v.back() == ' ' || v.back() == '\t'))
        v.remove_suffix(1);
    return equal_constant_time(v, token);
}

// Logging for events a client can repeat at will (refused connections, wrong tokens): at most
// one line per interval, saying how many were left out.
class occasional_log {
public:
    // True when this occurrence is to be logged; `skipped` is then how many were not.
    bool due(std::uint64_t& skipped) {
        const auto now = clock::now();
        if (logged_ && now - last_ < log_interval) {
            ++skipped_;
            return false;
        }
        logged_ = true;
        last_ = now;
        skipped = std::exchange(skipped_, 0);
        return true;
    }

private:
    clock::time_point last_{};
    bool logged_ = false;
    std::uint64_t skipped_ = 0;
};

// " (and 12 more since the last message)" for an occasional_log line, or nothing.
std::string skipped_note(std::uint64_t skipped) {
    return skipped == 0 ? std::string() : " (and " + std::to_string(skipped) + " more since the last message)";
}

// A small response carrying the headers every admin response has.
response make_response(unsigned version, bool keep_alive, http::status status, std::string body,
                       std::string_view content_type = "text/plain; charset=utf-8") {
    response res{status, version};
    res.set(http::field::server, "sockherd");
    res.set(http::field::cache_control, "no-store");
    res.set(http::field::content_type, content_type);
    res.set("X-Content-Type-Options", "nosniff");
    res.keep_alive(keep_alive);
    res.body() = std::move(body);
    res.prepare_payload();
    return res;
}

std::string healthz_body(const node_snapshot& s) {
    nlohmann::ordered_json j;
    j["status"] = s.healthy() ? "ok" : "unhealthy";
    if (!s.healthy())
        j["reason"] = s.state != "running" ? "node is " + s.state : std::string("no worker is up");
    j["state"] = s.state;
    j["workers_up"] = s.workers_up;
    j["workers_configured"] = s.workers_configured;
    return j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace) + "\n";
}

} // namespace

struct admin_server::impl : std::enable_shared_from_this<impl> {
    class session;

    impl(net::io_context& ioc, options o, snapshot_fn fn);
    void do_accept();
    void on_accept(error_code ec, tcp::socket socket);
    void close();

    options opts;
    std::string address; // for messages
    snapshot_fn snapshot;
    tcp::acceptor acceptor;
    net::steady_timer retry_timer;
    bool open = true;
    bool started = false;
    std::unordered_set<session*> sessions;
    occasional_log refused_log, accept_error_log, auth_log;
};

// One admin connection: reads requests one after another (keep-alive), answers each from a fresh
// snapshot. Owned by shared_ptr captures of its own pending operations; registered with its
// server so close() can end it.
class admin_server::impl::session : public std::enable_shared_from_this<session> {
public:
    session(std::shared_ptr<impl> server, tcp::socket socket)
        : server_(std::move(server)), stream_(std::move(socket)), buffer_(max_buffer_bytes) {
        error_code ec;
        const auto ep = stream_.socket().remote_endpoint(ec);
        peer_ = ec ? std::string("unknown peer") : to_string(ep);
        server_->sessions.insert(this);
    }
    ~session() { server_->sessions.erase(this); }
    session(const session&) = delete;
    session& operator=(const session&) = delete;

    void run() { do_read_header(); }

    // Ends the connection; its pending operations complete with operation_aborted.
    void abort() { stream_.close(); }

private:
    // Between requests: wait for the first byte under the idle timeout, then read the whole
    // header under the request timeout, so a slow client cannot hold a request open.
    void do_wait_request() {
        if (!server_->open)
            return close();
        if (buffer_.size() > 0)
            return do_read_header(); // a pipelined request is already here
        stream_.expires_after(idle_timeout);
        stream_.async_read_some(buffer_.prepare(1024), [self = shared_from_this()](error_code ec, std::size_t n) {
            if (ec)
                return self->close(); // idle timeout, the client left, or close()
            self->buffer_.commit(n);
            self->do_read_header();
        });
    }

    void do_read_header() {
        parser_.emplace();
        parser_->header_limit(max_header_bytes);
        stream_.expires_after(request_timeout);
        http::async_read_header(stream_, buffer_, *parser_,
                                [self = shared_from_this()](error_code ec, std::size_t) { self->on_read_header(ec); });
    }

    void on_read_header(error_code ec) {
        if (ec == http::error::header_limit || ec == http::error::buffer_overflow) {
            spdlog::info("admin: {}: request header over {} bytes; 431", peer_, max_header_bytes);
            return reply_error(http::status::request_header_fields_too_large, "request header too large\n");
        }
        if (ec == beast::error::timeout) {
            // The stream has closed the socket already: nothing can be answered.
            spdlog::debug("admin: {}: no whole request within {} s; closing", peer_, request_timeout.count());
            return close();
        }
        if (ec && ec.category() == http::make_error_code(http::error::bad_target).category() &&
            ec != http::error::end_of_stream && ec != http::error::partial_message) {
            spdlog::debug("admin: {}: malformed request ({}); 400", peer_, ec.message());
            return reply_error(http::status::bad_request, "bad request\n");
        }
        if (ec)
            return close(); // the client left (end of stream, reset) or close() was called
        handle_request();
    }

    void handle_request() {
        const request& req = parser_->get();
        if (parser_->chunked() || parser_->content_length().value_or(0) > 0)
            return reply_error(http::status::payload_too_large, "no request body is accepted here\n");

        const unsigned version = req.version();
        const bool keep_alive = req.keep_alive();
        if (!authorized(req, server_->opts.token)) {
            if (std::uint64_t skipped = 0; server_->auth_log.due(skipped))
                spdlog::info("admin: {}: {} without the right bearer token; 401{}", peer_, req.target().substr(0, 200),
                             skipped_note(skipped));
            auto res = make_response(version, keep_alive, http::status::unauthorized, "bearer token required\n");
            res.set(http::field::www_authenticate, "Bearer realm=\"sockherd\"");
            return send(std::move(res), req.method());
        }
        if (req.method() != http::verb::get && req.method() != http::verb::head) {
            auto res = make_response(version, keep_alive, http::status::method_not_allowed, "method not allowed\n");
            res.set(http::field::allow, "GET, HEAD");
            return send(std::move(res), req.method());
        }
        std::string_view path = req.target();
        path = path.substr(0, path.find('?'));
        if (path == "/") {
            auto res = make_response(version, keep_alive, http::status::found, "see /status\n");
            res.set(http::field::location, "/status");
            return send(std::move(res), req.method());
        }
        if (path != "/status" && path != "/status.json" && path != "/metrics" && path != "/healthz")
            return send(make_response(version, keep_alive, http::status::not_found, "not found\n"), req.method());
        if (!server_->snapshot)
            return close(); // the server was closed while this request was read

        std::optional<response> res;
        try {
            const node_snapshot s = server_->snapshot();
            if (path == "/status") {
                res = make_response(version, keep_alive, http::status::ok, render_status_html(s),
                                    "text/html; charset=utf-8");
                // The page has no scripts: have the browser enforce that even if escaping had a hole.
                res->set("Content-Security-Policy",
                         "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'");
            } else if (path == "/status.json") {
                res = make_response(version, keep_alive, http::status::ok, render_status_json(s), "application/json");
            } else if (path == "/metrics") {
                res = make_response(version, keep_alive, http::status::ok, render_metrics(s),
                                    "text/plain; version=0.0.4; charset=utf-8");
            } else {
                res = make_response(version, keep_alive,
                                    s.healthy() ? http::status::ok : http::status::service_unavailable,
                                    healthz_body(s), "application/json");
            }
        } catch (const std::exception& e) {
            spdlog::error("admin: {}: cannot render {}: {}", peer_, path, e.what());
            res = make_response(version, keep_alive, http::status::internal_server_error, "status unavailable\n");
        }
        send(std::move(*res), req.method());
    }

    void send(response res, http::verb method) {
        if (!server_->open)
            res.keep_alive(false);
        if (method == http::verb::head)
            res.body().clear(); // Content-Length stays what GET would send
        spdlog::debug("admin: {}: {} {} -> {}", peer_, http::to_string(method), parser_->get().target().substr(0, 200),
                      res.result_int());
        response_ = std::move(res);
        stream_.expires_after(request_timeout);
        http::async_write(stream_, *response_, [self = shared_from_this()](error_code ec, std::size_t) {
            const bool close_after = self->response_->need_eof();
            self->response_.reset();
            if (ec || close_after)
                return self->close();
            self->do_wait_request();
        });
    }

    // For requests answered before they were read to the end: the stream is out of step, so the
    // answer closes the connection.
    void reply_error(http::status status, std::string body) {
        response_ = make_response(11, false, status, std::move(body));
        stream_.expires_after(request_timeout);
        http::async_write(stream_, *response_, [self = shared_from_this()](error_code ec, std::size_t) {
            self->response_.reset();
            if (ec)
                return self->close();
            self->linger();
        });
    }

    // The client may still be sending what we refused to read. Closing with unread input resets
    // the connection, which can destroy our answer before the client reads it; so stop writing,
    // read and discard for a bounded time and amount, then close (nginx's lingering close).
    void linger() {
        error_code ignored;
        stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
        stream_.expires_after(linger_timeout);
        do_discard();
    }

    void do_discard() {
        buffer_.consume(buffer_.size());
        stream_.async_read_some(buffer_.prepare(4096), [self = shared_from_this()](error_code ec, std::size_t n) {
            self->lingered_ += n;
            if (ec || self->lingered_ > linger_max_bytes)
                return self->close();
            self->do_discard();
        });
    }

    void close() {
        error_code ignored;
        stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
        stream_.close();
    }

    std::shared_ptr<impl> server_;
    beast::tcp_stream stream_;
    beast::flat_buffer buffer_;
    std::string peer_;
    std::optional<http::request_parser<http::empty_body>> parser_;
    std::optional<response> response_;
    std::size_t lingered_ = 0;
};

admin_server::impl::impl(net::io_context& ioc, options o, snapshot_fn fn)
    : opts(std::move(o)), address(to_string(opts.endpoint)), snapshot(std::move(fn)), acceptor(ioc),
      retry_timer(ioc) {
    error_code ec;
    const auto fail = [&](const char* what) {
        throw std::system_error(ec, "admin listener " + address + ": " + what);
    };
    acceptor.open(opts.endpoint.protocol(), ec);
    if (ec)
        fail("socket");
    // Asio does not open sockets close-on-exec: without this, workers would inherit the admin
    // socket (and every admin connection) and keep them open after the supervisor closed them.
    if (::fcntl(acceptor.native_handle(), F_SETFD, FD_CLOEXEC) != 0) {
        ec = error_code(errno, boost::system::system_category());
        fail("fcntl(FD_CLOEXEC)");
    }
    acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
    if (ec)
        fail("SO_REUSEADDR");
    if (opts.endpoint.address().is_v6()) {
        acceptor.set_option(net::ip::v6_only(true), ec);
        if (ec)
            fail("IPV6_V6ONLY");
    }
    acceptor.bind(opts.endpoint, ec);
    if (ec)
        fail("bind");
    acceptor.listen(net::socket_base::max_listen_connections, ec);
    if (ec)
        fail("listen");
    if (const auto bound = acceptor.local_endpoint(ec); !ec)
        address = to_string(bound); // port 0 becomes the real one
}

void admin_server::impl::do_accept() {
    acceptor.async_accept([self = shared_from_this()](error_code ec, tcp::socket socket) {
        self->on_accept(ec, std::move(socket));
    });
}

void admin_server::impl::on_accept(error_code ec, tcp::socket socket) {
    if (!open || ec == net::error::operation_aborted)
        return;
    if (ec) {
        // Out of descriptors (EMFILE) and the like: retrying at once would spin. Back off.
        if (std::uint64_t skipped = 0; accept_error_log.due(skipped))
            spdlog::warn("admin listener {}: accept failed: {}; retrying in {} ms{}", address, ec.message(),
                         accept_retry_delay.count(), skipped_note(skipped));
        retry_timer.expires_after(accept_retry_delay);
        retry_timer.async_wait([self = shared_from_this()](error_code e) {
            if (!e && self->open)
                self->do_accept();
        });
        return;
    }
    error_code ignored;
    if (::fcntl(socket.native_handle(), F_SETFD, FD_CLOEXEC) != 0) {
        socket.close(ignored);
    } else if (sessions.size() >= max_connections) {
        if (std::uint64_t skipped = 0; refused_log.due(skipped))
            spdlog::warn("admin listener {}: {} connections open already; closing new ones{}", address, max_connections,
                         skipped_note(skipped));
        socket.close(ignored);
    } else {
        std::make_shared<session>(shared_from_this(), std::move(socket))->run();
    }
    do_accept();
}

void admin_server::impl::close() {
    if (!open)
        return;
    open = false;
    snapshot = nullptr; // the supervisor may be gone by the time late handlers run
    retry_timer.cancel();
    error_code ignored;
    acceptor.close(ignored);
    // abort() completes nothing inline, so no session leaves the set while we walk a copy of it.
    const std::vector<session*> live(sessions.begin(), sessions.end());
    for (auto* s : live)
        s->abort();
}

admin_server::admin_server(net::io_context& ioc, options opts, snapshot_fn snapshot)
    : impl_(std::make_shared<impl>(ioc, std::move(opts), std::move(snapshot))) {}

admin_server::~admin_server() {
    impl_->close();
}

void admin_server::start() {
    if (impl_->started || !impl_->open)
        return;
    impl_->started = true;
    if (impl_->opts.token.empty() && !impl_->opts.endpoint.address().is_loopback())
        spdlog::warn("admin listener on {} without a token: anyone who can reach it can read the node's status",
                     impl_->address);
    else
        spdlog::info("admin listener on {}{}", impl_->address, impl_->opts.token.empty() ? "" : " (bearer token)");
    impl_->do_accept();
}

void admin_server::set_token(std::string token) { impl_->opts.token = std::move(token); }

void admin_server::close() {
    impl_->close();
}

tcp::endpoint admin_server::local_endpoint() const {
    error_code ec;
    return impl_->acceptor.local_endpoint(ec);
}

} // namespace sockherd::supervisor
