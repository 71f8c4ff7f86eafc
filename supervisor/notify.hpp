#pragma once
// systemd's notification protocol (sd_notify, from libsystemd): READY=1 once the node serves,
// STATUS=<one line>, STOPPING=1, and WATCHDOG=1 pings at half of WATCHDOG_USEC when systemd
// asks for them. Without NOTIFY_SOCKET in the environment every call does nothing.

#include <memory>
#include <string>
#include <string_view>

#include "common/net.hpp"

namespace sockherd::supervisor {

class systemd_notifier {
public:
    explicit systemd_notifier(net::io_context& ioc);
    ~systemd_notifier();
    systemd_notifier(const systemd_notifier&) = delete;
    systemd_notifier& operator=(const systemd_notifier&) = delete;

    bool enabled() const;
    // Starts WATCHDOG=1 pings if systemd set WATCHDOG_USEC for this process.
    void start_watchdog();
    void ready();                       // READY=1 (once; again only after reloading())
    void status(std::string_view line); // STATUS=... (only when it changed)
    void reloading();                   // RELOADING=1
    void stopping();                    // STOPPING=1; ends the watchdog pings

private:
    struct impl;
    std::unique_ptr<impl> impl_;
};

} // namespace sockherd::supervisor
