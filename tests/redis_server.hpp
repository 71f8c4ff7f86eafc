#pragma once
// A redis-server of the test's own (Debian's /usr/bin/redis-server) on a free loopback port, and
// a blocking hiredis client to talk to it besides sockherd. Shared by the unit tests of the
// bridge and the integration tests of two nodes bridged through it.
//
// The server runs in its own process group with PR_SET_PDEATHSIG, so it dies with the thread that
// started it even when the test process crashes; it saves nothing (no RDB, no AOF) and writes its
// log to <dir>/redis.log (log() reads it, for failure messages). Not thread-safe.

#include <sys/types.h>

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <hiredis/hiredis.h>

namespace sockherd::test {

inline constexpr const char* redis_server_binary = "/usr/bin/redis-server";

// The binary exists and is executable (tests GTEST_SKIP otherwise).
bool redis_server_available();

struct redis_server_options {
    std::string password;     // --requirepass
    bool unix_socket = false; // --unixsocket <dir>/redis.sock as well
};

class redis_server {
public:
    // Starts it on a free loopback port (a few ports are tried); throws if it does not come up.
    explicit redis_server(redis_server_options o = {});
    // SIGKILLs and reaps it, removes its directory.
    ~redis_server();
    redis_server(const redis_server&) = delete;
    redis_server& operator=(const redis_server&) = delete;

    unsigned short port() const { return port_; }
    std::string socket_path() const { return dir_ + "/redis.sock"; }
    // "redis://127.0.0.1:<port>"
    std::string url() const;
    pid_t pid() const { return pid_; }
    bool running() const { return pid_ > 0; }

    // Starts it (again, on the same port); true once it answers PING (10 s at most).
    bool start();
    // SIGKILL, then reaps it: once this returns, its sockets are closed.
    void kill();
    // SIGSTOP / SIGCONT: it keeps its connections but answers nothing.
    void pause();
    void resume();
    // Its log file so far (for failure messages).
    std::string log() const;

private:
    bool answers_ping() const;

    redis_server_options options_;
    std::string dir_;
    unsigned short port_ = 0;
    pid_t pid_ = -1;
};

using reply_ptr = std::unique_ptr<redisReply, void (*)(void*)>;

// A blocking hiredis client: how tests talk to Redis besides sockherd.
class redis_client {
public:
    // Connects (2 s), AUTH if `password`; throws std::runtime_error when it cannot.
    explicit redis_client(unsigned short port, const std::string& password = {});

    // One command; null when the connection failed (then the client is unusable).
    reply_ptr command(const std::vector<std::string_view>& args);
    // The next pushed reply (a subscribed connection's message), or null after the timeout (5 s).
    reply_ptr next();

    // PUBSUB CHANNELS <pattern>, sorted; ok is false when the command failed.
    struct channels_result {
        bool ok = false;
        std::vector<std::string> channels;
    };
    channels_result pubsub_channels(std::string_view pattern = "*");
    // PUBSUB NUMSUB <channel>: its subscriber count, -1 on failure.
    long long pubsub_numsub(std::string_view channel);

private:
    std::unique_ptr<redisContext, void (*)(redisContext*)> c_;
};

} // namespace sockherd::test
