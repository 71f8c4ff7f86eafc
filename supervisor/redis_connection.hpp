#pragma once
// One connection to Redis, owned by the supervisor's Redis bridge: a hiredis 0.14 async context
// driven by the supervisor's io_context, plus what hiredis 0.14 lacks: a connect timeout
// (resolve + TCP + AUTH + the first PING answered), a command timeout (the oldest reply still
// missing), and reconnection with exponential backoff. Single-threaded like the rest of the
// supervisor; no hiredis header leaks out of here.
//
// Rules:
// - Events and reply handlers may run inside hiredis calls. From there send() and stop() are
//   allowed (freeing the context waits until hiredis has returned); destroying this object is
//   not: post that.
// - A reply handler runs exactly once per expected reply: with the reply, or with nullptr when
//   the connection went down (or stop() was called) before the reply came. The destructor runs
//   no handler.

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "common/config.hpp"
#include "common/net.hpp"
#include "supervisor/backoff.hpp"

struct redisReply;

namespace sockherd::supervisor {

class redis_connection {
public:
    enum class state : std::uint8_t {
        idle,       // not started, or stopped
        connecting, // resolving, connecting, AUTH, PING: under connect_timeout
        ready,      // answered PING: commands may be sent
        waiting,    // lost or failed: the next attempt comes after a backoff delay
    };

    struct settings {
        std::string name; // "subscriber", "publisher": for log lines
        redis_url url;
        duration connect_timeout{2'000};
        duration command_timeout{2'000};
        duration backoff_min{100};
        duration backoff_max{5'000};
    };

    // Since construction.
    struct counters {
        std::uint64_t attempts = 0; // connection attempts started
        std::uint64_t connects = 0; // attempts that became ready
        std::uint64_t failures = 0; // attempts that failed before ready (refused, AUTH, timeout, ...)
        std::uint64_t losses = 0;   // ready connections that went down
        std::uint64_t timeouts = 0; // failures and losses that were connect or command timeouts
    };

    using reply_handler = std::function<void(const redisReply*)>;

    struct events {
        std::function<void()> on_ready;                 // ready (again): commands may be sent
        std::function<void()> on_down;                  // not ready any more, or an attempt failed
        std::function<void(const redisReply&)> on_push; // a pub/sub "message" / "pmessage"
    };

    // A connection that has been up this long before it drops starts again at backoff_min.
    static constexpr duration stable_after{10'000};

    redis_connection(net::io_context& ioc, settings s, events e);
    ~redis_connection();
    redis_connection(const redis_connection&) = delete;
    redis_connection& operator=(const redis_connection&) = delete;

    // Starts the first attempt (idle only).
    void start();
    // Closes the connection, cancels any retry; pending reply handlers get nullptr. Idle after.
    void stop();

    // Sends one command with binary-safe arguments, expecting `replies` replies (1, or one per
    // channel for SUBSCRIBE/UNSUBSCRIBE), each passed to `on_reply`. Ready only: false otherwise
    // (nothing is sent and on_reply is not called).
    bool send(std::span<const std::string_view> args, std::size_t replies, const reply_handler& on_reply);

    state current() const { return state_; }
    // Between a failure or loss and the next ready.
    bool failing() const { return failing_; }
    const counters& stats() const { return counters_; }
    const std::string& last_error() const { return last_error_; }
    std::size_t replies_pending() const { return pending_.size(); }
    const settings& config() const { return settings_; }

private:
    class driver;
    friend class driver;
    using clock = std::chrono::steady_clock;

    struct pending_reply {
        clock::time_point sent;
        reply_handler on_reply;
    };

    enum class failure { error, timeout };

    void connect_now();
    void open_context(const std::string& host);
    bool send_command(std::span<const std::string_view> args, std::size_t replies, const reply_handler& on_reply);
    void on_pong(const redisReply* reply);
    void on_auth(const redisReply* reply);
    // From the driver, inside hiredis: a reply, a pub/sub message, the context freed by hiredis.
    void on_reply(const redisReply& reply);
    void on_context_gone(std::string reason);
    // Drops the context (if any) and goes to waiting.
    void fail(std::string reason, failure kind);
    void went_down(std::string reason, failure kind);
    void fail_pending();
    void arm_command_timer();

    net::io_context& ioc_;
    settings settings_;
    events events_;
    state state_ = state::idle;
    bool failing_ = false;
    counters counters_;
    std::string last_error_;
    unsigned same_error_count_ = 0; // consecutive failures with last_error_ as the reason
    std::uint64_t attempt_ = 0;     // generation: handlers of an older attempt do nothing
    std::size_t address_index_ = 0; // which of a host name's addresses the next attempt uses
    clock::time_point ready_since_{};
    restart_backoff backoff_;
    std::shared_ptr<driver> driver_;
    std::deque<pending_reply> pending_;
    bool command_timer_armed_ = false;
    net::steady_timer connect_timer_;
    net::steady_timer command_timer_;
    net::steady_timer retry_timer_;
    tcp::resolver resolver_;
    std::shared_ptr<char> alive_ = std::make_shared<char>(); // handlers hold weak_ptrs to it
};

std::string_view to_string(redis_connection::state);

} // namespace sockherd::supervisor
