#include "supervisor/notify.hpp"

#include <systemd/sd-daemon.h>
#include <time.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <optional>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

namespace sockherd::supervisor {
namespace {

// systemd reads notifications into a buffer of a few KiB and drops longer ones; a status line
// is for humans in `systemctl status`, so a KiB is plenty.
constexpr std::size_t max_status_bytes = 1024;
// A WATCHDOG_USEC of a few microseconds would turn the ping timer into a busy loop.
constexpr std::chrono::microseconds min_watchdog_interval{1000};

// Multi-line messages ("RELOADING=1\nMONOTONIC_USEC=…") on one log line.
std::string printable(std::string_view state) {
    std::string s(state);
    std::replace(s.begin(), s.end(), '\n', ' ');
    return s;
}

// Cuts at `limit` bytes without splitting a UTF-8 sequence.
std::string_view truncate_utf8(std::string_view s, std::size_t limit) {
    if (s.size() <= limit)
        return s;
    std::size_t end = limit;
    while (end > 0 && (static_cast<unsigned char>(s[end]) & 0xC0) == 0x80)
        --end;
    return s.substr(0, end);
}

std::uint64_t monotonic_usec() {
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000u + static_cast<std::uint64_t>(ts.tv_nsec) / 1000u;
}

} // namespace

struct systemd_notifier::impl {
    explicit impl(net::io_context& ioc) : watchdog_timer_(ioc) {
        const char* socket = std::getenv("NOTIFY_SOCKET");
        enabled_ = socket != nullptr && *socket != '\0';
    }
    ~impl() { watchdog_timer_.cancel(); }

    // Sends one notification. unset_environment = 0 keeps NOTIFY_SOCKET and WATCHDOG_* in our
    // environment: workers, re-executed from the supervisor, inherit them, but workers never
    // construct this class, so only the supervisor (systemd's main PID) ever notifies.
    void send(std::string_view state, spdlog::level::level_enum level = spdlog::level::debug) {
        if (!enabled_)
            return;
        const std::string message(state);
        const int r = ::sd_notify(0, message.c_str());
        if (r < 0) {
            if (!warned_) {
                warned_ = true;
                spdlog::warn("systemd notify: sending {} failed: {} (further failures are not logged)",
                             printable(state), std::strerror(-r));
            }
            return;
        }
        if (r == 0)
            spdlog::debug("systemd notify: NOTIFY_SOCKET is gone; {} not sent", printable(state));
        else
            spdlog::log(level, "systemd notify: sent {}", printable(state));
    }

    void schedule_ping() {
        watchdog_timer_.expires_after(watchdog_interval_);
        watchdog_timer_.async_wait([this, alive = std::weak_ptr<char>(alive_)](error_code ec) {
            // `alive`: a wait that completed just before the notifier was destroyed still runs.
            if (ec || alive.expired() || stopping_)
                return;
            ping();
            schedule_ping();
        });
    }

    // Trace, not debug: at a few pings a second they would bury every other debug line.
    void ping() { send("WATCHDOG=1", spdlog::level::trace); }

    net::steady_timer watchdog_timer_;
    std::chrono::microseconds watchdog_interval_{0};
    std::shared_ptr<char> alive_ = std::make_shared<char>(0);
    std::optional<std::string> last_status_;
    bool enabled_ = false;
    bool ready_sent_ = false;
    bool stopping_ = false;
    bool watchdog_running_ = false;
    bool warned_ = false;
};

systemd_notifier::systemd_notifier(net::io_context& ioc) : impl_(std::make_unique<impl>(ioc)) {}

systemd_notifier::~systemd_notifier() = default;

bool systemd_notifier::enabled() const { return impl_->enabled_; }

void systemd_notifier::start_watchdog() {
    if (!impl_->enabled_ || impl_->stopping_ || impl_->watchdog_running_)
        return;
    std::uint64_t usec = 0;
    // Checks WATCHDOG_PID too: a WATCHDOG_USEC meant for another process is ignored.
    const int r = ::sd_watchdog_enabled(0, &usec);
    if (r < 0) {
        spdlog::warn("systemd notify: ignoring the watchdog settings in the environment: {}", std::strerror(-r));
        return;
    }
    if (r == 0)
        return;
    // Half the limit, as systemd recommends: one late ping still leaves a full period of slack.
    impl_->watchdog_interval_ = std::max(std::chrono::microseconds(usec / 2), min_watchdog_interval);
    impl_->watchdog_running_ = true;
    spdlog::info("systemd watchdog: {}ms limit; pinging every {}ms", usec / 1000,
                 std::chrono::duration_cast<std::chrono::milliseconds>(impl_->watchdog_interval_).count());
    impl_->ping();
    impl_->schedule_ping();
}

// READY=1 again after reloading(): that is how systemd learns a reload has finished.
void systemd_notifier::ready() {
    if (impl_->ready_sent_)
        return;
    impl_->ready_sent_ = true;
    impl_->send("READY=1");
}

void systemd_notifier::status(std::string_view line) {
    std::string s(truncate_utf8(line, max_status_bytes));
    std::replace_if(s.begin(), s.end(), [](char c) { return c == '\n' || c == '\r'; }, ' ');
    if (impl_->last_status_ == s)
        return;
    impl_->last_status_ = s;
    impl_->send("STATUS=" + s);
}

// MONOTONIC_USEC: Type=notify-reload (systemd 253+) wants the reload's start time with
// RELOADING=1, to match it to the reload it asked for; older systemd ignores the extra field.
void systemd_notifier::reloading() {
    impl_->ready_sent_ = false;
    impl_->send(fmt::format("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec()));
}

void systemd_notifier::stopping() {
    if (impl_->stopping_)
        return;
    impl_->stopping_ = true;
    impl_->watchdog_timer_.cancel();
    impl_->send("STOPPING=1");
}

} // namespace sockherd::supervisor
