// A node's health, from outside: heartbeats and the watchdog, replacement of a worker over its
// memory limit, the admin listener (/status, /status.json, /metrics, /healthz, its token), the
// control CLI (`sockherd status|stop|reload|workers`) and systemd notifications. Real binary,
// real signals; every wait has a deadline.

#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "tests/integration/harness.hpp"
#include "tests/integration/status_json.hpp"

namespace sockherd::test {
namespace {

using namespace std::chrono_literals;
using json = nlohmann::json;

milliseconds since(clock::time_point t0) {
    return std::chrono::duration_cast<milliseconds>(clock::now() - t0);
}

bool is_zombie_free_and_gone(pid_t pid) {
    errno = 0;
    return ::kill(pid, 0) == -1 && errno == ESRCH && !std::filesystem::exists("/proc/" + std::to_string(pid));
}

// [supervisor] with the health timings under test; a short restart backoff so replacements are quick.
std::string supervisor_toml(std::string_view heartbeat, std::string_view watchdog, std::string_view more = {}) {
    return "[supervisor]\nheartbeat_interval = \"" + std::string(heartbeat) + "\"\nwatchdog_timeout = \"" +
        std::string(watchdog) + "\"\nrestart_backoff = { min = \"100ms\", max = \"2s\" }\n" + std::string(more);
}

// ---- reading status.json ------------------------------------------------------------------------

// Waits until the workers' counters have stopped moving for `quiet` (longer than a few heartbeats):
// every earlier connection has been reported. Returns that document.
std::optional<json> settled_status(const node& n, milliseconds quiet, milliseconds timeout) {
    static constexpr std::string_view keys[] = {"connections",       "connections_total", "ws_sessions",
                                                "ws_sessions_total", "http_requests_total", "messages_in_total",
                                                "messages_out_total"};
    std::vector<std::int64_t> last;
    auto changed = clock::now();
    std::optional<json> doc;
    const bool ok = wait_until(
        [&] {
            auto st = n.status_json({}, 2s);
            if (!st)
                return false;
            std::vector<std::int64_t> now;
            for (auto k : keys)
                now.push_back(sum_field(*st, k));
            if (now != last) {
                last = now;
                changed = clock::now();
            }
            doc = std::move(st);
            return clock::now() - changed >= quiet;
        },
        timeout, 50ms);
    return ok ? doc : std::nullopt;
}

// ---- clients --------------------------------------------------------------------------------------

// Echo sessions, opened until every worker 0..n-1 holds at least `per_worker` of them.
struct session_set {
    std::vector<std::unique_ptr<ws_client>> all;
    std::map<unsigned, std::vector<ws_client*>> by_worker;
    std::string error; // empty when it worked

    std::vector<ws_client*> except(unsigned worker) const {
        std::vector<ws_client*> out;
        for (const auto& [k, list] : by_worker)
            if (k != worker)
                out.insert(out.end(), list.begin(), list.end());
        return out;
    }
    std::vector<ws_client*> on(unsigned worker) const {
        const auto it = by_worker.find(worker);
        return it == by_worker.end() ? std::vector<ws_client*>{} : it->second;
    }
};

session_set open_sessions(std::uint16_t port, unsigned workers, std::size_t per_worker) {
    session_set s;
    const auto enough = [&] {
        for (unsigned k = 0; k < workers; ++k)
            if (s.on(k).size() < per_worker)
                return false;
        return true;
    };
    for (std::size_t i = 0; i < workers * per_worker * 6 && !enough(); ++i) {
        auto c = std::make_unique<ws_client>();
        if (auto ec = c->connect(port, "/echo")) {
            s.error = "session " + std::to_string(i) + ": " + ec.message();
            return s;
        }
        if (!c->worker()) {
            s.error = "session " + std::to_string(i) + ": handshake without X-Sockherd-Worker";
            return s;
        }
        if (auto why = c->echo("hello " + std::to_string(i), true); !why.empty()) {
            s.error = "session " + std::to_string(i) + ": " + why;
            return s;
        }
        s.by_worker[*c->worker()].push_back(c.get());
        s.all.push_back(std::move(c));
    }
    if (!enough()) {
        s.error = "sessions did not spread over " + std::to_string(workers) + " workers:";
        for (const auto& [k, list] : s.by_worker)
            s.error += " worker " + std::to_string(k) + ": " + std::to_string(list.size());
    }
    return s;
}

// Echoes on `clients` in turn, from its own thread, until stopped: proof that they keep working
// while the test does something else to the node.
class echo_keeper {
public:
    explicit echo_keeper(std::vector<ws_client*> clients) : clients_(std::move(clients)) {
        thread_ = std::thread([this] { loop(); });
    }
    ~echo_keeper() { stop(); }
    echo_keeper(const echo_keeper&) = delete;
    echo_keeper& operator=(const echo_keeper&) = delete;

    void stop() {
        stop_ = true;
        if (thread_.joinable())
            thread_.join();
    }
    std::size_t echoes() const { return echoes_; }
    const failure_log& failures() const { return failures_; }

private:
    void loop() {
        if (clients_.empty())
            return;
        for (std::size_t i = 0; !stop_ && i < 1'000'000; ++i) {
            auto* c = clients_[i % clients_.size()];
            if (auto why = c->echo("keep " + std::to_string(i), i % 2 == 0, 3s); !why.empty())
                failures_.add("echo " + std::to_string(i) + ": " + why);
            else
                ++echoes_;
            std::this_thread::sleep_for(20ms); // pacing, not synchronization
        }
    }

    std::vector<ws_client*> clients_;
    std::atomic<bool> stop_{false};
    std::atomic<std::size_t> echoes_{0};
    failure_log failures_;
    std::thread thread_;
};

// `sockherd <args...> --socket <path>`.
command_result ctl(const std::filesystem::path& socket, std::vector<std::string> args, env_list env = {}) {
    std::vector<std::string> argv{binary_path()};
    argv.insert(argv.end(), args.begin(), args.end());
    if (!socket.empty()) {
        argv.push_back("--socket");
        argv.push_back(socket.string());
    }
    return run_command(std::move(argv), 30s, std::move(env));
}

// ---- the harness gives every node its own admin port and control socket --------------------------

TEST(health, harness_gives_raw_configs_their_own_admin_port_and_control_socket) {
    struct variant {
        std::string name;
        std::string config;
        bool admin_on_port2 = false;
        bool has_control = true;
    };
    const std::string listener = "[[listener]]\naddress = \"127.0.0.1:%%PORT%%\"\n";
    const std::vector<variant> variants = {
        {"an existing [server] table", "# comment\n[server]\nworkers = 1\n\n" + listener},
        {"server.workers at the root", "server.workers = 1\n\n" + listener + "\n[log]\nlevel = \"info\"\n"},
        {"its own [admin], no control socket",
         "[server] # one\nworkers = 1\ncontrol_socket = \"\"\n\n" + listener +
             "\n[admin]\naddress = \"127.0.0.1:%%PORT2%%\"\n",
         true, false},
    };
    for (const auto& v : variants) {
        SCOPED_TRACE(v.name);
        const auto text = with_test_defaults(v.config);
        EXPECT_NE(text.find("[admin]"), std::string::npos) << text;
        node n(node_options{v.config, {}});
        ASSERT_TRUE(n.wait_ready(1)) << "node did not start with:\n" << text;
        EXPECT_EQ(n.admin_port(), v.admin_on_port2 ? n.port("PORT2") : n.port("ADMIN_PORT"));
        EXPECT_NE(n.admin_port(), 9090);
        const auto st = n.status_json();
        ASSERT_TRUE(st) << "no status.json on the admin port " << n.admin_port();
        EXPECT_EQ(int_field(*st, "pid"), n.pid());
        if (v.has_control) {
            EXPECT_EQ(n.control_socket(), n.dir().path() / "control.sock");
            EXPECT_TRUE(std::filesystem::is_socket(n.control_socket())) << n.control_socket();
        } else {
            EXPECT_TRUE(n.control_socket().empty()) << n.control_socket();
        }
        n.assert_no_unexpected_errors();
    }

    // No [server] at all: a new table goes before the first header, and the result is valid.
    temp_dir d;
    auto text = with_test_defaults("# no server table\n" + listener + "\n[log]\nlevel = \"info\"\n");
    EXPECT_LT(text.find("[server]\ncontrol_socket = \"%%DIR%%/control.sock\""), text.find("[[listener]]")) << text;
    for (const auto& [from, to] : {std::pair<std::string, std::string>{"%%PORT%%", std::to_string(free_port())},
                                   {"%%ADMIN_PORT%%", std::to_string(free_port())},
                                   {"%%DIR%%", d.path().string()}})
        text.replace(text.find(from), from.size(), to);
    const auto file = d.write_file("sockherd.toml", text);
    const auto r = run_command({binary_path(), "check-config", file.string()}, 20s);
    EXPECT_EQ(r.exit_code, std::optional<int>(0)) << describe(r) << "\n" << text;
}

// ---- a. the watchdog --------------------------------------------------------------------------------

TEST(health, watchdog_kills_and_replaces_a_stopped_worker_while_the_others_keep_serving) {
    constexpr auto heartbeat = 250ms;
    constexpr auto watchdog = 2000ms;
    constexpr auto slack = 3000ms; // ASan, a busy CI machine
    config_text cfg{3};
    cfg.extra = supervisor_toml("250ms", "2s");
    node n(cfg);
    ASSERT_TRUE(n.wait_ready(3)) << "node did not become ready";
    const auto before = wait_status(n, [](const json& st) { return all_up(st, 3); }, 10s);
    ASSERT_TRUE(before.ok) << "status.json never showed 3 workers up with heartbeats: " << rows(before.last);

    const auto sessions = open_sessions(n.port(), 3, 2);
    ASSERT_EQ(sessions.error, "");
    constexpr unsigned victim = 1;
    const auto victim_pid = pid_field(*slot_row(*before.last, victim));
    ASSERT_TRUE(victim_pid);
    EXPECT_EQ(n.ready_pid(victim), victim_pid) << "status.json and the log disagree on worker 1's pid";
    const auto restarts_before = int_field(*slot_row(*before.last, victim), "restarts");
    EXPECT_EQ(restarts_before, 0);
    const auto others_before =
        std::make_pair(pid_field(*slot_row(*before.last, 0)), pid_field(*slot_row(*before.last, 2)));

    echo_keeper keeper(sessions.except(victim));
    ASSERT_EQ(::kill(*victim_pid, SIGSTOP), 0);
    const auto t0 = clock::now();

    // Killed: the stopped process stops existing as a running one (a zombie or reaped).
    std::optional<milliseconds> killed_after;
    wait_until(
        [&] {
            if (!process_running(*victim_pid))
                killed_after = since(t0);
            return killed_after.has_value();
        },
        watchdog + 2 * heartbeat + slack, 10ms);
    ASSERT_TRUE(killed_after) << "stopped worker pid " << *victim_pid << " still there "
                              << (watchdog + 2 * heartbeat + slack).count() << " ms after SIGSTOP";
    RecordProperty("watchdog_killed_after_ms", static_cast<int>(killed_after->count()));
    EXPECT_GE(*killed_after, watchdog - heartbeat) << "killed before watchdog_timeout had passed";
    EXPECT_LE(*killed_after, watchdog + 2 * heartbeat + slack);

    const auto replaced = wait_status(
        n,
        [&](const json& st) {
            const auto* r = slot_row(st, victim);
            return r && pid_field(*r) && pid_field(*r) != victim_pid && str_field(*r, "state") == "up";
        },
        std::max(milliseconds(1), watchdog + 2 * heartbeat + slack - since(t0)) + 2s);
    const auto replaced_after = since(t0);
    ASSERT_TRUE(replaced.ok) << "slot " << victim << " not up with a new pid " << replaced_after.count()
                             << " ms after SIGSTOP: " << rows(replaced.last);
    RecordProperty("watchdog_replaced_after_ms", static_cast<int>(replaced_after.count()));
    const auto& row = *slot_row(*replaced.last, victim);
    const auto new_pid = pid_field(row);
    EXPECT_EQ(int_field(row, "restarts"), restarts_before + 1);
    EXPECT_NE(str_field(row, "last_exit").find("watchdog"), std::string::npos)
        << "last_exit: '" << str_field(row, "last_exit") << "'";
    EXPECT_EQ(total(*replaced.last, "watchdog_kills"), 1);
    EXPECT_GE(total(*replaced.last, "worker_restarts"), 1);
    EXPECT_EQ(row_with_pid(*replaced.last, *victim_pid), nullptr) << "the killed pid is still listed";
    EXPECT_EQ(pid_field(*slot_row(*replaced.last, 0)), others_before.first) << "worker 0 was replaced too";
    EXPECT_EQ(pid_field(*slot_row(*replaced.last, 2)), others_before.second) << "worker 2 was replaced too";
    EXPECT_TRUE(process_running(*new_pid));

    EXPECT_TRUE(n.wait_for_log(std::regex("worker 1: watchdog:"), 2s)) << "no 'worker 1: watchdog:' log line";
    EXPECT_TRUE(wait_until([&] { return is_zombie_free_and_gone(*victim_pid); }, 2s))
        << "stopped worker " << *victim_pid << " not killed and reaped";
    EXPECT_TRUE(wait_status(n, [](const json& st) { return all_up(st, 3); }, 5s).ok);

    keeper.stop();
    EXPECT_EQ(keeper.failures().count(), 0u) << keeper.failures().str();
    EXPECT_GE(keeper.echoes(), 20u) << "the other workers' sessions were barely exercised";
    for (auto* c : sessions.except(victim))
        EXPECT_EQ(c->echo("after", false), "");
    // Sessions on the killed worker died with it; a new one reaches the replacement eventually.
    n.assert_no_unexpected_errors({std::regex("worker 1: (watchdog|pid \\d+)")});
}

// ---- b. memory limit ------------------------------------------------------------------------------

TEST(health, worker_over_max_worker_memory_is_drained_and_replaced_without_killing_its_sessions) {
    // The hook allocates and touches the ballast on the worker's event loop: under ASan on a
    // small machine that takes seconds (~200 MiB/s seen), so no heartbeat goes out meanwhile.
    // The watchdog must not mistake that for a hang: hence its generous timeout here. The ballast
    // alone (400 MiB) is over the limit, so the test works whatever a normal worker's size.
    constexpr auto drain = 4000ms;
    constexpr std::int64_t limit = 384ll << 20;
    config_text cfg{3};
    cfg.extra = supervisor_toml("250ms", "30s", "drain_timeout = \"4s\"\nmax_worker_memory = \"384MiB\"\n");
    node n(cfg, {{"SOCKHERD_TEST_HOOKS", "1"}, {"SOCKHERD_TEST_BLOAT_MB", "400"}});
    ASSERT_TRUE(n.wait_ready(3)) << "node did not become ready";
    const auto before = wait_status(
        n, [](const json& st) { return all_up(st, 3) && int_field(workers_of(st)[0], "rss_bytes") > 0; }, 10s);
    ASSERT_TRUE(before.ok) << rows(before.last);
    for (const auto& w : workers_of(*before.last)) {
        // The test needs room between a normal worker and the limit (ASan workers are big).
        ASSERT_GT(int_field(w, "rss_bytes"), 0);
        ASSERT_LT(int_field(w, "rss_bytes"), limit - (64ll << 20))
            << "worker " << int_field(w, "id") << " already has " << (int_field(w, "rss_bytes") >> 20)
            << " MiB resident; raise max_worker_memory and SOCKHERD_TEST_BLOAT_MB in this test";
    }

    const auto sessions = open_sessions(n.port(), 3, 2);
    ASSERT_EQ(sessions.error, "");
    constexpr unsigned victim = 2;
    const auto old_pid = pid_field(*slot_row(*before.last, victim));
    ASSERT_TRUE(old_pid);
    echo_keeper keeper(sessions.except(victim));

    ASSERT_EQ(::kill(*old_pid, SIGUSR2), 0);
    const auto t0 = clock::now();

    // The old process leaves its slot and drains: an extra row with the slot's id.
    const auto draining = wait_status(
        n,
        [&](const json& st) {
            const auto* r = row_with_pid(st, *old_pid);
            return r && str_field(*r, "state") == "draining" && int_field(*r, "id") == victim &&
                slot_row(st, victim) != r && rows_in_state(st, "draining") == 1;
        },
        20s, 20ms);
    const auto drain_seen_at = clock::now();
    const auto drain_seen = since(t0);
    ASSERT_TRUE(draining.ok) << "pid " << *old_pid << " not listed as draining: " << rows(draining.last);
    RecordProperty("memory_drain_seen_after_ms", static_cast<int>(drain_seen.count()));
    EXPECT_TRUE(process_running(*old_pid)) << "the worker over its limit was killed, not drained";
    EXPECT_TRUE(n.wait_for_log(std::regex("worker 2: .*over max_worker_memory"), 2s));

    // Its sessions still work while it drains (the drain deadline is seconds away).
    if (since(drain_seen_at) < drain - 1500ms) {
        for (auto* c : sessions.on(victim))
            EXPECT_EQ(c->echo("while draining", true, 1s), "");
    } else {
        ADD_FAILURE() << "too slow to check the draining sessions (" << since(drain_seen_at).count() << " ms)";
    }

    const auto replaced = wait_status(
        n,
        [&](const json& st) {
            const auto* r = slot_row(st, victim);
            return r && pid_field(*r) && pid_field(*r) != old_pid && str_field(*r, "state") == "up";
        },
        10s);
    ASSERT_TRUE(replaced.ok) << "no new worker up in slot 2: " << rows(replaced.last);
    EXPECT_LT(since(drain_seen_at), drain - 500ms) << "the replacement should start at once, not after the drain";
    EXPECT_EQ(workers_of(*replaced.last).size(), 4u) << rows(replaced.last) << " (3 slots + the draining one)";

    // At drain_timeout the old worker closes its sessions with 1001 ("going away"), each up to a
    // tenth of the timeout early (spread so clients do not all reconnect at once). The drain began
    // shortly before we saw it.
    for (auto* c : sessions.on(victim)) {
        const auto ci = c->read_until_close(drain + 5s);
        const auto at = since(drain_seen_at);
        EXPECT_EQ(ci.code, std::optional<std::uint16_t>(1001)) << ci.ec.message();
        EXPECT_GE(at, drain * 9 / 10 - 300ms) << "closed before drain_timeout";
        EXPECT_LE(at, drain + 5s);
    }
    EXPECT_TRUE(wait_until([&] { return is_zombie_free_and_gone(*old_pid); }, 8s))
        << "drained worker " << *old_pid << " did not exit";

    const auto after = wait_status(n, [](const json& st) { return all_up(st, 3); }, 5s);
    EXPECT_TRUE(after.ok) << rows(after.last);
    ASSERT_TRUE(after.last);
    EXPECT_EQ(total(*after.last, "memory_replacements"), 1);
    EXPECT_EQ(n.ready_count(victim), 2u);
    EXPECT_EQ(n.ready_count(0), 1u);
    EXPECT_EQ(n.ready_count(1), 1u);

    keeper.stop();
    EXPECT_EQ(keeper.failures().count(), 0u) << keeper.failures().str();
    EXPECT_GE(keeper.echoes(), 20u);
    n.assert_no_unexpected_errors({std::regex("over max_worker_memory")});
}

// ---- c. the numbers add up -------------------------------------------------------------------------

TEST(health, worker_counters_match_the_connections_the_test_made) {
    config_text cfg{2};
    cfg.extra = supervisor_toml("250ms", "5s");
    node n(cfg);
    ASSERT_TRUE(n.wait_ready(2)) << "node did not become ready";
    const auto base = settled_status(n, 1000ms, 15s);
    ASSERT_TRUE(base) << "the counters never settled";
    ASSERT_TRUE(all_up(*base, 2)) << rows(base);
    EXPECT_EQ(sum_field(*base, "ws_sessions"), 0);

    constexpr int http_requests = 10;
    constexpr int sessions_n = 50;
    for (int i = 0; i < http_requests; ++i)
        ASSERT_EQ(http_get(n.port(), "/healthz").status, 200u);
    std::vector<std::unique_ptr<ws_client>> clients;
    std::map<unsigned, int> per_worker;
    for (int i = 0; i < sessions_n; ++i) {
        auto c = std::make_unique<ws_client>();
        ASSERT_FALSE(c->connect(n.port(), "/echo")) << "session " << i;
        ASSERT_TRUE(c->worker());
        ASSERT_EQ(c->echo("counted " + std::to_string(i), true), "");
        ++per_worker[*c->worker()];
        clients.push_back(std::move(c));
    }
    const auto opened = clock::now();

    const auto delta = [&](const json& st, std::string_view key) { return sum_field(st, key) - sum_field(*base, key); };
    const auto counted = wait_status(
        n,
        [&](const json& st) {
            return sum_field(st, "ws_sessions") == sessions_n &&
                delta(st, "connections_total") >= http_requests + sessions_n &&
                sum_field(st, "connections") == sessions_n && delta(st, "messages_in_total") >= sessions_n &&
                // An echo is counted out when its write completes, which can be just after the
                // client has it: wait for the heartbeat that includes it.
                delta(st, "messages_out_total") >= sessions_n;
        },
        2 * 250ms + 3s, 20ms);
    RecordProperty("counters_seen_after_ms", static_cast<int>(since(opened).count()));
    ASSERT_TRUE(counted.ok) << "after " << since(opened).count() << " ms: ws_sessions "
                            << (counted.last ? sum_field(*counted.last, "ws_sessions") : -1) << ", connections_total +"
                            << (counted.last ? delta(*counted.last, "connections_total") : -1) << ", connections "
                            << (counted.last ? sum_field(*counted.last, "connections") : -1) << ", messages_in_total +"
                            << (counted.last ? delta(*counted.last, "messages_in_total") : -1);
    const auto& st = *counted.last;
    EXPECT_EQ(delta(st, "connections_total"), http_requests + sessions_n) << "each TCP connection counts once";
    EXPECT_EQ(delta(st, "ws_sessions_total"), sessions_n);
    EXPECT_GE(delta(st, "http_requests_total"), http_requests);
    EXPECT_EQ(delta(st, "messages_in_total"), sessions_n);
    EXPECT_EQ(delta(st, "messages_out_total"), sessions_n);
    EXPECT_GT(delta(st, "bytes_in_total"), 0);
    EXPECT_GT(delta(st, "bytes_out_total"), 0);
    for (const auto& [k, count] : per_worker) {
        const auto* r = slot_row(st, k);
        ASSERT_NE(r, nullptr) << "no row for worker " << k;
        EXPECT_EQ(int_field(*r, "ws_sessions"), count) << "worker " << k;
        EXPECT_EQ(int_field(*r, "connections"), count) << "worker " << k;
        EXPECT_GE(int_field(*r, "heartbeat_age_seconds"), 0);
        EXPECT_LE(r->value("heartbeat_age_seconds", 99.0), 3.0) << "worker " << k;
    }
    EXPECT_EQ(int_field(st, "workers_up"), 2);
    EXPECT_EQ(int_field(st, "workers_configured"), 2);
    EXPECT_GE(total(st, "handoffs"), http_requests + sessions_n);

    // Closing 20 sessions shows up as well.
    for (int i = 0; i < 20; ++i)
        EXPECT_FALSE(clients[static_cast<std::size_t>(i)]->close());
    const auto fewer = wait_status(
        n,
        [&](const json& s) {
            return sum_field(s, "ws_sessions") == sessions_n - 20 && sum_field(s, "connections") == sessions_n - 20;
        },
        2 * 250ms + 3s, 20ms);
    EXPECT_TRUE(fewer.ok) << "ws_sessions " << (fewer.last ? sum_field(*fewer.last, "ws_sessions") : -1)
                          << ", connections " << (fewer.last ? sum_field(*fewer.last, "connections") : -1);
    if (fewer.last) {
        EXPECT_EQ(delta(*fewer.last, "ws_sessions_total"), sessions_n) << "a total went down";
    }
    n.assert_no_unexpected_errors();
}

// ---- status.json and /status carry what the contract names ----------------------------------------

TEST(health, status_json_and_status_page_have_the_documented_fields) {
    config_text cfg{2};
    cfg.extra = supervisor_toml("250ms", "5s");
    node n(cfg);
    ASSERT_TRUE(n.wait_ready(2)) << "node did not become ready";
    const auto up = wait_status(n, [](const json& st) { return all_up(st, 2); }, 10s);
    ASSERT_TRUE(up.ok) << rows(up.last);
    const auto& st = *up.last;

    for (const char* key : {"version", "pid", "state", "started_at", "uptime_seconds", "generation", "config",
                            "last_reload", "workers_configured", "workers_up", "healthy", "workers", "listeners",
                            "totals"})
        EXPECT_TRUE(st.contains(key)) << "status.json has no '" << key << "'";
    EXPECT_EQ(int_field(st, "pid"), n.pid());
    EXPECT_EQ(str_field(st, "state"), "running");
    EXPECT_EQ(st.value("healthy", false), true);
    EXPECT_EQ(str_field(st, "config"), n.config_path().string());
    ASSERT_TRUE(st["last_reload"].is_object());
    for (const char* key : {"result", "message", "at"})
        EXPECT_TRUE(st["last_reload"].contains(key)) << "last_reload has no '" << key << "'";
    for (const char* key : {"handoffs", "relays", "worker_restarts", "watchdog_kills", "memory_replacements",
                            "pubsub_channels"})
        EXPECT_GE(total(st, key), 0) << "totals." << key;
    ASSERT_EQ(workers_of(st).size(), 2u);
    for (const auto& w : workers_of(st)) {
        for (const char* key : {"id", "pid", "state", "generation", "uptime_seconds", "heartbeat_age_seconds",
                                "connections", "connections_total", "ws_sessions", "ws_sessions_total",
                                "http_requests_total", "messages_in_total", "messages_out_total", "bytes_in_total",
                                "bytes_out_total", "send_queue_drops_total", "slow_consumer_disconnects_total",
                                "publishes_total", "rss_bytes", "restarts", "last_exit", "relay_drops_total"})
            EXPECT_TRUE(w.contains(key)) << "worker row has no '" << key << "': " << w.dump();
        EXPECT_EQ(n.ready_pid(static_cast<unsigned>(int_field(w, "id"))), pid_field(w));
    }
    ASSERT_TRUE(st["listeners"].is_array());
    ASSERT_EQ(st["listeners"].size(), 1u);

    const auto page = n.admin_get("/status");
    ASSERT_EQ(page.status, 200u) << describe(page);
    EXPECT_NE(page.header("Content-Type").find("text/html"), std::string::npos) << page.header("Content-Type");
    EXPECT_NE(page.body.find("id=\"workers\""), std::string::npos);
    EXPECT_NE(page.body.find("id=\"listeners\""), std::string::npos);
    EXPECT_NE(page.body.find("id=\"node\""), std::string::npos);
    const std::regex row_re(R"re(<tr class="worker" data-id="(\d+)" data-state="([a-z]+)")re");
    std::set<std::string> ids;
    const auto rows_end = std::sregex_iterator();
    for (auto it = std::sregex_iterator(page.body.begin(), page.body.end(), row_re); it != rows_end; ++it) {
        ids.insert((*it)[1].str());
        EXPECT_EQ((*it)[2].str(), "up");
    }
    EXPECT_EQ(ids, (std::set<std::string>{"0", "1"})) << page.body.substr(0, 2000);
    EXPECT_NE(page.body.find("class=\"listener\""), std::string::npos);
    EXPECT_NE(page.body.find(n.config_path().string()), std::string::npos) << "the page does not name the config";

    // Only GET (and HEAD) on the admin listener; unknown paths are 404.
    EXPECT_EQ(n.admin_get("/no-such-page").status, 404u);
    EXPECT_EQ(http_request(n.admin_port(), http::verb::post, "/status.json").status, 405u);
    n.assert_no_unexpected_errors();
}

// ---- d. /metrics ------------------------------------------------------------------------------------

TEST(health, metrics_parse_as_prometheus_text_with_a_sample_per_worker) {
    const auto probe = run_command({"/usr/bin/python3", "-c", "import prometheus_client.parser"}, 20s);
    if (probe.exit_code != 0)
        GTEST_SKIP() << "/usr/bin/python3 cannot import prometheus_client (packaging/deps.sh --test installs "
                        "python3-prometheus-client): "
                     << probe.output;

    config_text cfg{2};
    cfg.extra = supervisor_toml("250ms", "5s");
    node n(cfg);
    ASSERT_TRUE(n.wait_ready(2)) << "node did not become ready";
    ASSERT_TRUE(wait_status(n, [](const json& st) { return all_up(st, 2); }, 10s).ok);
    ws_client c;
    ASSERT_FALSE(c.connect(n.port(), "/echo"));
    ASSERT_EQ(c.echo("metrics", true), "");

    const auto r = n.admin_get("/metrics");
    ASSERT_EQ(r.status, 200u) << describe(r);
    EXPECT_NE(r.header("Content-Type").find("text/plain"), std::string::npos) << r.header("Content-Type");
    EXPECT_NE(r.header("Content-Type").find("version=0.0.4"), std::string::npos) << r.header("Content-Type");

    temp_dir d;
    const auto body = d.write_file("metrics.txt", r.body);
    const auto script = d.write_file("parse.py", R"py(import json, math, sys
from prometheus_client.parser import text_string_to_metric_families
text = open(sys.argv[1], encoding="utf-8").read()
for family in text_string_to_metric_families(text):
    for s in family.samples:
        v = s.value
        print(json.dumps({"family": family.name, "type": family.type, "name": s.name, "labels": s.labels,
                          "value": v if math.isfinite(v) else str(v)}))
)py");
    const auto parsed = run_command({"/usr/bin/python3", script.string(), body.string()}, 30s);
    ASSERT_EQ(parsed.exit_code, std::optional<int>(0)) << "prometheus_client rejected /metrics:\n"
                                                       << parsed.output << "\n--- body ---\n" << r.body;
    std::map<std::string, int> connections_by_worker;
    std::size_t samples = 0;
    std::istringstream lines(parsed.output);
    std::string line;
    for (int i = 0; i < 100000 && std::getline(lines, line); ++i) {
        const auto j = json::parse(line, nullptr, false);
        ASSERT_FALSE(j.is_discarded()) << "parser output: " << line;
        ++samples;
        EXPECT_EQ(j["name"].get<std::string>().rfind("sockherd_", 0), 0u)
            << "sample outside the sockherd_ namespace: " << line;
        if (j["name"] == "sockherd_worker_connections") {
            ASSERT_TRUE(j["labels"].contains("worker")) << line;
            ++connections_by_worker[j["labels"]["worker"].get<std::string>()];
        }
    }
    EXPECT_GT(samples, 10u);
    EXPECT_EQ(connections_by_worker, (std::map<std::string, int>{{"0", 1}, {"1", 1}}))
        << "sockherd_worker_connections: one sample per worker expected";
    EXPECT_FALSE(c.close());
    n.assert_no_unexpected_errors();
}

// ---- e. /healthz on the admin listener ----------------------------------------------------------------

TEST(health, admin_healthz_is_200_when_up_and_503_while_draining) {
    config_text cfg{2};
    cfg.extra = supervisor_toml("250ms", "5s", "drain_timeout = \"3s\"\n");
    node n(cfg);
    ASSERT_TRUE(n.wait_ready(2)) << "node did not become ready";
    http_reply h;
    EXPECT_TRUE(wait_until([&] { return (h = n.admin_get("/healthz", {}, 2s)).status == 200; }, 5s)) << describe(h);

    ws_client c;
    ASSERT_FALSE(c.connect(n.port(), "/echo"));
    ASSERT_EQ(c.echo("before", true), "");
    ASSERT_TRUE(n.signal(SIGTERM));
    const auto t0 = clock::now();
    EXPECT_TRUE(wait_until([&] { return (h = n.admin_get("/healthz", {}, 1s)).status == 503; }, 2s, 20ms))
        << "admin /healthz while draining: " << describe(h);
    const auto st = n.status_json({}, 1s);
    ASSERT_TRUE(st) << "no status.json while draining";
    EXPECT_EQ(str_field(*st, "state"), "draining");
    EXPECT_EQ(st->value("healthy", true), false);
    EXPECT_LT(since(t0), 2000ms) << "the drain (3 s, closes up to 10% early) should still be going on";
    EXPECT_EQ(c.echo("while draining", false, 1s), "") << "sessions stay until drain_timeout";

    const auto ci = c.read_until_close(8s);
    EXPECT_EQ(ci.code, std::optional<std::uint16_t>(1001)) << ci.ec.message();
    EXPECT_EQ(n.wait_exit(10s), std::optional<int>(0));
    n.assert_no_unexpected_errors();
}

TEST(health, admin_answers_while_every_worker_is_down) {
    config_text cfg{1};
    cfg.extra = "[supervisor]\nheartbeat_interval = \"250ms\"\nwatchdog_timeout = \"5s\"\n"
                "restart_backoff = { min = \"100ms\", max = \"500ms\" }\n";
    node n(cfg, {{"SOCKHERD_TEST_CRASH_AT_START", "0"}});
    // The only worker aborts at every start; the supervisor (and its admin listener) stays.
    const auto looping = wait_status(
        n,
        [](const json& st) {
            const auto* r = slot_row(st, 0);
            return r && int_field(*r, "restarts") >= 2;
        },
        20s);
    ASSERT_TRUE(looping.ok) << "status.json never showed worker 0 restarting: " << rows(looping.last);
    const auto& st = *looping.last;
    EXPECT_EQ(int_field(st, "workers_up"), 0);
    EXPECT_EQ(st.value("healthy", true), false);
    EXPECT_EQ(int_field(st, "pid"), n.pid());
    const auto state = str_field(*slot_row(st, 0), "state");
    EXPECT_TRUE(state == "starting" || state == "failing" || state == "stopped") << state;
    EXPECT_FALSE(str_field(*slot_row(st, 0), "last_exit").empty());

    const auto h = n.admin_get("/healthz");
    EXPECT_EQ(h.status, 503u) << describe(h);
    const auto page = n.admin_get("/status");
    EXPECT_EQ(page.status, 200u) << describe(page);
    EXPECT_NE(page.body.find("<tr class=\"worker\" data-id=\"0\""), std::string::npos);
    EXPECT_EQ(n.admin_get("/metrics").status, 200u);
    EXPECT_FALSE(n.proc().exited());
    n.assert_no_unexpected_errors();
}

// ---- f. the admin token -------------------------------------------------------------------------------

TEST(health, admin_token_is_required_off_loopback_and_enforced_when_set) {
    temp_dir d;
    std::string base = config_text{1}.str();
    base.replace(base.find("%%PORT%%"), 8, std::to_string(free_port()));
    const auto open = d.write_file("open.toml", base + "\n[admin]\naddress = \"0.0.0.0:19099\"\n");
    const auto r = run_command({binary_path(), "check-config", open.string()}, 20s);
    EXPECT_EQ(r.exit_code, std::optional<int>(1)) << describe(r);
    EXPECT_NE(r.output.find("token"), std::string::npos) << describe(r);
    const auto with_token =
        d.write_file("token.toml", base + "\n[admin]\naddress = \"0.0.0.0:19099\"\ntoken = \"abc123\"\n");
    const auto ok = run_command({binary_path(), "check-config", with_token.string()}, 20s);
    EXPECT_EQ(ok.exit_code, std::optional<int>(0)) << describe(ok);

    const std::string token = "t0ken-for-the-integration-test";
    config_text cfg{1};
    cfg.extra = "[admin]\naddress = \"127.0.0.1:%%ADMIN_PORT%%\"\ntoken = \"" + token + "\"\n";
    node n(cfg);
    ASSERT_TRUE(n.wait_ready(1)) << "node did not become ready";
    const header_list good{{"Authorization", "Bearer " + token}};
    for (const char* target : {"/status", "/status.json", "/metrics", "/healthz"}) {
        EXPECT_EQ(n.admin_get(target).status, 401u) << target << " without a token";
        EXPECT_EQ(n.admin_get(target, {{"Authorization", "Bearer wrong"}}).status, 401u) << target << " wrong token";
        EXPECT_EQ(n.admin_get(target, {{"Authorization", "Bearer " + token + "x"}}).status, 401u) << target;
        EXPECT_EQ(n.admin_get(target, {{"Authorization", token}}).status, 401u) << target << " without 'Bearer'";
        const auto yes = n.admin_get(target, good);
        EXPECT_EQ(yes.status, 200u) << target << ": " << describe(yes);
    }
    EXPECT_TRUE(n.status_json(good));
    EXPECT_FALSE(n.status_json());
    // The listener itself (the workers) knows nothing of the admin token.
    EXPECT_EQ(http_get(n.port(), "/healthz").status, 200u);
    n.assert_no_unexpected_errors();
}

// ---- g. the control CLI -------------------------------------------------------------------------------

TEST(health, control_cli_status_workers_reload_and_stop) {
    constexpr auto drain = 2000ms;
    config_text cfg{2};
    cfg.extra = supervisor_toml("250ms", "5s", "drain_timeout = \"2s\"\n");
    node n(cfg);
    ASSERT_TRUE(n.wait_ready(2)) << "node did not become ready";
    const auto sock = n.control_socket();
    ASSERT_FALSE(sock.empty());
    const auto up = wait_status(n, [](const json& st) { return all_up(st, 2); }, 10s);
    ASSERT_TRUE(up.ok) << rows(up.last);

    // status: a table with each worker's pid.
    auto r = ctl(sock, {"status"});
    EXPECT_EQ(r.exit_code, std::optional<int>(0)) << describe(r);
    for (const auto& w : workers_of(*up.last))
        EXPECT_NE(r.output.find(std::to_string(*pid_field(w))), std::string::npos)
            << "pid of worker " << int_field(w, "id") << " missing: " << r.output;
    r = ctl(sock, {"status", "--json"});
    EXPECT_EQ(r.exit_code, std::optional<int>(0)) << describe(r);
    const auto cli_json = json::parse(r.output, nullptr, false);
    ASSERT_FALSE(cli_json.is_discarded()) << "status --json is not JSON: " << r.output;
    EXPECT_EQ(workers_of(cli_json).size(), 2u) << r.output;
    EXPECT_EQ(int_field(cli_json, "pid"), n.pid());
    // The socket from the environment instead of --socket.
    r = ctl({}, {"status"}, {{"SOCKHERD_CONTROL_SOCKET", sock.string()}});
    EXPECT_EQ(r.exit_code, std::optional<int>(0)) << describe(r);

    // reload of the unchanged file: a new generation, reported when every worker has it.
    r = ctl(sock, {"reload"});
    EXPECT_EQ(r.exit_code, std::optional<int>(0)) << describe(r);
    EXPECT_NE(r.output.find("reloaded: generation 2"), std::string::npos) << describe(r);

    // Scale up to 3.
    const auto slot0_pid = pid_field(*slot_row(*up.last, 0));
    r = ctl(sock, {"workers", "3"});
    EXPECT_EQ(r.exit_code, std::optional<int>(0)) << describe(r);
    auto three = wait_status(
        n, [](const json& st) { return int_field(st, "workers_configured") == 3 && all_up(st, 3); }, 15s);
    ASSERT_TRUE(three.ok) << "after 'workers 3': " << rows(three.last);
    EXPECT_EQ(pid_field(*slot_row(*three.last, 0)), slot0_pid);

    const auto sessions = open_sessions(n.port(), 3, 2);
    ASSERT_EQ(sessions.error, "");
    std::map<unsigned, pid_t> pids;
    for (unsigned k = 0; k < 3; ++k)
        pids[k] = *pid_field(*slot_row(*three.last, k));
    echo_keeper keeper(sessions.on(0));

    // Scale down to 1: slots 2 and 1 drain and exit; slot 0 is untouched.
    const auto t0 = clock::now(); // the drain starts after this
    r = ctl(sock, {"workers", "1"});
    EXPECT_EQ(r.exit_code, std::optional<int>(0)) << describe(r);
    const auto draining = wait_status(
        n,
        [&](const json& st) {
            const auto* r1 = row_with_pid(st, pids[1]);
            const auto* r2 = row_with_pid(st, pids[2]);
            return int_field(st, "workers_configured") == 1 && r1 && r2 && str_field(*r1, "state") == "draining" &&
                str_field(*r2, "state") == "draining";
        },
        5s, 20ms);
    EXPECT_TRUE(draining.ok) << "slots 1 and 2 not draining after 'workers 1': " << rows(draining.last);
    for (unsigned k : {1u, 2u}) {
        for (auto* c : sessions.on(k)) {
            const auto ci = c->read_until_close(drain + 5s);
            EXPECT_EQ(ci.code, std::optional<std::uint16_t>(1001)) << "slot " << k << ": " << ci.ec.message();
            // Up to a tenth early: the worker spreads its closes over the end of the drain.
            EXPECT_GE(since(t0), drain * 9 / 10 - 50ms) << "slot " << k << " closed before drain_timeout";
        }
        EXPECT_TRUE(wait_until([&] { return is_zombie_free_and_gone(pids[k]); }, 8s)) << "slot " << k << " still there";
    }
    const auto one = wait_status(
        n, [](const json& st) { return int_field(st, "workers_configured") == 1 && all_up(st, 1); }, 5s);
    EXPECT_TRUE(one.ok) << "after 'workers 1': " << rows(one.last);
    if (one.last) {
        EXPECT_EQ(pid_field(*slot_row(*one.last, 0)), pids[0]) << "slot 0 was replaced";
    }
    keeper.stop();
    EXPECT_EQ(keeper.failures().count(), 0u) << keeper.failures().str();
    EXPECT_GE(keeper.echoes(), 20u);
    EXPECT_EQ(n.count_log(std::regex(R"(worker 0: (started|restarting))")), 1u) << "worker 0 was restarted";

    // stop: graceful; sessions get 1001, the supervisor exits 0 and removes its socket.
    r = ctl(sock, {"stop"});
    EXPECT_EQ(r.exit_code, std::optional<int>(0)) << describe(r);
    for (auto* c : sessions.on(0)) {
        const auto ci = c->read_until_close(drain + 5s);
        EXPECT_EQ(ci.code, std::optional<std::uint16_t>(1001)) << ci.ec.message();
    }
    EXPECT_EQ(n.wait_exit(drain + 8s), std::optional<int>(0));
    EXPECT_FALSE(std::filesystem::exists(sock)) << "control socket left behind";

    // Nobody there any more.
    r = ctl(sock, {"status"});
    EXPECT_EQ(r.exit_code, std::optional<int>(2)) << describe(r);
    EXPECT_NE(r.output.find("no supervisor is running at"), std::string::npos) << describe(r);
    n.assert_no_unexpected_errors();
}

TEST(health, control_cli_without_a_supervisor_exits_2) {
    temp_dir d;
    const auto missing = d.path() / "control.sock";
    // A socket file nobody accepts on (a supervisor that died) is the same as none.
    const auto stale = d.path() / "stale.sock";
    {
        const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ASSERT_GE(fd, 0);
        sockaddr_un addr{};
        addr.sun_family = AF_UNIX;
        std::strncpy(addr.sun_path, stale.c_str(), sizeof addr.sun_path - 1);
        ASSERT_EQ(::bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr), 0) << std::strerror(errno);
        ::close(fd); // bound, never listened on, now closed: connect() is refused
    }
    const std::vector<std::vector<std::string>> commands = {{"status"}, {"status", "--json"}, {"stop"},
                                                            {"reload"}, {"workers", "2"}};
    for (const auto& path : {missing, stale}) {
        for (const auto& args : commands) {
            const auto r = ctl(path, args);
            EXPECT_EQ(r.exit_code, std::optional<int>(2)) << path << " " << args[0] << ": " << describe(r);
            EXPECT_NE(r.output.find("no supervisor is running at"), std::string::npos)
                << path << " " << args[0] << ": " << describe(r);
        }
    }
    const auto r = ctl({}, {"status"}, {{"SOCKHERD_CONTROL_SOCKET", missing.string()}});
    EXPECT_EQ(r.exit_code, std::optional<int>(2)) << describe(r);
    EXPECT_NE(r.output.find(missing.string()), std::string::npos) << "the message should name the path: " << r.output;
}

// ---- h. systemd notifications --------------------------------------------------------------------------

// An AF_UNIX datagram socket standing in for systemd's notification socket; reports who sent what.
class notify_listener {
public:
    explicit notify_listener(const std::filesystem::path& path) {
        fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (fd_ < 0)
            throw std::system_error(errno, std::generic_category(), "socket");
        sockaddr_un addr{};
        addr.sun_family = AF_UNIX;
        std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
        if (::bind(fd_, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0)
            throw std::system_error(errno, std::generic_category(), "bind " + path.string());
        const int on = 1;
        ::setsockopt(fd_, SOL_SOCKET, SO_PASSCRED, &on, sizeof on);
    }
    ~notify_listener() { ::close(fd_); }
    notify_listener(const notify_listener&) = delete;
    notify_listener& operator=(const notify_listener&) = delete;

    struct datagram {
        std::string text;
        pid_t sender = 0; // 0 when no credentials came along
    };
    std::optional<datagram> receive(milliseconds timeout) {
        pollfd p{fd_, POLLIN, 0};
        if (::poll(&p, 1, static_cast<int>(timeout.count())) <= 0)
            return std::nullopt;
        char buf[4096];
        alignas(cmsghdr) char control[CMSG_SPACE(sizeof(ucred)) + CMSG_SPACE(sizeof(int) * 8)];
        iovec iov{buf, sizeof buf};
        msghdr msg{};
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control;
        msg.msg_controllen = sizeof control;
        const ssize_t n = ::recvmsg(fd_, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
        if (n < 0)
            return std::nullopt;
        datagram d;
        d.text.assign(buf, static_cast<std::size_t>(n));
        for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
            if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_CREDENTIALS) {
                ucred cred{};
                std::memcpy(&cred, CMSG_DATA(c), sizeof cred);
                d.sender = cred.pid;
            } else if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
                const std::size_t fds = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
                for (std::size_t i = 0; i < fds; ++i) {
                    int fd = -1;
                    std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
                    ::close(fd);
                }
            }
        }
        return d;
    }

private:
    int fd_ = -1;
};

TEST(health, sd_notify_ready_once_all_workers_are_up_and_stopping_on_sigterm) {
    temp_dir d;
    const auto sock_path = d.path() / "notify.sock";
    notify_listener notify(sock_path);

    config_text cfg{2};
    cfg.extra = supervisor_toml("250ms", "5s", "drain_timeout = \"1s\"\n");
    node n(cfg, {{"NOTIFY_SOCKET", sock_path.string()}});

    std::vector<std::string> lines;
    std::set<pid_t> senders;
    const auto collect = [&](const notify_listener::datagram& dg) {
        senders.insert(dg.sender);
        std::istringstream in(dg.text);
        std::string l;
        for (int i = 0; i < 1000 && std::getline(in, l); ++i)
            if (!l.empty())
                lines.push_back(l);
    };
    const auto has = [&](std::string_view line) { return std::find(lines.begin(), lines.end(), line) != lines.end(); };

    std::optional<json> at_ready;
    const auto t0 = clock::now();
    for (int i = 0; i < 10000 && !has("READY=1") && since(t0) < 30s && !n.proc().exited(); ++i) {
        if (const auto dg = notify.receive(200ms)) {
            collect(*dg);
            if (has("READY=1"))
                at_ready = n.status_json({}, 2s);
        }
    }
    ASSERT_TRUE(has("READY=1")) << "no READY=1 within 30 s; got: " << ::testing::PrintToString(lines);
    ASSERT_TRUE(at_ready) << "no status.json right after READY=1";
    EXPECT_EQ(int_field(*at_ready, "workers_up"), 2) << "READY=1 before every worker was up: " << rows(at_ready);
    EXPECT_TRUE(
        std::any_of(lines.begin(), lines.end(), [](const std::string& l) { return l.rfind("STATUS=", 0) == 0; }))
        << ::testing::PrintToString(lines);
    ASSERT_TRUE(n.wait_ready(2)) << "node not serving after READY=1";

    ASSERT_TRUE(n.signal(SIGTERM));
    const auto t1 = clock::now();
    for (int i = 0; i < 10000 && !has("STOPPING=1") && since(t1) < 5s; ++i)
        if (const auto dg = notify.receive(100ms))
            collect(*dg);
    EXPECT_TRUE(has("STOPPING=1")) << "no STOPPING=1 within 5 s of SIGTERM; got: " << ::testing::PrintToString(lines);
    EXPECT_EQ(n.wait_exit(10s), std::optional<int>(0));
    for (int i = 0; i < 100; ++i) // whatever else was sent before the exit
        if (const auto dg = notify.receive(0ms))
            collect(*dg);
        else
            break;
    EXPECT_EQ(std::count(lines.begin(), lines.end(), "READY=1"), 1) << "READY=1 more than once";
    EXPECT_EQ(senders, (std::set<pid_t>{n.pid()})) << "notifications must come from the supervisor only (main pid)";
    n.assert_no_unexpected_errors();
}

} // namespace
} // namespace sockherd::test
