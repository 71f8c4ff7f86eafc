// Privilege drop, from outside: a node started as root runs its workers as [server] user once the
// listeners are bound (the supervisor stays root), refuses root workers unless the config says
// allow_root_workers = true, refuses a user that does not exist, and rolls its workers to another
// user on reload, one slot at a time, without cutting a session or refusing a connection.
// The real binary, as root (skipped otherwise); every wait has a deadline, every loop a bound.

#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <regex>
#include <set>
#include <sstream>
#include <string>
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

constexpr const char* not_root = "privilege drop needs the tests to run as root (CI does)";
constexpr const char* missing_user = "sockherd-test-no-such-user";
// [supervisor] drain_timeout of the reload test: how long a replaced worker's sessions stay.
constexpr auto drain = 3000ms;

bool contains(const std::string& text, std::string_view part) { return text.find(part) != std::string::npos; }

// ---- users and the credentials of processes -------------------------------------------------------

struct account {
    std::string name;
    uid_t uid = 0;
    gid_t gid = 0;
    std::set<long> groups; // getgrouplist: what a login (and sockherd) gives the user
};

std::optional<account> lookup(const std::string& name) {
    std::vector<char> buf(64 * 1024);
    passwd pw{};
    passwd* found = nullptr;
    if (::getpwnam_r(name.c_str(), &pw, buf.data(), buf.size(), &found) != 0 || found == nullptr)
        return std::nullopt;
    account a{name, pw.pw_uid, pw.pw_gid, {}};
    std::vector<gid_t> groups(1024);
    int n = static_cast<int>(groups.size());
    if (::getgrouplist(name.c_str(), pw.pw_gid, groups.data(), &n) >= 0)
        a.groups.insert(groups.begin(), groups.begin() + n);
    return a;
}

// The Uid:, Gid: (real, effective, saved, filesystem) and Groups: lines of /proc/<pid>/status.
struct credentials {
    std::vector<long> uid;
    std::vector<long> gid;
    std::set<long> groups;
    bool read = false;

    std::string str() const {
        std::ostringstream os;
        os << "Uid:";
        for (auto v : uid)
            os << ' ' << v;
        os << " Gid:";
        for (auto v : gid)
            os << ' ' << v;
        os << " Groups:";
        for (auto v : groups)
            os << ' ' << v;
        return os.str();
    }
};

credentials credentials_of(pid_t pid) {
    credentials c;
    std::ifstream in("/proc/" + std::to_string(pid) + "/status");
    std::string line;
    for (int i = 0; i < 1000 && std::getline(in, line); ++i) {
        const auto colon = line.find(':');
        if (colon == std::string::npos)
            continue;
        const auto key = line.substr(0, colon);
        std::istringstream values(line.substr(colon + 1));
        long v = 0;
        if (key == "Uid")
            while (values >> v)
                c.uid.push_back(v);
        else if (key == "Gid")
            while (values >> v)
                c.gid.push_back(v);
        else if (key == "Groups")
            while (values >> v)
                c.groups.insert(v);
    }
    c.read = c.uid.size() == 4 && c.gid.size() == 4;
    return c;
}

// Empty when every uid and gid of `pid` is the account's and its groups are the account's groups;
// else what differs.
std::string runs_as(pid_t pid, const account& a) {
    const auto c = credentials_of(pid);
    if (!c.read)
        return "pid " + std::to_string(pid) + ": cannot read /proc/" + std::to_string(pid) + "/status";
    const std::vector<long> uids(4, static_cast<long>(a.uid));
    const std::vector<long> gids(4, static_cast<long>(a.gid));
    if (c.uid != uids || c.gid != gids || c.groups != a.groups) {
        std::ostringstream want;
        want << "uid " << a.uid << ", gid " << a.gid << ", groups";
        for (auto g : a.groups)
            want << ' ' << g;
        return "pid " + std::to_string(pid) + " runs with " + c.str() + "; expected " + a.name + ": " + want.str();
    }
    return {};
}

// What `ps -o user= -p PID` says.
std::string ps_user(pid_t pid) {
    auto r = run_command({"/bin/sh", "-c", "exec ps -o user= -p " + std::to_string(pid)}, 10s); // ps from $PATH
    r.output.erase(std::remove_if(r.output.begin(), r.output.end(), [](char c) { return c == '\n' || c == ' '; }),
                   r.output.end());
    return r.output;
}

// errno of access(path, X_OK) in a child running as `a` (0 when it may execute it).
int exec_access_as(const account& a, const std::filesystem::path& path) {
    const std::string p = path.string();
    const gid_t gid = a.gid;
    const pid_t child = ::fork();
    if (child == 0) {
        if (::setgroups(1, &gid) != 0 || ::setgid(a.gid) != 0 || ::setuid(a.uid) != 0)
            ::_exit(255);
        ::_exit(::access(p.c_str(), X_OK) == 0 ? 0 : errno);
    }
    int status = 0;
    if (child < 0 || ::waitpid(child, &status, 0) != child || !WIFEXITED(status))
        return -1;
    return WEXITSTATUS(status);
}

// ---- configs ------------------------------------------------------------------------------------

const std::string default_routes = "[[route]]\npath = \"/echo\"\nkind = \"echo\"\n\n"
                                   "[[route]]\npath = \"/\"\nkind = \"static\"\n";

// A node config (placeholders for the harness) with `server_keys` in [server].
std::string node_toml(std::string_view server_keys, unsigned workers = 2, const std::string& routes = default_routes) {
    return "[server]\nworkers = " + std::to_string(workers) + "\n" + std::string(server_keys) +
        "\n[[listener]]\naddress = \"127.0.0.1:%%PORT%%\"\n\n"
        "[supervisor]\ndrain_timeout = \"" + std::to_string(drain.count()) + "ms\"\n"
        "heartbeat_interval = \"250ms\"\nrestart_backoff = { min = \"100ms\", max = \"2s\" }\n\n"
        "[log]\nlevel = \"info\"\n\n" + routes;
}

// A file for `check-config` and runs that must not start: if one did, it would bind nothing
// another test uses (port 0, no admin listener, no control socket). [server] user is on line 4.
std::filesystem::path refusing_config(const temp_dir& d, const std::string& name, std::string_view server_keys) {
    return d.write_file(name, "[server]\nworkers = 1\ncontrol_socket = \"\"\n" + std::string(server_keys) +
                                  "\n[[listener]]\naddress = \"127.0.0.1:0\"\n\n[admin]\naddress = \"\"\n");
}

command_result sockherd(std::vector<std::string> args) {
    args.insert(args.begin(), binary_path());
    return run_command(std::move(args), 20s);
}

// Rewrites the `user = ...` line of the node's config file (the rest as the harness wrote it).
void set_user_line(const node& n, const std::string& line) {
    std::ifstream in(n.config_path());
    std::string text, l;
    bool replaced = false;
    for (int i = 0; i < 10000 && std::getline(in, l); ++i) {
        if (l.rfind("user = ", 0) == 0) {
            l = line;
            replaced = true;
        }
        text += l + "\n";
    }
    ASSERT_TRUE(replaced) << "no user line in " << n.config_path();
    n.dir().write_file(n.config_path().filename(), text);
}

command_result reload(const node& n) {
    return run_command({binary_path(), "reload", "--socket", n.control_socket().string()}, 60s);
}

// Every slot 0..workers-1 up with a pid, as status.json says; empty when not within 20 s.
std::map<unsigned, pid_t> up_pids(const node& n, unsigned workers) {
    const auto up = wait_status(n, [&](const json& st) { return slots_up(st, workers); }, 20s);
    if (!up.ok) {
        ADD_FAILURE() << "slots not up: " << rows(up.last);
        return {};
    }
    return slot_pids(*up.last);
}

// GET /healthz and a WebSocket echo round trip on fresh connections; empty when both worked.
std::string serves(std::uint16_t port) {
    const auto r = http_get(port, "/healthz", {}, 3s);
    if (!r.ok() || r.status != 200 || !parse_health(r.body))
        return "GET /healthz: " + describe(r);
    ws_client c;
    if (auto ec = c.connect(port, "/echo", 3s))
        return "WebSocket connect: " + ec.message();
    if (auto why = c.echo("privdrop", true, 3s); !why.empty())
        return "WebSocket echo: " + why;
    if (auto ec = c.close(websocket::close_code::normal, 3s))
        return "WebSocket close: " + ec.message();
    return {};
}

// ---- load ---------------------------------------------------------------------------------------

// Long-lived echo sessions, echoed in turn from one thread until each ends (its echo fails; then
// it is read to its close frame) or the keeper is stopped.
class session_keeper {
public:
    struct record {
        unsigned slot = 0;
        std::size_t echoes = 0;
        clock::time_point last_echo;
        bool ended = false;
        std::optional<std::uint16_t> code; // the close code the server sent
        std::string how;
    };

    // Opens sessions on /echo until every slot 0..workers-1 holds `per_slot` (bounded); empty on
    // success, else why not. Call before start().
    std::string open(std::uint16_t port, unsigned workers, std::size_t per_slot) {
        std::map<unsigned, std::size_t> per;
        const auto enough = [&] {
            for (unsigned k = 0; k < workers; ++k)
                if (per[k] < per_slot)
                    return false;
            return true;
        };
        for (std::size_t i = 0; i < workers * per_slot * 8 && !enough(); ++i) {
            auto c = std::make_unique<ws_client>();
            if (auto ec = c->connect(port, "/echo", 3s))
                return "session " + std::to_string(i) + ": " + ec.message();
            if (auto why = c->echo("hello", true, 3s); !why.empty())
                return "session " + std::to_string(i) + ": " + why;
            const auto slot = c->worker().value_or(9999);
            ++per[slot];
            clients_.push_back(std::move(c));
            records_.push_back({slot, 1, clock::now(), false, std::nullopt, {}});
        }
        return enough() ? std::string() : "sessions did not spread over " + std::to_string(workers) + " workers";
    }

    void start() {
        thread_ = std::thread([this] { loop(); });
    }
    ~session_keeper() { stop(); }

    void stop() {
        stop_ = true;
        if (thread_.joinable())
            thread_.join();
    }
    std::vector<record> records() const {
        std::lock_guard lock(mutex_);
        return records_;
    }
    bool all_ended() const {
        std::lock_guard lock(mutex_);
        return std::all_of(records_.begin(), records_.end(), [](const record& r) { return r.ended; });
    }

private:
    void loop() {
        for (std::size_t round = 0; !stop_ && round < 1'000'000; ++round) {
            for (std::size_t i = 0; i < clients_.size() && !stop_; ++i) {
                {
                    std::lock_guard lock(mutex_);
                    if (records_[i].ended)
                        continue;
                }
                const auto why = clients_[i]->echo("keep " + std::to_string(round), round % 2 == 0, 3s);
                if (why.empty()) {
                    std::lock_guard lock(mutex_);
                    ++records_[i].echoes;
                    records_[i].last_echo = clock::now();
                    continue;
                }
                const auto ci = clients_[i]->read_until_close(1s);
                std::lock_guard lock(mutex_);
                records_[i].ended = true;
                records_[i].code = ci.code;
                records_[i].how = why + " / then " + ci.ec.message();
            }
            std::this_thread::sleep_for(20ms); // pacing, not synchronization
        }
    }

    std::vector<std::unique_ptr<ws_client>> clients_; // used by the thread only once started
    mutable std::mutex mutex_;
    std::vector<record> records_;
    std::atomic<bool> stop_{false};
    std::thread thread_;
};

// ---- a. workers as nobody -------------------------------------------------------------------------

TEST(privdrop, workers_run_as_nobody_and_serve) {
    if (::geteuid() != 0)
        GTEST_SKIP() << not_root;
    const auto nobody = lookup("nobody");
    ASSERT_TRUE(nobody) << "no user nobody on this machine";

    // Static files the workers must read as nobody, and a root they may not enter.
    temp_dir site;
    const std::string index = "<!doctype html><p>served by nobody</p>\n";
    site.write_file("www/index.html", index);
    site.write_file("locked/index.html", "only root may read this\n");
    ASSERT_EQ(::chmod((site.path() / "locked").c_str(), 0700), 0);
    const std::string routes = "[[route]]\npath = \"/echo\"\nkind = \"echo\"\n\n"
                               "[[route]]\npath = \"/locked\"\nkind = \"static\"\nroot = \"" +
        (site.path() / "locked").string() + "\"\n\n[[route]]\npath = \"/\"\nkind = \"static\"\nroot = \"" +
        (site.path() / "www").string() + "\"\n";

    node n(node_options{node_toml("user = \"nobody\"\n", 2, routes), {}});
    ASSERT_TRUE(n.wait_ready(2)) << "node did not become ready";
    const auto pids = up_pids(n, 2);
    ASSERT_EQ(pids.size(), 2u);

    for (const auto& [slot, pid] : pids) {
        EXPECT_EQ(runs_as(pid, *nobody), "") << "worker " << slot;
        EXPECT_EQ(ps_user(pid), "nobody") << "worker " << slot << ", pid " << pid;
    }
    // Nothing the supervisor started runs as root; the supervisor itself does.
    const auto children = n.worker_pids();
    EXPECT_EQ(children.size(), 2u);
    for (pid_t p : children)
        EXPECT_EQ(runs_as(p, *nobody), "") << "child " << p << " of the supervisor";
    const auto sup = credentials_of(n.pid());
    EXPECT_EQ(sup.uid, std::vector<long>(4, 0)) << sup.str();
    EXPECT_EQ(ps_user(n.pid()), "root");

    EXPECT_EQ(serves(n.port()), "");
    for (int i = 0; i < 4; ++i) {
        const auto r = http_get(n.port(), "/");
        EXPECT_EQ(r.status, 200u) << describe(r);
        EXPECT_EQ(r.body, index);
    }
    // A root the worker user cannot read: 404 and a warning that says why, not a crash.
    EXPECT_EQ(http_get(n.port(), "/locked/").status, 404u);
    EXPECT_TRUE(n.wait_for_log(std::regex(R"(\] warn: static route "/locked": root .*/locked: Permission denied )"
                                          R"(\(this worker runs as uid )" +
                                          std::to_string(nobody->uid) + R"(\); its requests answer 404)"),
                               2s, 2))
        << "no warning about the unreadable root from each worker";
    EXPECT_EQ(n.count_log(std::regex(R"(\[supervisor\] info: workers run as user nobody \(uid )" +
                                     std::to_string(nobody->uid) + ", gid " + std::to_string(nobody->gid) + R"(\))")),
              1u);
    EXPECT_EQ(serves(n.port()), "") << "still serving after the 404s";
    n.assert_no_unexpected_errors();
}

// ---- b. a binary only root may reach ---------------------------------------------------------------

TEST(privdrop, workers_start_from_a_binary_in_a_directory_only_root_may_enter) {
    if (::geteuid() != 0)
        GTEST_SKIP() << not_root;
    const auto nobody = lookup("nobody");
    ASSERT_TRUE(nobody) << "no user nobody on this machine";

    temp_dir bin; // like a build under /root
    ASSERT_EQ(::chmod(bin.path().c_str(), 0700), 0);
    const auto exe = bin.path() / "sockherd";
    std::filesystem::copy_file(binary_path(), exe);
    std::filesystem::permissions(exe, std::filesystem::perms(0755));
    // The premise: nobody may not execute it by its path.
    ASSERT_EQ(exec_access_as(*nobody, exe), EACCES) << "nobody can reach " << exe << "; the test proves nothing";

    node n(node_options{node_toml("user = \"nobody\"\n"), {}}, exe.string());
    ASSERT_TRUE(n.wait_ready(2)) << "node did not become ready";
    const auto pids = up_pids(n, 2);
    ASSERT_EQ(pids.size(), 2u);
    for (const auto& [slot, pid] : pids) {
        EXPECT_EQ(runs_as(pid, *nobody), "") << "worker " << slot;
        std::error_code ec;
        EXPECT_EQ(std::filesystem::read_symlink("/proc/" + std::to_string(pid) + "/exe", ec), exe)
            << "worker " << slot << " does not run the supervisor's binary";
    }
    EXPECT_EQ(serves(n.port()), "");
    n.assert_no_unexpected_errors();
}

// ---- what a worker does not inherit: descriptors, the terminal session, capabilities -----------------

// The session id (field 6 of /proc/<pid>/stat, after the parenthesised command name); -1 unread.
long session_of(pid_t pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
    std::string stat;
    std::getline(in, stat);
    const auto close = stat.rfind(')');
    if (close == std::string::npos)
        return -1;
    std::istringstream rest(stat.substr(close + 1));
    std::string state;
    long ppid = 0, pgrp = 0, session = -1;
    rest >> state >> ppid >> pgrp >> session;
    return rest ? session : -1;
}

// The hex value of a "CapXxx:" line of /proc/<pid>/status; nullopt when unread.
std::optional<std::uint64_t> capability_set(pid_t pid, const std::string& key) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/status");
    std::string line;
    for (int i = 0; i < 1000 && std::getline(in, line); ++i)
        if (line.rfind(key + ":", 0) == 0)
            return std::stoull(line.substr(key.size() + 1), nullptr, 16);
    return std::nullopt;
}

// Where each open descriptor of `pid` points.
std::vector<std::string> descriptor_targets(pid_t pid) {
    std::vector<std::string> targets;
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd", ec))
        targets.push_back(std::filesystem::read_symlink(e.path(), ec).string());
    return targets;
}

// A script that starts sockherd the way a shell or a service manager might: `prelude` first, then
// the binary through `launcher` (a command that runs the rest of its arguments).
std::string wrapper(const temp_dir& d, const std::string& prelude, const std::string& launcher = "") {
    const auto script = d.write_file("start.sh", "#!/bin/sh\n" + prelude + "\nexec " + launcher + " '" +
                                                     binary_path() + "' \"$@\"\n");
    std::filesystem::permissions(script, std::filesystem::perms(0755));
    return script.string();
}

TEST(privdrop, workers_inherit_no_descriptor_and_no_terminal_session_of_a_root_supervisor) {
    if (::geteuid() != 0)
        GTEST_SKIP() << not_root;
    const auto nobody = lookup("nobody");
    ASSERT_TRUE(nobody) << "no user nobody on this machine";
    temp_dir d;
    const auto secret = d.write_file("secret", "root's secret\n");
    ASSERT_EQ(::chmod(secret.c_str(), 0600), 0);
    // A root shell's open descriptor (not close-on-exec) that the supervisor inherits.
    node n(node_options{node_toml("user = \"nobody\"\n"), {}}, wrapper(d, "exec 7<'" + secret.string() + "'"));
    ASSERT_TRUE(n.wait_ready(2)) << "node did not become ready";
    const auto sup_fds = descriptor_targets(n.pid());
    ASSERT_NE(std::find(sup_fds.begin(), sup_fds.end(), secret.string()), sup_fds.end())
        << "the supervisor did not inherit descriptor 7; the test proves nothing";
    const auto pids = up_pids(n, 2);
    ASSERT_EQ(pids.size(), 2u);
    for (const auto& [slot, pid] : pids) {
        EXPECT_EQ(runs_as(pid, *nobody), "") << "worker " << slot;
        const auto fds = descriptor_targets(pid);
        EXPECT_FALSE(fds.empty()) << "cannot list /proc/" << pid << "/fd";
        EXPECT_EQ(std::find(fds.begin(), fds.end(), secret.string()), fds.end())
            << "worker " << slot << " (pid " << pid << ") holds the supervisor's descriptor of " << secret;
        for (const auto& t : fds)
            EXPECT_TRUE(t.rfind("socket:", 0) == 0 || t.rfind("pipe:", 0) == 0 || t.rfind("anon_inode:", 0) == 0 ||
                        t == "/dev/null")
                << "worker " << slot << " has a descriptor of " << t;
        // A session of its own: no controlling terminal shared with the root that started it.
        EXPECT_EQ(session_of(pid), pid) << "worker " << slot;
        EXPECT_NE(session_of(pid), session_of(n.pid()));
    }
    EXPECT_EQ(serves(n.port()), "");
    n.assert_no_unexpected_errors();
}

TEST(privdrop, workers_of_a_service_with_ambient_capabilities_have_none) {
    if (::geteuid() != 0)
        GTEST_SKIP() << not_root;
    if (::access("/usr/bin/setpriv", X_OK) != 0)
        GTEST_SKIP() << "no /usr/bin/setpriv (util-linux)";
    const auto nobody = lookup("nobody");
    ASSERT_TRUE(nobody) << "no user nobody on this machine";
    temp_dir d;
    // As the packaged unit starts it: its own user, CAP_NET_BIND_SERVICE as an ambient capability.
    const auto start = wrapper(d, "", "/usr/bin/setpriv --reuid=" + std::to_string(nobody->uid) +
                                          " --regid=" + std::to_string(nobody->gid) +
                                          " --clear-groups --inh-caps=+net_bind_service --ambient-caps=+net_bind_service");
    node n(node_options{node_toml("user = \"nobody\"\n"), {}}, start);
    ASSERT_TRUE(n.wait_ready(2)) << "node did not become ready";
    constexpr std::uint64_t net_bind_service = std::uint64_t{1} << 10;
    ASSERT_EQ(capability_set(n.pid(), "CapAmb"), net_bind_service)
        << "the supervisor does not have the ambient capability; the test proves nothing";
    const auto pids = up_pids(n, 2);
    ASSERT_EQ(pids.size(), 2u);
    for (const auto& [slot, pid] : pids) {
        EXPECT_EQ(capability_set(pid, "CapAmb"), std::uint64_t{0}) << "worker " << slot;
        EXPECT_EQ(capability_set(pid, "CapEff"), std::uint64_t{0}) << "worker " << slot;
        EXPECT_EQ(capability_set(pid, "CapPrm"), std::uint64_t{0}) << "worker " << slot;
    }
    EXPECT_EQ(serves(n.port()), "");
}

// ---- c. root workers only on purpose ----------------------------------------------------------------

TEST(privdrop, root_workers_need_allow_root_workers) {
    if (::geteuid() != 0)
        GTEST_SKIP() << not_root;
    temp_dir d;

    const auto root = refusing_config(d, "root.toml", "user = \"root\"\n");
    for (const auto& cmd : {std::vector<std::string>{"check-config", root.string()},
                            std::vector<std::string>{"run", "--config", root.string()}}) {
        const auto r = sockherd(cmd);
        SCOPED_TRACE(cmd[0]);
        EXPECT_EQ(r.exit_code, std::optional<int>(1)) << describe(r);
        EXPECT_TRUE(contains(r.output, root.string() + ":4:8: [server] user: \"root\" would run the workers as "
                                                       "root; set allow_root_workers = true in [server] to do that "
                                                       "on purpose"))
            << describe(r);
        EXPECT_FALSE(contains(r.output, "started, pid")) << describe(r);
    }

    // "" keeps the supervisor's user, root here: the same rule.
    const auto empty = refusing_config(d, "empty.toml", "user = \"\"\n");
    for (const auto& cmd : {std::vector<std::string>{"run", "--config", empty.string()},
                            std::vector<std::string>{"check-config", empty.string()}}) {
        const auto r = sockherd(cmd);
        SCOPED_TRACE(cmd[0]);
        EXPECT_EQ(r.exit_code, std::optional<int>(1)) << describe(r);
        EXPECT_TRUE(contains(r.output, empty.string() + ":4:8: [server] user: \"\" with sockherd started as root "
                                                        "would run the workers as root"))
            << describe(r);
        EXPECT_TRUE(contains(r.output, "allow_root_workers = true")) << describe(r);
        EXPECT_FALSE(contains(r.output, "started, pid")) << describe(r);
    }

    // On purpose: the workers run as root, and the log says so once, as a warning.
    const auto root_account = lookup("root");
    ASSERT_TRUE(root_account);
    node n(node_options{node_toml("user = \"root\"\nallow_root_workers = true\n"), {}});
    ASSERT_TRUE(n.wait_ready(2)) << "node did not become ready";
    const auto pids = up_pids(n, 2);
    ASSERT_EQ(pids.size(), 2u);
    for (const auto& [slot, pid] : pids) {
        EXPECT_EQ(runs_as(pid, *root_account), "") << "worker " << slot;
        EXPECT_EQ(ps_user(pid), "root") << "worker " << slot;
    }
    EXPECT_EQ(n.count_log(std::regex(R"(\[supervisor\] warn: workers run as root \(allow_root_workers = true\))")),
              1u);
    EXPECT_EQ(serves(n.port()), "");
    n.assert_no_unexpected_errors();
}

// ---- d. a user that does not exist ---------------------------------------------------------------

TEST(privdrop, unknown_user_is_refused_by_check_config_and_run) {
    if (::geteuid() != 0)
        GTEST_SKIP() << not_root;
    ASSERT_FALSE(lookup(missing_user)) << missing_user << " exists on this machine";
    temp_dir d;
    const auto file = refusing_config(d, "unknown.toml", "user = \"" + std::string(missing_user) + "\"\n");
    for (const auto& cmd : {std::vector<std::string>{"check-config", file.string()},
                            std::vector<std::string>{"run", "--config", file.string()}}) {
        const auto r = sockherd(cmd);
        SCOPED_TRACE(cmd[0]);
        EXPECT_EQ(r.exit_code, std::optional<int>(1)) << describe(r);
        EXPECT_TRUE(contains(r.output, file.string() + ":4:8: [server] user: no user \"" + missing_user +
                                           "\" on this machine"))
            << describe(r);
        EXPECT_FALSE(contains(r.output, "started, pid")) << describe(r);
    }
}

// ---- e. reload to another user ----------------------------------------------------------------------

TEST(privdrop, reload_to_another_user_rolls_the_workers_one_slot_at_a_time) {
    if (::geteuid() != 0)
        GTEST_SKIP() << not_root;
    const auto nobody = lookup("nobody");
    const auto daemon = lookup("daemon");
    ASSERT_TRUE(nobody) << "no user nobody on this machine";
    ASSERT_TRUE(daemon) << "no user daemon on this machine";
    ASSERT_NE(nobody->uid, daemon->uid);

    node n(node_options{node_toml("user = \"nobody\"\n"), {}});
    ASSERT_TRUE(n.wait_ready(2)) << "node did not become ready";
    const auto old = up_pids(n, 2);
    ASSERT_EQ(old.size(), 2u);
    for (const auto& [slot, pid] : old)
        ASSERT_EQ(runs_as(pid, *nobody), "") << "worker " << slot;

    // Rejected like any bad reload: the old config and the old workers keep running.
    struct rejected {
        std::string line;
        std::string says;
    };
    const rejected bad[] = {
        {"user = \"" + std::string(missing_user) + "\"",
         "[server] user: no user \"" + std::string(missing_user) + "\""},
        {"user = \"root\"", "set allow_root_workers = true"},
        {"user = \"\"", "would run the workers as root"},
    };
    for (const auto& b : bad) {
        SCOPED_TRACE(b.line);
        set_user_line(n, b.line);
        const auto r = reload(n);
        EXPECT_EQ(r.exit_code, std::optional<int>(1)) << describe(r);
        EXPECT_TRUE(contains(r.output, "reload failed: ")) << describe(r);
        EXPECT_TRUE(contains(r.output, b.says)) << describe(r);
        const auto st = n.status_json({}, 2s);
        ASSERT_TRUE(st);
        EXPECT_EQ(int_field(*st, "generation"), 1) << rows(st);
        EXPECT_EQ(str_field(last_reload(*st), "result"), "failed") << rows(st);
        EXPECT_EQ(slot_pids(*st), old) << rows(st);
    }

    // Sessions on both old workers, and fresh connections all along.
    session_keeper sessions;
    ASSERT_EQ(sessions.open(n.port(), 2, 2), "");
    sessions.start();
    prober probe(n.port());

    set_user_line(n, "user = \"daemon\"");
    const auto r = reload(n);
    ASSERT_EQ(r.exit_code, std::optional<int>(0)) << describe(r);
    EXPECT_TRUE(contains(r.output, "reloaded: generation 2, rolling 2 worker(s) to user daemon (uid " +
                                       std::to_string(daemon->uid) + ", gid " + std::to_string(daemon->gid) + ")"))
        << describe(r);

    // Each slot gets a new worker; note when status.json first shows it.
    std::map<unsigned, clock::time_point> handed_over;
    std::optional<json> last;
    const bool rolled = wait_until(
        [&] {
            last = n.status_json({}, 2s);
            if (!last)
                return false;
            for (const auto& [slot, pid] : slot_pids(*last))
                if (old.count(slot) && old.at(slot) != pid && !handed_over.count(slot))
                    handed_over[slot] = clock::now();
            return handed_over.size() == 2 && slots_up(*last, 2);
        },
        30s, 20ms);
    ASSERT_TRUE(rolled) << rows(last);
    const auto now_pids = slot_pids(*last);
    for (const auto& [slot, pid] : now_pids) {
        EXPECT_EQ(runs_as(pid, *daemon), "") << "worker " << slot;
        EXPECT_EQ(ps_user(pid), "daemon") << "worker " << slot;
    }

    // One slot at a time: slot 1's successor started only once slot 0's was ready.
    const auto lines = n.proc().output_lines();
    const auto first = [&](const std::regex& re) {
        const auto it =
            std::find_if(lines.begin(), lines.end(), [&](const auto& l) { return std::regex_search(l, re); });
        return it == lines.end() ? lines.size() : static_cast<std::size_t>(it - lines.begin());
    };
    const auto slot0_ready = first(std::regex("worker 0: ready \\(pid " + std::to_string(now_pids.at(0)) + "\\)"));
    const auto slot1_starts =
        first(std::regex(R"(worker 1: pid \d+ runs as user nobody .*; pid \d+ starts as user daemon)"));
    EXPECT_LT(slot0_ready, lines.size()) << "no ready line for slot 0's successor";
    EXPECT_LT(slot1_starts, lines.size()) << "no roll line for slot 1";
    EXPECT_LT(slot0_ready, slot1_starts) << "slot 1 was rolled before slot 0's successor was ready";

    // The old sessions keep working after their worker was replaced, until it drains (1001).
    EXPECT_TRUE(wait_until([&] { return sessions.all_ended(); }, drain + 5s)) << "old sessions still open";
    sessions.stop();
    for (const auto& rec : sessions.records()) {
        SCOPED_TRACE("session on slot " + std::to_string(rec.slot) + ", " + std::to_string(rec.echoes) +
                     " echoes, " + rec.how);
        ASSERT_TRUE(handed_over.count(rec.slot));
        EXPECT_GT(rec.last_echo, handed_over.at(rec.slot)) << "no echo after its worker was replaced";
        EXPECT_EQ(rec.code, std::optional<std::uint16_t>(1001));
    }
    for (const auto& [slot, pid] : old)
        EXPECT_TRUE(wait_until([pid = pid] { return !process_running(pid); }, 5s))
            << "old worker " << slot << " (pid " << pid << ") still running";

    probe.stop();
    EXPECT_EQ(probe.refused().count(), 0u) << probe.summary();
    EXPECT_EQ(probe.failed().count(), 0u) << probe.summary();
    EXPECT_GE(probe.succeeded(), 20u) << probe.summary();

    EXPECT_TRUE(n.wait_for_log(std::regex(R"(\[supervisor\] info: workers: all 2 run as user daemon)"), 5s));
    const auto final_st = wait_status(n, [](const json& st) { return all_up(st, 2); }, 10s);
    EXPECT_TRUE(final_st.ok) << "draining rows left over: " << rows(final_st.last);
    EXPECT_EQ(serves(n.port()), "");
    n.assert_no_unexpected_errors();
}

} // namespace
} // namespace sockherd::test
