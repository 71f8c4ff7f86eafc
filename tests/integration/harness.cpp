#include "tests/integration/harness.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <set>
#include <sstream>
#include <stdexcept>
#include <system_error>

#include <gtest/gtest.h>

extern char** environ;

namespace sockherd::test {
namespace {

using namespace std::chrono_literals;

[[noreturn]] void throw_errno(const std::string& what) {
    throw std::system_error(errno, std::generic_category(), what);
}

// Orphaned workers (their supervisor killed) become our children, so we can reap them.
void become_subreaper() {
    static std::once_flag once;
    std::call_once(once, [] { ::prctl(PR_SET_CHILD_SUBREAPER, 1); });
}

// Fields of /proc/<pid>/stat after the command name: state, ppid, pgrp.
struct proc_stat {
    char state = '?';
    pid_t ppid = 0;
    pid_t pgrp = 0;
};

std::optional<proc_stat> read_proc_stat(pid_t pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
    std::string line;
    if (!in || !std::getline(in, line))
        return std::nullopt;
    const auto close = line.rfind(')'); // the command name may contain spaces and parentheses
    if (close == std::string::npos)
        return std::nullopt;
    std::istringstream rest(line.substr(close + 1));
    proc_stat s;
    if (!(rest >> s.state >> s.ppid >> s.pgrp))
        return std::nullopt;
    return s;
}

std::string proc_argv0(pid_t pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/cmdline", std::ios::binary);
    std::string arg0;
    std::getline(in, arg0, '\0');
    return arg0;
}

std::vector<std::string> split_lines(const std::string& text) {
    std::vector<std::string> lines;
    std::size_t start = 0;
    while (start < text.size()) {
        auto end = text.find('\n', start);
        if (end == std::string::npos)
            end = text.size();
        lines.emplace_back(text, start, end - start);
        start = end + 1;
    }
    return lines;
}

// Runs `ioc` until the operation started by `start` completes and returns its error. The caller's
// timeout is applied to `lowest` (a tcp_stream closes the socket when it expires, which completes
// the operation); a hard limit a little later guards against an operation that hangs anyway.
template <class Start>
error_code run_op(net::io_context& ioc, beast::tcp_stream& lowest, milliseconds timeout, Start&& start) {
    struct state {
        bool done = false;
        error_code ec;
    };
    auto st = std::make_shared<state>();
    lowest.expires_after(timeout);
    start([st](error_code ec, auto&&...) {
        st->ec = ec;
        st->done = true;
    });
    auto run_until = [&](clock::time_point limit) {
        while (!st->done && clock::now() < limit) {
            if (ioc.stopped())
                ioc.restart();
            ioc.run_one_until(limit);
        }
    };
    run_until(clock::now() + timeout + 2s);
    if (!st->done) {
        lowest.close(); // cancels the operation; its handler still runs, on `st`
        run_until(clock::now() + 2s);
        if (!st->done)
            return net::error::timed_out;
    }
    return st->ec;
}

tcp::endpoint loopback(std::uint16_t port) { return {net::ip::make_address_v4("127.0.0.1"), port}; }

} // namespace

using namespace std::chrono_literals;

bool wait_until(const std::function<bool()>& pred, milliseconds timeout, milliseconds poll) {
    const auto deadline = clock::now() + timeout;
    for (;;) {
        if (pred())
            return true;
        if (clock::now() >= deadline)
            return pred();
        std::this_thread::sleep_for(std::min<clock::duration>(poll, deadline - clock::now()));
    }
}

std::uint16_t free_port() {
    net::io_context ioc;
    tcp::acceptor acceptor(ioc, loopback(0));
    return acceptor.local_endpoint().port();
}

// ---- temp_dir ---------------------------------------------------------------------------------

temp_dir::temp_dir() {
    const char* base = std::getenv("TMPDIR");
    std::string templ = std::string(base && *base ? base : "/tmp") + "/sockherd-it-XXXXXX";
    if (!::mkdtemp(templ.data()))
        throw_errno("mkdtemp " + templ);
    path_ = templ;
    if (::chmod(path_.c_str(), 0755) != 0)
        throw_errno("chmod " + templ);
}

temp_dir::~temp_dir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
}

std::filesystem::path temp_dir::write_file(const std::filesystem::path& relative, std::string_view content) const {
    const auto full = path_ / relative;
    std::filesystem::create_directories(full.parent_path());
    std::ofstream out(full, std::ios::binary | std::ios::trunc);
    out.write(content.data(), static_cast<std::streamsize>(content.size()));
    if (!out)
        throw std::runtime_error("cannot write " + full.string());
    return full;
}

// ---- processes ----------------------------------------------------------------------------------

bool process_exists(pid_t pid) { return pid > 0 && (::kill(pid, 0) == 0 || errno == EPERM); }

bool process_running(pid_t pid) {
    if (pid <= 0)
        return false;
    const auto st = read_proc_stat(pid);
    return st && st->state != 'Z' && st->state != 'X';
}

std::vector<pid_t> children_of(pid_t parent) {
    std::vector<pid_t> out;
    std::error_code ec;
    for (const auto& entry : std::filesystem::directory_iterator("/proc", ec)) {
        const std::string name = entry.path().filename().string();
        if (name.empty() || !std::all_of(name.begin(), name.end(), [](char c) { return c >= '0' && c <= '9'; }))
            continue;
        const pid_t pid = static_cast<pid_t>(std::stol(name));
        const auto st = read_proc_stat(pid);
        if (st && st->ppid == parent)
            out.push_back(pid);
    }
    std::sort(out.begin(), out.end());
    return out;
}

bool reap_if_child(pid_t pid) {
    int status = 0;
    const pid_t r = ::waitpid(pid, &status, WNOHANG);
    return r == pid || (r < 0 && errno == ECHILD);
}

process::process(options opts) {
    if (opts.argv.empty())
        throw std::invalid_argument("process: empty argv");
    become_subreaper();

    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0)
        throw_errno("pipe2");

    // Everything the child needs is built before fork: after it, only async-signal-safe calls.
    std::vector<std::string> env_strings;
    for (char** e = environ; e && *e; ++e) {
        const std::string_view entry(*e);
        const auto key = entry.substr(0, entry.find('='));
        const bool overridden =
            std::any_of(opts.env.begin(), opts.env.end(), [&](const auto& kv) { return kv.first == key; });
        if (!overridden)
            env_strings.emplace_back(entry);
    }
    for (const auto& [k, v] : opts.env)
        env_strings.push_back(k + "=" + v);
    std::vector<char*> envp;
    for (auto& s : env_strings)
        envp.push_back(s.data());
    envp.push_back(nullptr);
    std::vector<char*> argv;
    for (auto& a : opts.argv)
        argv.push_back(a.data());
    argv.push_back(nullptr);
    const std::string cwd = opts.cwd.string();
    const std::string exec_failed = "integration harness: cannot execute " + opts.argv[0] + "\n";
    const pid_t parent = ::getpid();

    const pid_t pid = ::fork();
    if (pid < 0) {
        ::close(fds[0]);
        ::close(fds[1]);
        throw_errno("fork");
    }
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
        const int null_fd = ::open("/dev/null", O_RDONLY);
        if (null_fd >= 0)
            ::dup2(null_fd, 0);
        ::dup2(fds[1], 1);
        ::dup2(fds[1], 2);
        if (::close_range(3, ~0U, 0) != 0) {
            for (int fd = 3; fd < 4096; ++fd)
                ::close(fd);
        }
        if (!cwd.empty() && ::chdir(cwd.c_str()) != 0)
            ::_exit(127);
        ::execve(argv[0], argv.data(), envp.data());
        [[maybe_unused]] const auto ignored = ::write(2, exec_failed.data(), exec_failed.size());
        ::_exit(127);
    }
    ::setpgid(pid, pid); // also from here, so the group exists whichever side runs first
    ::close(fds[1]);
    pid_ = pid;
    out_fd_ = fds[0];
    reader_ = std::thread([this] { read_loop(); });
}

process::~process() {
    if (!exit_code_) {
        kill_group(SIGKILL);
        ::kill(pid_, SIGKILL);
        wait_exit(10s);
    }
    // Leftover holders of the pipe (orphans) are the owner's business; stop reading anyway.
    wait_until([this] { return output_closed(); }, 1s);
    stop_reader_ = true;
    if (reader_.joinable())
        reader_.join();
    ::close(out_fd_);
}

void process::read_loop() {
    char buf[8192];
    for (;;) {
        pollfd p{out_fd_, POLLIN, 0};
        const int r = ::poll(&p, 1, 50);
        if (r < 0 && errno != EINTR)
            break;
        if (r > 0) {
            const ssize_t n = ::read(out_fd_, buf, sizeof buf);
            if (n > 0) {
                std::lock_guard lock(mutex_);
                output_.append(buf, static_cast<std::size_t>(n));
                continue;
            }
            if (n == 0 || (errno != EINTR && errno != EAGAIN))
                break;
            continue;
        }
        if (stop_reader_)
            break;
    }
    output_closed_ = true;
}

std::string process::output() const {
    std::lock_guard lock(mutex_);
    return output_;
}

std::vector<std::string> process::output_lines() const { return split_lines(output()); }

std::vector<std::vector<std::string>> process::matches(const std::regex& re) const {
    std::vector<std::vector<std::string>> out;
    for (const auto& line : output_lines()) {
        std::smatch m;
        if (std::regex_search(line, m, re)) {
            std::vector<std::string> groups;
            for (const auto& g : m)
                groups.push_back(g.str());
            out.push_back(std::move(groups));
        }
    }
    return out;
}

std::size_t process::count(const std::regex& re) const {
    std::size_t n = 0;
    for (const auto& line : output_lines())
        if (std::regex_search(line, re))
            ++n;
    return n;
}

bool process::wait_for_output(const std::regex& re, milliseconds timeout, std::size_t n) const {
    return wait_until([&] { return count(re) >= n; }, timeout, 20ms);
}

bool process::signal(int signo) const { return !exit_code_ && ::kill(pid_, signo) == 0; }

void process::kill_group(int signo) const {
    if (pid_ > 0)
        ::kill(-pid_, signo);
}

bool process::exited() {
    if (exit_code_)
        return true;
    int status = 0;
    const pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r != pid_)
        return false;
    if (WIFEXITED(status))
        exit_code_ = WEXITSTATUS(status);
    else if (WIFSIGNALED(status))
        exit_code_ = 128 + WTERMSIG(status);
    else
        exit_code_ = 255;
    return true;
}

std::optional<int> process::wait_exit(milliseconds timeout) {
    wait_until([this] { return exited(); }, timeout, 5ms);
    return exit_code_;
}

command_result run_command(std::vector<std::string> argv, milliseconds timeout, env_list env) {
    process p({std::move(argv), std::move(env), {}});
    command_result r;
    r.exit_code = p.wait_exit(timeout);
    if (!r.exit_code) {
        p.kill_group(SIGKILL);
        p.wait_exit(5s);
    }
    wait_until([&] { return p.output_closed(); }, 2s);
    r.output = p.output();
    return r;
}

std::string binary_path() { return SOCKHERD_BINARY; }

// ---- node ---------------------------------------------------------------------------------------

std::string config_text::str() const {
    std::string s;
    s += "[server]\nworkers = " + std::to_string(workers) + "\n\n";
    s += "[[listener]]\naddress = \"127.0.0.1:%%PORT%%\"\n" + listener_extra + "\n";
    s += std::string("[log]\nlevel = \"info\"\n") + (access_log ? "access = true\n" : "") + "\n";
    s += routes;
    s += "\n";
    s += extra;
    s += "\n";
    return s;
}

namespace {

std::string_view trim(std::string_view s) {
    const auto b = s.find_first_not_of(" \t\r");
    if (b == std::string_view::npos)
        return {};
    return s.substr(b, s.find_last_not_of(" \t\r") - b + 1);
}

// The name of a `[table]` header line (not `[[array]]`), else nullopt.
std::optional<std::string> table_header(std::string_view line) {
    line = trim(line);
    if (line.size() < 3 || line[0] != '[' || line[1] == '[')
        return std::nullopt;
    const auto close = line.find(']');
    if (close == std::string_view::npos)
        return std::nullopt;
    return std::string(trim(line.substr(1, close - 1)));
}

bool is_header(std::string_view line) {
    line = trim(line);
    return !line.empty() && line[0] == '[';
}

// `key = ...` (or a dotted `key.sub = ...`) at the start of the line.
bool defines_key(std::string_view line, std::string_view key) {
    line = trim(line);
    if (line.substr(0, key.size()) != key)
        return false;
    const auto rest = trim(line.substr(key.size()));
    return !rest.empty() && (rest[0] == '=' || rest[0] == '.');
}

// The string value of `key = "..."` in `[table]` ("" for the root), if the text has one.
std::optional<std::string> string_key(const std::string& text, std::string_view table, std::string_view key) {
    std::string current;
    for (const auto& line : split_lines(text)) {
        if (const auto name = table_header(line)) {
            current = *name;
            continue;
        }
        if (is_header(line)) {
            current = "[[array]]";
            continue;
        }
        if (current != table || !defines_key(line, key))
            continue;
        const auto open = line.find('"');
        const auto close = open == std::string::npos ? open : line.find('"', open + 1);
        if (close == std::string::npos)
            return std::nullopt;
        return line.substr(open + 1, close - open - 1);
    }
    return std::nullopt;
}

} // namespace

std::string with_test_defaults(std::string config) {
    const auto lines = split_lines(config);
    bool has_admin = false;
    bool has_control = false;
    std::optional<std::size_t> server_line;   // `[server]`, or a root `server.key = ...`
    bool dotted_server = false;
    std::optional<std::size_t> first_header;
    for (std::size_t i = 0; i < lines.size(); ++i) {
        const auto name = table_header(lines[i]);
        if (name == "admin" || defines_key(lines[i], "admin"))
            has_admin = true;
        if (name == "server" && !server_line)
            server_line = i;
        if (!first_header && !server_line && defines_key(lines[i], "server")) {
            server_line = i;
            dotted_server = true;
        }
        if (is_header(lines[i]) && !first_header)
            first_header = i;
        if (defines_key(lines[i], "control_socket") || defines_key(lines[i], "server.control_socket"))
            has_control = true;
    }
    std::string out;
    const std::string control = "control_socket = \"%%DIR%%/control.sock\"\n";
    for (std::size_t i = 0; i < lines.size(); ++i) {
        // TOML allows one [server] table: the key goes into the existing one (as a dotted key when
        // the root defines server.x = ...), else into a new table placed before the first header
        // (so no root key ends up inside it).
        if (!has_control && !server_line && first_header == i)
            out += "[server]\n" + control + "\n";
        out += lines[i] + "\n";
        if (!has_control && server_line == i)
            out += dotted_server ? "server." + control : control;
    }
    if (!has_control && !server_line && !first_header)
        out += "\n[server]\n" + control;
    if (!has_admin)
        out += "\n[admin]\naddress = \"127.0.0.1:%%ADMIN_PORT%%\"\n";
    return out;
}

node::node(node_options opts, const std::string& binary) {
    // Substitute %%PORT%%, %%PORTn%%, %%ADMIN_PORT%% (one free port per distinct name) and %%DIR%%.
    std::string text;
    const std::string in = with_test_defaults(std::move(opts.config));
    std::size_t pos = 0;
    while (pos < in.size()) {
        const auto start = in.find("%%", pos);
        if (start == std::string::npos) {
            text.append(in, pos);
            break;
        }
        const auto end = in.find("%%", start + 2);
        if (end == std::string::npos) {
            text.append(in, pos);
            break;
        }
        text.append(in, pos, start - pos);
        const std::string name = in.substr(start + 2, end - start - 2);
        if (name == "DIR") {
            text += dir_.path().string();
        } else if (name.rfind("PORT", 0) == 0 || name == "ADMIN_PORT") {
            auto it = std::find_if(ports_.begin(), ports_.end(), [&](const auto& p) { return p.first == name; });
            if (it == ports_.end()) {
                ports_.emplace_back(name, free_port());
                it = std::prev(ports_.end());
            }
            text += std::to_string(it->second);
        } else {
            text.append(in, start, end + 2 - start); // not ours: leave it
        }
        pos = end + 2;
    }
    config_path_ = dir_.write_file("sockherd.toml", text);
    const auto admin = string_key(text, "admin", "address").value_or("127.0.0.1:9090");
    if (const auto colon = admin.rfind(':'); colon != std::string::npos && colon + 1 < admin.size()) {
        const auto digits = admin.substr(colon + 1);
        if (std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; }) &&
            digits.size() <= 5)
            admin_port_ = static_cast<std::uint16_t>(std::stoul(digits));
    }
    const auto dotted_control = string_key(text, "", "server.control_socket");
    control_socket_ =
        string_key(text, "server", "control_socket").value_or(dotted_control.value_or("/run/sockherd/control.sock"));
    proc_ = std::make_unique<process>(
        process::options{{binary, "run", "--config", config_path_.string()}, std::move(opts.env), dir_.path()});
}

node::~node() {
    std::vector<pid_t> workers = all_worker_pids();
    for (pid_t p : children_of(pid()))
        workers.push_back(p);
    if (!proc_->exited())
        proc_->kill_group(SIGKILL); // once reaped, its pid (the group id) is not ours to signal
    for (pid_t p : workers)
        if (process_running(p) && proc_argv0(p) == "sockherd")
            ::kill(p, SIGKILL);
    proc_->signal(SIGKILL);
    proc_->wait_exit(10s);
    // Workers whose supervisor died before them are our children now (we are a subreaper).
    wait_until(
        [&] {
            return std::all_of(workers.begin(), workers.end(), [](pid_t p) { return reap_if_child(p); });
        },
        3s);
    if (::testing::Test::HasFailure()) {
        std::string text = proc_->output();
        constexpr std::size_t max_dump = 64 * 1024;
        if (text.size() > max_dump)
            text = "[... " + std::to_string(text.size() - max_dump) + " bytes cut ...]\n" +
                   text.substr(text.size() - max_dump);
        std::cerr << "---- sockherd log (config " << config_path_.string() << ") ----\n"
                  << text << "---- end of sockherd log ----\n";
    }
}

std::uint16_t node::port(std::string_view placeholder) const {
    for (const auto& [name, port] : ports_)
        if (name == placeholder)
            return port;
    throw std::invalid_argument("node: no %%" + std::string(placeholder) + "%% in the config");
}

std::uint16_t node::admin_port() const {
    if (!admin_port_)
        throw std::invalid_argument("node: the config has no admin address with a port");
    return *admin_port_;
}

http_reply node::admin_get(std::string_view target, const header_list& headers, milliseconds timeout) const {
    return http_get(admin_port(), target, headers, timeout);
}

std::optional<nlohmann::json> node::status_json(const header_list& headers, milliseconds timeout) const {
    const auto r = admin_get("/status.json", headers, timeout);
    if (!r.ok() || r.status != 200)
        return std::nullopt;
    auto j = nlohmann::json::parse(r.body, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object())
        return std::nullopt;
    return j;
}

bool node::wait_slots_ready(const std::vector<unsigned>& slots, milliseconds timeout) {
    const auto deadline = clock::now() + timeout;
    const bool logged = wait_until(
        [&] {
            return proc_->exited() ||
                std::all_of(slots.begin(), slots.end(), [&](unsigned k) { return ready_count(k) > 0; });
        },
        timeout, 20ms);
    if (!logged || proc_->exited())
        return false;
    const auto left = std::chrono::duration_cast<milliseconds>(deadline - clock::now());
    bool answered = false;
    wait_until(
        [&] {
            answered = !proc_->exited() && http_get(port(), "/healthz", {}, 2s).status == 200;
            return answered || proc_->exited();
        },
        std::max(left, milliseconds(1000)), 20ms);
    return answered;
}

bool node::wait_ready(unsigned workers, milliseconds timeout) {
    std::vector<unsigned> slots(workers);
    for (unsigned k = 0; k < workers; ++k)
        slots[k] = k;
    return wait_slots_ready(slots, timeout);
}

std::optional<pid_t> node::ready_pid(unsigned slot) const {
    const std::regex re("\\[supervisor\\] info: worker " + std::to_string(slot) + ": ready \\(pid (\\d+)\\)");
    const auto m = proc_->matches(re);
    if (m.empty())
        return std::nullopt;
    return static_cast<pid_t>(std::stol(m.back()[1]));
}

std::size_t node::ready_count(unsigned slot) const {
    return proc_->count(std::regex("\\[supervisor\\] info: worker " + std::to_string(slot) + ": ready \\(pid \\d+\\)"));
}

std::vector<pid_t> node::worker_pids() const {
    auto pids = children_of(pid());
    std::lock_guard lock(seen_mutex_);
    for (pid_t p : pids)
        if (std::find(seen_workers_.begin(), seen_workers_.end(), p) == seen_workers_.end())
            seen_workers_.push_back(p);
    return pids;
}

std::vector<pid_t> node::all_worker_pids() const {
    std::set<pid_t> pids;
    for (const auto& m : proc_->matches(std::regex(R"(worker \d+: started, pid (\d+))")))
        pids.insert(static_cast<pid_t>(std::stol(m[1])));
    {
        std::lock_guard lock(seen_mutex_);
        pids.insert(seen_workers_.begin(), seen_workers_.end());
    }
    return {pids.begin(), pids.end()};
}

std::vector<std::string> node::unexpected_errors(const std::vector<std::regex>& allowed) const {
    static const std::regex bad(R"(\] (error|critical):|ERROR: (Address|Leak|Thread|Memory)Sanitizer|)"
                                R"(runtime error:|terminate called|Assertion .* failed)");
    std::vector<std::string> out;
    for (const auto& line : proc_->output_lines()) {
        if (!std::regex_search(line, bad))
            continue;
        const bool ok =
            std::any_of(allowed.begin(), allowed.end(),
                        [&](const std::regex& a) { return std::regex_search(line, a); });
        if (!ok)
            out.push_back(line);
    }
    return out;
}

void node::assert_no_unexpected_errors(const std::vector<std::regex>& allowed) const {
    const auto errors = unexpected_errors(allowed);
    if (errors.empty())
        return;
    std::string msg = std::to_string(errors.size()) + " unexpected error line(s) in the sockherd log:\n";
    for (const auto& l : errors)
        msg += "  " + l + "\n";
    ADD_FAILURE() << msg;
}

// ---- HTTP -------------------------------------------------------------------------------------

std::string http_reply::header(std::string_view name) const {
    const auto it = headers.find(name);
    return it == headers.end() ? std::string() : std::string(it->value());
}

std::optional<unsigned> http_reply::worker() const {
    const auto v = header("X-Sockherd-Worker");
    if (v.empty() || !std::all_of(v.begin(), v.end(), [](char c) { return c >= '0' && c <= '9'; }))
        return std::nullopt;
    return static_cast<unsigned>(std::stoul(v));
}

std::optional<health> parse_health(std::string_view body) {
    static const std::regex re(R"re(^\s*\{"status":"([a-z]+)","worker":(\d+),"pid":(\d+)\}\s*$)re");
    std::match_results<std::string_view::const_iterator> m;
    if (!std::regex_match(body.begin(), body.end(), m, re))
        return std::nullopt;
    health h;
    h.status = m[1].str();
    h.worker = static_cast<unsigned>(std::stoul(m[2].str()));
    h.pid = static_cast<pid_t>(std::stol(m[3].str()));
    return h;
}

http_reply http_request(std::uint16_t port, http::verb method, std::string_view target, const header_list& headers,
                        std::string body, milliseconds timeout) {
    http::request<http::string_body> req{method, target, 11};
    req.set(http::field::host, "127.0.0.1:" + std::to_string(port));
    req.set(http::field::user_agent, "sockherd-integration-tests");
    req.keep_alive(false);
    for (const auto& [k, v] : headers)
        req.set(k, v);
    if (!body.empty() || method == http::verb::post || method == http::verb::put) {
        req.body() = std::move(body);
        req.prepare_payload();
    }
    std::ostringstream os;
    os << req;

    raw_connection c;
    http_reply r;
    if ((r.ec = c.connect(port, timeout)))
        return r;
    if ((r.ec = c.send(os.str(), timeout)))
        return r;
    return c.read_response(timeout, method == http::verb::head);
}

http_reply http_get(std::uint16_t port, std::string_view target, const header_list& headers, milliseconds timeout) {
    return http_request(port, http::verb::get, target, headers, {}, timeout);
}

raw_connection::raw_connection() : stream_(ioc_) {}

error_code raw_connection::connect(std::uint16_t port, milliseconds timeout) {
    const auto ep = loopback(port);
    return run_op(ioc_, stream_, timeout, [&](auto handler) { stream_.async_connect(ep, std::move(handler)); });
}

error_code raw_connection::send(std::string_view bytes, milliseconds timeout) {
    return run_op(ioc_, stream_, timeout, [&](auto handler) {
        net::async_write(stream_, net::buffer(bytes.data(), bytes.size()), std::move(handler));
    });
}

http_reply raw_connection::read_response(milliseconds timeout, bool head) {
    http::response_parser<http::string_body> parser;
    parser.header_limit(1024 * 1024);
    parser.body_limit(64 * 1024 * 1024);
    if (head)
        parser.skip(true);
    http_reply r;
    r.ec = run_op(ioc_, stream_, timeout,
                  [&](auto handler) { http::async_read(stream_, buffer_, parser, std::move(handler)); });
    if (r.ec)
        return r;
    auto msg = parser.release();
    r.status = msg.result_int();
    r.headers = static_cast<const http::fields&>(msg);
    r.body = std::move(msg.body());
    return r;
}

raw_connection::until_close raw_connection::read_until_close(milliseconds timeout) {
    until_close out;
    const auto start = clock::now();
    const auto deadline = start + timeout;
    for (int i = 0; i < 100000; ++i) {
        const auto left = std::chrono::duration_cast<milliseconds>(deadline - clock::now());
        if (left <= milliseconds(0)) {
            out.ec = beast::error::timeout;
            break;
        }
        const auto ec = run_op(ioc_, stream_, left, [&](auto handler) {
            stream_.async_read_some(buffer_.prepare(64 * 1024),
                                    [this, h = std::move(handler)](error_code e, std::size_t n) mutable {
                                        buffer_.commit(n);
                                        h(e, n);
                                    });
        });
        if (ec) {
            out.ec = ec;
            out.closed = ec == net::error::eof || ec == net::error::connection_reset;
            break;
        }
    }
    out.data = beast::buffers_to_string(buffer_.data());
    buffer_.consume(buffer_.size());
    out.elapsed = std::chrono::duration_cast<milliseconds>(clock::now() - start);
    return out;
}

void raw_connection::close() {
    error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
    stream_.close();
}

raw_connection::until_close raw_exchange(std::uint16_t port, std::string_view bytes, milliseconds timeout) {
    raw_connection c;
    raw_connection::until_close out;
    if ((out.ec = c.connect(port, timeout)))
        return out;
    if ((out.ec = c.send(bytes, timeout)))
        return out;
    return c.read_until_close(timeout);
}

http_reply raw_request(std::uint16_t port, std::string_view bytes, milliseconds timeout) {
    raw_connection c;
    http_reply r;
    if ((r.ec = c.connect(port, timeout)))
        return r;
    if ((r.ec = c.send(bytes, timeout)))
        return r;
    return c.read_response(timeout);
}

// ---- WebSocket ----------------------------------------------------------------------------------

ws_client::ws_client() : ws_(ioc_) {
    // The tcp_stream's deadline (set per call) is the only timeout; no pings from our side.
    websocket::stream_base::timeout t{};
    t.handshake_timeout = websocket::stream_base::none();
    t.idle_timeout = websocket::stream_base::none();
    t.keep_alive_pings = false;
    ws_.set_option(t);
    ws_.read_message_max(64 * 1024 * 1024);
}

ws_client::~ws_client() {
    error_code ignored;
    beast::get_lowest_layer(ws_).socket().close(ignored);
}

error_code ws_client::connect(std::uint16_t port, std::string_view target, milliseconds timeout,
                              const header_list& headers) {
    auto& lowest = beast::get_lowest_layer(ws_);
    const auto ep = loopback(port);
    if (auto ec = run_op(ioc_, lowest, timeout, [&](auto handler) { lowest.async_connect(ep, std::move(handler)); }))
        return ec;
    error_code nodelay_ec; // as browsers do: small messages go out at once, not after delayed ACKs
    lowest.socket().set_option(tcp::no_delay(true), nodelay_ec);
    ws_.set_option(websocket::stream_base::decorator([headers](websocket::request_type& req) {
        req.set(http::field::user_agent, "sockherd-integration-tests");
        for (const auto& [k, v] : headers)
            req.set(k, v);
    }));
    const std::string host = "127.0.0.1:" + std::to_string(port);
    return run_op(ioc_, lowest, timeout,
                  [&](auto handler) { ws_.async_handshake(handshake_, host, target, std::move(handler)); });
}

std::optional<unsigned> ws_client::worker() const {
    const auto it = handshake_.find("X-Sockherd-Worker");
    if (it == handshake_.end())
        return std::nullopt;
    const std::string v(it->value());
    if (v.empty() || !std::all_of(v.begin(), v.end(), [](char c) { return c >= '0' && c <= '9'; }))
        return std::nullopt;
    return static_cast<unsigned>(std::stoul(v));
}

error_code ws_client::send(std::string_view data, bool text, milliseconds timeout) {
    ws_.text(text);
    return run_op(ioc_, beast::get_lowest_layer(ws_), timeout, [&](auto handler) {
        ws_.async_write(net::buffer(data.data(), data.size()), std::move(handler));
    });
}

ws_client::message ws_client::receive(milliseconds timeout) {
    message m;
    m.ec = run_op(ioc_, beast::get_lowest_layer(ws_), timeout,
                  [&](auto handler) { ws_.async_read(buffer_, std::move(handler)); });
    if (!m.ec) {
        m.text = ws_.got_text();
        m.data = beast::buffers_to_string(buffer_.data());
    }
    buffer_.consume(buffer_.size());
    return m;
}

std::string ws_client::echo(std::string_view data, bool text, milliseconds timeout) {
    if (auto ec = send(data, text, timeout))
        return "send: " + ec.message();
    const auto m = receive(timeout);
    if (m.ec)
        return "receive: " + m.ec.message();
    if (m.text != text)
        return std::string("sent a ") + (text ? "text" : "binary") + " message, got a " +
               (m.text ? "text" : "binary") + " one";
    if (m.data != data)
        return "sent " + std::to_string(data.size()) + " bytes, got " + std::to_string(m.data.size()) +
               " different bytes back";
    return {};
}

ws_client::close_info ws_client::read_until_close(milliseconds timeout) {
    close_info out;
    const auto deadline = clock::now() + timeout;
    for (int i = 0; i < 100000; ++i) {
        const auto left = std::chrono::duration_cast<milliseconds>(deadline - clock::now());
        if (left <= milliseconds(0)) {
            out.ec = beast::error::timeout;
            return out;
        }
        const auto ec = run_op(ioc_, beast::get_lowest_layer(ws_), left,
                               [&](auto handler) { ws_.async_read(buffer_, std::move(handler)); });
        buffer_.consume(buffer_.size());
        if (!ec) {
            ++out.messages_skipped;
            continue;
        }
        out.ec = ec;
        // A close frame that arrived is reported even when the closing handshake then failed.
        if (ec == websocket::error::closed || ws_.reason().code != websocket::close_code::none) {
            out.code = static_cast<std::uint16_t>(ws_.reason().code);
            out.reason = std::string(ws_.reason().reason.c_str());
        }
        return out;
    }
    out.ec = net::error::message_size;
    return out;
}

error_code ws_client::close(websocket::close_code code, milliseconds timeout) {
    return run_op(ioc_, beast::get_lowest_layer(ws_), timeout,
                  [&](auto handler) { ws_.async_close(code, std::move(handler)); });
}

std::string describe(const command_result& r) {
    return "exit " + (r.exit_code ? std::to_string(*r.exit_code) : std::string("(timed out)")) + ", output:\n" +
        r.output;
}

std::string describe(const http_reply& r) {
    if (!r.ok())
        return "no response: " + r.ec.message();
    return "status " + std::to_string(r.status) + ", body '" + r.body.substr(0, 300) + "'";
}

} // namespace sockherd::test
