// The whole node, from outside: the real binary on loopback ports, real clients, real signals.

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <filesystem>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "tests/integration/harness.hpp"

namespace sockherd::test {
namespace {

using namespace std::chrono_literals;

std::string backoff_section(std::string_view min, std::string_view max) {
    return "[supervisor]\nrestart_backoff = { min = \"" + std::string(min) + "\", max = \"" + std::string(max) +
        "\" }\n";
}

// A message that says who sent it and when; binary ones hold every byte value (not UTF-8).
std::string payload(std::size_t client, std::size_t seq, bool text) {
    std::string s = "client " + std::to_string(client) + " message " + std::to_string(seq) + " ";
    if (text) {
        s.append((client * 37 + seq * 11) % 700, static_cast<char>('a' + (client + seq) % 26));
    } else {
        const std::size_t n = (client * 53 + seq * 29) % 1200 + 1;
        for (std::size_t j = 0; j < n; ++j)
            s.push_back(static_cast<char>((client * 31 + seq * 7 + j) % 256));
    }
    return s;
}


bool is_zombie_free_and_gone(pid_t pid) {
    errno = 0;
    return ::kill(pid, 0) == -1 && errno == ESRCH && !std::filesystem::exists("/proc/" + std::to_string(pid));
}

// ---- a. HTTP over all workers -------------------------------------------------------------------

TEST(node, healthz_on_fresh_connections_is_served_by_every_worker) {
    node n(config_text{4});
    ASSERT_TRUE(n.wait_ready(4)) << "node did not become ready";

    constexpr int threads = 4;
    constexpr int per_thread = 100;
    std::array<std::atomic<int>, 4> served{};
    std::mutex pids_mutex;
    std::map<unsigned, std::set<pid_t>> pids;
    failure_log failures;
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
        pool.emplace_back([&] {
            for (int i = 0; i < per_thread; ++i) {
                const auto r = http_get(n.port(), "/healthz");
                const auto h = parse_health(r.body);
                if (!r.ok() || r.status != 200 || !h || h->status != "ok" || h->worker >= 4) {
                    failures.add(describe(r));
                    continue;
                }
                if (r.worker() != h->worker)
                    failures.add("X-Sockherd-Worker '" + r.header("X-Sockherd-Worker") + "' but body says worker " +
                                 std::to_string(h->worker));
                ++served[h->worker];
                std::lock_guard lock(pids_mutex);
                pids[h->worker].insert(h->pid);
            }
        });
    }
    for (auto& th : pool)
        th.join();

    EXPECT_EQ(failures.count(), 0u) << failures.str();
    int total = 0;
    for (unsigned k = 0; k < 4; ++k) {
        total += served[k];
        EXPECT_GT(served[k].load(), 0) << "worker " << k << " served no request";
        const auto pid = n.ready_pid(k);
        ASSERT_TRUE(pid);
        EXPECT_EQ(pids[k], std::set<pid_t>{*pid}) << "worker " << k << " answered with an unexpected pid";
    }
    EXPECT_EQ(total, threads * per_thread);
    n.assert_no_unexpected_errors();
}

// ---- b. many WebSocket echo sessions ------------------------------------------------------------

TEST(node, hundred_websocket_echo_sessions_over_four_workers) {
    node n(config_text{4});
    ASSERT_TRUE(n.wait_ready(4)) << "node did not become ready";

    constexpr std::size_t clients_n = 100;
    constexpr std::size_t messages = 100;
    constexpr std::size_t threads = 4;
    std::vector<std::unique_ptr<ws_client>> clients;
    std::map<unsigned, int> per_worker;
    for (std::size_t i = 0; i < clients_n; ++i) {
        auto c = std::make_unique<ws_client>();
        const auto ec = c->connect(n.port(), "/echo");
        ASSERT_FALSE(ec) << "client " << i << ": " << ec.message();
        ASSERT_EQ(c->handshake_response().result(), http::status::switching_protocols);
        ASSERT_TRUE(c->worker()) << "handshake response without X-Sockherd-Worker";
        ++per_worker[*c->worker()];
        clients.push_back(std::move(c));
    }
    EXPECT_EQ(per_worker.size(), 4u) << "sessions did not reach every worker";
    for (const auto& [k, count] : per_worker)
        EXPECT_LT(k, 4u);

    // Each thread owns every `threads`-th client: sends one message on each, then reads every echo.
    failure_log failures;
    std::vector<std::thread> pool;
    for (std::size_t t = 0; t < threads; ++t) {
        pool.emplace_back([&, t] {
            for (std::size_t m = 0; m < messages; ++m) {
                for (std::size_t i = t; i < clients_n; i += threads) {
                    const bool text = (i + m) % 2 == 0;
                    if (auto ec = clients[i]->send(payload(i, m, text), text)) {
                        failures.add("client " + std::to_string(i) + " send " + std::to_string(m) + ": " +
                                     ec.message());
                        return;
                    }
                }
                for (std::size_t i = t; i < clients_n; i += threads) {
                    const bool text = (i + m) % 2 == 0;
                    const auto got = clients[i]->receive();
                    if (got.ec) {
                        failures.add("client " + std::to_string(i) + " receive " + std::to_string(m) + ": " +
                                     got.ec.message());
                        return;
                    }
                    if (got.text != text || got.data != payload(i, m, text))
                        failures.add("client " + std::to_string(i) + " message " + std::to_string(m) +
                                     ": wrong echo (type " + (got.text ? "text" : "binary") + ", " +
                                     std::to_string(got.data.size()) + " bytes)");
                }
            }
        });
    }
    for (auto& th : pool)
        th.join();
    EXPECT_EQ(failures.count(), 0u) << failures.str();

    for (auto& c : clients)
        EXPECT_FALSE(c->close()) << "clean close failed";
    n.assert_no_unexpected_errors();
}

// ---- c. a worker killed with SIGKILL ------------------------------------------------------------

TEST(node, killed_worker_is_replaced_without_refusing_connections) {
    config_text cfg{4};
    cfg.extra = backoff_section("100ms", "2s");
    node n(cfg);
    ASSERT_TRUE(n.wait_ready(4)) << "node did not become ready";

    std::vector<std::unique_ptr<ws_client>> clients;
    std::map<unsigned, std::vector<ws_client*>> by_worker;
    for (int i = 0; i < 16; ++i) {
        auto c = std::make_unique<ws_client>();
        ASSERT_FALSE(c->connect(n.port(), "/echo"));
        ASSERT_TRUE(c->worker());
        by_worker[*c->worker()].push_back(c.get());
        clients.push_back(std::move(c));
    }
    ASSERT_GE(by_worker.size(), 2u) << "all sessions on one worker; nothing to compare";
    const unsigned victim = by_worker.begin()->first;
    std::vector<ws_client*> survivors;
    for (const auto& [k, list] : by_worker)
        if (k != victim)
            survivors.insert(survivors.end(), list.begin(), list.end());
    for (auto* c : survivors)
        ASSERT_EQ(c->echo("before", true), "");

    const auto old_pid = n.ready_pid(victim);
    ASSERT_TRUE(old_pid);
    const auto children = n.worker_pids();
    ASSERT_NE(std::find(children.begin(), children.end(), *old_pid), children.end())
        << "worker " << victim << " pid " << *old_pid << " is not a child of the supervisor";

    ASSERT_EQ(::kill(*old_pid, SIGKILL), 0);
    const auto killed_at = clock::now();

    // Fresh connections all the time while the slot is replaced. None may be refused. The issue
    // allows exactly one kind of loss: "connections that were handed to the dead worker are gone".
    // A connection handed over in the instant between the kill and the supervisor noticing it is
    // such a one (accepted, then reset or closed): at most a couple, and never a refusal.
    failure_log http_failures;
    failure_log refused;
    failure_log echo_failures;
    std::optional<pid_t> new_pid;
    std::optional<milliseconds> replaced_after;
    int requests = 0;
    int after_replacement = 0;
    for (int i = 0; i < 3000 && after_replacement < 50; ++i) {
        if (!new_pid && clock::now() - killed_at > 2s)
            break;
        ++requests;
        const auto r = http_get(n.port(), "/healthz", {}, 3s);
        const auto h = parse_health(r.body);
        if (r.ec == net::error::connection_refused) {
            refused.add("request " + std::to_string(i) + ": " + describe(r));
        } else if (!r.ok() || r.status != 200 || !h) {
            http_failures.add("request " + std::to_string(i) + ": " + describe(r));
        } else if (h->worker == victim && h->pid != *old_pid && !new_pid) {
            new_pid = h->pid;
            replaced_after = std::chrono::duration_cast<milliseconds>(clock::now() - killed_at);
        }
        if (new_pid)
            ++after_replacement;
        auto* c = survivors[static_cast<std::size_t>(i) % survivors.size()];
        if (auto why = c->echo("during " + std::to_string(i), i % 2 == 0); !why.empty())
            echo_failures.add("echo " + std::to_string(i) + ": " + why);
    }

    ASSERT_TRUE(new_pid) << "no /healthz answer from a new worker " << victim << " within 2 s of the kill ("
                         << requests << " requests)";
    EXPECT_LE(*replaced_after, 2000ms);
    RecordProperty("replaced_after_ms", static_cast<int>(replaced_after->count()));
    RecordProperty("requests_during_restart", requests);
    EXPECT_EQ(refused.count(), 0u) << "of " << requests << " requests: " << refused.str();
    EXPECT_LE(http_failures.count(), 2u) << "of " << requests << " requests: " << http_failures.str();
    RecordProperty("lost_in_handoff_to_dead_worker", static_cast<int>(http_failures.count()));
    EXPECT_EQ(echo_failures.count(), 0u) << echo_failures.str();

    // The brief's level name is "warn"; spdlog's default is "warning": accept both.
    const std::regex killed_line("\\[supervisor\\] warn(ing)?: worker " + std::to_string(victim) + ": pid " +
                                 std::to_string(*old_pid) + " killed by signal 9");
    EXPECT_TRUE(n.wait_for_log(killed_line, 2s));
    EXPECT_EQ(n.ready_count(victim), 2u);
    EXPECT_EQ(n.ready_pid(victim), new_pid);
    EXPECT_TRUE(process_running(*new_pid));
    EXPECT_TRUE(wait_until([&] { return is_zombie_free_and_gone(*old_pid); }, 2s)) << "old worker not reaped";

    for (auto* c : survivors)
        EXPECT_EQ(c->echo("after", false), "");
    // Sessions that lived on the killed worker are allowed to have died; they must not hang.
    for (auto* c : by_worker[victim])
        (void)c->echo("on the dead worker", true, 2s);

    n.assert_no_unexpected_errors();
}

// ---- d. a worker that crashes at start ----------------------------------------------------------

TEST(node, crash_looping_worker_backs_off_and_the_other_keeps_serving) {
    config_text cfg{2};
    cfg.extra = backoff_section("100ms", "2s");
    const auto t0 = clock::now();
    node n(cfg, {{"SOCKHERD_TEST_CRASH_AT_START", "1"}});
    ASSERT_TRUE(n.wait_slots_ready({0})) << "worker 0 did not become ready";

    // Watch ~3 s of the crash loop while worker 0 answers every request.
    failure_log failures;
    int requests = 0;
    for (int i = 0; i < 1000 && clock::now() - t0 < 3s; ++i) {
        ++requests;
        const auto r = http_get(n.port(), "/healthz", {}, 3s);
        const auto h = parse_health(r.body);
        if (!r.ok() || r.status != 200 || !h || h->worker != 0)
            failures.add(describe(r));
        std::this_thread::sleep_for(10ms); // pacing, not synchronization
    }
    EXPECT_EQ(failures.count(), 0u) << "of " << requests << ": " << failures.str();

    const std::size_t starts = n.count_log(std::regex(R"(\[supervisor\] info: worker 1: started, pid \d+)"));
    EXPECT_GE(starts, 3u);
    EXPECT_LE(starts, 8u);
    EXPECT_EQ(n.ready_count(1), 0u);
    EXPECT_GE(n.count_log(std::regex(R"(worker 1: pid \d+ killed by signal 6)")), 2u);

    std::vector<long> delays;
    for (const auto& m : n.proc().matches(std::regex(R"(worker 1: restarting in (\d+) ms)")))
        delays.push_back(std::stol(m[1]));
    ASSERT_GE(delays.size(), 2u);
    EXPECT_EQ(delays.front(), 100);
    for (std::size_t i = 1; i < delays.size(); ++i)
        EXPECT_GE(delays[i], delays[i - 1]) << "delay " << i << " went down";
    EXPECT_GT(delays.back(), delays.front()) << "the delay never grew";
    for (long d : delays)
        EXPECT_LE(d, 2000);
    EXPECT_EQ(n.count_log(std::regex(R"(worker 0: (started|restarting))")), 1u) << "worker 0 was restarted";

    n.assert_no_unexpected_errors();
}

// ---- e. graceful stop -----------------------------------------------------------------------------

TEST(node, sigterm_closes_websockets_with_1001_and_exits_zero) {
    config_text cfg{2};
    cfg.extra = "[supervisor]\ndrain_timeout = \"1s\"\n";
    node n(cfg);
    ASSERT_TRUE(n.wait_ready(2)) << "node did not become ready";

    std::vector<std::unique_ptr<ws_client>> clients;
    std::set<unsigned> workers;
    for (int i = 0; i < 8; ++i) {
        auto c = std::make_unique<ws_client>();
        ASSERT_FALSE(c->connect(n.port(), "/echo"));
        ASSERT_EQ(c->echo("hello " + std::to_string(i), true), "");
        workers.insert(c->worker().value_or(99));
        clients.push_back(std::move(c));
    }
    EXPECT_EQ(workers, (std::set<unsigned>{0, 1}));
    const auto pids = n.worker_pids();
    ASSERT_EQ(pids.size(), 2u);

    const auto t0 = clock::now();
    ASSERT_TRUE(n.signal(SIGTERM));
    for (std::size_t i = 0; i < clients.size(); ++i) {
        const auto ci = clients[i]->read_until_close(5s);
        const auto at = std::chrono::duration_cast<milliseconds>(clock::now() - t0);
        EXPECT_EQ(ci.ec, websocket::error::closed) << "client " << i << ": " << ci.ec.message();
        EXPECT_EQ(ci.code, std::optional<std::uint16_t>(1001)) << "client " << i;
        EXPECT_LE(at, 2500ms) << "client " << i << " closed long after the 1 s drain timeout";
    }
    const auto left = std::chrono::duration_cast<milliseconds>(t0 + 4s - clock::now());
    EXPECT_EQ(n.wait_exit(std::max(left, 1ms)), std::optional<int>(0)) << "supervisor did not exit 0 within 4 s";
    EXPECT_TRUE(n.wait_for_log(std::regex(R"(all workers have exited; supervisor exiting)"), 1s));
    for (pid_t p : pids)
        EXPECT_TRUE(is_zombie_free_and_gone(p)) << "worker pid " << p << " still exists";
    n.assert_no_unexpected_errors();
}

// ---- f. the supervisor killed ---------------------------------------------------------------------

TEST(node, workers_exit_when_the_supervisor_is_killed) {
    node n(config_text{3});
    ASSERT_TRUE(n.wait_ready(3)) << "node did not become ready";
    const auto pids = n.worker_pids();
    ASSERT_EQ(pids.size(), 3u);
    for (pid_t p : pids)
        ASSERT_TRUE(process_running(p));

    ASSERT_TRUE(n.signal(SIGKILL));
    EXPECT_TRUE(wait_until(
        [&] { return std::none_of(pids.begin(), pids.end(), [](pid_t p) { return process_running(p); }); }, 2s))
        << "workers still running 2 s after the supervisor was killed";
    EXPECT_EQ(n.wait_exit(5s), std::optional<int>(128 + SIGKILL));
    n.assert_no_unexpected_errors();
}

// ---- g. static files ------------------------------------------------------------------------------

TEST(node, static_route_serves_files_and_never_escapes_its_root) {
    temp_dir site;
    const std::string index = "<!doctype html><title>it</title><p>integration index</p>\n";
    const std::string secret = "TOP-SECRET-7f3a9c-do-not-serve\n";
    site.write_file("www/index.html", index);
    site.write_file("www/a/placeholder.txt", "inside\n");
    site.write_file("secret", secret);
    std::filesystem::create_symlink("../secret", site.path() / "www/link");
    std::filesystem::create_symlink(site.path() / "secret", site.path() / "www/abs");
    std::filesystem::create_directory_symlink("..", site.path() / "www/up");

    config_text cfg{2};
    cfg.routes = "[[route]]\npath = \"/\"\nkind = \"static\"\nroot = \"" + (site.path() / "www").string() + "\"\n";
    node n(cfg);
    ASSERT_TRUE(n.wait_ready(2)) << "node did not become ready";

    // Raw request lines: nothing between us and the server normalizes the target.
    const std::vector<std::string> escapes = {
        "/../secret",          "/%2e%2e/secret",       "/%2E%2E/secret", "/..%2fsecret",
        "/..%2Fsecret",        "/%2e%2e%2fsecret",     "/a/%2e%2e/%2e%2e/secret",
        "/a/../../secret",     "/./../secret",         "//../secret",    "/a/..%2f..%2fsecret",
        "/link",               "/abs",                 "/up/secret",     "/up/www/../secret",
        "/%2e%2e/www/index.html/../../secret",
    };
    for (const auto& target : escapes) {
        const auto r =
            raw_request(n.port(), "GET " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
        ASSERT_TRUE(r.ok()) << target << ": " << r.ec.message();
        EXPECT_TRUE(r.status == 404 || r.status == 403) << target << ": " << describe(r);
        EXPECT_EQ(r.body.find("TOP-SECRET"), std::string::npos) << target << " served the secret";
    }

    auto r = http_get(n.port(), "/");
    ASSERT_TRUE(r.ok()) << r.ec.message();
    EXPECT_EQ(r.status, 200u);
    EXPECT_EQ(r.body, index);
    EXPECT_NE(r.header("Content-Type").find("text/html"), std::string::npos) << r.header("Content-Type");
    const std::string etag = r.header("ETag");
    EXPECT_FALSE(etag.empty()) << "no ETag";

    r = http_get(n.port(), "/index.html");
    EXPECT_EQ(r.status, 200u);
    EXPECT_EQ(r.body, index);

    r = http_request(n.port(), http::verb::head, "/");
    ASSERT_TRUE(r.ok()) << r.ec.message();
    EXPECT_EQ(r.status, 200u);
    EXPECT_TRUE(r.body.empty());
    EXPECT_EQ(r.header("Content-Length"), std::to_string(index.size()));
    EXPECT_EQ(r.header("ETag"), etag);

    r = http_get(n.port(), "/", {{"If-None-Match", etag}});
    ASSERT_TRUE(r.ok()) << r.ec.message();
    EXPECT_EQ(r.status, 304u);
    EXPECT_TRUE(r.body.empty());
    EXPECT_EQ(r.header("ETag"), etag);

    r = http_get(n.port(), "/", {{"If-None-Match", "\"not-the-etag\""}});
    EXPECT_EQ(r.status, 200u);
    EXPECT_EQ(r.body, index);

    n.assert_no_unexpected_errors();
}

// ---- h. limits ------------------------------------------------------------------------------------

TEST(node, limits_answer_431_413_timeout_and_1009_while_others_keep_working) {
    config_text cfg{2};
    cfg.extra = "[http]\nmax_header_size = \"2KiB\"\nmax_body_size = \"1KiB\"\nheader_timeout = \"1s\"\n\n"
                "[websocket]\nmax_message_size = \"1KiB\"\n";
    node n(cfg);
    ASSERT_TRUE(n.wait_ready(2)) << "node did not become ready";

    ws_client keeper;
    ASSERT_FALSE(keeper.connect(n.port(), "/echo"));
    ASSERT_EQ(keeper.echo("first", true), "");

    // A client that connects and says nothing; read later.
    raw_connection silent;
    ASSERT_FALSE(silent.connect(n.port()));
    const auto silent_since = clock::now();
    // One that starts a request and stops halfway through the header.
    raw_connection slow;
    ASSERT_FALSE(slow.connect(n.port()));
    ASSERT_FALSE(slow.send("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"));
    const auto slow_since = clock::now();

    // Header too large: 431. Just under the limit: fine.
    auto r = http_get(n.port(), "/healthz", {{"X-Padding", std::string(4096, 'h')}});
    ASSERT_TRUE(r.ok()) << r.ec.message();
    EXPECT_EQ(r.status, 431u) << describe(r);
    r = http_get(n.port(), "/healthz", {{"X-Padding", std::string(1500, 'h')}});
    EXPECT_EQ(r.status, 200u) << describe(r);

    // Body too large (declared): 413, before the body is sent. A small body is not a 413.
    r = raw_request(n.port(), "POST /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 4096\r\n"
                              "Connection: close\r\n\r\n");
    ASSERT_TRUE(r.ok()) << r.ec.message();
    EXPECT_EQ(r.status, 413u) << describe(r);
    r = http_request(n.port(), http::verb::post, "/healthz", {}, std::string(100, 'b'));
    EXPECT_TRUE(r.ok() && r.status != 413u) << describe(r);

    ASSERT_EQ(keeper.echo(std::string(1024, 'k'), false), "") << "a message of exactly max_message_size";

    // WebSocket message over max_message_size: closed with 1009.
    ws_client big;
    ASSERT_FALSE(big.connect(n.port(), "/echo"));
    ASSERT_FALSE(big.send_binary(std::string(2048, 'x')));
    const auto ci = big.read_until_close(5s);
    EXPECT_EQ(ci.code, std::optional<std::uint16_t>(1009)) << ci.ec.message();
    // Boost 1.74's server-side teardown after a failed read closes the socket without waiting for
    // our close reply, so the handshake may end in a reset (ENOTCONN/ECONNRESET) after the frame.
    EXPECT_TRUE(ci.ec == websocket::error::closed || ci.ec == net::error::not_connected ||
                ci.ec == net::error::connection_reset || ci.ec == net::error::eof)
        << ci.ec.message();

    EXPECT_EQ(keeper.echo("still here", true), "");
    EXPECT_EQ(http_get(n.port(), "/healthz").status, 200u);

    // The silent and the slow client are closed after header_timeout (1 s), not before.
    const auto s1 = silent.read_until_close(5s);
    const auto silent_after = std::chrono::duration_cast<milliseconds>(clock::now() - silent_since);
    EXPECT_TRUE(s1.closed) << s1.ec.message();
    EXPECT_GE(silent_after, 900ms);
    EXPECT_LE(silent_after, 4000ms);
    const auto s2 = slow.read_until_close(5s);
    const auto slow_after = std::chrono::duration_cast<milliseconds>(clock::now() - slow_since);
    EXPECT_TRUE(s2.closed) << s2.ec.message();
    EXPECT_GE(slow_after, 900ms);
    EXPECT_LE(slow_after, 4000ms);
    if (!s2.data.empty()) {
        EXPECT_NE(s2.data.find(" 408 "), std::string::npos) << s2.data;
    }

    EXPECT_EQ(keeper.echo("at the end", false), "");
    EXPECT_FALSE(keeper.close());
    n.assert_no_unexpected_errors();
}

// ---- i. keep-alive and pipelining -----------------------------------------------------------------

TEST(node, pipelined_requests_on_one_connection_are_answered_in_order) {
    node n(config_text{2});
    ASSERT_TRUE(n.wait_ready(2)) << "node did not become ready";

    raw_connection c;
    ASSERT_FALSE(c.connect(n.port()));
    ASSERT_FALSE(c.send("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
                        "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"));
    const auto first = c.read_response();
    ASSERT_TRUE(first.ok()) << first.ec.message();
    EXPECT_EQ(first.status, 200u);
    EXPECT_TRUE(parse_health(first.body)) << "first answer is not /healthz: " << first.body.substr(0, 200);
    const auto second = c.read_response();
    ASSERT_TRUE(second.ok()) << second.ec.message();
    EXPECT_EQ(second.status, 200u);
    EXPECT_NE(second.header("Content-Type").find("text/html"), std::string::npos)
        << "second answer is not the page: " << second.header("Content-Type");
    EXPECT_EQ(first.worker(), second.worker()) << "one connection, one worker";

    // The connection is still usable; Connection: close ends it.
    ASSERT_FALSE(c.send("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"));
    const auto third = c.read_response();
    ASSERT_TRUE(third.ok()) << third.ec.message();
    EXPECT_EQ(third.status, 200u);
    const auto rest = c.read_until_close(5s);
    EXPECT_TRUE(rest.closed) << "server kept the connection after Connection: close: " << rest.ec.message();
    EXPECT_TRUE(rest.data.empty()) << rest.data;
    n.assert_no_unexpected_errors();
}

// ---- j. command line ------------------------------------------------------------------------------

TEST(node, check_config_reports_file_line_column_and_version_prints) {
    temp_dir d;
    struct bad_file {
        std::string name;
        std::string text;
        int line;
    };
    const std::vector<bad_file> bad = {
        {"unknown-key.toml", "[server]\nworkers = 2\nno_such_key = 1\n", 3},
        {"syntax.toml", "[server]\nworkers = 2\n[http\nmax_body_size = \"1KiB\"\n", 3},
        {"wrong-type.toml", "# a comment\n[http]\nmax_body_size = true\n", 3},
        {"bad-duration.toml", "[supervisor]\n\ndrain_timeout = \"soon\"\n", 3},
    };
    for (const auto& b : bad) {
        const auto path = d.write_file(b.name, b.text).string();
        const auto r = run_command({binary_path(), "check-config", path});
        EXPECT_EQ(r.exit_code, std::optional<int>(1)) << b.name << ": " << r.output;
        const std::string where = path + ":" + std::to_string(b.line) + ":";
        EXPECT_NE(r.output.find(where), std::string::npos)
            << b.name << ": expected '" << where << "COL:' in: " << r.output;
        EXPECT_TRUE(std::regex_search(r.output, std::regex(":[0-9]+:[0-9]+: \\S"))) << b.name << ": " << r.output;
    }

    std::string good_text = config_text{2}.str();
    good_text.replace(good_text.find("%%PORT%%"), 8, std::to_string(free_port()));
    const auto good = d.write_file("good.toml", good_text);
    const auto ok = run_command({binary_path(), "check-config", good.string()});
    EXPECT_EQ(ok.exit_code, std::optional<int>(0)) << ok.output;

    // `run` with a bad file fails the same way, at once.
    const auto run = run_command({binary_path(), "run", "--config", (d.path() / "unknown-key.toml").string()});
    EXPECT_EQ(run.exit_code, std::optional<int>(1)) << run.output;
    EXPECT_NE(run.output.find("unknown-key.toml:3:"), std::string::npos) << run.output;

    const auto v = run_command({binary_path(), "--version"});
    EXPECT_EQ(v.exit_code, std::optional<int>(0)) << v.output;
    EXPECT_TRUE(std::regex_search(v.output, std::regex(R"(sockherd \d+\.\d+\.\d+)"))) << v.output;
}

} // namespace
} // namespace sockherd::test
