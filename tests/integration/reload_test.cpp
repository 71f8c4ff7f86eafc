// Hot reload (issue 5), from outside: the real binary, its config file rewritten in place and
// re-read on `sockherd reload` or SIGHUP, while the test keeps fresh connections coming (HTTP and
// WebSocket) and ~100 WebSocket sessions echoing from other threads. In-place settings, worker
// count, listeners, bad configs, the drain deadline, pub/sub across generations, queued SIGHUPs and
// SIGTERM in the middle of a reload. Every wait has a deadline, every loop a bound.

#include <sched.h>
#include <signal.h>
#include <sys/types.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/integration/harness.hpp"
#include "tests/integration/load.hpp"
#include "tests/integration/status_json.hpp"

namespace sockherd::test {
namespace {

using namespace std::chrono_literals;
using json = nlohmann::json;

// [supervisor] drain_timeout in every config here.
constexpr auto drain = 2000ms;
// What a drained worker may take beyond the drain deadline to be gone (ASan, a busy machine).
constexpr auto exit_margin = 2000ms;
// Sessions are closed up to a tenth of drain_timeout early (jitter); a little more for clocks.
constexpr auto earliest_close = drain * 9 / 10 - 100ms;

milliseconds since(clock::time_point t0) { return std::chrono::duration_cast<milliseconds>(clock::now() - t0); }

bool is_zombie_free_and_gone(pid_t pid) {
    errno = 0;
    return ::kill(pid, 0) == -1 && errno == ESRCH && !std::filesystem::exists("/proc/" + std::to_string(pid));
}

std::string lower(std::string s) {
    std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return s;
}

// 1-based line of the first occurrence of `needle` in `text` (0 when absent).
int line_of(const std::string& text, std::string_view needle) {
    const auto pos = text.find(needle);
    if (pos == std::string::npos)
        return 0;
    return 1 + static_cast<int>(std::count(text.begin(), text.begin() + static_cast<std::ptrdiff_t>(pos), '\n'));
}

// ---- the config file ------------------------------------------------------------------------------

struct route {
    std::string path;
    std::string kind;
};

// The whole config file, written by the test both at start (with %%PLACEHOLDERS%%, which the
// harness substitutes) and for every reload (with the node's concrete ports: the harness only
// substitutes at start). It names the node's own admin address and control socket itself, so the
// harness adds nothing and every rewrite keeps them.
struct node_config {
    unsigned workers = 2;
    std::vector<std::string> listeners{"PORT"}; // placeholder names: address = "127.0.0.1:%%NAME%%"
    std::vector<route> routes{{"/echo", "echo"}, {"/ws/", "pubsub"}, {"/", "static"}};
    std::string max_message_size = "64KiB";
    std::string max_header_size = "16KiB";
    std::vector<std::string> tokens{"tok-old"};
    std::string log_level = "info";
    std::string server_more;    // more lines in [server]
    std::string websocket_more; // more lines in [websocket]
    std::string extra;          // appended verbatim (a test may break the file on purpose here)

    std::string text() const {
        std::string s = "[server]\nworkers = " + std::to_string(workers) +
            "\ncontrol_socket = \"%%DIR%%/control.sock\"\n" + server_more + "\n";
        for (const auto& l : listeners)
            s += "[[listener]]\naddress = \"127.0.0.1:%%" + l + "%%\"\n\n";
        s += "[scheduler]\npolicy = \"least-conn\"\n\n";
        s += "[supervisor]\ndrain_timeout = \"" + std::to_string(drain.count()) +
            "ms\"\nheartbeat_interval = \"250ms\"\nrestart_backoff = { min = \"100ms\", max = \"2s\" }\n\n";
        s += "[admin]\naddress = \"127.0.0.1:%%ADMIN_PORT%%\"\n\n";
        s += "[http]\nmax_header_size = \"" + max_header_size + "\"\n\n";
        s += "[websocket]\nmax_message_size = \"" + max_message_size + "\"\n" + websocket_more + "\n";
        s += "[publish]\ntokens = [";
        for (std::size_t i = 0; i < tokens.size(); ++i)
            s += (i ? ", \"" : "\"") + tokens[i] + "\"";
        s += "]\n\n";
        s += "[log]\nlevel = \"" + log_level + "\"\n\n";
        for (const auto& r : routes)
            s += "[[route]]\npath = \"" + r.path + "\"\nkind = \"" + r.kind + "\"\n\n";
        s += extra;
        return s;
    }
};

using port_map = std::map<std::string, std::uint16_t>;

// `text` with the node's values for %%DIR%%, %%ADMIN_PORT%%, %%PORTn%% (or `more` for placeholders
// the node did not start with, e.g. a listener added later).
std::string concrete(const node& n, std::string text, const port_map& more = {}) {
    std::string out;
    std::size_t pos = 0;
    for (int guard = 0; guard < 10000 && pos < text.size(); ++guard) {
        const auto start = text.find("%%", pos);
        const auto end = start == std::string::npos ? start : text.find("%%", start + 2);
        if (end == std::string::npos) {
            out.append(text, pos);
            break;
        }
        out.append(text, pos, start - pos);
        const std::string name = text.substr(start + 2, end - start - 2);
        if (name == "DIR")
            out += n.dir().path().string();
        else if (name == "ADMIN_PORT")
            out += std::to_string(n.admin_port());
        else if (const auto it = more.find(name); it != more.end())
            out += std::to_string(it->second);
        else
            out += std::to_string(n.port(name));
        pos = end + 2;
    }
    return out;
}

// Rewrites the file the node was started with; returns what was written.
std::string write_config(const node& n, const node_config& cfg, const port_map& more = {}) {
    const auto text = concrete(n, cfg.text(), more);
    const auto path = n.dir().write_file(n.config_path().filename(), text);
    EXPECT_EQ(path, n.config_path());
    return text;
}

// ---- reloading ----------------------------------------------------------------------------------

struct reload_run {
    command_result r;
    clock::time_point started;
    clock::time_point returned;
    std::optional<std::int64_t> generation; // from "reloaded: generation N"
};

reload_run reload(const node& n) {
    reload_run out;
    out.started = clock::now();
    out.r = run_command({binary_path(), "reload", "--socket", n.control_socket().string()}, 60s);
    out.returned = clock::now();
    std::smatch m;
    if (std::regex_search(out.r.output, m, std::regex(R"(reloaded: generation (\d+))")))
        out.generation = std::stoll(m[1]);
    return out;
}

std::int64_t current_generation(const node& n) {
    const auto st = n.status_json({}, 2s);
    return st ? int_field(*st, "generation") : -1;
}

// The log line of a successful reload: "reload: generation N applied from FILE", with what else
// changed between the number and "applied" ("generation 3, workers 2 -> 3 applied from ...").
std::regex applied_line(std::int64_t gen) {
    return std::regex("reload: generation " + std::to_string(gen) + "(,[^\\n]*)? applied");
}

// A successful reload to generation `gen`: the CLI's answer, status.json, the log line.
void expect_applied(const node& n, const reload_run& run, std::int64_t gen) {
    EXPECT_EQ(run.r.exit_code, std::optional<int>(0)) << describe(run.r);
    EXPECT_EQ(run.generation, std::optional<std::int64_t>(gen)) << describe(run.r);
    const auto st = n.status_json({}, 2s);
    ASSERT_TRUE(st) << "no status.json after the reload";
    EXPECT_EQ(int_field(*st, "generation"), gen) << rows(st);
    EXPECT_EQ(str_field(last_reload(*st), "result"), "ok") << rows(st);
    EXPECT_TRUE(last_reload(*st).contains("at") && last_reload(*st)["at"].is_number()) << rows(st);
    EXPECT_TRUE(n.wait_for_log(applied_line(gen), 2s)) << "no 'reload: generation " << gen << " ... applied' in the log";
}

// A failed reload: non-zero exit, the reason in the output and in status.json, generation kept.
void expect_failed(const node& n, const reload_run& run, std::int64_t gen, const std::string& reason_lowercase,
                   std::size_t failures_logged_before) {
    EXPECT_NE(run.r.exit_code, std::optional<int>(0)) << describe(run.r);
    EXPECT_TRUE(run.r.exit_code.has_value()) << describe(run.r);
    EXPECT_NE(lower(run.r.output).find(reason_lowercase), std::string::npos)
        << "expected '" << reason_lowercase << "' in: " << describe(run.r);
    EXPECT_EQ(run.r.output.find("reloaded:"), std::string::npos) << describe(run.r);
    const auto st = n.status_json({}, 2s);
    ASSERT_TRUE(st) << "no status.json after the failed reload";
    EXPECT_EQ(int_field(*st, "generation"), gen) << rows(st);
    EXPECT_EQ(str_field(last_reload(*st), "result"), "failed") << rows(st);
    EXPECT_NE(lower(str_field(last_reload(*st), "message")).find(reason_lowercase), std::string::npos) << rows(st);
    EXPECT_TRUE(last_reload(*st).contains("at") && last_reload(*st)["at"].is_number()) << rows(st);
    EXPECT_TRUE(n.wait_for_log(std::regex("reload failed:"), 2s, failures_logged_before + 1))
        << "no new 'reload failed:' log line";
}

// ---- load: long-lived sessions --------------------------------------------------------------------

// Long-lived WebSocket echo sessions, exchanging messages from `threads` threads (session i on
// thread i % threads) until stopped. A session that stops echoing is read to its end once, and how
// it ended is kept: the close code the server sent (1001 ...) or none (a reset, 1006).
class session_pool {
public:
    struct record {
        std::size_t id = 0;
        unsigned slot = 0;
        pid_t pid = 0; // the slot's process when the session was opened (given by the test)
        clock::time_point opened;
        std::size_t echoes = 0;
        clock::time_point last_echo;
        bool ended = false;
        std::optional<std::uint16_t> code; // the server's close code, when a close frame came
        std::string how;                   // what failed
        clock::time_point ended_at;
    };

    explicit session_pool(unsigned threads = 4) {
        for (unsigned t = 0; t < threads; ++t)
            threads_.emplace_back([this, t, threads] { loop(t, threads); });
    }
    ~session_pool() { stop(); }
    session_pool(const session_pool&) = delete;
    session_pool& operator=(const session_pool&) = delete;

    // Opens `count` sessions on `target` (each must echo once) and adds them, tagged with the pid
    // `pids` gives for the slot that answered. Empty on success, else why not.
    std::string open(std::uint16_t port, std::size_t count, const std::map<unsigned, pid_t>& pids,
                     std::string_view target = "/echo") {
        for (std::size_t i = 0; i < count; ++i) {
            auto c = std::make_unique<ws_client>();
            if (auto ec = c->connect(port, target, 5s))
                return "session " + std::to_string(i) + ": connect: " + ec.message();
            if (!c->worker())
                return "session " + std::to_string(i) + ": no X-Sockherd-Worker";
            if (auto why = c->echo("hello", true, 5s); !why.empty())
                return "session " + std::to_string(i) + ": " + why;
            auto e = std::make_unique<entry>();
            e->rec.slot = *c->worker();
            const auto it = pids.find(e->rec.slot);
            e->rec.pid = it == pids.end() ? 0 : it->second;
            e->rec.opened = e->rec.last_echo = clock::now();
            e->rec.echoes = 1;
            e->client = std::move(c);
            std::lock_guard lock(mutex_);
            e->rec.id = entries_.size();
            entries_.push_back(std::move(e));
        }
        return {};
    }

    void stop() {
        stop_ = true;
        for (auto& t : threads_)
            if (t.joinable())
                t.join();
    }

    std::vector<record> records() const {
        std::lock_guard lock(mutex_);
        std::vector<record> out;
        for (const auto& e : entries_)
            out.push_back(e->rec);
        return out;
    }
    std::size_t open_count() const {
        std::lock_guard lock(mutex_);
        return static_cast<std::size_t>(
            std::count_if(entries_.begin(), entries_.end(), [](const auto& e) { return !e->rec.ended; }));
    }
    std::size_t echoes() const { return echoes_; }

    // Every session still open has echoed after `t` (waits up to `timeout`).
    bool all_echoed_since(clock::time_point t, milliseconds timeout) const {
        return wait_until(
            [&] {
                std::lock_guard lock(mutex_);
                return std::all_of(entries_.begin(), entries_.end(),
                                   [&](const auto& e) { return e->rec.ended || e->rec.last_echo > t; });
            },
            timeout, 20ms);
    }

    static std::string describe(const record& r) {
        std::string s = "session " + std::to_string(r.id) + " (slot " + std::to_string(r.slot) + ", pid " +
            std::to_string(r.pid) + ", " + std::to_string(r.echoes) + " echoes)";
        if (r.ended)
            s += " ended with " + (r.code ? "close " + std::to_string(*r.code) : std::string("no close frame")) +
                ": " + r.how;
        return s;
    }

private:
    struct entry {
        std::unique_ptr<ws_client> client; // used by its thread only
        record rec;                        // under mutex_
    };

    void loop(unsigned t, unsigned threads) {
        for (std::size_t round = 0; !stop_ && round < 1'000'000; ++round) {
            std::vector<entry*> mine;
            {
                std::lock_guard lock(mutex_);
                for (std::size_t i = t; i < entries_.size(); i += threads)
                    if (!entries_[i]->rec.ended)
                        mine.push_back(entries_[i].get());
            }
            for (auto* e : mine) {
                if (stop_)
                    break;
                const auto why = e->client->echo("keep " + std::to_string(round), round % 2 == 0, 3s);
                if (why.empty()) {
                    ++echoes_;
                    std::lock_guard lock(mutex_);
                    ++e->rec.echoes;
                    e->rec.last_echo = clock::now();
                    continue;
                }
                const auto at = clock::now();
                // Whatever it was, read to the end once: a close frame already received is reported.
                const auto ci = e->client->read_until_close(1s);
                std::lock_guard lock(mutex_);
                e->rec.ended = true;
                e->rec.ended_at = at;
                e->rec.code = ci.code;
                e->rec.how = why + " / then " + ci.ec.message();
            }
            std::this_thread::sleep_for(10ms); // pacing, not synchronization
        }
    }

    mutable std::mutex mutex_;
    std::vector<std::unique_ptr<entry>> entries_;
    std::atomic<bool> stop_{false};
    std::atomic<std::size_t> echoes_{0};
    std::vector<std::thread> threads_;
};

// ---- small probes ------------------------------------------------------------------------------

// A WebSocket handshake on `target` that succeeds and echoes; empty on success.
std::string ws_route_works(std::uint16_t port, std::string_view target) {
    ws_client c;
    if (auto ec = c.connect(port, target, 3s))
        return std::string(target) + ": " + ec.message() + " (HTTP " +
            std::to_string(c.handshake_response().result_int()) + ")";
    if (auto why = c.echo("route check", true, 3s); !why.empty())
        return std::string(target) + " on worker " + std::to_string(c.worker().value_or(99)) + ": " + why;
    if (auto ec = c.close(websocket::close_code::normal, 3s))
        return std::string(target) + " close: " + ec.message();
    return {};
}

// A WebSocket handshake on `target` answered with an HTTP status other than 101; empty if so.
std::string ws_route_refused(std::uint16_t port, std::string_view target) {
    ws_client c;
    const auto ec = c.connect(port, target, 3s);
    if (!ec)
        return std::string(target) + ": the handshake succeeded (worker " + std::to_string(c.worker().value_or(99)) +
            ")";
    if (c.handshake_response().result_int() == 0 || c.handshake_response().result_int() == 101)
        return std::string(target) + ": no HTTP answer: " + ec.message();
    return {};
}

// A new session that sends `size` bytes: what the server does with it ("echo", "close NNNN", or an error).
std::string big_message_outcome(std::uint16_t port, std::size_t size) {
    ws_client c;
    if (auto ec = c.connect(port, "/echo", 3s))
        return "connect: " + ec.message();
    if (auto ec = c.send_binary(std::string(size, 'x'), 3s)) {
        // Beast 1.74 closes the socket right after its 1009 close frame without waiting for the
        // client's reply; a client still sending sees a reset, possibly before it could read the
        // frame. Either way the message was refused for its size.
        if (ec == net::error::broken_pipe || ec == net::error::connection_reset)
            return "close 1009";
        return "send: " + ec.message();
    }
    const auto m = c.receive(3s);
    if (!m.ec)
        return m.data.size() == size ? "echo" : "echo of " + std::to_string(m.data.size()) + " bytes";
    const auto ci = c.read_until_close(1s);
    if (ci.code)
        return "close " + std::to_string(*ci.code);
    if (m.ec == net::error::connection_reset || ci.ec == net::error::connection_reset)
        return "close 1009"; // the same early close as above, seen on the read side
    return "receive: " + m.ec.message();
}

// The socket inode of the listening TCP socket on 127.0.0.1:port (from /proc/net/tcp), if any.
std::optional<unsigned long> listen_inode(std::uint16_t port) {
    std::ifstream in("/proc/net/tcp");
    std::string line;
    char want[32];
    std::snprintf(want, sizeof want, "0100007F:%04X", port);
    for (int i = 0; i < 100000 && std::getline(in, line); ++i) {
        std::istringstream fields(line);
        std::string sl, local, remote, state, queues, timer, retr, uid, timeout;
        unsigned long inode = 0;
        if (!(fields >> sl >> local >> remote >> state >> queues >> timer >> retr >> uid >> timeout >> inode))
            continue;
        if (local == want && state == "0A")
            return inode;
    }
    return std::nullopt;
}

// An acceptor bound and listening on 127.0.0.1:<free port>, held by the test.
struct port_holder {
    net::io_context ioc;
    tcp::acceptor acceptor{ioc};
    std::uint16_t port = 0;
    port_holder() {
        acceptor.open(tcp::v4());
        acceptor.bind({net::ip::make_address_v4("127.0.0.1"), 0});
        acceptor.listen();
        port = acceptor.local_endpoint().port();
    }
};

// ---- starting and finishing -----------------------------------------------------------------------

// Waits for a freshly started node: slots 0..workers-1 ready (log and /healthz) and up in
// status.json. Returns that document, or nullopt after recording why not (the caller ASSERTs on it).
std::optional<json> wait_started(node& n, unsigned workers) {
    if (!n.wait_ready(workers)) {
        ADD_FAILURE() << "node did not become ready";
        return std::nullopt;
    }
    auto up = wait_status(n, [workers](const json& st) { return slots_up(st, workers); }, 10s);
    if (!up.ok) {
        ADD_FAILURE() << "slots not up: " << rows(up.last);
        return std::nullopt;
    }
    return up.last;
}

// The load came through unharmed: every session still open echoes again after `t` (within 5 s);
// then, with both stopped, no session has ended and no fresh connection was refused or failed.
void expect_load_unharmed(prober& probe, session_pool& pool, clock::time_point t) {
    EXPECT_TRUE(pool.all_echoed_since(t, 5s)) << "some sessions stopped echoing";
    probe.stop();
    pool.stop();
    for (const auto& r : pool.records())
        EXPECT_FALSE(r.ended) << session_pool::describe(r);
    EXPECT_EQ(probe.refused().count(), 0u) << probe.summary();
    EXPECT_EQ(probe.failed().count(), 0u) << probe.summary();
}

// ---- 1. in-place reloads --------------------------------------------------------------------------

// [server] worker_scheduling and supervisor_scheduling: the workers' and the supervisor's event
// loops run under SCHED_BATCH by default, and a reload switches the running processes (the same
// pids) to SCHED_OTHER and back, each setting on its own.
TEST(reload, scheduling_switches_the_running_supervisor_and_workers) {
    node_config cfg;
    cfg.workers = 2;
    node n(node_options{cfg.text(), {}});
    const auto started = wait_started(n, 2);
    ASSERT_TRUE(started);
    const auto pids = n.worker_pids();
    ASSERT_EQ(pids.size(), 2u);
    const auto all_run = [&](int worker_policy, int supervisor_policy) {
        return ::sched_getscheduler(n.pid()) == supervisor_policy &&
            std::all_of(pids.begin(), pids.end(), [&](pid_t p) { return ::sched_getscheduler(p) == worker_policy; });
    };
    const auto policies = [&] {
        std::string s = "supervisor " + std::to_string(n.pid()) + ":" + std::to_string(::sched_getscheduler(n.pid()));
        for (const auto p : pids)
            s += ", worker " + std::to_string(p) + ":" + std::to_string(::sched_getscheduler(p));
        return s;
    };
    EXPECT_TRUE(wait_until([&] { return all_run(SCHED_BATCH, SCHED_BATCH); }, 5s)) << "pid:policy " << policies();

    cfg.server_more = "worker_scheduling = \"normal\"\n";
    write_config(n, cfg);
    auto run = reload(n);
    expect_applied(n, run, 2);
    EXPECT_TRUE(wait_until([&] { return all_run(SCHED_OTHER, SCHED_BATCH); }, 5s)) << "pid:policy " << policies();
    EXPECT_EQ(n.worker_pids(), pids) << "the same workers, not new ones";

    cfg.server_more = "worker_scheduling = \"batch\"\nsupervisor_scheduling = \"normal\"\n";
    write_config(n, cfg);
    run = reload(n);
    expect_applied(n, run, 3);
    EXPECT_TRUE(wait_until([&] { return all_run(SCHED_BATCH, SCHED_OTHER); }, 5s)) << "pid:policy " << policies();

    cfg.server_more = {};
    write_config(n, cfg);
    run = reload(n);
    expect_applied(n, run, 4);
    EXPECT_TRUE(wait_until([&] { return all_run(SCHED_BATCH, SCHED_BATCH); }, 5s)) << "pid:policy " << policies();
    EXPECT_EQ(n.worker_pids(), pids) << "the same workers, not new ones";
    EXPECT_EQ(ws_route_works(n.port(), "/echo"), "");
}

TEST(reload, five_in_place_reloads_keep_every_session_and_connection) {
    node_config cfg;
    cfg.workers = 2;
    node n(node_options{cfg.text(), {}});
    const auto started = wait_started(n, 2);
    ASSERT_TRUE(started);
    const auto pids_before = slot_pids(*started);
    const auto children_before = n.worker_pids();
    ASSERT_EQ(int_field(*started, "generation"), 1);

    session_pool pool;
    ASSERT_EQ(pool.open(n.port(), 100, pids_before), "");
    prober probe(n.port());
    const auto port = n.port();
    const header_list big_header{{"X-Padding", std::string(4096, 'h')}};

    // The old behaviour, so that each change below is a change.
    EXPECT_EQ(ws_route_refused(port, "/echo2"), "");
    EXPECT_EQ(big_message_outcome(port, 8192), "echo");
    EXPECT_EQ(http_request(port, http::verb::post, "/publish/news", {{"Authorization", "Bearer tok-new"}}, "x").status,
              401u);
    EXPECT_EQ(http_get(port, "/healthz", big_header).status, 200u);
    EXPECT_EQ(n.count_log(std::regex(R"(\] debug:)")), 0u);

    // 1: a route added.
    cfg.routes.insert(cfg.routes.begin() + 1, route{"/echo2", "echo"});
    write_config(n, cfg);
    auto run = reload(n);
    for (int i = 0; i < 4; ++i)
        EXPECT_EQ(ws_route_works(port, "/echo2"), "") << "right after reload 1, attempt " << i;
    expect_applied(n, run, 2);
    // Sessions on the route that reload 4 removes: one per worker if least-conn spreads them.
    std::vector<std::unique_ptr<ws_client>> on_removed_route;
    for (int i = 0; i < 2; ++i) {
        auto c = std::make_unique<ws_client>();
        ASSERT_FALSE(c->connect(port, "/echo2", 3s));
        ASSERT_EQ(c->echo("on /echo2", true, 3s), "");
        on_removed_route.push_back(std::move(c));
    }

    // 2: max_message_size down from 64 KiB to 4 KiB.
    cfg.max_message_size = "4KiB";
    write_config(n, cfg);
    run = reload(n);
    for (int i = 0; i < 4; ++i)
        EXPECT_EQ(big_message_outcome(port, 8192), "close 1009") << "right after reload 2, attempt " << i;
    EXPECT_EQ(big_message_outcome(port, 4096), "echo");
    expect_applied(n, run, 3);

    // 3: a publish token added; the old one still works.
    cfg.tokens.push_back("tok-new");
    write_config(n, cfg);
    run = reload(n);
    for (int i = 0; i < 4; ++i) {
        const auto r =
            http_request(port, http::verb::post, "/publish/news", {{"Authorization", "Bearer tok-new"}}, "hello");
        EXPECT_EQ(r.status, 202u) << "right after reload 3, attempt " << i << ": " << describe(r);
    }
    EXPECT_EQ(http_request(port, http::verb::post, "/publish/news", {{"Authorization", "Bearer tok-old"}}, "x").status,
              202u);
    EXPECT_EQ(http_request(port, http::verb::post, "/publish/news", {{"Authorization", "Bearer tok-bad"}}, "x").status,
              401u);
    expect_applied(n, run, 4);

    // 4: the route removed again. New handshakes fail at once; its sessions close at the drain deadline.
    cfg.routes.erase(cfg.routes.begin() + 1);
    write_config(n, cfg);
    struct route_close {
        ws_client::close_info ci;
        milliseconds at{0};
    };
    std::vector<route_close> route_closes(on_removed_route.size());
    std::vector<std::thread> route_readers;
    run = reload(n);
    for (std::size_t i = 0; i < on_removed_route.size(); ++i)
        route_readers.emplace_back([&, i, t0 = run.started] {
            route_closes[i].ci = on_removed_route[i]->read_until_close(drain + exit_margin + 5s);
            route_closes[i].at = since(t0);
        });
    for (int i = 0; i < 4; ++i)
        EXPECT_EQ(ws_route_refused(port, "/echo2"), "") << "right after reload 4, attempt " << i;
    expect_applied(n, run, 5);
    const auto reload4_took = std::chrono::duration_cast<milliseconds>(run.returned - run.started);

    // 5: the log level and an HTTP limit, while /echo2's sessions are still draining.
    cfg.log_level = "debug";
    cfg.max_header_size = "2KiB";
    write_config(n, cfg);
    run = reload(n);
    for (int i = 0; i < 4; ++i) {
        const auto r = http_get(port, "/healthz", big_header);
        EXPECT_EQ(r.status, 431u) << "right after reload 5, attempt " << i << ": " << describe(r);
    }
    EXPECT_EQ(big_message_outcome(port, 8192), "close 1009");
    expect_applied(n, run, 6);
    EXPECT_TRUE(n.wait_for_log(std::regex(R"(\] debug:)"), 3s)) << "no debug line after [log] level = \"debug\"";
    const auto last_reload_returned = run.returned;

    for (auto& t : route_readers)
        t.join();
    for (std::size_t i = 0; i < route_closes.size(); ++i) {
        const auto& rc = route_closes[i];
        EXPECT_EQ(rc.ci.code, std::optional<std::uint16_t>(1001)) << "/echo2 session " << i << ": " << rc.ci.ec.message();
        EXPECT_GE(rc.at, earliest_close) << "/echo2 session " << i << " closed before the drain deadline";
        EXPECT_LE(rc.at, reload4_took + drain + 1500ms) << "/echo2 session " << i << " closed long after the deadline";
    }

    // Every long-lived session kept going through all five; fresh connections never failed.
    expect_load_unharmed(probe, pool, last_reload_returned);
    EXPECT_GE(probe.succeeded(), 20u) << probe.summary();
    RecordProperty("fresh_connections", static_cast<int>(probe.attempts()));
    RecordProperty("session_echoes", static_cast<int>(pool.echoes()));

    // No worker was restarted, and each reports the new generation.
    const auto after = wait_status(
        n,
        [](const json& st) {
            if (!slots_up(st, 2) || workers_of(st).size() != 2)
                return false;
            return std::all_of(workers_of(st).begin(), workers_of(st).end(),
                               [](const json& w) { return int_field(w, "generation") == 6; });
        },
        5s);
    EXPECT_TRUE(after.ok) << "workers not all on generation 6: " << rows(after.last);
    ASSERT_TRUE(after.last);
    EXPECT_EQ(slot_pids(*after.last), pids_before) << rows(after.last);
    EXPECT_EQ(n.worker_pids(), children_before);
    EXPECT_EQ(n.count_log(std::regex(R"(worker \d+: started)")), 2u) << "a worker was started by an in-place reload";
    n.assert_no_unexpected_errors();
}

// ---- 2. worker count up and down --------------------------------------------------------------------

TEST(reload, worker_count_up_and_down_drains_removed_slots_with_1001_and_refuses_nothing) {
    node_config cfg;
    cfg.workers = 2;
    node n(node_options{cfg.text(), {}});
    const auto started = wait_started(n, 2);
    ASSERT_TRUE(started);
    auto pids = slot_pids(*started);

    session_pool pool;
    ASSERT_EQ(pool.open(n.port(), 100, pids), "");
    prober probe(n.port());

    std::map<pid_t, clock::time_point> retired_at; // pid -> when the reload that removed it started
    std::int64_t gen = 1;
    const std::vector<unsigned> counts = {3, 1, 2, 3, 2};
    for (std::size_t step = 0; step < counts.size(); ++step) {
        SCOPED_TRACE("reload " + std::to_string(step + 1) + ": " + std::to_string(cfg.workers) + " -> " +
                     std::to_string(counts[step]) + " workers");
        const auto before = pids;
        cfg.workers = counts[step];
        write_config(n, cfg);
        const auto run = reload(n);
        expect_applied(n, run, ++gen);
        const auto up = wait_status(n, [&](const json& st) { return slots_up(st, cfg.workers); }, 20s);
        ASSERT_TRUE(up.ok) << rows(up.last);
        pids = slot_pids(*up.last);
        for (const auto& [k, p] : before) {
            if (k < cfg.workers)
                EXPECT_EQ(pids[k], p) << "slot " << k << " was replaced although it stays";
            else
                retired_at.emplace(p, run.started);
        }
        // Sessions on the new slots too: back up to 100 open (least-conn fills the emptiest).
        const auto open = pool.open_count();
        if (open < 100) {
            ASSERT_EQ(pool.open(n.port(), 100 - open, pids), "");
        }
    }
    const auto last = clock::now();

    // Every removed worker exits within the drain deadline (plus a margin) of its reload: every
    // client here answers the close, so nothing holds a worker past the deadline.
    for (const auto& [p, t] : retired_at) {
        const auto left = std::max(milliseconds(1), drain + exit_margin - since(t));
        EXPECT_TRUE(wait_until([&] { return is_zombie_free_and_gone(p); }, left))
            << "removed worker pid " << p << " still there " << since(t).count() << " ms after its reload";
    }
    EXPECT_TRUE(pool.all_echoed_since(last, 5s));
    probe.stop();
    pool.stop();

    std::size_t closed_1001 = 0;
    for (const auto& r : pool.records()) {
        const auto it = retired_at.find(r.pid);
        if (it == retired_at.end()) {
            EXPECT_FALSE(r.ended) << "a session on a worker that stays: " << session_pool::describe(r);
            continue;
        }
        EXPECT_TRUE(r.ended) << "a session on a removed worker never closed: " << session_pool::describe(r);
        EXPECT_EQ(r.code, std::optional<std::uint16_t>(1001)) << session_pool::describe(r);
        if (r.ended) {
            EXPECT_GE(r.ended_at - it->second, earliest_close)
                << "closed " << std::chrono::duration_cast<milliseconds>(r.ended_at - it->second).count()
                << " ms after its reload began: " << session_pool::describe(r);
        }
        closed_1001 += r.code == std::optional<std::uint16_t>(1001) ? 1 : 0;
    }
    EXPECT_EQ(retired_at.size(), 3u) << "3->1 removes two slots, 3->2 one";
    EXPECT_GT(closed_1001, 0u) << "no session was on a removed worker; the test proved nothing";
    RecordProperty("sessions_closed_1001", static_cast<int>(closed_1001));
    EXPECT_EQ(probe.refused().count(), 0u) << probe.summary();
    EXPECT_EQ(probe.failed().count(), 0u) << probe.summary();
    EXPECT_GE(probe.succeeded(), 20u) << probe.summary();

    const auto final_st = wait_status(n, [](const json& st) { return slots_up(st, 2) && workers_of(st).size() == 2; }, 5s);
    EXPECT_TRUE(final_st.ok) << rows(final_st.last);
    n.assert_no_unexpected_errors();
}

// ---- 3. listeners -----------------------------------------------------------------------------------

TEST(reload, added_listener_answers_removed_one_stops_unchanged_one_never_stops) {
    node_config cfg;
    cfg.workers = 2;
    cfg.listeners = {"PORT", "PORT2"};
    node n(node_options{cfg.text(), {}});
    const auto started = wait_started(n, 2);
    ASSERT_TRUE(started);
    const auto pids = slot_pids(*started);
    const port_map more{{"PORT3", free_port()}};
    const auto p1 = n.port();
    const auto p2 = n.port("PORT2");
    const auto p3 = more.at("PORT3");
    const auto addr = [](std::uint16_t p) { return "127.0.0.1:" + std::to_string(p); };

    EXPECT_EQ(http_get(p2, "/healthz").status, 200u);
    EXPECT_EQ(http_get(p3, "/healthz").ec, net::error::connection_refused);
    const auto inode = listen_inode(p1);
    ASSERT_TRUE(inode) << "no listening socket on " << p1 << " in /proc/net/tcp";

    session_pool pool;
    ASSERT_EQ(pool.open(p1, 100, pids), "");
    prober probe_http(p1, prober::mode::http);
    prober probe_ws(p1, prober::mode::websocket);

    // PORT2 out, PORT3 in.
    cfg.listeners = {"PORT", "PORT3"};
    write_config(n, cfg, more);
    auto run = reload(n);
    {
        const auto r = http_get(p3, "/healthz", {}, 3s);
        EXPECT_EQ(r.status, 200u) << "added listener, right after the reload: " << describe(r);
        EXPECT_EQ(ws_route_works(p3, "/echo"), "");
        const auto gone = http_get(p2, "/healthz", {}, 3s);
        EXPECT_EQ(gone.ec, net::error::connection_refused) << "removed listener, right after the reload: "
                                                           << describe(gone);
    }
    expect_applied(n, run, 2);
    auto st = n.status_json();
    ASSERT_TRUE(st);
    EXPECT_EQ(listener_addresses(*st), (std::set<std::string>{addr(p1), addr(p3)})) << st->dump();

    // And back: PORT2 bound again, PORT3 released.
    cfg.listeners = {"PORT", "PORT2"};
    write_config(n, cfg, more);
    run = reload(n);
    {
        const auto r = http_get(p2, "/healthz", {}, 3s);
        EXPECT_EQ(r.status, 200u) << "re-added listener, right after the reload: " << describe(r);
        const auto gone = http_get(p3, "/healthz", {}, 3s);
        EXPECT_EQ(gone.ec, net::error::connection_refused) << "removed listener, right after the reload: "
                                                           << describe(gone);
    }
    expect_applied(n, run, 3);
    st = n.status_json();
    ASSERT_TRUE(st);
    EXPECT_EQ(listener_addresses(*st), (std::set<std::string>{addr(p1), addr(p2)})) << st->dump();

    // The unchanged listener kept its very socket, and never refused or failed a connection.
    EXPECT_EQ(listen_inode(p1), inode) << "the listener on " << p1 << " was re-created";
    const auto t_end = clock::now();
    EXPECT_TRUE(pool.all_echoed_since(t_end, 5s));
    // A fast machine gets through the reloads in a few hundred ms: let the probes make their
    // minimum number of attempts before they stop.
    EXPECT_TRUE(wait_until([&] { return probe_http.succeeded() >= 10 && probe_ws.succeeded() >= 10; }, 10s));
    probe_http.stop();
    probe_ws.stop();
    pool.stop();
    for (const auto* p : {&probe_http, &probe_ws}) {
        EXPECT_EQ(p->refused().count(), 0u) << p->summary();
        EXPECT_EQ(p->failed().count(), 0u) << p->summary();
        EXPECT_GE(p->succeeded(), 10u) << p->summary();
    }
    for (const auto& r : pool.records())
        EXPECT_FALSE(r.ended) << session_pool::describe(r);
    const auto end = wait_status(n, [](const json& s) { return slots_up(s, 2); }, 5s);
    ASSERT_TRUE(end.ok) << rows(end.last);
    EXPECT_EQ(slot_pids(*end.last), pids) << "a listener change restarted a worker";
    n.assert_no_unexpected_errors();
}

// ---- 4. bad configs --------------------------------------------------------------------------------

TEST(reload, bad_config_is_refused_with_its_reason_and_the_node_keeps_the_old_one) {
    node_config good;
    good.workers = 2;
    node n(node_options{good.text(), {}});
    const auto started = wait_started(n, 2);
    ASSERT_TRUE(started);
    const auto pids = slot_pids(*started);
    const auto port = n.port();

    session_pool pool;
    ASSERT_EQ(pool.open(port, 100, pids), "");
    prober probe(port);
    const auto old_behaviour = [&](const std::string& after) {
        SCOPED_TRACE("after " + after);
        EXPECT_EQ(ws_route_works(port, "/echo"), "");
        EXPECT_EQ(big_message_outcome(port, 8192), "echo") << "max_message_size is no longer 64 KiB";
        EXPECT_EQ(ws_route_refused(port, "/added"), "");
        EXPECT_EQ(http_request(port, http::verb::post, "/publish/c", {{"Authorization", "Bearer tok-old"}}, "x").status,
                  202u);
    };
    // Every bad file also carries changes that must not be applied: /added added, a smaller
    // max_message_size, the old token replaced.
    const auto with_changes = [&] {
        node_config c = good;
        c.routes = {{"/echo", "echo"}, {"/added", "echo"}, {"/ws/", "pubsub"}, {"/", "static"}};
        c.max_message_size = "1KiB";
        c.tokens = {"tok-other"};
        return c;
    };

    std::size_t failures = 0;
    // Writes `bad`, reloads, expects it refused with "<file>:<line of needle>:" in the reason.
    const auto refused_at_line_of = [&](const node_config& bad, std::string_view needle) {
        const int line = line_of(write_config(n, bad), needle);
        auto run = reload(n);
        const std::string where = n.config_path().filename().string() + ":" + std::to_string(line) + ":";
        expect_failed(n, run, 1, lower(where), failures++);
        return run;
    };
    // a. A syntax error.
    {
        auto bad = with_changes();
        bad.extra = "[broken_table\nkey = 1\n";
        const auto run = refused_at_line_of(bad, "[broken_table");
        EXPECT_TRUE(std::regex_search(run.r.output, std::regex(R"(sockherd\.toml:\d+:\d+: \S)"))) << describe(run.r);
        old_behaviour("a syntax error");
    }
    // b. An unknown key.
    {
        auto bad = with_changes();
        bad.websocket_more = "no_such_key = 1\n";
        const auto run = refused_at_line_of(bad, "no_such_key");
        EXPECT_NE(run.r.output.find("no_such_key"), std::string::npos) << describe(run.r);
        old_behaviour("an unknown key");
    }
    // c. A listener on a port that is already in use (by the test); a free one before it in the
    //    file must not stay bound either.
    {
        port_holder busy;
        const port_map more{{"FREE", free_port()}, {"BUSY", busy.port}};
        auto bad = with_changes();
        bad.listeners = {"PORT", "FREE", "BUSY"};
        write_config(n, bad, more);
        const auto run = reload(n);
        expect_failed(n, run, 1, "address already in use", failures++);
        EXPECT_NE(run.r.output.find(std::to_string(busy.port)), std::string::npos)
            << "the message should name the address: " << describe(run.r);
        EXPECT_EQ(http_get(more.at("FREE"), "/healthz", {}, 2s).ec, net::error::connection_refused)
            << "a listener of the refused config was left bound";
        const auto st = n.status_json();
        ASSERT_TRUE(st);
        EXPECT_EQ(listener_addresses(*st), std::set<std::string>{"127.0.0.1:" + std::to_string(port)});
        old_behaviour("a port in use");
    }
    // Nothing changed meanwhile: same workers, every session still echoing, no connection lost.
    const auto mid = n.status_json();
    ASSERT_TRUE(mid);
    EXPECT_EQ(slot_pids(*mid), pids) << rows(mid);
    EXPECT_EQ(n.worker_pids().size(), 2u);

    // The file fixed: the next reload applies it (generation 2, not 4: failures do not count).
    write_config(n, with_changes());
    const auto run = reload(n);
    expect_applied(n, run, 2);
    EXPECT_EQ(ws_route_works(port, "/added"), "");
    EXPECT_EQ(big_message_outcome(port, 8192), "close 1009");

    expect_load_unharmed(probe, pool, clock::now());
    const auto end = n.status_json();
    ASSERT_TRUE(end);
    EXPECT_EQ(slot_pids(*end), pids) << rows(end);
    n.assert_no_unexpected_errors({std::regex("reload failed:"), std::regex("(?:A|a)ddress already in use")});
}

// ---- 5. the drain deadline --------------------------------------------------------------------------

TEST(reload, removed_workers_exit_by_the_drain_deadline_even_with_sessions_open) {
    node_config cfg;
    cfg.workers = 3;
    node n(node_options{cfg.text(), {}});
    const auto started = wait_started(n, 3);
    ASSERT_TRUE(started);
    const auto pids = slot_pids(*started);

    // Sessions on every worker: some read by a thread each (they answer the close), some never
    // read again (their close handshake cannot complete before the worker must be gone).
    std::map<unsigned, std::vector<std::unique_ptr<ws_client>>> by_slot;
    for (int i = 0; i < 60 && (by_slot[1].size() < 4 || by_slot[2].size() < 4 || by_slot[0].size() < 2); ++i) {
        auto c = std::make_unique<ws_client>();
        ASSERT_FALSE(c->connect(n.port(), "/echo", 3s));
        ASSERT_TRUE(c->worker());
        ASSERT_EQ(c->echo("hello", true, 3s), "");
        by_slot[*c->worker()].push_back(std::move(c));
    }
    ASSERT_GE(by_slot[1].size(), 4u);
    ASSERT_GE(by_slot[2].size(), 4u);
    prober probe(n.port());

    cfg.workers = 1;
    write_config(n, cfg);
    struct closed {
        ws_client::close_info ci;
        milliseconds at{0};
    };
    std::vector<closed> read_closes(4);
    std::vector<std::thread> readers;
    const auto run_started = clock::now();
    for (std::size_t i = 0; i < 4; ++i) {
        auto* c = (i % 2 == 0 ? by_slot[1] : by_slot[2])[i / 2].get();
        readers.emplace_back([&, c, i] {
            read_closes[i].ci = c->read_until_close(drain + exit_margin + 5s);
            read_closes[i].at = since(run_started);
        });
    }
    const auto run = reload(n);
    expect_applied(n, run, 2);

    std::map<pid_t, std::optional<milliseconds>> gone_after; // after the reload returned
    wait_until(
        [&] {
            for (unsigned k : {1u, 2u})
                if (!gone_after[pids.at(k)] && !process_running(pids.at(k)))
                    gone_after[pids.at(k)] = since(run.returned);
            return gone_after[pids.at(1)] && gone_after[pids.at(2)];
        },
        drain + exit_margin + 3s, 5ms);
    for (unsigned k : {1u, 2u}) {
        const auto& g = gone_after[pids.at(k)];
        ASSERT_TRUE(g) << "slot " << k << " (pid " << pids.at(k) << ") still running "
                       << since(run.returned).count() << " ms after the reload returned";
        RecordProperty("slot" + std::to_string(k) + "_gone_after_ms", static_cast<int>(g->count()));
        EXPECT_LE(*g, drain + exit_margin) << "slot " << k << " outlived the drain deadline";
        // It had sessions: it may not leave before their deadline (closes jitter up to 10% early).
        EXPECT_GE(*g + std::chrono::duration_cast<milliseconds>(run.returned - run_started), earliest_close)
            << "slot " << k << " exited before the drain deadline";
        EXPECT_TRUE(wait_until([&] { return is_zombie_free_and_gone(pids.at(k)); }, 2s)) << "not reaped";
    }
    for (auto& t : readers)
        t.join();
    for (std::size_t i = 0; i < read_closes.size(); ++i) {
        EXPECT_EQ(read_closes[i].ci.code, std::optional<std::uint16_t>(1001))
            << "read session " << i << ": " << read_closes[i].ci.ec.message();
        EXPECT_GE(read_closes[i].at, earliest_close) << "read session " << i;
    }
    // The silent ones: the close frame is waiting for them.
    for (unsigned k : {1u, 2u}) {
        for (std::size_t i = 2; i < by_slot[k].size(); ++i) {
            const auto ci = by_slot[k][i]->read_until_close(2s);
            EXPECT_EQ(ci.code, std::optional<std::uint16_t>(1001))
                << "silent session " << i << " on slot " << k << ": " << ci.ec.message();
        }
    }
    // Slot 0 untouched.
    for (auto& c : by_slot[0])
        EXPECT_EQ(c->echo("still here", true, 3s), "");
    probe.stop();
    EXPECT_EQ(probe.refused().count(), 0u) << probe.summary();
    EXPECT_EQ(probe.failed().count(), 0u) << probe.summary();
    const auto end = wait_status(n, [](const json& st) { return slots_up(st, 1) && workers_of(st).size() == 1; }, 5s);
    EXPECT_TRUE(end.ok) << rows(end.last);
    if (end.last) {
        EXPECT_EQ(slot_pids(*end.last), (std::map<unsigned, pid_t>{{0, pids.at(0)}}));
    }
    n.assert_no_unexpected_errors();
}

// ---- 6. pub/sub across generations ----------------------------------------------------------------

TEST(reload, subscribers_on_draining_workers_keep_receiving_until_closed) {
    node_config cfg;
    cfg.workers = 3;
    node n(node_options{cfg.text(), {}});
    const auto started = wait_started(n, 3);
    ASSERT_TRUE(started);
    const auto pids = slot_pids(*started);

    // Subscribers on /ws/news spread over the three workers, and a publisher on worker 0 (which stays).
    struct subscriber {
        std::unique_ptr<ws_client> c;
        unsigned slot = 0;
        std::vector<std::string> got;
        ws_client::close_info end;
        bool saw_end_marker = false;
        clock::time_point closed_at;
        std::string error;
    };
    std::vector<subscriber> subs;
    std::unique_ptr<ws_client> publisher;
    std::map<unsigned, int> per_slot;
    for (int i = 0; i < 80 && (per_slot[0] < 3 || per_slot[1] < 3 || per_slot[2] < 3 || !publisher); ++i) {
        auto c = std::make_unique<ws_client>();
        ASSERT_FALSE(c->connect(n.port(), "/ws/news", 3s)) << "subscriber " << i;
        ASSERT_TRUE(c->worker());
        const unsigned k = *c->worker();
        if (k == 0 && per_slot[0] >= 3 && !publisher) {
            publisher = std::move(c);
            continue;
        }
        ++per_slot[k];
        subs.push_back(subscriber{std::move(c), k, {}, {}, false, {}, {}});
    }
    ASSERT_TRUE(publisher) << "no publisher on worker 0";
    ASSERT_GE(per_slot[1], 3);
    ASSERT_GE(per_slot[2], 3);

    session_pool pool;
    ASSERT_EQ(pool.open(n.port(), 60, pids), "");
    prober probe(n.port());

    // Each subscriber is read by its own thread until its close or the end marker.
    std::vector<std::thread> readers;
    for (auto& s : subs)
        readers.emplace_back([&s] {
            for (int i = 0; i < 100000; ++i) {
                const auto m = s.c->receive(drain + exit_margin + 10s);
                if (m.ec) {
                    s.closed_at = clock::now();
                    s.end = s.c->read_until_close(1s);
                    if (!s.end.code)
                        s.error = "receive: " + m.ec.message() + " / then " + s.end.ec.message();
                    return;
                }
                if (m.data == "end") {
                    s.saw_end_marker = true;
                    return;
                }
                s.got.push_back(m.data);
            }
        });

    std::vector<clock::time_point> sent_at;
    std::string publish_error;
    const auto publish = [&](std::size_t i) {
        if (auto ec = publisher->send_text("m" + std::to_string(i), 3s))
            publish_error = "publish " + std::to_string(i) + ": " + ec.message();
        sent_at.push_back(clock::now());
    };
    for (std::size_t i = 0; i < 5; ++i)
        publish(i);

    cfg.workers = 1;
    write_config(n, cfg);
    const auto run_started = clock::now();
    std::atomic<bool> reloaded{false};
    reload_run run;
    std::thread reloader([&] {
        run = reload(n);
        reloaded = true;
    });
    // Publish every 20 ms from before the drain until every draining subscriber is closed.
    const auto draining_done = [&] {
        return std::all_of(subs.begin(), subs.end(),
                           [](const subscriber& s) { return s.slot == 0 || s.closed_at != clock::time_point{}; });
    };
    for (std::size_t i = 5; i < 2000 && publish_error.empty(); ++i) {
        publish(i);
        if (reloaded && (draining_done() || since(run_started) > drain + exit_margin + 5s))
            break;
        std::this_thread::sleep_for(20ms); // the publishing rate, not synchronization
    }
    reloader.join();
    ASSERT_EQ(publish_error, "");
    EXPECT_TRUE(draining_done()) << "subscribers on the removed workers were not closed";
    expect_applied(n, run, 2);
    ASSERT_TRUE(publisher->send_text("end", 3s) == error_code{});
    for (auto& t : readers)
        t.join();

    const auto total = sent_at.size();
    RecordProperty("published", static_cast<int>(total));
    for (std::size_t si = 0; si < subs.size(); ++si) {
        const auto& s = subs[si];
        SCOPED_TRACE("subscriber " + std::to_string(si) + " on slot " + std::to_string(s.slot));
        // Whatever arrived is m0, m1, ... in order, without a gap.
        std::size_t contiguous = 0;
        for (; contiguous < s.got.size() && s.got[contiguous] == "m" + std::to_string(contiguous); ++contiguous) {
        }
        EXPECT_EQ(contiguous, s.got.size()) << "message " << contiguous << " is '"
                                            << (contiguous < s.got.size() ? s.got[contiguous] : "") << "'";
        if (s.slot == 0) {
            EXPECT_TRUE(s.saw_end_marker) << s.error;
            EXPECT_EQ(s.got.size(), total);
            continue;
        }
        EXPECT_EQ(s.error, "");
        EXPECT_EQ(s.end.code, std::optional<std::uint16_t>(1001)) << s.end.ec.message();
        ASSERT_NE(s.closed_at, clock::time_point{}) << "never closed";
        EXPECT_GE(s.closed_at - run_started, earliest_close);
        // Everything published well before its close reached it (relayed to the draining worker).
        const auto before_close = static_cast<std::size_t>(std::count_if(
            sent_at.begin(), sent_at.end(), [&](clock::time_point t) { return t < s.closed_at - 500ms; }));
        EXPECT_GE(s.got.size(), before_close) << "a draining subscriber stopped getting messages before its close";
        EXPECT_GT(s.got.size(), 5u + 20u) << "it got next to nothing while draining";
    }
    // The pool's sessions on the removed workers have been closed by now too; let it notice.
    wait_until(
        [&] {
            const auto recs = pool.records();
            return std::all_of(recs.begin(), recs.end(), [](const auto& r) { return r.slot == 0 || r.ended; });
        },
        3s);
    probe.stop();
    pool.stop();
    EXPECT_EQ(probe.refused().count(), 0u) << probe.summary();
    EXPECT_EQ(probe.failed().count(), 0u) << probe.summary();
    for (const auto& r : pool.records()) {
        if (r.slot == 0) {
            EXPECT_FALSE(r.ended) << session_pool::describe(r);
        } else {
            EXPECT_EQ(r.code, std::optional<std::uint16_t>(1001)) << session_pool::describe(r);
        }
    }
    n.assert_no_unexpected_errors();
}

// ---- 7. signals during a reload ---------------------------------------------------------------------

// Lines that show the supervisor noticed a reload request (whatever the wording).
const std::regex reload_noticed(R"((SIGHUP|[Rr]eload))");

// Waits for a fresh one-worker node (see wait_started) and opens `sessions` sessions on it into
// `pool`. Slot 0's pid, or nullopt after recording why not (the caller ASSERTs on it).
std::optional<pid_t> one_worker_with_sessions(node& n, session_pool& pool, std::size_t sessions) {
    const auto started = wait_started(n, 1);
    if (!started)
        return std::nullopt;
    const auto pid0 = slot_pids(*started).at(0);
    if (const auto why = pool.open(n.port(), sessions, {{0, pid0}}); !why.empty()) {
        ADD_FAILURE() << "opening sessions: " << why;
        return std::nullopt;
    }
    return pid0;
}

// Sends SIGHUP and waits (3 s) for one more log line showing the supervisor noticed it. Two
// signals sent back to back may merge into one pending signal in the kernel: send a second one
// only after this. Call under ASSERT_NO_FATAL_FAILURE.
void sighup_noticed(const node& n, std::string_view what) {
    const auto before = n.count_log(reload_noticed);
    ASSERT_TRUE(n.signal(SIGHUP));
    EXPECT_TRUE(n.wait_for_log(reload_noticed, 3s, before + 1)) << "no log line about " << what;
}

TEST(reload, two_quick_sighups_reload_twice_one_after_the_other) {
    node_config cfg;
    cfg.workers = 1;
    node n(node_options{cfg.text(), {}});
    session_pool pool;
    const auto pid0 = one_worker_with_sessions(n, pool, 40);
    ASSERT_TRUE(pid0);
    prober probe(n.port());

    // A reload with work in it (three workers to start), so the second SIGHUP lands during it.
    cfg.workers = 4;
    cfg.routes.insert(cfg.routes.begin(), route{"/echo3", "echo"});
    write_config(n, cfg);
    // The second SIGHUP goes once the supervisor has taken the first (see sighup_noticed).
    ASSERT_NO_FATAL_FAILURE(sighup_noticed(n, "the first SIGHUP"));
    const bool first_still_running = n.count_log(applied_line(2)) == 0;
    ASSERT_TRUE(n.signal(SIGHUP));
    RecordProperty("second_sighup_during_first_reload", first_still_running ? 1 : 0);

    const auto two = wait_status(n, [](const json& st) { return int_field(st, "generation") >= 3; }, 30s);
    EXPECT_TRUE(two.ok) << "generation did not reach 3: " << rows(two.last);
    EXPECT_TRUE(n.wait_for_log(applied_line(3), 2s));
    // And no third one.
    EXPECT_FALSE(wait_until([&] { return current_generation(n) > 3; }, 1500ms)) << "more reloads than SIGHUPs";
    EXPECT_EQ(current_generation(n), 3);
    // One after the other: generation 2 was applied before generation 3.
    const auto lines = n.proc().output_lines();
    const auto first_line = [&](const std::regex& re) {
        for (std::size_t i = 0; i < lines.size(); ++i)
            if (std::regex_search(lines[i], re))
                return i;
        return lines.size();
    };
    const auto g2 = first_line(applied_line(2));
    const auto g3 = first_line(applied_line(3));
    EXPECT_LT(g2, lines.size());
    EXPECT_LT(g2, g3);
    EXPECT_EQ(n.count_log(std::regex("reload: generation \\d+(,[^\\n]*)? applied")), 2u);

    const auto up = wait_status(n, [](const json& st) { return slots_up(st, 4) && workers_of(st).size() == 4; }, 20s);
    EXPECT_TRUE(up.ok) << rows(up.last);
    if (up.last) {
        EXPECT_EQ(slot_pids(*up.last).at(0), *pid0) << "slot 0 was replaced";
        EXPECT_EQ(str_field(last_reload(*up.last), "result"), "ok");
    }
    EXPECT_EQ(n.count_log(std::regex(R"(worker \d+: started)")), 4u) << "workers started twice for one change";
    EXPECT_EQ(ws_route_works(n.port(), "/echo3"), "");

    expect_load_unharmed(probe, pool, clock::now());
    n.assert_no_unexpected_errors();
}

TEST(reload, sigterm_during_a_reload_stops_the_node_cleanly) {
    node_config cfg;
    cfg.workers = 1;
    node n(node_options{cfg.text(), {}});
    session_pool pool;
    const auto pid0 = one_worker_with_sessions(n, pool, 40);
    ASSERT_TRUE(pid0);
    {
        prober probe(n.port());
        cfg.workers = 4;
        write_config(n, cfg);
        ASSERT_NO_FATAL_FAILURE(sighup_noticed(n, "SIGHUP"));
        probe.stop(); // refusals are expected from here on: the node stops
        EXPECT_EQ(probe.refused().count(), 0u) << probe.summary();
        EXPECT_EQ(probe.failed().count(), 0u) << probe.summary();
    }
    RecordProperty("sigterm_during_reload", n.count_log(applied_line(2)) == 0 ? 1 : 0);
    const auto t0 = clock::now();
    ASSERT_TRUE(n.signal(SIGTERM));
    const auto code = n.wait_exit(drain + 5s);
    EXPECT_EQ(code, std::optional<int>(0)) << "not a clean exit within " << (drain + 5s).count() << " ms of SIGTERM";
    RecordProperty("exit_after_ms", static_cast<int>(since(t0).count()));
    // No worker left behind: neither the old one nor any the reload started.
    std::vector<pid_t> workers = n.all_worker_pids();
    for (pid_t p : workers)
        EXPECT_TRUE(wait_until([&] { return !process_running(p); }, 3s)) << "worker pid " << p << " left running";
    EXPECT_TRUE(n.wait_for_log(std::regex(R"(all workers have exited; supervisor exiting)"), 1s));
    pool.stop();
    for (const auto& r : pool.records())
        EXPECT_EQ(r.code, std::optional<std::uint16_t>(1001)) << session_pool::describe(r);
    n.assert_no_unexpected_errors();
}

} // namespace
} // namespace sockherd::test
