// The configuration parser: TOML text in, a validated config or the first error (with line and
// column) out. Values start as etc/default.toml's (embedded) and the file's keys overlay them.

#include "common/config.hpp"

#include <fcntl.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <initializer_list>
#include <limits>
#include <span>
#include <thread>
#include <utility>

// toml++ 3.3 checks some of its parser's preconditions with assert(), and malformed headers such
// as "[[[a]]]" or "[=" break them (marzer/tomlplusplus#301): without NDEBUG that aborts the process.
// Turn it into an exception that parse_config reports. Only this file may include toml++.
namespace sockherd {
struct toml_assertion_failed {};
[[noreturn]] void toml_assert_failed(); // throws toml_assertion_failed
} // namespace sockherd
#define TOML_ASSERT(expr) ((expr) ? static_cast<void>(0) : ::sockherd::toml_assert_failed())
#include <toml++/toml.h>

#include "common/embedded.hpp"
#include "common/toml_prescan.hpp"
#include "common/unique_fd.hpp"
#include "common/units.hpp"

namespace sockherd {

void toml_assert_failed() {
    throw toml_assertion_failed{};
}

namespace {

constexpr std::string_view embedded_source_name = "<embedded default>";
constexpr std::uint64_t kib = 1024;
constexpr std::uint64_t mib = 1024 * kib;
constexpr std::uint64_t gib = 1024 * mib;
constexpr std::size_t max_file_size = 16 * mib;
constexpr std::size_t max_unix_path = sizeof(sockaddr_un::sun_path) - 1;

// Thrown by the readers below on the first problem; parse_config turns it into a config_error.
struct rejection {
    toml::source_position where;
    std::string message;
};

[[noreturn]] void reject(const toml::source_region& where, std::string message) {
    throw rejection{where.begin, std::move(message)};
}

template <class E>
struct choice {
    std::string_view name;
    E value;
};

constexpr choice<listener_mode> listener_modes[] = {
    {"handoff", listener_mode::handoff}, {"shared", listener_mode::shared}, {"reuseport", listener_mode::reuseport}};
constexpr choice<schedule_policy> schedule_policies[] = {
    {"least-conn", schedule_policy::least_conn}, {"round-robin", schedule_policy::round_robin}};
constexpr choice<route_kind> route_kinds[] = {
    {"echo", route_kind::echo}, {"static", route_kind::static_files}, {"pubsub", route_kind::pubsub}};
constexpr choice<pubsub_protocol> pubsub_protocols[] = {{"raw", pubsub_protocol::raw}, {"json", pubsub_protocol::json}};
constexpr choice<log_level> log_levels[] = {{"trace", log_level::trace}, {"debug", log_level::debug},
                                            {"info", log_level::info},   {"warn", log_level::warn},
                                            {"error", log_level::error}};
constexpr choice<log_format> log_formats[] = {{"text", log_format::text}, {"json", log_format::json}};

template <class E>
std::string_view name_of(std::span<const choice<E>> choices, E value) {
    for (const auto& c : choices)
        if (c.value == value)
            return c.name;
    return "?";
}

unsigned auto_workers() {
    return std::clamp(std::thread::hardware_concurrency(), 1u, max_workers);
}

std::string_view type_name(const toml::node& node) {
    switch (node.type()) {
    case toml::node_type::string: return "string";
    case toml::node_type::integer: return "integer";
    case toml::node_type::floating_point: return "float";
    case toml::node_type::boolean: return "boolean";
    case toml::node_type::date: return "date";
    case toml::node_type::time: return "time";
    case toml::node_type::date_time: return "date-time";
    case toml::node_type::table: return "table";
    case toml::node_type::array: return "array";
    case toml::node_type::none: break;
    }
    return "nothing";
}

// What a wrong value was, for "expected X, got Y": a string is quoted, anything else is its type.
std::string describe(const toml::node& node) {
    if (const auto* s = node.as_string())
        return "\"" + s->get() + "\"";
    return std::string(type_name(node));
}

bool earlier(const toml::source_region& a, const toml::source_region& b) {
    return a.begin.line != b.begin.line ? a.begin.line < b.begin.line : a.begin.column < b.begin.column;
}

// One TOML table being read ("[http]", "[[route]]", "[supervisor] restart_backoff"). Rejects keys it
// does not know on construction; each read_* leaves its target alone when the key is absent.
class section {
public:
    section(const toml::table& table, std::string where, std::initializer_list<std::string_view> known)
        : table_(table), where_(std::move(where)) {
        const toml::key* unknown = nullptr;
        for (auto&& [key, node] : table)
            if (std::find(known.begin(), known.end(), key.str()) == known.end() &&
                (unknown == nullptr || earlier(key.source(), unknown->source())))
                unknown = &key;
        if (unknown != nullptr)
            reject(unknown->source(), "unknown key '" + std::string(unknown->str()) + "' in " + where_);
    }

    const toml::node* find(std::string_view key) const { return table_.get(key); }

    const toml::node& require(std::string_view key) const {
        if (const auto* node = find(key))
            return *node;
        reject(table_.source(), where_ + " is missing required key '" + std::string(key) + "'");
    }

    // "[http] max_body_size", "[supervisor] restart_backoff.min"
    std::string name(std::string_view key) const {
        return where_ + (where_.back() == ']' ? " " : ".") + std::string(key);
    }

    [[noreturn]] void fail(const toml::node& node, std::string_view key, std::string_view why) const {
        reject(node.source(), name(key) + ": " + std::string(why));
    }

    [[noreturn]] void wrong_type(const toml::node& node, std::string_view key, std::string_view expected) const {
        fail(node, key, "expected " + std::string(expected) + ", got " + describe(node));
    }

    const std::string& string_value(const toml::node& node, std::string_view key) const {
        const auto* s = node.as_string();
        if (s == nullptr)
            wrong_type(node, key, "a string");
        return s->get();
    }

    template <class E>
    E choice_value(const toml::node& node, std::string_view key, std::span<const choice<E>> choices) const {
        const auto& text = string_value(node, key);
        std::string names;
        for (const auto& c : choices) {
            if (c.name == text)
                return c.value;
            names += (names.empty() ? "" : ", ") + std::string(c.name);
        }
        fail(node, key, "unknown value \"" + text + "\" (expected one of: " + names + ")");
    }

    template <class E>
    void read_choice(std::string_view key, E& out, std::span<const choice<E>> choices) const {
        if (const auto* node = find(key))
            out = choice_value(*node, key, choices);
    }

    // An integer in [min, max]; nullopt when the key is absent.
    std::optional<std::int64_t> integer_in(std::string_view key, std::int64_t min, std::int64_t max) const {
        const auto* node = find(key);
        if (node == nullptr)
            return std::nullopt;
        const auto* v = node->as_integer();
        if (v == nullptr)
            wrong_type(*node, key, "an integer");
        if (v->get() < min || v->get() > max)
            fail(*node, key,
                 "must be between " + std::to_string(min) + " and " + std::to_string(max) + ", got " +
                     std::to_string(v->get()));
        return v->get();
    }

    void read_int(std::string_view key, int& out, int min, int max) const {
        if (const auto v = integer_in(key, min, max))
            out = static_cast<int>(*v);
    }

    // A count (connections, requests): an integer, no unit.
    void read_count(std::string_view key, std::uint64_t& out, std::int64_t min, std::int64_t max) const {
        if (const auto v = integer_in(key, min, max))
            out = static_cast<std::uint64_t>(*v);
    }

    void read_bool(std::string_view key, bool& out) const {
        const auto* node = find(key);
        if (node == nullptr)
            return;
        const auto* v = node->as_boolean();
        if (v == nullptr)
            wrong_type(*node, key, "true or false");
        out = v->get();
    }

    enum class zero { allowed, rejected };

    const toml::node* read_duration(std::string_view key, duration& out, zero z) const {
        const auto* node = find(key);
        if (node == nullptr)
            return nullptr;
        if (const auto* i = node->as_integer())
            fail(*node, key,
                 "expected a duration string like \"30s\", got integer (durations need a unit, e.g. \"" +
                     std::to_string(i->get() > 0 ? i->get() : 30) + "s\")");
        const auto* s = node->as_string();
        if (s == nullptr)
            wrong_type(*node, key, "a duration string like \"30s\"");
        auto d = parse_duration(s->get());
        if (!d)
            fail(*node, key, "invalid duration \"" + s->get() + "\" (use e.g. \"250ms\", \"30s\", \"1m30s\", \"2h\")");
        if (z == zero::rejected && d->count() == 0)
            fail(*node, key, "must be greater than 0");
        out = *d;
        return node;
    }

    void read_size(std::string_view key, std::uint64_t& out, std::uint64_t min, std::uint64_t max) const {
        const auto* node = find(key);
        if (node == nullptr)
            return;
        std::optional<std::uint64_t> bytes;
        if (const auto* i = node->as_integer()) {
            if (i->get() < 0)
                fail(*node, key, "must not be negative, got " + std::to_string(i->get()));
            bytes = static_cast<std::uint64_t>(i->get());
        } else if (const auto* s = node->as_string()) {
            bytes = parse_size(s->get());
            if (!bytes)
                fail(*node, key, "invalid size \"" + s->get() + "\" (use e.g. \"512\", \"16KiB\", \"1MiB\", \"10MB\")");
        } else {
            wrong_type(*node, key, "a size like \"16KiB\" or an integer number of bytes");
        }
        if (*bytes < min || *bytes > max)
            fail(*node, key,
                 (min == 0 ? "must be at most " + format_size(max)
                           : "must be between " + format_size(min) + " and " + format_size(max)) +
                     ", got " + format_size(*bytes));
        out = *bytes;
    }

private:
    const toml::table& table_;
    std::string where_;
};

const toml::table& section_table(const toml::node& node, std::string_view key) {
    const auto* t = node.as_table();
    if (t == nullptr)
        reject(node.source(),
               std::string(key) + ": expected a table ([" + std::string(key) + "]), got " + describe(node));
    return *t;
}

// The tables of a [[key]] array, each checked to be a table.
const toml::array& section_array(const toml::node& node, std::string_view key) {
    const std::string expected =
        std::string(key) + ": expected an array of tables ([[" + std::string(key) + "]]), got ";
    const auto* a = node.as_array();
    if (a == nullptr)
        reject(node.source(), expected + describe(node));
    for (const auto& element : *a)
        if (!element.is_table())
            reject(element.source(), expected + "an array containing " + describe(element));
    return *a;
}

// What useradd and systemd accept, give or take: 1 to 32 of [A-Za-z0-9._-], not starting with '-'.
bool plausible_user_name(std::string_view name) {
    constexpr std::size_t max_user_name = 32;
    if (name.empty() || name.size() > max_user_name || name.front() == '-')
        return false;
    return std::all_of(name.begin(), name.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
               c == '-';
    });
}

void read_server(const toml::table& table, config& cfg) {
    section s(table, "[server]",
              {"workers", "control_socket", "user", "allow_root_workers", "worker_scheduling", "supervisor_scheduling"});
    s.read_bool("allow_root_workers", cfg.server.allow_root_workers);
    for (auto [key, out] : {std::pair{"worker_scheduling", &cfg.server.worker_scheduling},
                            std::pair{"supervisor_scheduling", &cfg.server.supervisor_scheduling}}) {
        const auto* node = s.find(key);
        if (!node)
            continue;
        const auto& policy = s.string_value(*node, key);
        if (policy == "batch")
            *out = config::server_section::scheduling::batch;
        else if (policy == "normal")
            *out = config::server_section::scheduling::normal;
        else
            s.fail(*node, key, "must be \"batch\" or \"normal\", got \"" + policy + "\"");
    }
    if (const auto* node = s.find("user")) {
        const auto& name = s.string_value(*node, "user");
        if (!name.empty() && !plausible_user_name(name))
            s.fail(*node, "user",
                   "invalid user name \"" + name +
                       "\" (expected 1 to 32 of A-Z a-z 0-9 . _ -, not starting with '-'; or \"\" to keep the "
                       "user sockherd was started as)");
        cfg.server.user = name;
        cfg.server.user_position = {node->source().begin.line, node->source().begin.column};
    }
    // Whether "" or a uid-0 user means root depends on who starts the node: the supervisor checks
    // those (supervisor/worker_identity.hpp). The name says it here already.
    if (cfg.server.user == "root" && !cfg.server.allow_root_workers) {
        const std::string why = "\"root\" would run the workers as root; set allow_root_workers = true in [server] "
                                "to do that on purpose";
        if (const auto* node = s.find("user"))
            s.fail(*node, "user", why);
        reject(table.source(), "[server] user: " + why);
    }
    if (const auto* path = s.find("control_socket")) {
        const auto& text = s.string_value(*path, "control_socket");
        if (!text.empty() && text.front() != '/')
            s.fail(*path, "control_socket", "must be an absolute path (or \"\" for none), got \"" + text + "\"");
        if (text.size() > max_unix_path)
            s.fail(*path, "control_socket",
                   "a Unix socket path may be at most " + std::to_string(max_unix_path) + " bytes, got " +
                       std::to_string(text.size()));
        cfg.server.control_socket = text;
    }
    const auto* node = s.find("workers");
    if (node == nullptr)
        return;
    if (const auto* i = node->as_integer()) {
        if (i->get() < 1 || i->get() > max_workers)
            s.fail(*node, "workers", "must be between 1 and 1024 (or \"auto\"), got " + std::to_string(i->get()));
        cfg.server.workers = static_cast<unsigned>(i->get());
    } else if (const auto* str = node->as_string(); str != nullptr && str->get() == "auto") {
        cfg.server.workers = auto_workers();
    } else {
        s.wrong_type(*node, "workers", "an integer 1..1024 or \"auto\"");
    }
}

std::vector<listener_config> read_listeners(const toml::array& tables) {
    std::vector<listener_config> listeners;
    std::vector<std::uint32_t> lines; // where each listener's address was written
    for (const auto& element : tables) {
        section s(*element.as_table(), "[[listener]]", {"address", "mode", "backlog", "proxy_protocol", "tls"});
        listener_config l;
        const auto& address = s.require("address");
        l.address = s.string_value(address, "address");
        auto endpoint = parse_address(l.address);
        if (!endpoint)
            s.fail(address, "address",
                   "invalid address \"" + l.address + "\" (expected \"a.b.c.d:port\" or \"[v6]:port\", no host names)");
        l.endpoint = *endpoint;
        for (std::size_t i = 0; i < listeners.size(); ++i)
            if (listeners[i].endpoint == l.endpoint)
                s.fail(address, "address",
                       "\"" + l.address + "\" is the same endpoint as the listener on line " +
                           std::to_string(lines[i]));
        s.read_choice<listener_mode>("mode", l.mode, listener_modes);
        s.read_int("backlog", l.backlog, 1, 65535);
        s.read_bool("proxy_protocol", l.proxy_protocol);
        if (const auto* tls = s.find("tls")) {
            const auto* t = tls->as_table();
            if (t == nullptr)
                s.wrong_type(*tls, "tls", "an inline table like { cert = \"/etc/ssl/site.pem\", key = \"/etc/ssl/site.key\" }");
            section ts(*t, s.name("tls"), {"cert", "key"});
            tls_files files;
            for (auto [key, out] : {std::pair<std::string_view, std::string*>{"cert", &files.cert}, {"key", &files.key}}) {
                const auto& node = ts.require(key);
                *out = ts.string_value(node, key);
                if (out->empty() || out->front() != '/')
                    ts.fail(node, key, "must be an absolute path, got \"" + *out + "\"");
                if (out->size() > 4096 || out->find('\0') != std::string::npos)
                    ts.fail(node, key, "not a usable path");
            }
            l.tls = std::move(files);
        }
        listeners.push_back(std::move(l));
        lines.push_back(address.source().begin.line);
    }
    if (listeners.empty())
        reject(tables.source(), "at least one [[listener]] is required");
    if (listeners.size() > max_listeners)
        reject(tables.source(), "at most " + std::to_string(max_listeners) + " [[listener]] tables, got " +
                                    std::to_string(listeners.size()));
    return listeners;
}

// `key = { min = "100ms", max = "10s" }` (either may be left out): both greater than 0, min <= max.
void read_backoff(const section& s, std::string_view key, duration& min_out, duration& max_out) {
    const auto* node = s.find(key);
    if (node == nullptr)
        return;
    const auto* inner = node->as_table();
    if (inner == nullptr)
        s.wrong_type(*node, key,
                     "an inline table like { min = \"" + format_duration(min_out) + "\", max = \"" +
                         format_duration(max_out) + "\" }");
    section b(*inner, s.name(key), {"min", "max"});
    const auto* min = b.read_duration("min", min_out, section::zero::rejected);
    const auto* max = b.read_duration("max", max_out, section::zero::rejected);
    if (max_out < min_out)
        b.fail(max != nullptr ? *max : *min, max != nullptr ? "max" : "min",
               "min (" + format_duration(min_out) + ") must not be greater than max (" + format_duration(max_out) +
                   ")");
}

void read_supervisor(const toml::table& table, config& cfg) {
    section s(table, "[supervisor]",
              {"restart_backoff", "drain_timeout", "heartbeat_interval", "watchdog_timeout", "max_worker_memory"});
    read_backoff(s, "restart_backoff", cfg.supervisor.restart_backoff_min, cfg.supervisor.restart_backoff_max);
    s.read_duration("drain_timeout", cfg.supervisor.drain_timeout, section::zero::allowed);
    auto& sup = cfg.supervisor;
    const auto* beat = s.read_duration("heartbeat_interval", sup.heartbeat_interval, section::zero::rejected);
    if (beat != nullptr && sup.heartbeat_interval < duration(50))
        s.fail(*beat, "heartbeat_interval", "must be at least 50ms, got " + format_duration(sup.heartbeat_interval));
    const auto* watchdog = s.read_duration("watchdog_timeout", sup.watchdog_timeout, section::zero::rejected);
    if (sup.watchdog_timeout < 3 * sup.heartbeat_interval) {
        // A late heartbeat or two (a slow handler, a busy machine) must not cost a worker its life.
        const auto* where = watchdog != nullptr ? watchdog : beat;
        s.fail(*where, watchdog != nullptr ? "watchdog_timeout" : "heartbeat_interval",
               "watchdog_timeout (" + format_duration(sup.watchdog_timeout) +
                   ") must be at least 3 times heartbeat_interval (" + format_duration(sup.heartbeat_interval) + ")");
    }
    s.read_size("max_worker_memory", sup.max_worker_memory, 0, std::uint64_t{1} << 50);
    if (sup.max_worker_memory != 0 && sup.max_worker_memory < 16 * 1024 * 1024)
        s.fail(*s.find("max_worker_memory"), "max_worker_memory",
               "must be 0 (no limit) or at least 16MiB, got " + format_size(sup.max_worker_memory));
}

// An array of strings, each checked by `parse` (nullopt = invalid: `what` says what was expected).
template <class T, class Parse>
std::vector<T> read_list(const section& s, std::string_view key, std::size_t max_items, Parse parse,
                         std::string_view what) {
    std::vector<T> out;
    const auto* node = s.find(key);
    if (node == nullptr)
        return out;
    const auto* a = node->as_array();
    if (a == nullptr)
        s.wrong_type(*node, key, "an array of strings");
    if (a->size() > max_items)
        s.fail(*node, key, "at most " + std::to_string(max_items) + " entries, got " + std::to_string(a->size()));
    for (const auto& element : *a) {
        const auto& text = s.string_value(element, key);
        auto parsed = parse(text);
        if (!parsed)
            s.fail(element, key, "invalid entry \"" + text + "\" (expected " + std::string(what) + ")");
        out.push_back(std::move(*parsed));
    }
    return out;
}

void read_http(const toml::table& table, config& cfg) {
    section s(table, "[http]",
              {"max_header_size", "max_body_size", "header_timeout", "keepalive_timeout", "max_requests_per_connection",
               "trusted_proxies", "forwarded_header"});
    static constexpr choice<forwarded_syntax> forwarded_headers[] = {
        {"x-forwarded-for", forwarded_syntax::x_forwarded_for}, {"forwarded", forwarded_syntax::forwarded}};
    s.read_choice<forwarded_syntax>("forwarded_header", cfg.http.forwarded_header, forwarded_headers);
    s.read_count("max_requests_per_connection", cfg.http.max_requests_per_connection, 1, 1'000'000'000);
    if (s.find("trusted_proxies"))
        cfg.http.trusted_proxies = read_list<cidr>(
            s, "trusted_proxies", 1024, [](const std::string& t) { return parse_cidr(t); },
            "an address or a CIDR range like \"10.0.0.0/8\" or \"2001:db8::/32\", host bits clear");
    s.read_size("max_header_size", cfg.http.max_header_size, kib, mib);
    s.read_size("max_body_size", cfg.http.max_body_size, 0, gib);
    s.read_duration("header_timeout", cfg.http.header_timeout, section::zero::rejected);
    s.read_duration("keepalive_timeout", cfg.http.keepalive_timeout, section::zero::rejected);
}

void read_websocket(const toml::table& table, config& cfg) {
    section s(table, "[websocket]",
              {"max_message_size", "idle_timeout", "send_queue_limit", "max_subscriptions", "ping_interval",
               "allowed_origins"});
    if (s.find("allowed_origins"))
        cfg.websocket.allowed_origins = read_list<origin_pattern>(
            s, "allowed_origins", 1024, [](const std::string& t) { return parse_origin_pattern(t); },
            "\"https://example.com\", \"https://*.example.com\", \"http://localhost:8080\" or \"*\"");
    s.read_duration("ping_interval", cfg.websocket.ping_interval, section::zero::allowed);
    s.read_size("max_message_size", cfg.websocket.max_message_size, kib, 64 * mib);
    s.read_duration("idle_timeout", cfg.websocket.idle_timeout, section::zero::rejected);
    s.read_size("send_queue_limit", cfg.websocket.send_queue_limit, kib, 1024 * mib);
    int max_subs = static_cast<int>(cfg.websocket.max_subscriptions);
    s.read_int("max_subscriptions", max_subs, 1, 100'000);
    cfg.websocket.max_subscriptions = static_cast<std::size_t>(max_subs);
    auto& ws = cfg.websocket;
    if (ws.ping_interval.count() != 0 && ws.ping_interval >= ws.idle_timeout) {
        // A short idle_timeout with the default interval: ping at half of it. Written by hand,
        // it is a mistake: a live but quiet client would be cut off.
        if (const auto* ping = s.find("ping_interval"))
            s.fail(*ping, "ping_interval",
                   "ping_interval (" + format_duration(ws.ping_interval) + ") must be shorter than idle_timeout (" +
                       format_duration(ws.idle_timeout) + "), or a live but quiet client is cut off");
        ws.ping_interval = std::max(duration(1), ws.idle_timeout / 2);
    }
}

void read_limits(const toml::table& table, config& cfg) {
    section s(table, "[limits]",
              {"max_connections_per_worker", "max_connections_per_ip", "proxy_header_timeout", "tls_handshake_timeout"});
    s.read_count("max_connections_per_worker", cfg.limits.max_connections_per_worker, 0, 100'000'000);
    s.read_count("max_connections_per_ip", cfg.limits.max_connections_per_ip, 0, 100'000'000);
    s.read_duration("proxy_header_timeout", cfg.limits.proxy_header_timeout, section::zero::rejected);
    s.read_duration("tls_handshake_timeout", cfg.limits.tls_handshake_timeout, section::zero::rejected);
}

void read_admin(const toml::table& table, config& cfg) {
    section s(table, "[admin]", {"address", "token"});
    if (const auto* node = s.find("token")) {
        const auto& token = s.string_value(*node, "token");
        if (token.size() > 512)
            s.fail(*node, "token", "must be at most 512 characters");
        for (char c : token)
            if (c <= ' ' || c > '~')
                s.fail(*node, "token", "may hold printable ASCII only, without spaces");
        cfg.admin.token = token;
    }
    if (const auto* node = s.find("address"))
        cfg.admin.address = s.string_value(*node, "address");
    cfg.admin.endpoint.reset();
    if (cfg.admin.address.empty())
        return;
    const auto* where = s.find("address");
    auto endpoint = parse_address(cfg.admin.address);
    if (!endpoint) {
        if (where == nullptr)
            reject(table.source(), "[admin] address: invalid address \"" + cfg.admin.address + "\"");
        s.fail(*where, "address",
               "invalid address \"" + cfg.admin.address + "\" (expected \"a.b.c.d:port\" or \"[v6]:port\", or \"\" for none)");
    }
    // The admin pages show the whole node (and `stop`-level control may follow): anyone who can
    // reach a non-loopback address must prove they may.
    if (!endpoint->address().is_loopback() && cfg.admin.token.empty()) {
        const std::string why = "a non-loopback admin address (\"" + cfg.admin.address +
                                "\") requires [admin] token to be set";
        if (where == nullptr)
            reject(table.source(), "[admin] address: " + why);
        s.fail(*where, "address", why);
    }
    cfg.admin.endpoint = *endpoint;
}

void read_redis(const toml::table& table, config& cfg) {
    section s(table, "[redis]",
              {"url", "channel_prefix", "connect_timeout", "command_timeout", "reconnect_backoff"});
    auto& redis = cfg.redis;
    if (const auto* node = s.find("url")) {
        const auto& text = s.string_value(*node, "url");
        redis.url = text;
        redis.endpoint.reset();
        if (!text.empty()) {
            auto parsed = parse_redis_url(text);
            // Neither the message nor the quoted URL may show a password.
            if (const auto* why = std::get_if<std::string>(&parsed))
                s.fail(*node, "url", "invalid URL \"" + mask_redis_url(text) + "\": " + *why);
            redis.endpoint = std::get<redis_url>(std::move(parsed));
        }
    }
    if (const auto* node = s.find("channel_prefix")) {
        const auto& prefix = s.string_value(*node, "channel_prefix");
        if (prefix.size() > max_redis_channel_prefix)
            s.fail(*node, "channel_prefix",
                   "must be at most " + std::to_string(max_redis_channel_prefix) + " bytes, got " +
                       std::to_string(prefix.size()));
        for (char c : prefix)
            if (c <= ' ' || c > '~')
                s.fail(*node, "channel_prefix", "may hold printable ASCII only, without spaces");
        redis.channel_prefix = prefix;
    }
    s.read_duration("connect_timeout", redis.connect_timeout, section::zero::rejected);
    s.read_duration("command_timeout", redis.command_timeout, section::zero::rejected);
    read_backoff(s, "reconnect_backoff", redis.reconnect_backoff_min, redis.reconnect_backoff_max);
}

void read_publish(const toml::table& table, config& cfg) {
    section s(table, "[publish]", {"tokens"});
    const auto* node = s.find("tokens");
    if (node == nullptr)
        return;
    const auto* list = node->as_array();
    if (list == nullptr)
        s.wrong_type(*node, "tokens", "an array of strings");
    std::vector<std::string> tokens;
    for (const auto& element : *list) {
        const auto& token = s.string_value(element, "tokens");
        if (token.empty() || token.size() > 512)
            s.fail(element, "tokens", "a token must be 1 to 512 characters");
        for (char c : token)
            if (c <= ' ' || c > '~')
                s.fail(element, "tokens", "a token may hold printable ASCII only, without spaces");
        tokens.push_back(token);
    }
    cfg.publish.tokens = std::move(tokens);
}

std::vector<route_config> read_routes(const toml::array& tables) {
    std::vector<route_config> routes;
    std::vector<std::uint32_t> lines; // where each route's path was written
    for (const auto& element : tables) {
        section s(*element.as_table(), "[[route]]", {"path", "kind", "root", "protocol"});
        route_config r;
        const auto& path = s.require("path");
        r.path = s.string_value(path, "path");
        if (r.path.empty() || r.path.front() != '/')
            s.fail(path, "path", "must start with '/', got \"" + r.path + "\"");
        for (std::size_t i = 0; i < routes.size(); ++i)
            if (routes[i].path == r.path)
                s.fail(path, "path",
                       "duplicate route \"" + r.path + "\" (first on line " + std::to_string(lines[i]) + ")");
        r.kind = s.choice_value<route_kind>(s.require("kind"), "kind", route_kinds);
        if (const auto* root = s.find("root")) {
            if (r.kind != route_kind::static_files)
                s.fail(*root, "root", "only allowed on a route with kind = \"static\"");
            r.root = s.string_value(*root, "root");
            if (r.root->empty() || r.root->front() != '/')
                s.fail(*root, "root", "must be an absolute path, got \"" + *r.root + "\"");
        }
        if (const auto* protocol = s.find("protocol")) {
            if (r.kind != route_kind::pubsub)
                s.fail(*protocol, "protocol", "only allowed on a route with kind = \"pubsub\"");
            r.protocol = s.choice_value<pubsub_protocol>(*protocol, "protocol", pubsub_protocols);
        }
        if (r.kind == route_kind::pubsub && r.protocol == pubsub_protocol::raw && r.path.back() != '/')
            s.fail(path, "path",
                   "a raw pubsub route takes the channel from the path, so it must end with '/' (e.g. \"" +
                       r.path + "/\")");
        routes.push_back(std::move(r));
        lines.push_back(path.source().begin.line);
    }
    return routes;
}

// Overlays what `root` says onto `cfg`. Throws rejection on the first problem.
void read_document(const toml::table& root, config& cfg) {
    static constexpr std::string_view known[] = {"server", "listener",  "scheduler", "supervisor",
                                                 "http",   "websocket", "log",       "route", "publish",
                                                 "admin",  "redis",     "limits"};
    const toml::key* unknown = nullptr;
    for (auto&& [key, node] : root)
        if (std::find(std::begin(known), std::end(known), key.str()) == std::end(known) &&
            (unknown == nullptr || earlier(key.source(), unknown->source())))
            unknown = &key;
    if (unknown != nullptr) {
        const auto& node = *root.get(unknown->str());
        const std::string name(unknown->str());
        if (node.is_table())
            reject(unknown->source(), "unknown section [" + name + "]");
        if (node.is_array_of_tables())
            reject(unknown->source(), "unknown section [[" + name + "]]");
        reject(unknown->source(), "unknown key '" + name + "' at the top level");
    }

    if (const auto* node = root.get("server"))
        read_server(section_table(*node, "server"), cfg);
    if (const auto* node = root.get("listener"))
        cfg.listeners = read_listeners(section_array(*node, "listener"));
    if (const auto* node = root.get("scheduler")) {
        section s(section_table(*node, "scheduler"), "[scheduler]", {"policy"});
        s.read_choice<schedule_policy>("policy", cfg.scheduler.policy, schedule_policies);
    }
    if (const auto* node = root.get("supervisor"))
        read_supervisor(section_table(*node, "supervisor"), cfg);
    if (const auto* node = root.get("http"))
        read_http(section_table(*node, "http"), cfg);
    if (const auto* node = root.get("websocket"))
        read_websocket(section_table(*node, "websocket"), cfg);
    if (const auto* node = root.get("limits"))
        read_limits(section_table(*node, "limits"), cfg);
    if (const auto* node = root.get("log")) {
        section s(section_table(*node, "log"), "[log]", {"level", "format", "access"});
        s.read_choice<log_level>("level", cfg.log.level, log_levels);
        s.read_choice<log_format>("format", cfg.log.format, log_formats);
        s.read_bool("access", cfg.log.access);
    }
    if (const auto* node = root.get("route"))
        cfg.routes = read_routes(section_array(*node, "route"));
    if (const auto* node = root.get("publish"))
        read_publish(section_table(*node, "publish"), cfg);
    if (const auto* node = root.get("admin"))
        read_admin(section_table(*node, "admin"), cfg);
    if (const auto* node = root.get("redis")) {
        if (node->is_string()) // redis = "redis://:password@..." must not come back in the error
            reject(node->source(), "redis: expected a table ([redis]) with url = \"...\", got a string");
        read_redis(section_table(*node, "redis"), cfg);
    }
    for (const auto& l : cfg.listeners)
        if (cfg.admin.endpoint && l.endpoint == *cfg.admin.endpoint)
            reject(root.source(), "[admin] address \"" + cfg.admin.address + "\" is also a [[listener]] address");

    if (cfg.listeners.empty())
        reject(root.source(), "at least one [[listener]] is required");
}

enum class starting_from { defaults, nothing };

config_result parse_onto(std::string_view text, std::string_view source_name, starting_from base) {
    const std::string name(source_name);
    try {
        // Before toml++, which 3.3 lets reach undefined behaviour on some non-ASCII (see toml_prescan.hpp).
        if (auto unsafe = prescan_toml(text))
            return config_error{name, unsafe->line, unsafe->column, std::move(unsafe->message)};
        config cfg = base == starting_from::defaults ? default_config() : config{};
        cfg.server.user_position = {}; // a position in default.toml means nothing in this file
        const toml::table root = toml::parse(text, source_name);
        read_document(root, cfg);
        cfg.source_name = name;
        cfg.source_text = std::string(text);
        return cfg;
    } catch (const toml::parse_error& e) {
        return config_error{name, e.source().begin.line, e.source().begin.column, std::string(e.description())};
    } catch (const rejection& r) {
        return config_error{name, r.where.line, r.where.column, r.message};
    } catch (const toml_assertion_failed&) {
        return config_error{name, 0, 0, "invalid TOML (the parser gave no position; check the table headers)"};
    } catch (const std::exception& e) {
        return config_error{name, 0, 0, std::string("internal error: ") + e.what()};
    } catch (...) {
        return config_error{name, 0, 0, "internal error"};
    }
}

} // namespace

std::string config_error::to_string() const {
    if (line == 0)
        return source_name + ": " + message;
    return source_name + ":" + std::to_string(line) + ":" + std::to_string(column) + ": " + message;
}

config_result parse_config(std::string_view text, std::string_view source_name) {
    return parse_onto(text, source_name, starting_from::defaults);
}

config_result load_config_file(const std::string& path) {
    auto cannot_read = [&](std::string why) { return config_error{path, 0, 0, "cannot read: " + why}; };
    unique_fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd)
        return cannot_read(std::strerror(errno));
    std::string text;
    char buffer[64 * 1024];
    for (;;) {
        const ssize_t n = ::read(fd.get(), buffer, sizeof buffer);
        if (n > 0) {
            text.append(buffer, static_cast<std::size_t>(n));
            if (text.size() > max_file_size)
                return cannot_read("larger than " + format_size(max_file_size));
        } else if (n == 0) {
            break;
        } else if (errno != EINTR) {
            return cannot_read(std::strerror(errno));
        }
    }
    return parse_config(text, path);
}

config default_config() {
    static const config defaults = [] {
        const auto text = assets::find("default.toml");
        if (!text) {
            std::fputs("sockherd: bug: default.toml is not embedded in this binary\n", stderr);
            std::abort();
        }
        auto result = parse_onto(*text, embedded_source_name, starting_from::nothing);
        if (const auto* err = std::get_if<config_error>(&result)) {
            std::fprintf(stderr, "sockherd: bug: the embedded default config is invalid: %s\n",
                         err->to_string().c_str());
            std::abort();
        }
        return std::get<config>(std::move(result));
    }();
    return defaults;
}

std::optional<boost::asio::ip::tcp::endpoint> parse_address(std::string_view text) {
    const auto colon = text.rfind(':');
    if (colon == std::string_view::npos)
        return std::nullopt;
    auto host = text.substr(0, colon);
    const auto port_text = text.substr(colon + 1);
    const char* port_end = port_text.data() + port_text.size();
    unsigned port = 0;
    if (auto [end, ec] = std::from_chars(port_text.data(), port_end, port);
        ec != std::errc{} || end != port_end || port > 65535)
        return std::nullopt;
    const bool bracketed = host.size() >= 2 && host.front() == '[' && host.back() == ']';
    if (bracketed)
        host = host.substr(1, host.size() - 2);
    if (host.find('\0') != std::string_view::npos)
        return std::nullopt;
    boost::system::error_code ec;
    const auto address = boost::asio::ip::make_address(std::string(host), ec);
    // IPv4 bare, IPv6 in brackets; anything else (host names, "::1:80") is rejected.
    if (ec || address.is_v6() != bracketed)
        return std::nullopt;
    return boost::asio::ip::tcp::endpoint(address, static_cast<unsigned short>(port));
}

std::string_view to_string(listener_mode m) { return name_of<listener_mode>(listener_modes, m); }
std::string_view to_string(schedule_policy p) { return name_of<schedule_policy>(schedule_policies, p); }
std::string_view to_string(route_kind k) { return name_of<route_kind>(route_kinds, k); }
std::string_view to_string(pubsub_protocol p) { return name_of<pubsub_protocol>(pubsub_protocols, p); }

} // namespace sockherd
