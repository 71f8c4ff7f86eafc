#include "worker/http_session.hpp"

#include <spdlog/spdlog.h>

#include "common/forwarded.hpp"
#include "common/proxy_protocol.hpp"
#include "worker/publish_api.hpp"
#include "worker/websocket_session.hpp"
#include "worker/worker.hpp"

namespace sockherd::worker {
namespace {

// A request target or header value for a log line: printable ASCII, at most 200 bytes.
std::string loggable(std::string_view s) {
    constexpr std::size_t max = 200;
    std::string out;
    out.reserve(std::min(s.size(), max));
    for (std::size_t i = 0; i < s.size() && i < max; ++i) {
        const auto c = static_cast<unsigned char>(s[i]);
        out += c >= 0x20 && c < 0x7F && c != '"' && c != '\\' ? static_cast<char>(c) : '?';
    }
    if (s.size() > max)
        out += "...";
    return out;
}

std::string_view view(beast::string_view s) { return {s.data(), s.size()}; }

// Every line of a header, joined with commas as HTTP allows: a proxy that adds its own line rather
// than extending the client's must not leave the client's (forgeable) first line to decide.
std::string all_values(const request& req, std::string_view name) {
    std::string out;
    const auto range = req.equal_range(beast::string_view(name.data(), name.size()));
    for (auto it = range.first; it != range.second; ++it) {
        if (!out.empty())
            out += ',';
        out.append(it->value().data(), it->value().size());
    }
    return out;
}

// 24 characters of base64 that decode to exactly 16 bytes: 21 full characters, one whose low four
// bits are zero (A, Q, g or w), and "==".
bool valid_websocket_key(std::string_view key) {
    constexpr std::string_view alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    if (key.size() != 24 || key.substr(22) != "==")
        return false;
    for (std::size_t i = 0; i < 22; ++i)
        if (alphabet.find(key[i]) == std::string_view::npos)
            return false;
    return std::string_view("AQgw").find(key[21]) != std::string_view::npos;
}

template <class Stream>
Stream make_stream(tcp::socket&& socket, net::ssl::context* tls) {
    if constexpr (is_tls<Stream>)
        return Stream(std::move(socket), *tls);
    else
        return Stream(std::move(socket));
}

} // namespace

template <class Stream>
http_session<Stream>::http_session(worker& w, tcp::socket socket, tcp::endpoint peer, std::uint16_t listener_id,
                                   std::shared_ptr<net::ssl::context> tls)
    : worker_(w), tls_(std::move(tls)), stream_(make_stream<Stream>(std::move(socket), tls_.get())),
      request_timer_(stream_.get_executor()), peer_(peer), listener_id_(listener_id), routes_(w.routes()) {
    const auto& listeners = w.cfg().listeners;
    proxy_protocol_ = listener_id < listeners.size() && listeners[listener_id].proxy_protocol;
}

template <class Stream>
http_session<Stream>::~http_session() {
    if (registered_)
        worker_.remove(*this, false);
}

template <class Stream>
void http_session<Stream>::run() {
    worker_.add(*this, false);
    registered_ = true;
    if (worker_.connection_count() > worker_.connection_limit()) {
        worker_.reject(rejection::worker_connections);
        spdlog::info("{}: worker holds {} connections, its limit (max_connections_per_worker); {}",
                     peer_.address().to_string(), worker_.connection_limit(), is_tls<Stream> ? "closed" : "503");
        if constexpr (is_tls<Stream>)
            return close();
        else
            return reply_error_and_close(http::status::service_unavailable, "server busy\n");
    }
    if (proxy_protocol_) {
        proxy_deadline_ = std::chrono::steady_clock::now() + worker_.cfg().limits.proxy_header_timeout;
        return do_read_proxy_header();
    }
    admit_client();
}

// A proxy_protocol listener: the PROXY header comes first, within proxy_header_timeout; the HTTP
// bytes read with it stay in buffer_ for the request parser.
template <class Stream>
void http_session<Stream>::do_read_proxy_header() {
    beast::get_lowest_layer(stream_).expires_at(proxy_deadline_); // for the whole header, not per read
    // Before TLS: the header is plain bytes on the TCP stream.
    beast::get_lowest_layer(stream_).async_read_some(buffer_.prepare(512), [self = this->shared_from_this()](
                                                                               error_code ec, std::size_t n) {
        self->on_proxy_bytes(ec, n);
    });
}

template <class Stream>
void http_session<Stream>::on_proxy_bytes(error_code ec, std::size_t n) {
    if (ec == beast::error::timeout) {
        worker_.reject(rejection::proxy_header_timeout);
        spdlog::info("{}: no PROXY header within proxy_header_timeout ({} ms); closed", peer_.address().to_string(),
                     worker_.cfg().limits.proxy_header_timeout.count());
        return close();
    }
    if (ec)
        return fail(ec, "read PROXY header");
    buffer_.commit(n);
    worker_.stats().bytes_in += n;
    const auto data = buffer_.data();
    const auto parsed = proxy_protocol::parse({static_cast<const char*>(data.data()), data.size()});
    switch (parsed.st) {
    case proxy_protocol::status::need_more: return do_read_proxy_header();
    case proxy_protocol::status::invalid:
        worker_.reject(rejection::proxy_header_invalid);
        spdlog::info("{}: invalid PROXY header on a proxy_protocol listener ({}); closed",
                     peer_.address().to_string(), parsed.error);
        return close();
    case proxy_protocol::status::done: break;
    }
    buffer_.consume(parsed.h.length);
    // LOCAL (the proxy's own health check) and address-less headers keep the socket's peer.
    if (parsed.h.cmd == proxy_protocol::command::proxy && parsed.h.source)
        peer_ = *parsed.h.source;
    admit_client();
}

// The client's address is known: count it against max_connections_per_ip, then serve.
template <class Stream>
void http_session<Stream>::admit_client() {
    auto claim = worker_.claim_ip(peer_.address());
    if (!claim) {
        worker_.reject(rejection::ip_connections);
        spdlog::info("{}: this address holds max_connections_per_ip ({}) connections on this worker; {}",
                     peer_.address().to_string(), worker_.cfg().limits.max_connections_per_ip,
                     is_tls<Stream> ? "closed" : "429");
        if constexpr (is_tls<Stream>)
            return close(); // no TLS session to answer in yet, and not worth the handshake's CPU
        else
            return reply_error_and_close(http::status::too_many_requests, "too many connections from your address\n");
    }
    ip_claim_ = std::move(*claim);
    if constexpr (is_tls<Stream>)
        do_tls_handshake();
    else
        do_wait_request();
}

// A TLS listener: the handshake, within tls_handshake_timeout; bytes already read (after a PROXY
// header) are its first input.
template <class Stream>
void http_session<Stream>::do_tls_handshake() {
    if constexpr (is_tls<Stream>) {
        beast::get_lowest_layer(stream_).expires_after(worker_.cfg().limits.tls_handshake_timeout);
        stream_.async_handshake(net::ssl::stream_base::server, buffer_.data(),
                                [self = this->shared_from_this()](error_code ec, std::size_t used) {
                                    self->on_tls_handshake(ec, used);
                                });
    }
}

template <class Stream>
void http_session<Stream>::on_tls_handshake(error_code ec, std::size_t used) {
    if constexpr (is_tls<Stream>) {
        if (ec == beast::error::timeout) {
            worker_.reject(rejection::tls_handshake_timeout);
            spdlog::info("{}: TLS handshake not done within tls_handshake_timeout ({} ms); closed",
                         peer_.address().to_string(), worker_.cfg().limits.tls_handshake_timeout.count());
            return abort();
        }
        if (ec) {
            if (ec == net::error::eof || ec == net::error::connection_reset || ec == net::error::operation_aborted)
                return abort(); // the client went away (or the worker is exiting)
            worker_.reject(rejection::tls_handshake_failed);
            spdlog::info("{}: TLS handshake failed ({}); closed", peer_.address().to_string(), ec.message());
            return abort();
        }
        buffer_.consume(used);
        do_wait_request();
    }
}

// Between requests: wait for the first byte under the keep-alive timeout, then read the whole
// request under the (shorter) header timeout, so a slow client cannot hold a request open.
template <class Stream>
void http_session<Stream>::do_wait_request() {
    // Only a keep-alive wait between requests is idle. A connection that has not sent its first
    // request yet has one on its way: a drain that began before (while a PROXY header or a TLS
    // handshake was read, or while an acceptor batch waited to be served) or begins now still
    // answers it (with Connection: close), so a client that connected a moment before a drain or
    // scale-down is served, not cut off. header_timeout and the drain deadline bound the wait.
    if (worker_.draining() && buffer_.size() == 0 && requests_ > 0) {
        close();
        return;
    }
    if (buffer_.size() > 0) {
        do_read_request();
        return;
    }
    idle_ = requests_ > 0;
    beast::get_lowest_layer(stream_).expires_after(requests_ == 0 ? worker_.cfg().http.header_timeout
                                         : worker_.cfg().http.keepalive_timeout);
    stream_.async_read_some(buffer_.prepare(1024), [self = this->shared_from_this()](error_code ec, std::size_t n) {
        self->on_first_bytes(ec, n);
    });
}

template <class Stream>
void http_session<Stream>::on_first_bytes(error_code ec, std::size_t n) {
    idle_ = false;
    if (ec == beast::error::timeout && requests_ == 0) {
        // Connected and sent nothing at all: nothing to answer, but counted like a slow header.
        worker_.reject(rejection::header_timeout);
        spdlog::info("{}: no request within header_timeout ({} ms) of connecting; closed", client_text(),
                     worker_.cfg().http.header_timeout.count());
        return close();
    }
    if (ec)
        return fail(ec, "read");
    buffer_.commit(n);
    worker_.stats().bytes_in += n;
    do_read_request();
}

template <class Stream>
void http_session<Stream>::do_read_request() {
    const auto& cfg = worker_.cfg();
    parser_.emplace();
    parser_->header_limit(static_cast<std::uint32_t>(cfg.http.max_header_size));
    parser_->body_limit(cfg.http.max_body_size);
    // Not the stream's own timeout: on expiry it closes the socket, and a slow client is owed a
    // 408. This timer cancels the read instead, and on_read answers.
    beast::get_lowest_layer(stream_).expires_never();
    reading_request_ = true;
    request_timed_out_ = false;
    request_timer_.expires_after(cfg.http.header_timeout);
    request_timer_.async_wait([self = this->shared_from_this(), seq = ++request_seq_](error_code ec) {
        if (ec || !self->reading_request_ || seq != self->request_seq_)
            return;
        self->request_timed_out_ = true;
        error_code ignored;
        beast::get_lowest_layer(self->stream_).socket().cancel(ignored);
    });
    http::async_read(stream_, buffer_, *parser_, [self = this->shared_from_this()](error_code ec, std::size_t n) {
        self->on_read(ec, n);
    });
}

template <class Stream>
void http_session<Stream>::on_read(error_code ec, std::size_t n) {
    reading_request_ = false;
    request_timer_.cancel();
    if (ec && request_timed_out_)
        ec = beast::error::timeout;
    worker_.stats().bytes_in += n;
    if (ec == http::error::end_of_stream)
        return close();
    if (ec == beast::error::timeout) {
        worker_.reject(rejection::header_timeout);
        spdlog::info("{}: request header not received within header_timeout ({} ms); 408",
                     peer_.address().to_string(), worker_.cfg().http.header_timeout.count());
        return reply_error_and_close(http::status::request_timeout, "request timeout\n");
    }
    if (ec == http::error::header_limit) {
        worker_.reject(rejection::header_too_large);
        spdlog::info("{}: request header over max_header_size ({} bytes); 431", peer_.address().to_string(),
                     worker_.cfg().http.max_header_size);
        return reply_error_and_close(http::status::request_header_fields_too_large, "request header too large\n");
    }
    if (ec == http::error::body_limit) {
        worker_.reject(rejection::body_too_large);
        spdlog::info("{}: request body over max_body_size ({} bytes); 413", peer_.address().to_string(),
                     worker_.cfg().http.max_body_size);
        return reply_error_and_close(http::status::payload_too_large, "request body too large\n");
    }
    if (ec && ec.category() == http::make_error_code(http::error::bad_target).category()) {
        worker_.reject(rejection::malformed_request);
        spdlog::info("{}: malformed request ({}); 400", peer_.address().to_string(), ec.message());
        return reply_error_and_close(http::status::bad_request, "bad request\n");
    }
    if (ec)
        return fail(ec, "read");
    handle_request();
}

template <class Stream>
void http_session<Stream>::handle_request() {
    ++requests_;
    ++worker_.stats().http_requests;
    const request& req = parser_->get();
    const std::string_view path = target_path(req.target());

    if (path == "/healthz")
        return send(handle_healthz(req));
    if (path.starts_with(publish_api::prefix))
        return handle_publish(path); // 404 when no token is configured

    routes_ = worker_.routes(); // a keep-alive connection follows reloads request by request
    const route* r = routes_->match(path);
    if (!r)
        return send(make_response(req, http::status::not_found, "not found\n"));

    if (r->config.kind == route_kind::echo || r->config.kind == route_kind::pubsub)
        return upgrade(*r, path);
    if (websocket::is_upgrade(req))
        return send(make_response(req, http::status::bad_request, "no WebSocket endpoint at this path\n"));
    send(r->files->handle(req));
}

// A WebSocket route: echo, or pub/sub (raw: the channel is the rest of the path).
template <class Stream>
void http_session<Stream>::upgrade(const route& r, std::string_view path) {
    const request& req = parser_->get();
    if (!websocket::is_upgrade(req)) {
        worker_.reject(rejection::ws_bad_handshake);
        spdlog::info("{}: {} without a WebSocket Upgrade on WebSocket route {}; 426", client_text(),
                     std::string_view(req.method_string().data(), req.method_string().size()), r.config.path);
        auto res = make_response(req, http::status::upgrade_required, "this is a WebSocket endpoint\n");
        res.set(http::field::upgrade, "websocket");
        return send(std::move(res));
    }
    if (!valid_websocket_key(view(req[http::field::sec_websocket_key]))) {
        // Beast 1.74 checks only the key's length: a key must be base64 of 16 bytes (RFC 6455 4.1).
        worker_.reject(rejection::ws_bad_handshake);
        spdlog::info("{}: bad WebSocket handshake on {} (Sec-WebSocket-Key is not base64 of 16 bytes); 400",
                     client_text(), r.config.path);
        close_after_ = true;
        return send(make_response(req, http::status::bad_request, "bad Sec-WebSocket-Key\n"));
    }
    if (const auto origin = req[http::field::origin];
        !origin.empty() && !origin_allowed(worker_.cfg().websocket.allowed_origins, view(origin))) {
        worker_.reject(rejection::origin_refused);
        spdlog::info("{}: WebSocket handshake from Origin \"{}\", not in allowed_origins; 403", client_text(),
                     loggable(view(origin)));
        return send(make_response(req, http::status::forbidden, "origin not allowed\n"));
    }
    if (worker_.node_stopping()) // the node goes away: the client should go to another one
        return send(make_response(req, http::status::service_unavailable, "draining\n"));
    ws_mode mode = ws_mode::echo;
    std::string channel;
    if (r.config.kind == route_kind::pubsub) {
        mode = r.config.protocol == pubsub_protocol::json ? ws_mode::pubsub_json : ws_mode::pubsub_raw;
        if (mode == ws_mode::pubsub_raw) {
            channel = std::string(path.substr(r.config.path.size()));
            if (!valid_channel_name(channel))
                return send(make_response(req, http::status::bad_request,
                                          "bad channel name: 1 to 200 bytes of A-Z a-z 0-9 - _ . : @\n"));
        }
    }
    // From a trusted proxy, the session counts against the forwarded client's address instead.
    // Every refusal above leaves ip_claim_ with this connection, which may go on (keep-alive).
    ip_claim claim = std::move(ip_claim_);
    tcp::endpoint client = peer_;
    if (any_contains(worker_.cfg().http.trusted_proxies, peer_.address())) {
        client.address(forwarded_address(req));
        if (client.address() != unmapped(peer_.address())) {
            auto forwarded_claim = worker_.claim_ip(client.address());
            if (!forwarded_claim) {
                ip_claim_ = std::move(claim);
                worker_.reject(rejection::ip_connections);
                spdlog::info("{}: this address holds max_connections_per_ip ({}) connections on this worker; 429",
                             client.address().to_string(), worker_.cfg().limits.max_connections_per_ip);
                close_after_ = true;
                return send(make_response(req, http::status::too_many_requests,
                                          "too many connections from your address\n"));
            }
            claim = std::move(*forwarded_claim);
        }
    }
    upgraded_ = true;
    beast::get_lowest_layer(stream_).expires_never();
    request_timer_.cancel();
    auto ws = std::make_shared<websocket_session<Stream>>(worker_, std::move(stream_), tls_, client, mode,
                                                          std::move(channel), r.config.path, std::move(claim));
    ws->run(parser_->release());
    // This session ends here; the WebSocket session owns the socket now. Deregistered at once
    // (after the WebSocket session registered, so a draining worker never sees zero sessions):
    // nothing may drain or abort it any more, a moved-from ssl_stream has no layers to reach.
    worker_.remove(*this, false);
    registered_ = false;
}

template <class Stream>
void http_session<Stream>::handle_publish(std::string_view path) {
    const request& req = parser_->get();
    auto checked = publish_api::check(req, path, worker_.cfg());
    if (auto* res = std::get_if<string_response>(&checked)) {
        if (res->result() == http::status::unauthorized)
            spdlog::info("{}: publish to {} refused: missing or wrong bearer token", client_text(),
                         path.substr(publish_api::prefix.size(), 200));
        ++worker_.stats().bad_ops;
        return send(std::move(*res));
    }
    auto message = std::get<shared_message>(std::move(checked));
    std::string channel = message->channel;
    auto on_relayed = [self = this->shared_from_this(), channel](std::optional<std::uint32_t> workers) {
        const request& r = self->parser_->get();
        if (!workers)
            return self->send(make_response(r, http::status::service_unavailable,
                                            "{\"error\":\"the supervisor did not confirm the relay\"}\n",
                                            "application/json"));
        self->send(publish_api::accepted(r, channel, *workers));
    };
    worker_.publish(std::move(message), worker::delivery::through_supervisor, std::move(on_relayed));
}

template <class Stream>
response http_session<Stream>::handle_healthz(const request& req) const {
    if (req.method() != http::verb::get && req.method() != http::verb::head) {
        auto res = make_response(req, http::status::method_not_allowed, "method not allowed\n");
        res.set(http::field::allow, "GET, HEAD");
        return res;
    }
    // A worker retiring while the node serves on is not the node's health: only a stopping node
    // says "draining" (the response closes the connection either way).
    const bool draining = worker_.node_stopping();
    std::string body = "{\"status\":\"";
    body += draining ? "draining" : "ok";
    body += "\",\"worker\":" + std::to_string(worker_.slot()) + ",\"pid\":" + std::to_string(worker_.pid()) + "}\n";
    auto res = make_response(req, draining ? http::status::service_unavailable : http::status::ok, std::move(body),
                             "application/json");
    res.set(http::field::cache_control, "no-store");
    if (req.method() == http::verb::head) {
        empty_response head{res.result(), res.version()};
        for (const auto& f : res)
            head.set(f.name_string(), f.value());
        head.keep_alive(res.keep_alive());
        return head;
    }
    return res;
}

template <class Stream>
void http_session<Stream>::send(response res) {
    response_ = std::move(res);
    bool close = false;
    const auto max_requests = worker_.cfg().http.max_requests_per_connection;
    if (requests_ >= max_requests && !close_after_) {
        close_after_ = true;
        worker_.reject(rejection::keepalive_requests);
        spdlog::debug("{}: {} requests on one connection (max_requests_per_connection); closing after this one",
                      client_text(), requests_);
    }
    unsigned status = 0;
    std::visit(
        [&](auto& m) {
            decorate(m, worker_.slot());
            if (worker_.draining() || close_after_)
                m.keep_alive(false);
            close = m.need_eof();
            status = m.result_int();
        },
        *response_);
    access_log(status);
    beast::get_lowest_layer(stream_).expires_after(worker_.cfg().http.keepalive_timeout);
    std::visit(
        [&](auto& m) {
            http::async_write(stream_, m, [self = this->shared_from_this(), close](error_code ec, std::size_t n) {
                self->on_write(ec, n, close);
            });
        },
        *response_);
}

template <class Stream>
void http_session<Stream>::on_write(error_code ec, std::size_t n, bool close_after_write) {
    worker_.stats().bytes_out += n;
    response_.reset();
    if (ec)
        return fail(ec, "write");
    if (close_after_write)
        return close();
    do_wait_request();
}

// For requests the parser rejected: answer with `status` and close (the stream is out of sync).
template <class Stream>
void http_session<Stream>::reply_error_and_close(http::status status, std::string_view why) {
    string_response res{status, 11};
    res.set(http::field::content_type, "text/plain; charset=utf-8");
    res.keep_alive(false);
    res.body() = std::string(why);
    res.prepare_payload();
    close_after_ = true;
    send(std::move(res));
}

template <class Stream>
std::string http_session<Stream>::client_text() const {
    if (parser_ && parser_->is_header_done() && any_contains(worker_.cfg().http.trusted_proxies, peer_.address())) {
        return forwarded_address(parser_->get()).to_string();
    }
    return peer_.address().to_string();
}

// The client behind a trusted proxy, from the one header [http] forwarded_header names.
template <class Stream>
net::ip::address http_session<Stream>::forwarded_address(const request& req) const {
    const auto& http_cfg = worker_.cfg().http;
    const bool std_header = http_cfg.forwarded_header == forwarded_syntax::forwarded;
    return forwarded_client(peer_.address(), all_values(req, std_header ? "Forwarded" : "X-Forwarded-For"),
                            http_cfg.forwarded_header, http_cfg.trusted_proxies);
}

// [log] access: one line per response, "client "METHOD target" status".
template <class Stream>
void http_session<Stream>::access_log(unsigned status) const {
    if (!worker_.cfg().log.access)
        return;
    if (parser_ && parser_->is_header_done()) {
        const auto& req = parser_->get();
        spdlog::info("{} \"{} {}\" {}", client_text(), view(req.method_string()), loggable(view(req.target())),
                     status);
    } else {
        spdlog::info("{} \"-\" {}", client_text(), status);
    }
}

template <class Stream>
void http_session<Stream>::drain(clock::time_point) {
    if (upgraded_)
        return;
    close_after_ = true;
    if (idle_) {
        // Waiting for a next request that has not started: close now.
        error_code ignored;
        beast::get_lowest_layer(stream_).socket().shutdown(tcp::socket::shutdown_both, ignored);
        beast::get_lowest_layer(stream_).cancel();
    }
}

template <class Stream>
void http_session<Stream>::abort() {
    request_timer_.cancel();
    if (upgraded_)
        return; // the stream belongs to the WebSocket session now
    error_code ignored;
    beast::get_lowest_layer(stream_).socket().close(ignored);
}

template <class Stream>
void http_session<Stream>::close() {
    request_timer_.cancel();
    error_code ignored;
    // TLS: no close_notify. Every response has a length (Content-Length or chunked), so a client
    // cannot mistake a cut-off response for a whole one, and a close_notify to a client that went
    // away would need its own timeout.
    beast::get_lowest_layer(stream_).socket().shutdown(tcp::socket::shutdown_send, ignored);
    beast::get_lowest_layer(stream_).close();
}

template <class Stream>
void http_session<Stream>::fail(error_code ec, std::string_view what) {
    if (ec == net::error::operation_aborted || ec == net::error::eof || ec == net::error::connection_reset ||
        ec == beast::error::timeout || ec == net::error::broken_pipe)
        return close();
    spdlog::debug("{}: {}: {}", peer_.address().to_string(), what, ec.message());
    close();
}

template class http_session<plain_stream>;
template class http_session<tls_stream>;

} // namespace sockherd::worker
