#pragma once
// Who the worker processes run as. The supervisor resolves it from [server] user and
// allow_root_workers, once at start and again on every reload, for the user it runs as itself;
// worker_process applies it between fork and exec. The supervisor keeps its own credentials.

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "common/config.hpp"

namespace sockherd::supervisor {

// One account of the user database.
struct user_account {
    std::string name;
    uid_t uid = 0;
    gid_t gid = 0;             // primary group
    std::vector<gid_t> groups; // every group it is in, the primary one included
};

// The user database, behind an interface so tests can bring their own accounts.
class user_database {
public:
    virtual std::optional<user_account> by_name(const std::string& name) const = 0;
    virtual std::optional<user_account> by_uid(uid_t uid) const = 0;

protected:
    ~user_database() = default;
};

// What NSS says (getpwnam_r, getpwuid_r, getgrouplist): /etc/passwd, or whatever is configured.
const user_database& system_users();

// This process's effective capability set (CapEff in /proc/self/status; bit N = capability N).
std::uint64_t effective_capabilities();

struct worker_identity {
    // True: the child calls setgroups(groups), setgid(gid), setuid(uid) before exec. False: workers
    // keep the supervisor's credentials (not started as root, or root with user = "").
    bool switch_user = false;
    std::string user; // for people: the name, or "uid N" when it has none
    uid_t uid = 0;
    gid_t gid = 0;
    std::vector<gid_t> groups;

    // The same credentials: another name for the same ids is the same identity.
    bool same_credentials(const worker_identity& other) const;
    // "user nobody (uid 65534, gid 65534)"
    std::string describe() const;
};

struct resolved_identity {
    enum class severity { info, warn };

    worker_identity identity;
    severity level = severity::info;
    std::string message; // to log once at start; empty when there is nothing to say
};

// The workers' identity under `cfg` for a supervisor running with effective uid `euid`.
// As root: a named user must exist; workers that would be root ("root", any uid-0 user, or "")
// need allow_root_workers; switching to another user needs CAP_SETUID, CAP_SETGID and CAP_KILL in
// `capabilities`. Not root: nothing can change, so nothing is an error; the message says when
// `user` does not apply. An error names the key (and its line, when the file set it).
std::variant<resolved_identity, config_error> resolve_worker_identity(const config& cfg, uid_t euid,
                                                                      const user_database& users = system_users(),
                                                                      std::uint64_t capabilities = effective_capabilities());

// For `sockherd check-config`: what resolve_worker_identity rejects, and, also when not root, a
// `user` that does not exist on this machine (the service manager starts the node as root here).
std::optional<config_error> check_worker_user(const config& cfg, uid_t euid,
                                              const user_database& users = system_users(),
                                              std::uint64_t capabilities = effective_capabilities());

} // namespace sockherd::supervisor
