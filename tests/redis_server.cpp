#include "tests/redis_server.hpp"

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "common/unique_fd.hpp"

extern char** environ;

namespace sockherd::test {
namespace {

using namespace std::chrono_literals;
using clock = std::chrono::steady_clock;
using context_ptr = std::unique_ptr<redisContext, void (*)(redisContext*)>;

unsigned short free_loopback_port() {
    unique_fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (!fd || ::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0)
        return 0;
    socklen_t len = sizeof addr;
    if (::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&addr), &len) != 0)
        return 0;
    return ntohs(addr.sin_port);
}

} // namespace

bool redis_server_available() { return ::access(redis_server_binary, X_OK) == 0; }

redis_server::redis_server(redis_server_options o) : options_(std::move(o)) {
    const char* base = std::getenv("TMPDIR");
    std::string pattern = std::string(base && *base ? base : "/tmp") + "/sockherd-redis-test-XXXXXX";
    if (::mkdtemp(pattern.data()) == nullptr)
        throw std::runtime_error("mkdtemp " + pattern + " failed");
    dir_ = pattern;
    for (int tries = 0; tries < 5; ++tries) {
        port_ = free_loopback_port();
        if (port_ != 0 && start())
            return;
    }
    const std::string why = "redis-server did not come up; its log:\n" + log();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
    throw std::runtime_error(why);
}

redis_server::~redis_server() {
    kill();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
}

std::string redis_server::url() const { return "redis://127.0.0.1:" + std::to_string(port_); }

bool redis_server::start() {
    if (pid_ > 0)
        return answers_ping();
    std::vector<std::string> args{redis_server_binary, "--port", std::to_string(port_), "--bind", "127.0.0.1",
                                  "--save", "", "--appendonly", "no", "--dir", dir_, "--logfile",
                                  dir_ + "/redis.log", "--daemonize", "no"};
    if (options_.unix_socket)
        args.insert(args.end(), {"--unixsocket", socket_path(), "--unixsocketperm", "700"});
    if (!options_.password.empty())
        args.insert(args.end(), {"--requirepass", options_.password});

    // Everything the child needs is made before fork: after it, only async-signal-safe calls.
    std::vector<char*> argv;
    for (auto& a : args)
        argv.push_back(a.data());
    argv.push_back(nullptr);
    const std::string out_path = dir_ + "/redis.out"; // what it says before its log file is open
    const int out = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    const int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    const pid_t parent = ::getpid();
    const pid_t pid = ::fork();
    if (pid == 0) {
        ::setpgid(0, 0);
        ::prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (::getppid() != parent)
            ::_exit(127);
        sigset_t none;
        ::sigemptyset(&none);
        ::sigprocmask(SIG_SETMASK, &none, nullptr);
        const rlimit no_core{0, 0};
        ::setrlimit(RLIMIT_CORE, &no_core);
        if (null_fd >= 0)
            ::dup2(null_fd, 0);
        if (out >= 0) {
            ::dup2(out, 1);
            ::dup2(out, 2);
        }
        if (::close_range(3, ~0U, 0) != 0)
            for (int fd = 3; fd < 4096; ++fd)
                ::close(fd);
        ::execve(argv[0], argv.data(), environ);
        ::_exit(127);
    }
    if (out >= 0)
        ::close(out);
    if (null_fd >= 0)
        ::close(null_fd);
    if (pid < 0)
        return false;
    pid_ = pid;

    const auto deadline = clock::now() + 10s;
    while (clock::now() < deadline) {
        if (::waitpid(pid_, nullptr, WNOHANG) == pid_) { // exited: the port was taken after all?
            pid_ = -1;
            return false;
        }
        if (answers_ping())
            return true;
        std::this_thread::sleep_for(10ms); // polling a condition, under the deadline above
    }
    kill();
    return false;
}

void redis_server::kill() {
    if (pid_ <= 0)
        return;
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
}

void redis_server::pause() {
    if (pid_ > 0)
        ::kill(pid_, SIGSTOP);
}

void redis_server::resume() {
    if (pid_ > 0)
        ::kill(pid_, SIGCONT);
}

std::string redis_server::log() const {
    std::string text;
    for (const char* name : {"/redis.out", "/redis.log"}) {
        std::ifstream in(dir_ + name);
        std::ostringstream s;
        s << in.rdbuf();
        text += s.str();
    }
    return text;
}

bool redis_server::answers_ping() const {
    context_ptr c(redisConnectWithTimeout("127.0.0.1", port_, timeval{0, 200'000}), redisFree);
    if (!c || c->err)
        return false;
    const timeval t{1, 0};
    redisSetTimeout(c.get(), t);
    if (!options_.password.empty())
        reply_ptr(static_cast<redisReply*>(redisCommand(c.get(), "AUTH %s", options_.password.c_str())),
                  freeReplyObject);
    reply_ptr r(static_cast<redisReply*>(redisCommand(c.get(), "PING")), freeReplyObject);
    return r && r->type == REDIS_REPLY_STATUS && std::string_view(r->str) == "PONG";
}

// ---- redis_client -------------------------------------------------------------------------------

redis_client::redis_client(unsigned short port, const std::string& password)
    : c_(redisConnectWithTimeout("127.0.0.1", port, timeval{2, 0}), redisFree) {
    if (!c_ || c_->err)
        throw std::runtime_error("cannot connect to redis on port " + std::to_string(port));
    const timeval t{5, 0};
    redisSetTimeout(c_.get(), t);
    if (!password.empty())
        command({"AUTH", password});
}

reply_ptr redis_client::command(const std::vector<std::string_view>& args) {
    std::vector<const char*> argv;
    std::vector<std::size_t> lengths;
    for (auto a : args) {
        argv.push_back(a.data());
        lengths.push_back(a.size());
    }
    auto* r = redisCommandArgv(c_.get(), static_cast<int>(args.size()), argv.data(), lengths.data());
    return {static_cast<redisReply*>(r), freeReplyObject};
}

reply_ptr redis_client::next() {
    void* r = nullptr;
    if (redisGetReply(c_.get(), &r) != REDIS_OK)
        return {nullptr, freeReplyObject};
    return {static_cast<redisReply*>(r), freeReplyObject};
}

redis_client::channels_result redis_client::pubsub_channels(std::string_view pattern) {
    channels_result out;
    auto r = command({"PUBSUB", "CHANNELS", pattern});
    if (!r || r->type != REDIS_REPLY_ARRAY)
        return out;
    for (std::size_t i = 0; i < r->elements; ++i)
        out.channels.emplace_back(r->element[i]->str, r->element[i]->len);
    std::sort(out.channels.begin(), out.channels.end());
    out.ok = true;
    return out;
}

long long redis_client::pubsub_numsub(std::string_view channel) {
    auto r = command({"PUBSUB", "NUMSUB", channel});
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2 || r->element[1]->type != REDIS_REPLY_INTEGER)
        return -1;
    return r->element[1]->integer;
}

} // namespace sockherd::test
