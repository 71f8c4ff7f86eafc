#include "supervisor/worker_identity.hpp"

#include <grp.h>
#include <pwd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <fstream>
#include <string>

namespace sockherd::supervisor {
namespace {

class nss_users final : public user_database {
public:
    std::optional<user_account> by_name(const std::string& name) const override {
        return lookup([&](passwd* pw, char* buf, std::size_t size, passwd** out) {
            return ::getpwnam_r(name.c_str(), pw, buf, size, out);
        });
    }
    std::optional<user_account> by_uid(uid_t uid) const override {
        return lookup([&](passwd* pw, char* buf, std::size_t size, passwd** out) {
            return ::getpwuid_r(uid, pw, buf, size, out);
        });
    }

private:
    // Runs a getpw*_r call with a buffer that grows on ERANGE (bounded); nullopt when there is no
    // such user or the database cannot be read.
    template <class Call>
    static std::optional<user_account> lookup(Call&& call) {
        std::vector<char> buf(16 * 1024);
        passwd pw{};
        passwd* found = nullptr;
        int rc = 0;
        while ((rc = call(&pw, buf.data(), buf.size(), &found)) == ERANGE && buf.size() < 1024 * 1024)
            buf.resize(buf.size() * 2);
        if (rc != 0 || found == nullptr)
            return std::nullopt;
        user_account a{pw.pw_name, pw.pw_uid, pw.pw_gid, {}};
        a.groups = groups_of(a.name, a.gid);
        return a;
    }

    // The groups `name` is in (the primary one first). Computed here because initgroups(), which
    // would do it in the child, reads files and allocates: not allowed between fork and exec.
    static std::vector<gid_t> groups_of(const std::string& name, gid_t primary) {
        std::vector<gid_t> groups(32);
        for (int attempt = 0; attempt < 8; ++attempt) {
            int n = static_cast<int>(groups.size());
            if (::getgrouplist(name.c_str(), primary, groups.data(), &n) >= 0) {
                groups.resize(static_cast<std::size_t>(n));
                return groups;
            }
            groups.resize(std::max<std::size_t>(static_cast<std::size_t>(n), groups.size() * 2));
        }
        return {primary};
    }
};

config_error error_at_user(const config& cfg, std::string message) {
    const auto& at = cfg.server.user_position;
    return {cfg.source_name, at.line, at.column, "[server] user: " + std::move(message)};
}

constexpr std::string_view opt_in = "set allow_root_workers = true in [server] to do that on purpose";

config_error no_such_user(const config& cfg) {
    return error_at_user(cfg, "no user \"" + cfg.server.user +
                                  "\" on this machine (create it, or name another user for the workers)");
}

// The capabilities a root supervisor needs to run workers as another user: CAP_SETGID and
// CAP_SETUID for the switch, CAP_KILL to signal them afterwards (watchdog, drain deadline).
struct needed_capability {
    int bit;
    std::string_view name;
};
constexpr needed_capability switch_capabilities[] = {{5, "CAP_KILL"}, {6, "CAP_SETGID"}, {7, "CAP_SETUID"}};

} // namespace

std::uint64_t effective_capabilities() {
    std::ifstream status("/proc/self/status");
    std::string line;
    while (std::getline(status, line))
        if (line.rfind("CapEff:", 0) == 0)
            return std::stoull(line.substr(7), nullptr, 16);
    return ~std::uint64_t{0}; // unknown: let the child's own checks report it
}

const user_database& system_users() {
    static const nss_users users;
    return users;
}

bool worker_identity::same_credentials(const worker_identity& other) const {
    if (switch_user != other.switch_user || uid != other.uid)
        return false;
    return !switch_user || (gid == other.gid && groups == other.groups);
}

std::string worker_identity::describe() const {
    if (!switch_user)
        return "user " + user + " (uid " + std::to_string(uid) + ")";
    return "user " + user + " (uid " + std::to_string(uid) + ", gid " + std::to_string(gid) + ")";
}

std::variant<resolved_identity, config_error> resolve_worker_identity(const config& cfg, uid_t euid,
                                                                      const user_database& users,
                                                                      std::uint64_t capabilities) {
    const std::string& wanted = cfg.server.user;
    resolved_identity r;
    if (euid != 0) {
        // Only root may change user: the workers run as we do, whatever the file says.
        const auto self = users.by_uid(euid);
        r.identity.uid = euid;
        r.identity.user = self ? self->name : "uid " + std::to_string(euid);
        if (!wanted.empty() && (!self || self->name != wanted))
            r.message = "[server] user = \"" + wanted + "\" does not apply: sockherd was not started as root; " +
                        "workers run as " + r.identity.describe();
        return r;
    }
    if (wanted.empty()) {
        if (!cfg.server.allow_root_workers)
            return error_at_user(cfg, "\"\" with sockherd started as root would run the workers as root; name a "
                                      "user for them (e.g. user = \"nobody\"), or " + std::string(opt_in));
        r.identity.user = "root";
        r.level = resolved_identity::severity::warn;
        r.message = "workers run as root (allow_root_workers = true)";
        return r;
    }
    const auto account = users.by_name(wanted);
    if (!account)
        return no_such_user(cfg);
    r.identity = {true, account->name, account->uid, account->gid, account->groups};
    if (account->uid == 0) {
        if (!cfg.server.allow_root_workers)
            return error_at_user(cfg, "\"" + wanted + "\" is uid 0, so the workers would run as root; " +
                                          std::string(opt_in));
        r.level = resolved_identity::severity::warn;
        r.message = "workers run as root (allow_root_workers = true)";
        return r;
    }
    // Root without the capabilities (a unit's CapabilityBoundingSet, a container) would start
    // workers that fail their setgroups and restart forever: say so now instead.
    std::string missing;
    for (const auto& cap : switch_capabilities)
        if ((capabilities & (std::uint64_t{1} << cap.bit)) == 0)
            missing += (missing.empty() ? "" : ", ") + std::string(cap.name);
    if (!missing.empty())
        return error_at_user(cfg, "running the workers as \"" + wanted + "\" needs " + missing +
                                      ", which this root process lacks (a CapabilityBoundingSet or a container); "
                                      "start sockherd as that user instead, or grant them");
    r.message = "workers run as " + r.identity.describe();
    return r;
}

std::optional<config_error> check_worker_user(const config& cfg, uid_t euid, const user_database& users,
                                              std::uint64_t capabilities) {
    auto resolved = resolve_worker_identity(cfg, euid, users, capabilities);
    if (auto* err = std::get_if<config_error>(&resolved))
        return std::move(*err);
    if (euid != 0 && !cfg.server.user.empty() && !users.by_name(cfg.server.user))
        return no_such_user(cfg);
    return std::nullopt;
}

} // namespace sockherd::supervisor
