#pragma once
// Integration-test harness: runs the real sockherd binary (a `node`) on free loopback ports and
// talks to it as a client (HTTP, raw bytes, WebSocket). Owned by one test; single-threaded unless
// a comment says otherwise. Every wait has a deadline, every client call a timeout, and a node's
// destructor kills whatever it started, so a failing test never leaves processes behind.
//
// Processes: a node's supervisor runs in its own process group with PR_SET_PDEATHSIG, and the
// test process makes itself a child subreaper, so workers orphaned by a dead supervisor become
// our children (reaped by the harness) instead of depending on what PID 1 does with zombies.

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <regex>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/net.hpp"

namespace sockherd::test {

using clock = std::chrono::steady_clock;
using milliseconds = std::chrono::milliseconds;

// What a client call waits for when the test does not say.
inline constexpr milliseconds default_timeout{5000};

using header_list = std::vector<std::pair<std::string, std::string>>;
using env_list = std::vector<std::pair<std::string, std::string>>;

// Polls `pred` every `poll` until it returns true (-> true) or `timeout` passes (-> false).
// `pred` is always evaluated at least once, and once more at the deadline.
bool wait_until(const std::function<bool()>& pred, milliseconds timeout, milliseconds poll = milliseconds(10));

// A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, read, closed).
std::uint16_t free_port();

// A fresh directory (mkdtemp under $TMPDIR or /tmp), removed recursively by the destructor.
// Mode 0755, not mkdtemp's 0700: a node started as root runs its workers as [server] user
// ("nobody" by default), and they must be able to read the static files a test puts here.
class temp_dir {
public:
    temp_dir();
    ~temp_dir();
    temp_dir(const temp_dir&) = delete;
    temp_dir& operator=(const temp_dir&) = delete;

    const std::filesystem::path& path() const { return path_; }
    // Writes `content` to path()/relative (parent directories created); returns the full path.
    std::filesystem::path write_file(const std::filesystem::path& relative, std::string_view content) const;

private:
    std::filesystem::path path_;
};

// ---- processes -------------------------------------------------------------------------------

// kill(pid, 0) succeeds (the pid exists, zombies included).
bool process_exists(pid_t pid);
// The pid exists and is not a zombie: it is still running code.
bool process_running(pid_t pid);
// Pids whose parent is `parent` (from /proc/<pid>/stat).
std::vector<pid_t> children_of(pid_t parent);
// Reaps `pid` if it is a zombie child of this process; true once it is reaped or not our child.
bool reap_if_child(pid_t pid);

// One child process with stdout and stderr captured together (a reader thread appends to a
// mutex-protected string). The child runs in its own process group, dies with the thread that
// created it (PR_SET_PDEATHSIG), writes no core files and inherits no descriptor but 0, 1, 2.
class process {
public:
    struct options {
        std::vector<std::string> argv;     // argv[0] is the executable path
        env_list env;                      // added to (or replacing in) this process's environment
        std::filesystem::path cwd;         // empty: ours
    };

    explicit process(options opts);
    // SIGKILLs the process group if the child was not reaped yet, reaps it, stops the reader.
    ~process();
    process(const process&) = delete;
    process& operator=(const process&) = delete;

    pid_t pid() const { return pid_; }
    std::string output() const;
    std::vector<std::string> output_lines() const;
    // For every line of the output that matches `re` (regex_search): the whole match and its groups.
    std::vector<std::vector<std::string>> matches(const std::regex& re) const;
    std::size_t count(const std::regex& re) const;
    bool wait_for_output(const std::regex& re, milliseconds timeout, std::size_t count = 1) const;

    bool signal(int signo) const;        // kill(pid, signo); false once reaped
    void kill_group(int signo) const;    // kill(-pgid, signo)
    // The exit code (128 + signal when killed), or nullopt if it did not exit within `timeout`.
    std::optional<int> wait_exit(milliseconds timeout);
    // Reaps without blocking; true once the child has exited.
    bool exited();
    std::optional<int> exit_code() const { return exit_code_; }
    // The reader saw end-of-file: every holder of the output pipe (the child, its children) is gone.
    bool output_closed() const { return output_closed_.load(); }

private:
    void read_loop();

    pid_t pid_ = -1;
    int out_fd_ = -1;
    std::optional<int> exit_code_;
    mutable std::mutex mutex_;
    std::string output_;
    std::atomic<bool> stop_reader_{false};
    std::atomic<bool> output_closed_{false};
    std::thread reader_;
};

struct command_result {
    std::optional<int> exit_code; // nullopt: killed after the timeout
    std::string output;           // stdout and stderr together
};

// Runs a command to completion (killed after `timeout`).
command_result run_command(std::vector<std::string> argv, milliseconds timeout = default_timeout,
                           env_list env = {});
// For failure messages: "exit N, output:\n…".
std::string describe(const command_result& r);

// The sockherd binary under test.
std::string binary_path();

struct http_reply;

// ---- a running node ---------------------------------------------------------------------------

// The usual test config: `workers` workers, one handoff listener on 127.0.0.1:%%PORT%%, log level
// info, and `routes` (default: /echo echo + / static demo page), followed by `extra` TOML.
// The node adds its own admin address and control socket unless `extra` sets them (see node_options).
struct config_text {
    explicit config_text(unsigned worker_count = 2, std::string extra_toml = {})
        : workers(worker_count), extra(std::move(extra_toml)) {}

    unsigned workers = 2;
    std::string extra;
    std::string listener_extra; // more keys of the [[listener]] (e.g. "proxy_protocol = true\n")
    bool access_log = false;    // [log] access = true
    std::string routes = "[[route]]\npath = \"/echo\"\nkind = \"echo\"\n\n"
                         "[[route]]\npath = \"/\"\nkind = \"static\"\n";
    std::string str() const;
};

struct node_options {
    // TOML. Placeholders: %%PORT%%, %%PORTn%% and %%ADMIN_PORT%% (a free port each), %%DIR%% (the
    // node's temp dir). A config without an [admin] table gets one on 127.0.0.1:%%ADMIN_PORT%%, and
    // one without `control_socket` gets "%%DIR%%/control.sock" under [server], so no test binds the
    // defaults (127.0.0.1:9090, /run/sockherd/control.sock).
    std::string config;
    env_list env;
};

// What the node adds to `config` (before placeholders are substituted): see node_options.
std::string with_test_defaults(std::string config);

// `sockherd run --config <temp>/sockherd.toml`, started by the constructor.
class node {
public:
    explicit node(node_options opts) : node(std::move(opts), binary_path()) {}
    // The same with another sockherd executable than binary_path().
    node(node_options opts, const std::string& binary);
    explicit node(const config_text& cfg, env_list env = {}) : node(node_options{cfg.str(), std::move(env)}) {}
    // SIGKILLs the supervisor and every worker this node ever had; reaps them. Prints the log
    // when the current test has failed.
    ~node();
    node(const node&) = delete;
    node& operator=(const node&) = delete;

    std::uint16_t port(std::string_view placeholder = "PORT") const;
    // The port of the [admin] address in the config as written (throws when there is none).
    std::uint16_t admin_port() const;
    // The control socket path in the config as written ("" when the config says none).
    const std::filesystem::path& control_socket() const { return control_socket_; }
    // GET `target` on the admin port.
    http_reply admin_get(std::string_view target, const header_list& headers = {},
                         milliseconds timeout = default_timeout) const;
    // GET /status.json on the admin port, parsed; nullopt unless it answered 200 with valid JSON.
    std::optional<nlohmann::json> status_json(const header_list& headers = {},
                                              milliseconds timeout = default_timeout) const;
    const temp_dir& dir() const { return dir_; }
    const std::filesystem::path& config_path() const { return config_path_; }
    pid_t pid() const { return proc_->pid(); }
    process& proc() { return *proc_; }

    std::string log() const { return proc_->output(); }
    std::size_t count_log(const std::regex& re) const { return proc_->count(re); }
    bool wait_for_log(const std::regex& re, milliseconds timeout, std::size_t count = 1) const {
        return proc_->wait_for_output(re, timeout, count);
    }

    // Waits until slots 0..workers-1 have each logged "worker K: ready" (since the start) and
    // GET /healthz on port() answers 200. False on timeout or if the supervisor exited.
    bool wait_ready(unsigned workers, milliseconds timeout = milliseconds(20000));
    // The same for the given slots only (e.g. when another slot is meant to crash).
    bool wait_slots_ready(const std::vector<unsigned>& slots, milliseconds timeout = milliseconds(20000));
    // The pid in the last "worker K: ready (pid P)" line.
    std::optional<pid_t> ready_pid(unsigned slot) const;
    // How many times slot K has logged "ready".
    std::size_t ready_count(unsigned slot) const;
    // Live children of the supervisor (from /proc), sorted.
    std::vector<pid_t> worker_pids() const;
    // Every worker pid this node has logged ("worker K: started, pid P") or been seen with.
    std::vector<pid_t> all_worker_pids() const;

    bool signal(int signo) const { return proc_->signal(signo); }
    std::optional<int> wait_exit(milliseconds timeout) { return proc_->wait_exit(timeout); }

    // Log lines that say something went wrong: "] error:", "] critical:", sanitizer reports,
    // std::terminate; minus lines matching one of `allowed`.
    std::vector<std::string> unexpected_errors(const std::vector<std::regex>& allowed = {}) const;
    // Adds a (non-fatal) GoogleTest failure listing unexpected_errors(allowed), if any.
    void assert_no_unexpected_errors(const std::vector<std::regex>& allowed = {}) const;

private:
    temp_dir dir_;
    std::vector<std::pair<std::string, std::uint16_t>> ports_;
    std::filesystem::path config_path_;
    std::optional<std::uint16_t> admin_port_;
    std::filesystem::path control_socket_;
    std::unique_ptr<process> proc_;
    mutable std::mutex seen_mutex_;
    mutable std::vector<pid_t> seen_workers_;
};

// Collects failures from several threads; the first few are kept verbatim.
class failure_log {
public:
    void add(std::string what) {
        std::lock_guard lock(mutex_);
        ++count_;
        if (samples_.size() < 10)
            samples_.push_back(std::move(what));
    }
    std::size_t count() const {
        std::lock_guard lock(mutex_);
        return count_;
    }
    std::string str() const {
        std::lock_guard lock(mutex_);
        std::string s = std::to_string(count_) + " failure(s)";
        for (const auto& f : samples_)
            s += "\n  " + f;
        return s;
    }

private:
    mutable std::mutex mutex_;
    std::size_t count_ = 0;
    std::vector<std::string> samples_;
};

// ---- clients ---------------------------------------------------------------------------------

struct http_reply {
    error_code ec;          // set when no complete response arrived (refused, reset, timeout, ...)
    unsigned status = 0;
    http::fields headers;
    std::string body;

    bool ok() const { return !ec; }
    std::string header(std::string_view name) const;
    // X-Sockherd-Worker as a number.
    std::optional<unsigned> worker() const;
};

// The body of GET /healthz: {"status":"ok","worker":K,"pid":P}.
struct health {
    std::string status;
    unsigned worker = 0;
    pid_t pid = 0;
};
std::optional<health> parse_health(std::string_view body);

// For failure messages: "status 200, body '…'" (the first 300 bytes) or "no response: why".
std::string describe(const http_reply& r);

// One request on a fresh connection to 127.0.0.1:port (Connection: close), under `timeout` for
// each step (connect, write, read).
http_reply http_request(std::uint16_t port, http::verb method, std::string_view target, const header_list& headers = {},
                        std::string body = {}, milliseconds timeout = default_timeout);
http_reply http_get(std::uint16_t port, std::string_view target, const header_list& headers = {},
                    milliseconds timeout = default_timeout);

// A TCP connection that sends exactly the bytes it is given and reads replies as they come:
// for pipelining, malformed requests, slow or silent clients.
class raw_connection {
public:
    struct until_close {
        std::string data;
        bool closed = false;    // the peer closed (FIN or reset) before the timeout
        error_code ec;          // eof, connection_reset, beast timeout, ...
        milliseconds elapsed{0};
    };

    raw_connection();
    error_code connect(std::uint16_t port, milliseconds timeout = default_timeout);
    error_code send(std::string_view bytes, milliseconds timeout = default_timeout);
    // Parses the next response (bytes already read and not yet consumed come first).
    // `head`: the request was HEAD, so the response has no body.
    http_reply read_response(milliseconds timeout = default_timeout, bool head = false);
    // Reads whatever comes until the peer closes or `timeout` passes.
    until_close read_until_close(milliseconds timeout);
    void close();

private:
    net::io_context ioc_;
    beast::tcp_stream stream_;
    beast::flat_buffer buffer_;
};

// Connects, sends `bytes`, reads until the peer closes (or `timeout`).
raw_connection::until_close raw_exchange(std::uint16_t port, std::string_view bytes,
                                         milliseconds timeout = default_timeout);
// Connects, sends `bytes`, parses one response.
http_reply raw_request(std::uint16_t port, std::string_view bytes, milliseconds timeout = default_timeout);

// A WebSocket client over its own io_context. Each call runs to completion under its timeout;
// a timeout closes the connection (the stream cannot be used afterwards).
// Not thread-safe; distinct clients may be used from distinct threads.
class ws_client {
public:
    struct message {
        error_code ec;
        bool text = false;
        std::string data;
    };
    struct close_info {
        error_code ec;                      // websocket::error::closed when the close handshake completed
        std::optional<std::uint16_t> code;  // the close code the peer sent (also when `ec` is another error)
        std::string reason;
        std::size_t messages_skipped = 0;   // data messages read before the close
    };

    ws_client();
    ~ws_client();
    ws_client(const ws_client&) = delete;
    ws_client& operator=(const ws_client&) = delete;

    error_code connect(std::uint16_t port, std::string_view target = "/echo", milliseconds timeout = default_timeout,
                       const header_list& headers = {});
    const websocket::response_type& handshake_response() const { return handshake_; }
    // X-Sockherd-Worker from the handshake response.
    std::optional<unsigned> worker() const;
    bool is_open() const { return ws_.is_open(); }

    error_code send(std::string_view data, bool text, milliseconds timeout = default_timeout);
    error_code send_text(std::string_view data, milliseconds timeout = default_timeout) {
        return send(data, true, timeout);
    }
    error_code send_binary(std::string_view data, milliseconds timeout = default_timeout) {
        return send(data, false, timeout);
    }
    message receive(milliseconds timeout = default_timeout);
    // Sends `data` and expects it back with the same type; an empty string on success, else why not.
    std::string echo(std::string_view data, bool text, milliseconds timeout = default_timeout);
    // Reads (and discards) messages until the peer's close frame; reports its code.
    close_info read_until_close(milliseconds timeout);
    error_code close(websocket::close_code code = websocket::close_code::normal,
                     milliseconds timeout = default_timeout);

private:
    net::io_context ioc_;
    websocket::stream<beast::tcp_stream> ws_;
    beast::flat_buffer buffer_;
    websocket::response_type handshake_;
};

} // namespace sockherd::test
