#pragma once
// The admin HTTP listener, served by the supervisor itself (so it answers when every worker is
// down): GET /status (HTML), /status.json, /metrics (Prometheus), /healthz. Small and bounded:
// a cap on concurrent connections, on header size and on the time a request may take; GET and
// HEAD only. With a token configured every request needs `Authorization: Bearer <token>`.

#include <functional>
#include <memory>
#include <string>

#include "common/net.hpp"
#include "supervisor/status.hpp"

namespace sockherd::supervisor {

class admin_server {
public:
    struct options {
        tcp::endpoint endpoint;
        std::string token;                 // empty: no authentication
    };
    using snapshot_fn = std::function<node_snapshot()>;

    // Binds and listens (throws std::system_error naming the address when it cannot).
    admin_server(net::io_context& ioc, options opts, snapshot_fn snapshot);
    ~admin_server();
    admin_server(const admin_server&) = delete;
    admin_server& operator=(const admin_server&) = delete;

    void start();
    // A reload changed [admin] token (the address is unchanged): applies to the next request.
    void set_token(std::string token);
    // Stops accepting and closes open admin connections.
    void close();
    tcp::endpoint local_endpoint() const;

private:
    struct impl;
    std::shared_ptr<impl> impl_;
};

} // namespace sockherd::supervisor
