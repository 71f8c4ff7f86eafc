#include "supervisor/worker_process.hpp"

#include <fcntl.h>
#include <grp.h>
#include <linux/close_range.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>

#include <boost/process/child.hpp>
#include <boost/process/exe.hpp>
#include <boost/process/args.hpp>
#include <boost/process/extend.hpp>
#include <spdlog/spdlog.h>

#include "common/tls.hpp"

namespace sockherd::supervisor {
namespace {

ipc::channel::limits channel_limits() {
    ipc::channel::limits lim;
    lim.send_queue_bytes = 8 * 1024 * 1024; // room for a few maximal relayed messages
    lim.send_queue_fds = 256;               // hand-offs the worker has not taken yet
    return lim;
}

// Between fork and exec, async-signal-safe: writes "<what> failed (errno N)\n" after `prefix` to
// stderr and exits 127. Both strings were built before the fork.
[[noreturn]] void child_failed(const std::string& prefix, const char* what, int err) {
    char digits[16];
    std::size_t n = 0;
    unsigned v = static_cast<unsigned>(err);
    do
        digits[sizeof digits - 1 - n++] = static_cast<char>('0' + v % 10);
    while ((v /= 10) != 0 && n < sizeof digits);
    [[maybe_unused]] ssize_t ignored = ::write(STDERR_FILENO, prefix.data(), prefix.size());
    ignored = ::write(STDERR_FILENO, what, std::strlen(what));
    ignored = ::write(STDERR_FILENO, " failed (errno ", 15);
    ignored = ::write(STDERR_FILENO, digits + sizeof digits - n, n);
    ignored = ::write(STDERR_FILENO, ")\n", 2);
    ::_exit(127);
}

} // namespace

std::string_view to_string(process_state s) {
    switch (s) {
    case process_state::starting: return "starting";
    case process_state::ready: return "ready";
    case process_state::draining: return "draining";
    case process_state::exited: return "exited";
    }
    return "?";
}

std::string describe_wait_status(int status) {
    if (WIFEXITED(status))
        return "exited with status " + std::to_string(WEXITSTATUS(status));
    if (WIFSIGNALED(status)) {
        const int sig = WTERMSIG(status);
        std::string s = "killed by signal " + std::to_string(sig) + " (" + ::strsignal(sig) + ")";
        if (WCOREDUMP(status))
            s += ", core dumped";
        return s;
    }
    return "ended with wait status " + std::to_string(status);
}

worker_process::worker_process(net::io_context& ioc, process_observer& owner, std::size_t index, unsigned slot)
    : ioc_(ioc), owner_(owner), index_(index), slot_(slot) {}

worker_process::~worker_process() {
    if (channel_)
        channel_->close();
}

bool worker_process::spawn(const std::string& exe, const config& cfg, std::uint64_t generation,
                           const worker_identity& identity) {
    error_code ec;
    auto [ours, theirs] = ipc::make_socketpair(ec);
    if (ec) {
        spdlog::error("worker {}: cannot create its channel: {}", slot_, ec.message());
        return false;
    }
    const int child_fd = theirs.get();
    const pid_t parent = ::getpid();
    std::vector<std::string> args{"worker", "--channel-fd", std::to_string(child_fd), "--slot",
                                  std::to_string(slot_)};
    // argv[0] "sockherd" rather than "/proc/self/exe", so `ps` reads well.
    std::vector<std::string> argv_strings{"sockherd"};
    argv_strings.insert(argv_strings.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& a : argv_strings)
        argv.push_back(a.data());
    argv.push_back(nullptr);

    identity_ = identity;
    rlimit nofile{};
    const int fd_limit = ::getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < 65536
                             ? static_cast<int>(nofile.rlim_cur)
                             : 65536;
    const std::string failure_prefix =
        "sockherd: worker " + std::to_string(slot_) + ": cannot run as " + identity.describe() + ": ";

    std::error_code spawn_ec;
    namespace bp = boost::process;
    bp::child child(
        bp::exe = exe, bp::args = args,
        bp::extend::on_exec_setup =
            [&](auto& exec) {
                // In the child, between fork and exec: only async-signal-safe calls.
                // No descriptor the supervisor inherited (whatever a shell or a parent left open)
                // or opened itself reaches a worker: all close on exec, except the channel.
                if (::syscall(SYS_close_range, 3U, ~0U, CLOSE_RANGE_CLOEXEC) != 0)
                    for (int fd = 3; fd < fd_limit; ++fd) // kernels before 5.11
                        ::fcntl(fd, F_SETFD, FD_CLOEXEC);
                ::fcntl(child_fd, F_SETFD, 0); // the one descriptor the worker inherits
                // Workers never bind: no capability survives into them (a unit's ambient
                // CAP_NET_BIND_SERVICE would otherwise).
                ::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
                // Only the worker switches user. The supervisor stays root (when started as root):
                // it binds the privileged listeners a reload adds, re-reads root-only files (the
                // config; TLS keys later), owns the control socket, and signals workers of any user.
                if (identity_.switch_user) {
                    // A session of its own: no controlling terminal, so a worker cannot push
                    // keystrokes into the root shell that started the node (TIOCSTI).
                    ::setsid();
                    // Groups first, then the gid, then the uid: each step needs the root the next one drops.
                    if (::setgroups(identity_.groups.size(), identity_.groups.data()) != 0)
                        child_failed(failure_prefix, "setgroups", errno);
                    if (::setgid(identity_.gid) != 0)
                        child_failed(failure_prefix, "setgid", errno);
                    if (::setuid(identity_.uid) != 0)
                        child_failed(failure_prefix, "setuid", errno);
                    if (identity_.uid != 0 && ::setuid(0) == 0)
                        child_failed(failure_prefix, "giving up root", EPERM);
                }
                // After the switch: changing credentials clears the parent-death signal.
                ::prctl(PR_SET_PDEATHSIG, SIGKILL);
                if (::getppid() != parent)
                    ::_exit(0); // the supervisor died before prctl took effect
                exec.cmd_line = argv.data();
            },
        spawn_ec);
    if (spawn_ec) {
        spdlog::error("worker {}: cannot start {}: {}", slot_, exe, spawn_ec.message());
        return false;
    }
    pid_ = child.id();
    child.detach(); // the supervisor reaps its workers itself (SIGCHLD + waitpid)
    theirs.reset();

    generation_ = pending_generation_ = generation;
    state_ = process_state::starting;
    started_at_ = clock::now();

    channel_ = std::make_shared<ipc::channel>(ioc_, std::move(ours), channel_limits());
    channel_->send(config_message(cfg, generation));
    channel_->start({
        [this](ipc::message&& m) { on_message(std::move(m)); },
        [this](error_code e, std::string_view what) { on_channel_error(e, what); },
        [this] { owner_.on_process_room(*this); },
    });
    spdlog::info("worker {}: started, pid {}, generation {}", slot_, pid_, generation_);
    return true;
}

// The config text and the TLS listeners' certificates and keys as the supervisor read them.
ipc::config_msg worker_process::config_message(const config& cfg, std::uint64_t generation) {
    ipc::config_msg m{generation, cfg.source_text, {}};
    for (std::size_t i = 0; i < cfg.listeners.size(); ++i)
        if (const auto& t = cfg.listeners[i].tls_loaded)
            m.tls.push_back({static_cast<std::uint16_t>(i), t->cert_pem, t->key_pem});
    return m;
}

void worker_process::send_config(const config& cfg, std::uint64_t generation) {
    pending_generation_ = generation;
    if (channel_)
        channel_->send(config_message(cfg, generation));
}

void worker_process::send_listen(ipc::listen_msg&& msg) {
    if (channel_)
        channel_->send(std::move(msg));
}

void worker_process::hand_off(ipc::handoff_msg&& msg) {
    handoffs_sent_ += msg.connections.size();
    channel_->send(std::move(msg));
}

void worker_process::drain(std::chrono::milliseconds timeout, bool node_stopping) {
    if (!alive())
        return;
    state_ = process_state::draining;
    if (channel_)
        channel_->send(ipc::drain_msg{static_cast<std::uint32_t>(timeout.count()), node_stopping});
}

bool worker_process::send_relay(std::string_view frame) {
    if (channel_ && channel_->is_open() && channel_->queued_bytes() <= channel_limits().send_queue_bytes)
        return channel_->send_encoded(frame);
    if (channel_ && channel_->is_open() && (relay_drops_ & (relay_drops_ - 1)) == 0) // 1, 2, 4, 8…
        spdlog::warn("worker {}: channel over {} bytes; dropped a relay ({} so far)", slot_,
                     channel_limits().send_queue_bytes, relay_drops_ + 1);
    ++relay_drops_;
    return false;
}

bool worker_process::send(ipc::message m) {
    return channel_ && channel_->send(std::move(m));
}

void worker_process::stop_now() {
    if (channel_)
        channel_->send(ipc::stop_msg{});
}

void worker_process::kill(int signal, std::string reason) {
    if (!alive())
        return;
    if (!reason.empty() && kill_reason_.empty())
        kill_reason_ = std::move(reason);
    ::kill(pid_, signal);
}

bool worker_process::eligible() const {
    return state_ == process_state::ready && !stale_ && kill_reason_.empty() && channel_ && channel_->is_open() &&
           !channel_->full();
}

std::uint32_t worker_process::load() const {
    const std::uint64_t in_flight = handoffs_sent_ - std::min(handoffs_acked_, handoffs_sent_);
    return reported_connections_ + static_cast<std::uint32_t>(std::min<std::uint64_t>(in_flight, UINT32_MAX));
}

void worker_process::on_message(ipc::message&& m) {
    if (const auto* r = std::get_if<ipc::ready_msg>(&m)) {
        if (state_ == process_state::starting && r->generation == generation_) {
            state_ = process_state::ready;
            spdlog::info("worker {}: ready (pid {})", slot_, pid_);
            owner_.on_process_ready(*this);
        }
        if (r->generation > generation_ && r->generation <= pending_generation_) {
            generation_ = r->generation;
            spdlog::debug("worker {}: pid {} runs generation {}", slot_, pid_, generation_);
            if (generation_ == pending_generation_)
                owner_.on_process_config_applied(*this);
        }
    } else if (auto* h = std::get_if<ipc::heartbeat_msg>(&m)) {
        if (!heartbeat_at_)
            first_rss_ = h->rss_bytes;
        heartbeat_ = *h;
        heartbeat_at_ = clock::now();
        owner_.on_process_heartbeat(*this);
    } else if (const auto* l = std::get_if<ipc::load_msg>(&m)) {
        reported_connections_ = l->connections;
        handoffs_acked_ = l->handoffs_received;
    } else if (auto* p = std::get_if<ipc::publish_msg>(&m)) {
        owner_.on_process_publish(*this, std::move(*p));
    } else if (auto* i = std::get_if<ipc::interest_msg>(&m)) {
        owner_.on_process_interest(*this, std::move(*i));
    } else if (std::holds_alternative<ipc::drained_msg>(m)) {
        spdlog::info("worker {}: drained", slot_);
    } else if (const auto* u = std::get_if<ipc::unknown_type_msg>(&m)) {
        spdlog::warn("worker {}: did not recognize message type {} we sent", slot_, u->type);
    } else {
        // A worker sending a supervisor-only message is confused, not hostile: say so, carry on.
        spdlog::warn("worker {}: sent '{}', which only the supervisor sends; ignored", slot_,
                     ipc::to_string(ipc::type_of(m)));
        channel_->send(ipc::unknown_type_msg{static_cast<std::uint16_t>(ipc::type_of(m))});
    }
}

void worker_process::on_channel_error(error_code ec, std::string_view what) {
    // A worker that exits closes its end; if it left our last messages unread the kernel reports
    // that as a reset, and a send to it fails with EPIPE. Either way the process is on its way
    // out: SIGCHLD finishes the story.
    // A send can find the peer gone (EPIPE) before a read sees it (EOF): the same event.
    const bool peer_gone =
        ec == net::error::eof || ec == net::error::connection_reset || ec == net::error::broken_pipe;
    if (peer_gone && (state_ == process_state::draining || !kill_reason_.empty())) {
        spdlog::debug("worker {}: channel closed while draining or being killed ({})", slot_, what);
        return;
    }
    if (peer_gone)
        spdlog::warn("worker {}: channel closed unexpectedly ({}); replacing the worker", slot_, what);
    else
        spdlog::error("worker {}: channel failed: {}: {}; replacing the worker", slot_, what, ec.message());
    // Without its channel a worker is useless: make sure it goes. A peer that closed the channel
    // is usually already dying on its own (crash, outside SIGKILL): its wait status tells why, so
    // only a channel we gave up on is named as the cause.
    state_ = process_state::draining;
    kill(SIGKILL, peer_gone ? std::string() : "killed: its channel failed (" + std::string(what) + ")");
}

void worker_process::on_reaped(int wait_status) {
    exit_description_ = describe_wait_status(wait_status);
    if (!kill_reason_.empty())
        exit_description_ = kill_reason_ + "; " + exit_description_;
    exited_cleanly_ = WIFEXITED(wait_status) && WEXITSTATUS(wait_status) == 0;
    if (exited_cleanly_ && state_ == process_state::draining)
        spdlog::info("worker {}: pid {} {}", slot_, pid_, exit_description_);
    else
        spdlog::warn("worker {}: pid {} {}", slot_, pid_, exit_description_);
    if (channel_) {
        channel_->close();
        channel_.reset();
    }
    state_ = process_state::exited;
    owner_.on_process_exited(*this);
}

} // namespace sockherd::supervisor
