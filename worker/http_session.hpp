#pragma once
// One HTTP/1.1 client connection in a worker: reads requests one after another (keep-alive and
// pipelining), routes each, writes the response, and turns into a websocket_session on an
// Upgrade to a WebSocket route. Owned by shared_ptr captures of its own pending operations.
// `Stream` is plain_stream, or tls_stream on a TLS listener (the handshake comes first, after a
// PROXY header if the listener has one); both are compiled in http_session.cpp.

#include <memory>
#include <optional>

#include "common/net.hpp"
#include "common/tls_stream.hpp"
#include "worker/connection.hpp"
#include "worker/response.hpp"
#include "worker/router.hpp"
#include "worker/worker.hpp"

namespace sockherd::worker {

class worker;

template <class Stream>
class http_session final : public connection, public std::enable_shared_from_this<http_session<Stream>> {
public:
    // `tls`: the listener's context (tls_stream only; null for plain_stream).
    http_session(worker& w, tcp::socket socket, tcp::endpoint peer, std::uint16_t listener_id,
                 std::shared_ptr<net::ssl::context> tls = nullptr);
    ~http_session();

    void run();
    void drain(clock::time_point deadline) override;
    void abort() override;

private:
    void do_read_proxy_header();
    void on_proxy_bytes(error_code ec, std::size_t n);
    void admit_client();
    void do_tls_handshake();
    void on_tls_handshake(error_code ec, std::size_t used);
    void do_wait_request();
    void on_first_bytes(error_code ec, std::size_t n);
    void do_read_request();
    void on_read(error_code ec, std::size_t n);
    void handle_request();
    void send(response res);
    void on_write(error_code ec, std::size_t n, bool close);
    void reply_error_and_close(http::status status, std::string_view why);
    void access_log(unsigned status) const;
    std::string client_text() const; // the client's address, for log lines
    net::ip::address forwarded_address(const request& req) const;
    void close();
    void fail(error_code ec, std::string_view what);

    response handle_healthz(const request& req) const;
    void upgrade(const route& r, std::string_view path);
    void handle_publish(std::string_view path);

    worker& worker_;
    std::shared_ptr<net::ssl::context> tls_; // outlives stream_
    Stream stream_;
    net::steady_timer request_timer_; // header_timeout for reading one request
    std::uint64_t request_seq_ = 0;
    bool reading_request_ = false;
    bool request_timed_out_ = false;
    tcp::endpoint peer_; // the client: the socket's peer, or the PROXY header's source
    std::uint16_t listener_id_;
    bool proxy_protocol_ = false; // the listener's, when the connection arrived
    std::chrono::steady_clock::time_point proxy_deadline_{};
    ip_claim ip_claim_;           // this connection counted against max_connections_per_ip
    std::shared_ptr<const router> routes_; // the table this connection started with
    beast::flat_buffer buffer_;
    std::optional<http::request_parser<http::string_body>> parser_;
    std::optional<response> response_;
    std::uint64_t requests_ = 0;
    bool idle_ = false;          // between requests: waiting for the first byte of the next one
    bool close_after_ = false;   // draining: Connection: close on the next response
    bool upgraded_ = false;
    bool registered_ = false;
};

} // namespace sockherd::worker
