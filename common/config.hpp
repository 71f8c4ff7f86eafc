#pragma once
// The validated node configuration. Parsed from TOML by the supervisor (and again, from the exact
// same text, by each worker), so every process of one generation runs the same settings.
// Every key is optional: what a file leaves out comes from etc/default.toml's values, embedded.

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include <boost/asio/ip/tcp.hpp>

#include "common/cidr.hpp"
#include "common/forwarded.hpp"
#include "common/origin.hpp"
#include "common/redis_url.hpp"

namespace sockherd {

using duration = std::chrono::milliseconds;

// The most worker slots a node may have ([server] workers, `sockherd workers N`).
inline constexpr unsigned max_workers = 1024;
// [redis] channel_prefix: at most this many bytes.
inline constexpr std::size_t max_redis_channel_prefix = 64;

enum class listener_mode { handoff, shared, reuseport };
enum class schedule_policy { least_conn, round_robin };
enum class route_kind { echo, static_files, pubsub };
enum class pubsub_protocol { raw, json };
enum class log_format { text, json };
enum class log_level { trace, debug, info, warn, error };

// A listener's TLS certificate chain and private key (PEM files, absolute paths). The supervisor
// reads them at start and on every reload (workers, which may run as another user, never open
// them), checks that they load and match, and passes the bytes to the workers with the config.
struct tls_files {
    std::string cert; // certificate chain, leaf first
    std::string key;  // private key, unencrypted
    bool operator==(const tls_files&) const = default;
};

struct tls_material; // common/tls.hpp

// [[listener]] tables one config may have (a worker's `listen` message carries at most this many).
inline constexpr std::size_t max_listeners = 64;

struct listener_config {
    std::string address;                   // as written, e.g. "0.0.0.0:8080", "[::]:80"
    boost::asio::ip::tcp::endpoint endpoint; // parsed from address
    listener_mode mode = listener_mode::handoff;
    int backlog = 4096;
    // Every connection starts with a PROXY protocol v1 or v2 header (from HAProxy, nginx, a cloud
    // load balancer); its source address is the client's. Without a valid one, the connection is
    // closed.
    bool proxy_protocol = false;
    std::optional<tls_files> tls; // HTTPS and wss:// on this listener
    // The files' contents, once the supervisor has read and checked them (load_tls), or as the
    // supervisor sent them to a worker. Not from the TOML text.
    std::shared_ptr<const tls_material> tls_loaded;
};

struct route_config {
    std::string path;                // prefix, starts with '/'; longest prefix wins
    route_kind kind = route_kind::static_files;
    std::optional<std::string> root; // static only: directory; absent = the embedded demo files
    pubsub_protocol protocol = pubsub_protocol::raw; // pubsub only: raw = <path><channel>, json = ops
};

// Where a value was written in the config file (1-based; 0 when it was not in the file).
struct source_position {
    std::uint32_t line = 0;
    std::uint32_t column = 0;
};

struct config {
    struct server_section {
        unsigned workers = 0; // resolved: "auto" becomes the CPU count; always >= 1 after parsing
        std::string control_socket = "/run/sockherd/control.sock"; // empty: no control socket
        // When started as root: the user the workers run as, after the listeners are bound
        // (supervisor/worker_identity.hpp). Empty: they keep the supervisor's user. A syntactically
        // valid name; "root" only with allow_root_workers.
        std::string user = "nobody";
        source_position user_position; // where the file set `user` (for errors found later)
        bool allow_root_workers = false; // workers may run as root ("root", a uid-0 user, or "")
        // The workers' and the supervisor's scheduling policies. batch (SCHED_BATCH): a process
        // that wakes up does not preempt the task running on its CPU, so on a busy machine it finds
        // several sockets ready instead of waking once per message or connection; normal
        // (SCHED_OTHER): the kernel's default.
        enum class scheduling : std::uint8_t { batch, normal };
        scheduling worker_scheduling = scheduling::batch;
        scheduling supervisor_scheduling = scheduling::batch;
    } server;

    std::vector<listener_config> listeners; // at least one

    struct scheduler_section {
        schedule_policy policy = schedule_policy::least_conn;
    } scheduler;

    struct supervisor_section {
        duration restart_backoff_min{100};
        duration restart_backoff_max{10'000};
        duration drain_timeout{30'000};
        duration heartbeat_interval{1'000};   // how often each worker reports
        duration watchdog_timeout{10'000};    // no heartbeat for this long: the worker is killed
        std::uint64_t max_worker_memory = 0;  // RSS over this: replaced gracefully; 0 = no limit
    } supervisor;

    struct admin_section {
        std::string address = "127.0.0.1:9090"; // as written; empty: no admin listener
        std::optional<boost::asio::ip::tcp::endpoint> endpoint; // parsed from address
        std::string token;                       // required of every request when set
    } admin;

    struct http_section {
        std::uint64_t max_header_size = 16 * 1024;   // request line + headers
        std::uint64_t max_body_size = 1024 * 1024;   // request body
        duration header_timeout{10'000};             // time to receive a whole request header
        duration keepalive_timeout{75'000};          // idle time between requests on one connection
        std::uint64_t max_requests_per_connection = 1000; // then the response says Connection: close
        // Peers whose X-Forwarded-For / Forwarded headers name the client (for logs and the
        // per-IP limit of WebSocket sessions); from any other peer those headers are ignored.
        std::vector<cidr> trusted_proxies;
        // The one header those proxies write: "x-forwarded-for" (nginx, HAProxy, most cloud
        // balancers) or "forwarded" (RFC 7239). The other is ignored, so a client cannot add it.
        forwarded_syntax forwarded_header = forwarded_syntax::x_forwarded_for;
    } http;

    struct websocket_section {
        std::uint64_t max_message_size = 1024 * 1024;
        duration idle_timeout{60'000};
        std::uint64_t send_queue_limit = 4 * 1024 * 1024; // per session; a slower reader is cut off
        std::size_t max_subscriptions = 100;               // channels one JSON-protocol connection may hold
        // A ping this often (under the 60 s idle timeout of common load balancers); a client
        // from which nothing (no pong, no message) arrives for idle_timeout is disconnected.
        duration ping_interval{25'000};
        std::vector<origin_pattern> allowed_origins; // empty: any Origin (common/origin.hpp)
    } websocket;

    // Connection limits, enforced by each worker.
    struct limits_section {
        // Connections one worker holds at most; 0 = its open-file limit less a reserve.
        std::uint64_t max_connections_per_worker = 0;
        // Connections from one client address per worker (the PROXY protocol address when the
        // listener has one; peers in trusted_proxies are exempt). 0 = no limit.
        std::uint64_t max_connections_per_ip = 4096;
        duration proxy_header_timeout{5'000};  // the PROXY header must arrive within this
        duration tls_handshake_timeout{10'000};
    } limits;

    struct publish_section {
        std::vector<std::string> tokens; // bearer tokens for POST /publish/<channel>; none = disabled
    } publish;

    // The bridge that carries pub/sub messages between nodes through Redis, held by the
    // supervisor (supervisor/redis_bridge.hpp).
    struct redis_section {
        // As written; empty: no bridge. May hold a password: log and show masked_url() only.
        std::string url;
        std::optional<redis_url> endpoint;          // parsed from url; set exactly when url is not empty
        std::string channel_prefix = "sockherd:";   // a channel's Redis name is prefix + name
        duration connect_timeout{2'000};            // TCP connect + AUTH + the first PING answered
        duration command_timeout{2'000};            // a command's reply; later: reconnect
        duration reconnect_backoff_min{100};
        duration reconnect_backoff_max{5'000};

        bool enabled() const { return endpoint.has_value(); }
        // The URL with the password masked ("" when off): for logs and status.
        std::string masked_url() const { return endpoint ? endpoint->masked() : std::string(); }
    } redis;

    struct log_section {
        log_level level = log_level::info;
        log_format format = log_format::text;
        bool access = false; // one info line per HTTP request and per WebSocket session
    } log;

    std::vector<route_config> routes;

    std::string source_name; // file path, or "<embedded default>"
    std::string source_text; // the TOML text this was parsed from (sent to workers verbatim)
};

// Where and why a configuration was rejected. line/column are 1-based; 0 when unknown.
struct config_error {
    std::string source_name;
    std::uint32_t line = 0;
    std::uint32_t column = 0;
    std::string message;

    // "FILE:LINE:COLUMN: message" (or "FILE: message" without a position).
    std::string to_string() const;
};

using config_result = std::variant<config, config_error>;

// Parses and validates TOML text. Never throws for bad input; unknown keys, wrong types,
// bad durations/sizes/addresses and out-of-range values are errors with line and column.
config_result parse_config(std::string_view text, std::string_view source_name);

// Reads `path` and parses it. An unreadable file is an error without a position.
config_result load_config_file(const std::string& path);

// The embedded default configuration (etc/default.toml compiled in).
config default_config();

// "250ms", "30s", "1m30s", "2h" -> milliseconds. Returns nullopt for anything else.
std::optional<duration> parse_duration(std::string_view text);
// "512", "16KiB", "1MiB", "2GiB", "10kB", "1MB" -> bytes. Returns nullopt for anything else.
std::optional<std::uint64_t> parse_size(std::string_view text);
// "1.2.3.4:80", "[::1]:8080", "0.0.0.0:0" -> endpoint. Returns nullopt for anything else.
std::optional<boost::asio::ip::tcp::endpoint> parse_address(std::string_view text);

std::string_view to_string(listener_mode);
std::string_view to_string(schedule_policy);
std::string_view to_string(route_kind);
std::string_view to_string(pubsub_protocol);

} // namespace sockherd
