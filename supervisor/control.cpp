#include "supervisor/control.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ostream>
#include <string_view>
#include <system_error>
#include <unordered_set>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "common/unique_fd.hpp"

namespace sockherd::supervisor {
namespace {

using local_stream = net::local::stream_protocol;
using clock = std::chrono::steady_clock;

constexpr std::size_t max_line_bytes = 1024;            // one command, '\n' included
constexpr std::chrono::seconds read_timeout{5};         // connect → complete command line
constexpr std::chrono::seconds write_timeout{5};        // answer → written to the client
constexpr std::size_t max_sessions = 16;                // concurrent control connections
constexpr int listen_backlog = 16;
constexpr std::chrono::milliseconds accept_retry{100};  // after EMFILE and the like
constexpr std::size_t max_reply_bytes = 16 * 1024 * 1024; // client: more is not a supervisor
constexpr std::string_view busy_reply = "error\nbusy\n";

std::system_error path_error(const std::string& path, int err, const std::string& what) {
    return std::system_error(err, std::system_category(), "control socket " + path + ": " + what);
}

// False when `path` does not fit sun_path (107 bytes and the NUL) or holds a NUL itself.
bool make_address(const std::string& path, sockaddr_un& addr) {
    addr = {};
    addr.sun_family = AF_UNIX;
    if (path.empty() || path.size() >= sizeof(addr.sun_path) || path.find('\0') != std::string::npos)
        return false;
    std::memcpy(addr.sun_path, path.data(), path.size());
    return true;
}

// Creates the socket's directory when it is missing; only the last component, so a typo in a
// configured path fails loudly instead of growing a tree. A narrower umask than 022 narrows the
// mode too, which is the administrator's choice to make.
void ensure_parent_directory(const std::string& path) {
    const auto slash = path.rfind('/');
    if (slash == std::string::npos || slash == 0)
        return;
    const std::string dir = path.substr(0, slash);
    if (::mkdir(dir.c_str(), 0755) == 0) {
        spdlog::info("control socket {}: created directory {}", path, dir);
        return;
    }
    if (errno != EEXIST) // a file in its place: bind() reports ENOTDIR below
        throw path_error(path, errno, "create directory " + dir);
}

enum class occupant { none, stale, live };

// What is at `path` before we bind: nothing, a socket nobody accepts on (left by a supervisor
// that died without close()), or a socket someone accepts on. Anything that is not a socket is
// an error: we never delete a file we did not make.
occupant probe(const std::string& path, const sockaddr_un& addr) {
    struct stat st{};
    if (::lstat(path.c_str(), &st) != 0) {
        if (errno == ENOENT)
            return occupant::none;
        throw path_error(path, errno, "stat");
    }
    if (!S_ISSOCK(st.st_mode))
        throw path_error(path, EEXIST, "exists and is not a socket; not replacing it");
    // Non-blocking: a full backlog answers EAGAIN at once instead of making start-up wait.
    unique_fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!fd)
        throw path_error(path, errno, "socket");
    if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) == 0)
        return occupant::live;
    switch (errno) {
    case EAGAIN: return occupant::live; // listening, just busy
    case ECONNREFUSED: return occupant::stale;
    case ENOENT: return occupant::none; // removed since lstat()
    default: throw path_error(path, errno, "connect (checking for a running supervisor)");
    }
}

// "workers  4\r" → {"workers", "4"}: single spaces are the protocol, but a doubled space or a
// CR from a hand-typed `socat` line costs nothing to accept.
std::vector<std::string> split_words(std::string_view line) {
    if (!line.empty() && line.back() == '\r')
        line.remove_suffix(1);
    std::vector<std::string> words;
    std::size_t pos = 0;
    while (pos < line.size()) {
        const auto end = std::min(line.find(' ', pos), line.size());
        if (end > pos)
            words.emplace_back(line.substr(pos, end - pos));
        pos = end + 1;
    }
    return words;
}

std::string join_words(const std::vector<std::string>& words) {
    std::string line;
    for (const auto& w : words) {
        if (!line.empty())
            line += ' ';
        line += w;
    }
    return line;
}

} // namespace

// The server's state; shared with the accept handler and weakly with sessions so that a late
// completion after close() finds it closed instead of freed.
struct control_server::impl : std::enable_shared_from_this<control_server::impl> {
    class session;

    impl(net::io_context& ioc, std::string path, handler_fn handler)
        : path_(std::move(path)), handler_(std::move(handler)), acceptor_(ioc), retry_timer_(ioc) {}

    void bind_socket();
    void do_accept();
    void on_accept(error_code ec, local_stream::socket socket);
    void close();

    std::string path_;
    handler_fn handler_;
    local_stream::acceptor acceptor_;
    net::steady_timer retry_timer_;
    std::unordered_set<std::shared_ptr<session>> sessions_;
    dev_t dev_ = 0; // identity of the file we bound, for close()
    ino_t ino_ = 0;
    bool started_ = false;
    bool open_ = true;
};

// One control connection: read one line, hand the words to the handler, write its answer,
// close. Owned by the server's session set; the Asio handlers and the timer hold it too.
class control_server::impl::session : public std::enable_shared_from_this<session> {
public:
    session(std::weak_ptr<impl> owner, local_stream::socket socket)
        : owner_(std::move(owner)), socket_(std::move(socket)), timer_(socket_.get_executor()) {
        ucred cred{};
        socklen_t len = sizeof(cred);
        if (::getsockopt(socket_.native_handle(), SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0)
            peer_ = fmt::format("pid {} uid {}", cred.pid, cred.uid);
        else
            peer_ = "unknown peer";
    }

    void start() {
        arm_timer(read_timeout);
        net::async_read_until(socket_, net::dynamic_buffer(in_, max_line_bytes), '\n',
                              [self = shared_from_this()](error_code ec, std::size_t n) { self->on_read(ec, n); });
    }

    // Answers once; later calls (a second answer, or one after close) do nothing.
    void reply(control_reply r) {
        if (phase_ != phase::reading && phase_ != phase::waiting)
            return;
        phase_ = phase::writing;
        out_ = r.ok ? "ok\n" : "error\n";
        out_ += r.body;
        if (!r.body.empty() && r.body.back() != '\n')
            out_ += '\n';
        arm_timer(write_timeout);
        net::async_write(socket_, net::buffer(out_),
                         [self = shared_from_this()](error_code ec, std::size_t) { self->on_write(ec); });
    }

    void close() {
        if (phase_ == phase::closed)
            return;
        const auto self = shared_from_this(); // erasing below may drop the set's reference
        phase_ = phase::closed;
        timer_.cancel();
        error_code ignored;
        socket_.shutdown(local_stream::socket::shutdown_both, ignored);
        socket_.close(ignored);
        if (auto owner = owner_.lock())
            owner->sessions_.erase(self);
    }

private:
    enum class phase { reading, waiting, writing, closed };

    void arm_timer(std::chrono::seconds limit) {
        timer_.expires_after(limit);
        timer_.async_wait([self = shared_from_this(), limit](error_code ec) {
            if (ec || self->phase_ == phase::closed)
                return;
            spdlog::debug("control connection ({}): nothing for {}s while {}; closing", self->peer_, limit.count(),
                          self->phase_ == phase::reading ? "reading the command" : "writing the answer");
            self->close();
        });
    }

    void on_read(error_code ec, std::size_t n) {
        if (phase_ != phase::reading)
            return;
        if (ec == net::error::not_found) { // max_line_bytes without a '\n'
            spdlog::warn("control connection ({}): command longer than {} bytes; refused", peer_, max_line_bytes);
            reply({false, "command too long"});
            return;
        }
        if (ec == net::error::eof && !in_.empty()) {
            n = in_.size(); // a last line without '\n' (`printf status | socat …`) still counts
        } else if (ec) {
            fail(ec, "read");
            close();
            return;
        }
        timer_.cancel();
        std::string_view line_in(in_.data(), n);
        if (line_in.back() == '\n')
            line_in.remove_suffix(1);
        const auto words = split_words(line_in);
        if (words.empty()) {
            reply({false, "empty command"});
            return;
        }
        const auto line = join_words(words);
        if (words[0] == "status")
            spdlog::debug("control: '{}' from {}", line, peer_);
        else
            spdlog::info("control: '{}' from {}", line, peer_);

        auto owner = owner_.lock();
        if (!owner || !owner->open_) {
            close();
            return;
        }
        phase_ = phase::waiting;
        // Posted, so that the handler may answer from inside its call, later, or from another
        // thread; a weak reference, so that an answer after close() (or after the client left
        // and the write failed) finds nothing to write to.
        respond_fn respond = [weak = weak_from_this()](control_reply r) {
            if (auto s = weak.lock())
                net::post(s->socket_.get_executor(), [s, r = std::move(r)]() mutable { s->reply(std::move(r)); });
        };
        try {
            owner->handler_(words, std::move(respond));
        } catch (const std::exception& e) {
            spdlog::error("control: handling '{}' failed: {}", line, e.what());
            reply({false, std::string("internal error: ") + e.what()});
        }
    }

    void on_write(error_code ec) {
        if (phase_ != phase::writing)
            return;
        if (ec)
            fail(ec, "write");
        close();
    }

    // A client that went away is not news; anything else is worth a line.
    void fail(error_code ec, const char* what) {
        if (ec == net::error::operation_aborted)
            return;
        if (ec == net::error::eof || ec == net::error::broken_pipe || ec == net::error::connection_reset) {
            spdlog::debug("control connection ({}): client left ({}: {})", peer_, what, ec.message());
            return;
        }
        spdlog::warn("control connection ({}): {} failed: {}", peer_, what, ec.message());
    }

    std::weak_ptr<impl> owner_;
    local_stream::socket socket_;
    net::steady_timer timer_;
    std::string peer_;
    std::string in_;
    std::string out_;
    phase phase_ = phase::reading;
};

// Binds with umask 0177 so that the socket file is born 0600: there is no moment in which it
// is group- or world-accessible, which chmod-after-bind alone would have (harmlessly, since
// connect() is refused before listen(), but it is simpler not to have to argue that). umask is
// process-wide; this runs once at start-up on the supervisor's only thread, and a file another
// thread created in that instant would come out narrower, never wider. The chmod afterwards is
// for directories whose default ACL overrides the umask.
void control_server::impl::bind_socket() {
    sockaddr_un addr{};
    if (!make_address(path_, addr))
        throw path_error(path_, ENAMETOOLONG, "path must be 1 to " + std::to_string(sizeof(addr.sun_path) - 1) +
                                                  " bytes without NUL");
    ensure_parent_directory(path_);
    switch (probe(path_, addr)) {
    case occupant::live: throw path_error(path_, EADDRINUSE, "another supervisor is running there");
    case occupant::stale:
        if (::unlink(path_.c_str()) != 0 && errno != ENOENT)
            throw path_error(path_, errno, "remove stale socket");
        spdlog::info("control socket {}: removed a stale socket file (nobody was accepting on it)", path_);
        break;
    case occupant::none: break;
    }

    unique_fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!fd)
        throw path_error(path_, errno, "socket");
    const mode_t old_mask = ::umask(0177);
    const int bound = ::bind(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr));
    const int bind_errno = errno;
    ::umask(old_mask);
    if (bound != 0)
        throw path_error(path_, bind_errno, "bind");

    const auto fail_bound = [&](const char* what) {
        const int e = errno;
        ::unlink(path_.c_str());
        throw path_error(path_, e, what);
    };
    struct stat st{};
    if (::chmod(path_.c_str(), 0600) != 0)
        fail_bound("chmod 0600");
    if (::lstat(path_.c_str(), &st) != 0)
        fail_bound("stat");
    dev_ = st.st_dev;
    ino_ = st.st_ino;
    if (::listen(fd.get(), listen_backlog) != 0)
        fail_bound("listen");

    error_code ec;
    acceptor_.assign(local_stream(), fd.get(), ec);
    if (ec) {
        errno = ec.value();
        fail_bound("register with the event loop");
    }
    fd.release(); // the acceptor owns it now
}

void control_server::impl::do_accept() {
    acceptor_.async_accept([self = shared_from_this()](error_code ec, local_stream::socket socket) {
        self->on_accept(ec, std::move(socket));
    });
}

void control_server::impl::on_accept(error_code ec, local_stream::socket socket) {
    if (!open_)
        return;
    if (ec) {
        if (ec == net::error::operation_aborted)
            return;
        spdlog::warn("control socket {}: accept failed: {}; retrying in {}ms", path_, ec.message(),
                     accept_retry.count());
        retry_timer_.expires_after(accept_retry);
        retry_timer_.async_wait([self = shared_from_this()](error_code tec) {
            if (!tec && self->open_)
                self->do_accept();
        });
        return;
    }
    // Asio accepts with accept(), not accept4(SOCK_CLOEXEC): keep the connection out of workers.
    ::fcntl(socket.native_handle(), F_SETFD, FD_CLOEXEC);
    if (sessions_.size() >= max_sessions) {
        // A fresh socket's send buffer always has room for these few bytes; no state to keep.
        [[maybe_unused]] const auto sent =
            ::send(socket.native_handle(), busy_reply.data(), busy_reply.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
        spdlog::warn("control socket {}: {} connections already open; refused one", path_, max_sessions);
        error_code ignored;
        socket.close(ignored);
    } else {
        auto s = std::make_shared<session>(weak_from_this(), std::move(socket));
        sessions_.insert(s);
        s->start();
    }
    do_accept();
}

void control_server::impl::close() {
    if (!open_)
        return;
    open_ = false;
    retry_timer_.cancel();
    error_code ignored;
    acceptor_.close(ignored);
    // Move the set out first: each session's close() erases itself from sessions_.
    auto open_sessions = std::move(sessions_);
    sessions_.clear();
    for (const auto& s : open_sessions)
        s->close();
    // Only our own file: a supervisor started after us may have replaced it with its own.
    struct stat st{};
    if (::lstat(path_.c_str(), &st) == 0 && st.st_dev == dev_ && st.st_ino == ino_) {
        if (::unlink(path_.c_str()) != 0)
            spdlog::warn("control socket {}: removing it failed: {}", path_, std::strerror(errno));
    } else {
        spdlog::debug("control socket {}: no longer ours; leaving it", path_);
    }
}

control_server::control_server(net::io_context& ioc, std::string path, handler_fn handler)
    : impl_(std::make_shared<impl>(ioc, std::move(path), std::move(handler))) {
    impl_->bind_socket();
}

control_server::~control_server() { close(); }

void control_server::start() {
    if (!impl_->open_ || impl_->started_)
        return;
    impl_->started_ = true;
    impl_->do_accept();
}

void control_server::close() { impl_->close(); }

const std::string& control_server::path() const { return impl_->path_; }

// ---- client ------------------------------------------------------------------------------------

namespace {

// Waits until `fd` is ready for `events` or the deadline passes: 1 ready, 0 timed out, -1 error.
int wait_until(int fd, short events, clock::time_point deadline) {
    for (;;) {
        const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - clock::now());
        if (left.count() <= 0)
            return 0;
        pollfd p{fd, events, 0};
        const int r = ::poll(&p, 1, static_cast<int>(std::min<long long>(left.count(), 60'000)));
        if (r > 0)
            return 1;
        if (r < 0 && errno != EINTR)
            return -1;
    }
}

std::string describe(std::chrono::milliseconds d) {
    if (d.count() % 1000 == 0)
        return std::to_string(d.count() / 1000) + "s";
    return std::to_string(d.count()) + "ms";
}

// The start of a reply we did not understand, safe to put in one line of an error message.
std::string quote_start(std::string_view reply) {
    constexpr std::size_t limit = 80;
    const auto first_line = reply.substr(0, reply.find('\n'));
    std::string s = "\"";
    for (char c : first_line.substr(0, limit))
        s += (c >= 0x20 && c < 0x7f) ? c : '?';
    s += first_line.size() > limit ? "...\"" : "\"";
    return s;
}

// "ok\nbody" or exactly "ok" → body; anything else → false.
bool take_body(std::string_view reply, std::string_view tag, std::string& body) {
    if (reply == tag) {
        body.clear();
        return true;
    }
    if (reply.size() > tag.size() && reply.substr(0, tag.size()) == tag && reply[tag.size()] == '\n') {
        body = reply.substr(tag.size() + 1);
        return true;
    }
    return false;
}

void print_body(std::ostream& os, const std::string& body) {
    os << body;
    if (!body.empty() && body.back() != '\n')
        os << '\n';
}

} // namespace

int run_control_command(const std::string& socket_path, const std::vector<std::string>& words, std::ostream& out,
                        std::ostream& err, std::chrono::milliseconds timeout) {
    const auto deadline = clock::now() + timeout;
    const auto unreachable = [&](const char* what, int e) {
        if (e == EACCES || e == EPERM)
            err << "sockherd: permission denied on the control socket " << socket_path << " (" << what << ": "
                << std::strerror(e) << "); run this as the service's user or as root\n";
        else if (e == ENOENT || e == ECONNREFUSED || e == ENOTDIR)
            err << "sockherd: no supervisor is running at " << socket_path << " (" << what << ": " << std::strerror(e)
                << ")\n";
        else
            err << "sockherd: cannot reach the supervisor at " << socket_path << " (" << what << ": "
                << std::strerror(e) << ")\n";
        return 2;
    };
    const auto no_answer = [&] {
        err << "sockherd: no answer from the supervisor at " << socket_path << " within " << describe(timeout) << "\n";
        return 1;
    };

    for (const auto& w : words) {
        if (w.find_first_of("\r\n") != std::string::npos || w.find('\0') != std::string::npos) {
            err << "sockherd: a command word may not contain a line break or NUL\n";
            return 1;
        }
    }
    sockaddr_un addr{};
    if (!make_address(socket_path, addr)) {
        err << "sockherd: control socket path must be 1 to " << sizeof(addr.sun_path) - 1
            << " bytes: " << socket_path << "\n";
        return 2;
    }

    unique_fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd)
        return unreachable("socket", errno);
    // A blocking connect waits while the supervisor's backlog is full; SO_SNDTIMEO bounds that
    // wait (Linux then fails it with EAGAIN).
    const auto left = std::chrono::duration_cast<std::chrono::microseconds>(deadline - clock::now());
    timeval tv{};
    tv.tv_sec = static_cast<time_t>(std::max<long long>(left.count(), 1000) / 1'000'000);
    tv.tv_usec = static_cast<suseconds_t>(std::max<long long>(left.count(), 1000) % 1'000'000);
    ::setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    while (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EINPROGRESS)
            return no_answer();
        return unreachable("connect", errno);
    }
    if (::fcntl(fd.get(), F_SETFL, ::fcntl(fd.get(), F_GETFL) | O_NONBLOCK) != 0)
        return unreachable("fcntl(O_NONBLOCK)", errno);

    const std::string line = join_words(words) + "\n";
    std::size_t sent = 0;
    while (sent < line.size()) {
        const ssize_t n = ::send(fd.get(), line.data() + sent, line.size() - sent, MSG_NOSIGNAL);
        if (n >= 0) {
            sent += static_cast<std::size_t>(n);
            continue;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN) {
            const int r = wait_until(fd.get(), POLLOUT, deadline);
            if (r == 0)
                return no_answer();
            if (r < 0)
                return unreachable("poll", errno);
            continue;
        }
        if (errno == EPIPE || errno == ECONNRESET)
            break; // it hung up early ("busy", "command too long"); the answer may be waiting
        return unreachable("send", errno);
    }

    std::string reply;
    char buf[4096];
    for (;;) {
        const ssize_t n = ::recv(fd.get(), buf, sizeof(buf), 0);
        if (n > 0) {
            reply.append(buf, static_cast<std::size_t>(n));
            if (reply.size() > max_reply_bytes) {
                err << "sockherd: the reply from " << socket_path << " is larger than " << max_reply_bytes
                    << " bytes; not a sockherd supervisor?\n";
                return 1;
            }
            continue;
        }
        if (n == 0)
            break;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN) {
            const int r = wait_until(fd.get(), POLLIN, deadline);
            if (r == 0)
                return no_answer();
            if (r < 0)
                return unreachable("poll", errno);
            continue;
        }
        // Closing with our command half-read resets the connection after the answer it wrote.
        if (errno == ECONNRESET && !reply.empty())
            break;
        err << "sockherd: reading the answer from the supervisor at " << socket_path
            << " failed: " << std::strerror(errno) << "\n";
        return 1;
    }

    std::string body;
    if (take_body(reply, "ok", body)) {
        print_body(out, body);
        return 0;
    }
    if (take_body(reply, "error", body)) {
        if (body.empty())
            err << "sockherd: '" << join_words(words) << "' failed (the supervisor gave no reason)\n";
        else
            print_body(err, body);
        return 1;
    }
    if (reply.empty())
        err << "sockherd: the supervisor at " << socket_path << " closed the connection without answering\n";
    else
        err << "sockherd: unexpected reply from " << socket_path << ": " << quote_start(reply) << "\n";
    return 1;
}

} // namespace sockherd::supervisor
