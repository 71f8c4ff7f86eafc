#include "bench/procs.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <string_view>
#include <system_error>

#include "bench/driver.hpp"
#include "common/unique_fd.hpp"

namespace sockherd::bench {
namespace {

constexpr std::string_view ready_line = "ready\n";
// Beyond the scenario's own timeouts, how long the parent waits for a child before killing it.
constexpr std::chrono::seconds child_margin{15};

bool write_all(int fd, std::string_view data) {
    while (!data.empty()) {
        const ssize_t n = ::write(fd, data.data(), data.size());
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return false;
        }
        data.remove_prefix(static_cast<std::size_t>(n));
    }
    return true;
}

int millis(std::chrono::steady_clock::duration d) {
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(d).count();
    return static_cast<int>(std::clamp<long long>(ms, 0, 1000 * 1000 * 1000));
}

// The body of child `part`: never returns.
[[noreturn]] void run_child(const options& opt, const shard& part, int out_fd, int go_fd) {
    const auto barrier = [&] {
        write_all(out_fd, ready_line);
        pollfd pfd{go_fd, POLLIN, 0};
        // The parent closes its end when every process is ready (or gave up): POLLHUP.
        while (::poll(&pfd, 1, millis(opt.setup_timeout() + child_margin)) < 0 && errno == EINTR) {
        }
    };
    const run_result r = run_shard(opt, part, barrier);
    const bool ok = write_all(out_fd, r.encode());
    ::_exit(ok ? 0 : 3);
}

struct child {
    pid_t pid = -1;
    unique_fd out;
    std::string data;
    bool ready = false;
    bool eof = false;
};

} // namespace

std::vector<shard> make_shards(const options& opt) {
    std::vector<shard> shards(opt.procs);
    for (unsigned i = 0; i < opt.procs; ++i) {
        shards[i].index = i;
        shards[i].count = opt.procs;
        shards[i].concurrency = opt.concurrency / opt.procs + (i < opt.concurrency % opt.procs ? 1 : 0);
        shards[i].connections = opt.connections / opt.procs + (i < opt.connections % opt.procs ? 1 : 0);
        shards[i].first_connection = i == 0 ? 0 : shards[i - 1].first_connection + shards[i - 1].connections;
    }
    return shards;
}

run_result run_forked(const options& opt) {
    const auto shards = make_shards(opt);
    int go[2];
    if (::pipe2(go, O_CLOEXEC) != 0)
        throw std::system_error(errno, std::generic_category(), "pipe2");
    unique_fd go_read(go[0]);
    unique_fd go_write(go[1]);

    std::vector<child> kids;
    std::fflush(stdout);
    std::fflush(stderr);
    for (const auto& part : shards) {
        int p[2];
        pid_t pid = -1;
        const bool piped = ::pipe2(p, O_CLOEXEC) == 0;
        if (piped)
            pid = ::fork();
        if (pid == 0) {
            for (auto& k : kids)
                k.out.reset();
            go_write.reset();
            ::close(p[0]);
            run_child(opt, part, p[1], go_read.get());
        }
        if (pid < 0) {
            const int e = errno;
            if (piped) {
                ::close(p[0]);
                ::close(p[1]);
            }
            for (auto& k : kids) {
                ::kill(k.pid, SIGKILL);
                ::waitpid(k.pid, nullptr, 0);
            }
            throw std::system_error(e, std::generic_category(), piped ? "fork" : "pipe2");
        }
        ::close(p[1]);
        child k;
        k.pid = pid;
        k.out = unique_fd(p[0]);
        kids.push_back(std::move(k));
    }
    go_read.reset();

    const auto deadline = std::chrono::steady_clock::now() + opt.setup_timeout() + opt.duration() +
                          opt.drain_timeout() + opt.connect_timeout() + child_margin;
    const auto all = [&](auto pred) { return std::all_of(kids.begin(), kids.end(), pred); };
    std::vector<pollfd> pfds;
    while (!all([](const child& k) { return k.eof; })) {
        const auto now = std::chrono::steady_clock::now();
        if (now >= deadline)
            break;
        pfds.clear();
        for (const auto& k : kids) {
            if (!k.eof)
                pfds.push_back(pollfd{k.out.get(), POLLIN, 0});
        }
        if (::poll(pfds.data(), pfds.size(), std::min(millis(deadline - now), 1000)) < 0 && errno != EINTR)
            break;
        for (const auto& pfd : pfds) {
            if (pfd.revents == 0)
                continue;
            auto& k = *std::find_if(kids.begin(), kids.end(), [&](const child& c) { return c.out.get() == pfd.fd; });
            char buf[65536];
            const ssize_t n = ::read(k.out.get(), buf, sizeof buf);
            if (n > 0)
                k.data.append(buf, static_cast<std::size_t>(n));
            else if (n == 0 || errno != EINTR)
                k.eof = true;
            if (!k.ready && std::string_view(k.data).starts_with(ready_line))
                k.ready = true;
        }
        if (go_write && all([](const child& k) { return k.ready || k.eof; }))
            go_write.reset(); // every process is prepared: start the window everywhere
    }
    go_write.reset();

    run_result merged;
    for (std::size_t i = 0; i < kids.size(); ++i) {
        auto& k = kids[i];
        if (!k.eof) {
            std::fprintf(stderr, "sockherd-loadgen: process %zu (pid %d) overran; killed\n", i, static_cast<int>(k.pid));
            merged.add_error("child:killed");
            ::kill(k.pid, SIGKILL);
        }
        int status = 0;
        while (::waitpid(k.pid, &status, 0) < 0 && errno == EINTR) {
        }
        std::string_view body(k.data);
        if (body.starts_with(ready_line))
            body.remove_prefix(ready_line.size());
        const auto r = run_result::decode(body);
        if (!r) {
            std::fprintf(stderr, "sockherd-loadgen: process %zu (pid %d) sent no result (wait status %d)\n", i,
                         static_cast<int>(k.pid), status);
            merged.add_error("child:no_result");
            continue;
        }
        merged.merge(*r);
    }
    return merged;
}

} // namespace sockherd::bench
