#pragma once
// One WebSocket connection in a worker, on an `echo` route: every message comes back to its
// sender as it was sent (text or binary). Owned by shared_ptr captures of its pending operations.

#include <memory>

#include "common/net.hpp"
#include "worker/connection.hpp"
#include "worker/response.hpp"

namespace sockherd::worker {

class worker;

class websocket_session final : public connection, public std::enable_shared_from_this<websocket_session> {
public:
    websocket_session(worker& w, tcp::socket socket, tcp::endpoint peer);
    ~websocket_session();

    // Completes the handshake for `req` (the Upgrade request the http_session read).
    void run(request req);
    void drain(clock::time_point deadline) override;
    void abort() override;

private:
    void on_accept(error_code ec);
    void do_read();
    void on_read(error_code ec, std::size_t n);
    void on_write(error_code ec, std::size_t n);
    void do_close(websocket::close_code code);
    void fail(error_code ec, std::string_view what);

    worker& worker_;
    websocket::stream<beast::tcp_stream> ws_;
    tcp::endpoint peer_;
    beast::flat_buffer buffer_;
    net::steady_timer drain_timer_;
    bool registered_ = false;
    bool open_ = false;          // handshake done, no close started
    bool writing_ = false;
    bool close_pending_ = false; // a close is due once the current write completes
};

} // namespace sockherd::worker
