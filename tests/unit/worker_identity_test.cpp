// Tests for supervisor/worker_identity.cpp: who the workers run as, for a supervisor started as
// root or not, against a user database the test defines.

#include "supervisor/worker_identity.hpp"

#include <map>
#include <string>

#include <gtest/gtest.h>

namespace sockherd::supervisor {
namespace {

class fake_users final : public user_database {
public:
    fake_users() {
        add({"root", 0, 0, {0}});
        add({"toor", 0, 0, {0}});
        add({"nobody", 65534, 65534, {65534}});
        add({"alice", 1000, 1000, {1000, 27, 100}});
    }
    void add(user_account a) { accounts_[a.name] = std::move(a); }

    std::optional<user_account> by_name(const std::string& name) const override {
        const auto it = accounts_.find(name);
        return it == accounts_.end() ? std::nullopt : std::optional<user_account>(it->second);
    }
    std::optional<user_account> by_uid(uid_t uid) const override {
        for (const auto& [name, a] : accounts_)
            if (a.uid == uid && name != "toor")
                return a;
        return std::nullopt;
    }

private:
    std::map<std::string, user_account> accounts_;
};

// Every capability: what a root supervisor normally has.
constexpr std::uint64_t all_capabilities = ~std::uint64_t{0};

config with_user(std::string user, bool allow_root = false, source_position at = {3, 8}) {
    config cfg;
    cfg.source_name = "node.toml";
    cfg.server.user = std::move(user);
    cfg.server.user_position = at;
    cfg.server.allow_root_workers = allow_root;
    return cfg;
}

resolved_identity resolves(const config& cfg, uid_t euid) {
    auto r = resolve_worker_identity(cfg, euid, fake_users(), all_capabilities);
    if (const auto* err = std::get_if<config_error>(&r)) {
        ADD_FAILURE() << "unexpected error: " << err->to_string();
        return {};
    }
    return std::get<resolved_identity>(std::move(r));
}

config_error fails(const config& cfg, uid_t euid) {
    auto r = resolve_worker_identity(cfg, euid, fake_users(), all_capabilities);
    if (std::holds_alternative<resolved_identity>(r)) {
        ADD_FAILURE() << "resolved, but should not have: user \"" << cfg.server.user << "\", euid " << euid;
        return {};
    }
    return std::get<config_error>(std::move(r));
}

bool contains(const std::string& text, std::string_view part) { return text.find(part) != std::string::npos; }

TEST(worker_identity, as_root_a_named_user_is_switched_to_with_its_groups) {
    const auto r = resolves(with_user("alice"), 0);
    EXPECT_TRUE(r.identity.switch_user);
    EXPECT_EQ(r.identity.user, "alice");
    EXPECT_EQ(r.identity.uid, 1000u);
    EXPECT_EQ(r.identity.gid, 1000u);
    EXPECT_EQ(r.identity.groups, (std::vector<gid_t>{1000, 27, 100}));
    EXPECT_EQ(r.level, resolved_identity::severity::info);
    EXPECT_EQ(r.message, "workers run as user alice (uid 1000, gid 1000)");
}

TEST(worker_identity, as_root_an_unknown_user_is_an_error_naming_it_and_the_key) {
    const auto err = fails(with_user("nosuch"), 0);
    EXPECT_EQ(err.to_string(), "node.toml:3:8: [server] user: no user \"nosuch\" on this machine (create it, or name "
                               "another user for the workers)");
    // Even with the opt-in: it is about the name, not about root.
    EXPECT_TRUE(contains(fails(with_user("nosuch", true), 0).message, "no user \"nosuch\""));
    // A user that came from the defaults has no position in the file.
    EXPECT_EQ(fails(with_user("nosuch", false, {}), 0).to_string(),
              "node.toml: [server] user: no user \"nosuch\" on this machine (create it, or name another user for the "
              "workers)");
}

TEST(worker_identity, as_root_root_workers_need_the_opt_in) {
    // "root" itself is rejected by the config parser already; another uid-0 name only here.
    const auto toor = fails(with_user("toor"), 0);
    EXPECT_EQ(toor.message, "[server] user: \"toor\" is uid 0, so the workers would run as root; set "
                            "allow_root_workers = true in [server] to do that on purpose");
    EXPECT_EQ(toor.line, 3u);
    const auto empty = fails(with_user(""), 0);
    EXPECT_TRUE(contains(empty.message, "[server] user: \"\" with sockherd started as root would run the workers as "
                                        "root"))
        << empty.message;
    EXPECT_TRUE(contains(empty.message, "allow_root_workers = true")) << empty.message;

    for (const char* name : {"root", "toor"}) {
        const auto r = resolves(with_user(name, true), 0);
        EXPECT_TRUE(r.identity.switch_user) << name;
        EXPECT_EQ(r.identity.uid, 0u) << name;
        EXPECT_EQ(r.identity.gid, 0u) << name;
        EXPECT_EQ(r.level, resolved_identity::severity::warn) << name;
        EXPECT_EQ(r.message, "workers run as root (allow_root_workers = true)") << name;
    }
    const auto keep = resolves(with_user("", true), 0);
    EXPECT_FALSE(keep.identity.switch_user);
    EXPECT_EQ(keep.identity.uid, 0u);
    EXPECT_EQ(keep.level, resolved_identity::severity::warn);
    EXPECT_EQ(keep.message, "workers run as root (allow_root_workers = true)");
}

TEST(worker_identity, as_root_without_the_capabilities_to_switch_it_says_which_are_missing) {
    // Root with only CAP_NET_BIND_SERVICE (bit 10), as under a unit's CapabilityBoundingSet.
    const auto r = resolve_worker_identity(with_user("nobody"), 0, fake_users(), std::uint64_t{1} << 10);
    ASSERT_TRUE(std::holds_alternative<config_error>(r));
    const auto& err = std::get<config_error>(r);
    EXPECT_EQ(err.line, 3u);
    EXPECT_NE(err.message.find("CAP_KILL, CAP_SETGID, CAP_SETUID"), std::string::npos) << err.message;
    // CAP_SETUID alone is not enough either; all three are.
    const auto only_setuid = resolve_worker_identity(with_user("nobody"), 0, fake_users(), std::uint64_t{1} << 7);
    ASSERT_TRUE(std::holds_alternative<config_error>(only_setuid));
    EXPECT_NE(std::get<config_error>(only_setuid).message.find("CAP_KILL, CAP_SETGID"), std::string::npos);
    EXPECT_TRUE(std::holds_alternative<resolved_identity>(
        resolve_worker_identity(with_user("nobody"), 0, fake_users(), std::uint64_t{0xe0})));
    // Root workers (the opt-in) switch nothing, so they need none of them.
    EXPECT_TRUE(std::holds_alternative<resolved_identity>(
        resolve_worker_identity(with_user("root", true), 0, fake_users(), 0)));
}

TEST(worker_identity, effective_capabilities_reads_this_process) {
    // Bit 7 (CAP_SETUID) is set exactly when this test runs as root with full capabilities; both
    // ways the value must not be the "unknown" marker.
    EXPECT_NE(effective_capabilities(), ~std::uint64_t{0});
}

TEST(worker_identity, not_root_nothing_changes_and_nothing_is_an_error) {
    const auto other = resolves(with_user("nobody"), 1000);
    EXPECT_FALSE(other.identity.switch_user);
    EXPECT_EQ(other.identity.uid, 1000u);
    EXPECT_EQ(other.level, resolved_identity::severity::info);
    EXPECT_EQ(other.message, "[server] user = \"nobody\" does not apply: sockherd was not started as root; workers "
                             "run as user alice (uid 1000)");
    // Unknown users, root, and "" are the operator's business once the node runs as root.
    EXPECT_TRUE(contains(resolves(with_user("nosuch"), 1000).message, "does not apply"));
    EXPECT_TRUE(contains(resolves(with_user("toor"), 1000).message, "does not apply"));
    EXPECT_EQ(resolves(with_user("alice"), 1000).message, "");
    EXPECT_EQ(resolves(with_user(""), 1000).message, "");
    // A uid without a name.
    const auto anonymous = resolves(with_user("nobody"), 4242);
    EXPECT_EQ(anonymous.identity.user, "uid 4242");
    EXPECT_TRUE(contains(anonymous.message, "workers run as user uid 4242 (uid 4242)")) << anonymous.message;
}

TEST(worker_identity, check_config_reports_unknown_users_whoever_runs_it) {
    const fake_users users;
    for (uid_t euid : {0u, 1000u}) {
        const auto err = check_worker_user(with_user("nosuch"), euid, users, all_capabilities);
        ASSERT_TRUE(err) << euid;
        EXPECT_TRUE(contains(err->message, "[server] user: no user \"nosuch\"")) << err->message;
        EXPECT_FALSE(check_worker_user(with_user("nobody"), euid, users, all_capabilities)) << euid;
        EXPECT_FALSE(check_worker_user(with_user("", true), euid, users, all_capabilities)) << euid;
    }
    // As root it predicts `sockherd run`: root workers need the opt-in. Not root, `run` would not switch.
    EXPECT_TRUE(check_worker_user(with_user(""), 0, users, all_capabilities));
    EXPECT_TRUE(check_worker_user(with_user("toor"), 0, users, all_capabilities));
    EXPECT_FALSE(check_worker_user(with_user(""), 1000, users));
}

TEST(worker_identity, same_credentials_ignores_the_name_only) {
    const worker_identity a{true, "nobody", 65534, 65534, {65534}};
    auto alias = a;
    alias.user = "nfsnobody";
    EXPECT_TRUE(a.same_credentials(alias));
    auto more_groups = a;
    more_groups.groups.push_back(27);
    EXPECT_FALSE(a.same_credentials(more_groups));
    auto other_gid = a;
    other_gid.gid = 1;
    EXPECT_FALSE(a.same_credentials(other_gid));
    const worker_identity keep{false, "root", 0, 0, {}};
    const worker_identity named_root{true, "root", 0, 0, {0}};
    EXPECT_FALSE(keep.same_credentials(named_root));
    EXPECT_TRUE(keep.same_credentials(worker_identity{false, "x", 0, 7, {1}})); // no switch: only the uid counts
}

TEST(worker_identity, system_users_reads_the_real_database) {
    const auto root = system_users().by_uid(0);
    ASSERT_TRUE(root);
    EXPECT_EQ(root->uid, 0u);
    const auto by_name = system_users().by_name(root->name);
    ASSERT_TRUE(by_name);
    EXPECT_EQ(by_name->uid, 0u);
    EXPECT_EQ(by_name->gid, root->gid);
    ASSERT_FALSE(by_name->groups.empty());
    EXPECT_EQ(by_name->groups.front(), by_name->gid) << "getgrouplist puts the primary group first";
    EXPECT_FALSE(system_users().by_name("sockherd-no-such-user-xyz"));
}

} // namespace
} // namespace sockherd::supervisor
