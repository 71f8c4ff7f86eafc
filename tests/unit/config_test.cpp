// Tests for common/config.cpp (and the duration/size helpers in common/units.cpp).

#include "common/config.hpp"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <limits>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>

#include <gtest/gtest.h>

#include "common/embedded.hpp"
#include "common/units.hpp"

namespace sockherd {
namespace {

using namespace std::chrono_literals;

config parse_ok(std::string_view text) {
    auto result = parse_config(text, "test.toml");
    if (const auto* err = std::get_if<config_error>(&result)) {
        ADD_FAILURE() << "unexpected error: " << err->to_string();
        return {};
    }
    return std::get<config>(std::move(result));
}

config_error parse_fails(std::string_view text) {
    auto result = parse_config(text, "test.toml");
    if (std::holds_alternative<config>(result)) {
        ADD_FAILURE() << "parsed, but should not have:\n" << text;
        return {};
    }
    return std::get<config_error>(std::move(result));
}

unsigned expected_auto_workers() {
    return std::max(1u, std::min(1024u, std::thread::hardware_concurrency()));
}

boost::asio::ip::tcp::endpoint endpoint(const char* address, unsigned short port) {
    return {boost::asio::ip::make_address(address), port};
}

TEST(config, full_file_sets_every_key) {
    const auto cfg = parse_ok(R"(# every key, none at its default
[server]
workers = 3

[[listener]]
address = "127.0.0.1:9001"
mode = "handoff"
backlog = 128

[[listener]]
address = "[::1]:9002"

[scheduler]
policy = "round-robin"

[supervisor]
restart_backoff = { min = "250ms", max = "1m30s" }
drain_timeout = "5s"

[http]
max_header_size = "8KiB"
max_body_size = 2048
header_timeout = "3s"
keepalive_timeout = "2m"

[websocket]
max_message_size = "4MiB"
idle_timeout = "1h"

[log]
level = "debug"
format = "json"

[[route]]
path = "/ws"
kind = "echo"

[[route]]
path = "/files"
kind = "static"
root = "/srv/www"
)");
    EXPECT_EQ(cfg.server.workers, 3u);

    ASSERT_EQ(cfg.listeners.size(), 2u);
    EXPECT_EQ(cfg.listeners[0].address, "127.0.0.1:9001");
    EXPECT_EQ(cfg.listeners[0].endpoint, endpoint("127.0.0.1", 9001));
    EXPECT_EQ(cfg.listeners[0].mode, listener_mode::handoff);
    EXPECT_EQ(cfg.listeners[0].backlog, 128);
    EXPECT_EQ(cfg.listeners[1].address, "[::1]:9002");
    EXPECT_EQ(cfg.listeners[1].endpoint, endpoint("::1", 9002));
    EXPECT_EQ(cfg.listeners[1].mode, listener_mode::handoff); // not given: the default
    EXPECT_EQ(cfg.listeners[1].backlog, 4096); // not given: the default

    EXPECT_EQ(cfg.scheduler.policy, schedule_policy::round_robin);
    EXPECT_EQ(cfg.supervisor.restart_backoff_min, 250ms);
    EXPECT_EQ(cfg.supervisor.restart_backoff_max, 90s);
    EXPECT_EQ(cfg.supervisor.drain_timeout, 5s);
    EXPECT_EQ(cfg.http.max_header_size, 8192u);
    EXPECT_EQ(cfg.http.max_body_size, 2048u);
    EXPECT_EQ(cfg.http.header_timeout, 3s);
    EXPECT_EQ(cfg.http.keepalive_timeout, 120s);
    EXPECT_EQ(cfg.websocket.max_message_size, 4u * 1024 * 1024);
    EXPECT_EQ(cfg.websocket.idle_timeout, 3600s);
    EXPECT_EQ(cfg.log.level, log_level::debug);
    EXPECT_EQ(cfg.log.format, log_format::json);

    ASSERT_EQ(cfg.routes.size(), 2u);
    EXPECT_EQ(cfg.routes[0].path, "/ws");
    EXPECT_EQ(cfg.routes[0].kind, route_kind::echo);
    EXPECT_FALSE(cfg.routes[0].root);
    EXPECT_EQ(cfg.routes[1].path, "/files");
    EXPECT_EQ(cfg.routes[1].kind, route_kind::static_files);
    EXPECT_EQ(cfg.routes[1].root, "/srv/www");

    EXPECT_EQ(cfg.source_name, "test.toml");
    EXPECT_EQ(cfg.source_text.substr(0, 28), "# every key, none at its def");
}

void expect_defaults(const config& cfg) {
    EXPECT_EQ(cfg.server.workers, expected_auto_workers());
    EXPECT_GE(cfg.server.workers, 1u);
    EXPECT_EQ(cfg.server.user, "nobody");
    EXPECT_FALSE(cfg.server.allow_root_workers);
    ASSERT_EQ(cfg.listeners.size(), 1u);
    EXPECT_EQ(cfg.listeners[0].address, "0.0.0.0:8080");
    EXPECT_EQ(cfg.listeners[0].endpoint, endpoint("0.0.0.0", 8080));
    EXPECT_EQ(cfg.listeners[0].mode, listener_mode::handoff);
    EXPECT_EQ(cfg.listeners[0].backlog, 4096);
    EXPECT_EQ(cfg.scheduler.policy, schedule_policy::least_conn);
    EXPECT_EQ(cfg.supervisor.restart_backoff_min, 100ms);
    EXPECT_EQ(cfg.supervisor.restart_backoff_max, 10s);
    EXPECT_EQ(cfg.supervisor.drain_timeout, 30s);
    EXPECT_EQ(cfg.http.max_header_size, 16u * 1024);
    EXPECT_EQ(cfg.http.max_body_size, 1024u * 1024);
    EXPECT_EQ(cfg.http.header_timeout, 10s);
    EXPECT_EQ(cfg.http.keepalive_timeout, 75s);
    EXPECT_EQ(cfg.websocket.max_message_size, 1024u * 1024);
    EXPECT_EQ(cfg.websocket.idle_timeout, 60s);
    EXPECT_EQ(cfg.log.level, log_level::info);
    EXPECT_EQ(cfg.log.format, log_format::text);
    EXPECT_EQ(cfg.websocket.send_queue_limit, 4u * 1024 * 1024);
    EXPECT_TRUE(cfg.publish.tokens.empty());
    ASSERT_EQ(cfg.routes.size(), 4u);
    EXPECT_EQ(cfg.routes[0].path, "/echo");
    EXPECT_EQ(cfg.routes[0].kind, route_kind::echo);
    EXPECT_FALSE(cfg.routes[0].root);
    EXPECT_EQ(cfg.routes[1].path, "/ws/");
    EXPECT_EQ(cfg.routes[1].kind, route_kind::pubsub);
    EXPECT_EQ(cfg.routes[1].protocol, pubsub_protocol::raw);
    EXPECT_EQ(cfg.routes[2].path, "/pubsub");
    EXPECT_EQ(cfg.routes[2].kind, route_kind::pubsub);
    EXPECT_EQ(cfg.routes[2].protocol, pubsub_protocol::json);
    EXPECT_EQ(cfg.routes[3].path, "/");
    EXPECT_EQ(cfg.routes[3].kind, route_kind::static_files);
    EXPECT_FALSE(cfg.routes[3].root);
    EXPECT_EQ(cfg.redis.url, "");
    EXPECT_FALSE(cfg.redis.enabled());
    EXPECT_EQ(cfg.redis.masked_url(), "");
    EXPECT_EQ(cfg.redis.channel_prefix, "sockherd:");
    EXPECT_EQ(cfg.redis.connect_timeout, 2s);
    EXPECT_EQ(cfg.redis.command_timeout, 2s);
    EXPECT_EQ(cfg.redis.reconnect_backoff_min, 100ms);
    EXPECT_EQ(cfg.redis.reconnect_backoff_max, 5s);
}

TEST(config, empty_file_gives_the_defaults) {
    const auto cfg = parse_ok("");
    expect_defaults(cfg);
    EXPECT_EQ(cfg.source_name, "test.toml");
    EXPECT_EQ(cfg.source_text, "");
}

TEST(config, default_config_is_the_embedded_file) {
    const auto cfg = default_config();
    expect_defaults(cfg);
    EXPECT_EQ(cfg.source_name, "<embedded default>");
    const auto text = assets::find("default.toml");
    ASSERT_TRUE(text);
    EXPECT_EQ(cfg.source_text, *text);
}

TEST(config, a_section_overlays_only_the_keys_it_names) {
    const auto cfg = parse_ok("[http]\nmax_body_size = \"2MiB\"\n\n[log]\nformat = \"json\"\n");
    EXPECT_EQ(cfg.http.max_body_size, 2u * 1024 * 1024);
    EXPECT_EQ(cfg.http.max_header_size, 16u * 1024);
    EXPECT_EQ(cfg.http.keepalive_timeout, 75s);
    EXPECT_EQ(cfg.log.format, log_format::json);
    EXPECT_EQ(cfg.log.level, log_level::info);
    EXPECT_EQ(cfg.routes.size(), 4u);
    EXPECT_EQ(cfg.listeners.size(), 1u);
}

TEST(config, user_listeners_replace_the_default_ones) {
    const auto cfg = parse_ok("[[listener]]\naddress = \"127.0.0.1:0\"\n");
    ASSERT_EQ(cfg.listeners.size(), 1u);
    EXPECT_EQ(cfg.listeners[0].endpoint, endpoint("127.0.0.1", 0));
    EXPECT_EQ(cfg.listeners[0].mode, listener_mode::handoff);
    EXPECT_EQ(cfg.routes.size(), 4u); // routes still the default ones
}

TEST(config, user_routes_replace_the_default_ones) {
    const auto cfg = parse_ok("[[route]]\npath = \"/\"\nkind = \"echo\"\n");
    ASSERT_EQ(cfg.routes.size(), 1u);
    EXPECT_EQ(cfg.routes[0].path, "/");
    EXPECT_EQ(cfg.routes[0].kind, route_kind::echo);
    EXPECT_EQ(cfg.listeners[0].address, "0.0.0.0:8080");
}

TEST(config, an_empty_route_array_means_no_routes) {
    EXPECT_TRUE(parse_ok("route = []\n").routes.empty());
}

TEST(config, inline_arrays_of_tables_work_like_headers) {
    const auto cfg =
        parse_ok("listener = [{ address = \"127.0.0.1:1\" }, { address = \"127.0.0.1:2\", backlog = 7 }]\n");
    ASSERT_EQ(cfg.listeners.size(), 2u);
    EXPECT_EQ(cfg.listeners[1].endpoint.port(), 2);
    EXPECT_EQ(cfg.listeners[1].backlog, 7);
}

TEST(config, worker_scheduling) {
    using policy = config::server_section::scheduling;
    EXPECT_EQ(parse_ok("").server.worker_scheduling, policy::batch);
    EXPECT_EQ(parse_ok("[server]\nworker_scheduling = \"normal\"\n").server.worker_scheduling, policy::normal);
    EXPECT_EQ(parse_ok("[server]\nworker_scheduling = \"batch\"\n").server.worker_scheduling, policy::batch);
}

TEST(config, supervisor_scheduling) {
    using policy = config::server_section::scheduling;
    EXPECT_EQ(parse_ok("").server.supervisor_scheduling, policy::batch);
    const auto normal = parse_ok("[server]\nsupervisor_scheduling = \"normal\"\n");
    EXPECT_EQ(normal.server.supervisor_scheduling, policy::normal);
    EXPECT_EQ(normal.server.worker_scheduling, policy::batch) << "the two settings are independent";
    EXPECT_EQ(parse_ok("[server]\nsupervisor_scheduling = \"batch\"\n").server.supervisor_scheduling, policy::batch);
}

TEST(config, workers) {
    EXPECT_EQ(parse_ok("[server]\nworkers = 1\n").server.workers, 1u);
    EXPECT_EQ(parse_ok("[server]\nworkers = 1024\n").server.workers, 1024u);
    EXPECT_EQ(parse_ok("[server]\nworkers = \"auto\"\n").server.workers, expected_auto_workers());
}

TEST(config, sizes_may_be_plain_integers_and_limits_are_inclusive) {
    const auto cfg = parse_ok("[http]\nmax_header_size = 1024\nmax_body_size = 0\n"
                              "[websocket]\nmax_message_size = \"64MiB\"\n");
    EXPECT_EQ(cfg.http.max_header_size, 1024u);
    EXPECT_EQ(cfg.http.max_body_size, 0u);
    EXPECT_EQ(cfg.websocket.max_message_size, 64u * 1024 * 1024);
    EXPECT_EQ(parse_ok("[http]\nmax_body_size = \"1GiB\"\n").http.max_body_size, 1024u * 1024 * 1024);
}

TEST(config, drain_timeout_may_be_zero_and_backoff_bounds_may_be_equal) {
    const auto cfg =
        parse_ok("[supervisor]\ndrain_timeout = \"0s\"\nrestart_backoff = { min = \"2s\", max = \"2s\" }\n");
    EXPECT_EQ(cfg.supervisor.drain_timeout, 0ms);
    EXPECT_EQ(cfg.supervisor.restart_backoff_min, 2s);
    EXPECT_EQ(cfg.supervisor.restart_backoff_max, 2s);
    // Only one bound given: the other keeps its default.
    EXPECT_EQ(parse_ok("[supervisor]\nrestart_backoff = { max = \"1m\" }\n").supervisor.restart_backoff_min, 100ms);
}

TEST(config, health_and_admin_keys) {
    const auto defaults = parse_ok("");
    EXPECT_EQ(defaults.supervisor.heartbeat_interval, 1s);
    EXPECT_EQ(defaults.supervisor.watchdog_timeout, 10s);
    EXPECT_EQ(defaults.supervisor.max_worker_memory, 0u);
    EXPECT_EQ(defaults.server.control_socket, "/run/sockherd/control.sock");
    EXPECT_EQ(defaults.admin.address, "127.0.0.1:9090");
    ASSERT_TRUE(defaults.admin.endpoint.has_value());
    EXPECT_EQ(*defaults.admin.endpoint, endpoint("127.0.0.1", 9090));
    EXPECT_EQ(defaults.admin.token, "");

    const auto cfg = parse_ok(R"([server]
control_socket = "/tmp/x/control.sock"
[supervisor]
heartbeat_interval = "250ms"
watchdog_timeout = "750ms"
max_worker_memory = "300MiB"
[admin]
address = "[::]:9191"
token = "s3cret"
)");
    EXPECT_EQ(cfg.server.control_socket, "/tmp/x/control.sock");
    EXPECT_EQ(cfg.supervisor.heartbeat_interval, 250ms);
    EXPECT_EQ(cfg.supervisor.watchdog_timeout, 750ms);
    EXPECT_EQ(cfg.supervisor.max_worker_memory, 300u * 1024 * 1024);
    EXPECT_EQ(*cfg.admin.endpoint, endpoint("::", 9191));
    EXPECT_EQ(cfg.admin.token, "s3cret");

    // "" turns the admin listener and the control socket off.
    const auto off = parse_ok("[server]\ncontrol_socket = \"\"\n[admin]\naddress = \"\"\n");
    EXPECT_EQ(off.server.control_socket, "");
    EXPECT_FALSE(off.admin.endpoint.has_value());
    // A token alone keeps the default address; a token makes any address acceptable.
    EXPECT_EQ(*parse_ok("[admin]\ntoken = \"t\"\n").admin.endpoint, endpoint("127.0.0.1", 9090));
    EXPECT_TRUE(parse_ok("[admin]\naddress = \"0.0.0.0:9090\"\ntoken = \"t\"\n").admin.endpoint.has_value());
    // Loopback v6 needs no token either.
    EXPECT_TRUE(parse_ok("[admin]\naddress = \"[::1]:9090\"\n").admin.endpoint.has_value());
}

TEST(config, worker_user_keys) {
    const auto defaults = parse_ok("");
    EXPECT_EQ(defaults.server.user_position.line, 0u) << "the default's position is not in this file";

    const auto cfg = parse_ok("[server]\nworkers = 2\n  user = \"www-data\"\n");
    EXPECT_EQ(cfg.server.user, "www-data");
    EXPECT_EQ(cfg.server.user_position.line, 3u);
    EXPECT_EQ(cfg.server.user_position.column, 10u);
    EXPECT_FALSE(cfg.server.allow_root_workers);

    for (const char* name : {"sockherd", "_apt", "svc.web-01", "A", "a1234567890123456789012345678901"})
        EXPECT_EQ(parse_ok(std::string("[server]\nuser = \"") + name + "\"\n").server.user, name);
    // "": keep the user the node was started as (the supervisor decides whether that is allowed).
    EXPECT_EQ(parse_ok("[server]\nuser = \"\"\n").server.user, "");
    // root only on purpose, in either order.
    const auto root = parse_ok("[server]\nuser = \"root\"\nallow_root_workers = true\n");
    EXPECT_EQ(root.server.user, "root");
    EXPECT_TRUE(root.server.allow_root_workers);
    EXPECT_TRUE(parse_ok("[server]\nallow_root_workers = true\nuser = \"root\"\n").server.allow_root_workers);
    EXPECT_TRUE(parse_ok("server.allow_root_workers = true\nserver.user = \"root\"\n").server.allow_root_workers);
    // The opt-in alone changes nothing.
    const auto opt_in_only = parse_ok("[server]\nallow_root_workers = true\n");
    EXPECT_EQ(opt_in_only.server.user, "nobody");
    EXPECT_TRUE(opt_in_only.server.allow_root_workers);
    EXPECT_FALSE(parse_ok("[server]\nallow_root_workers = false\n").server.allow_root_workers);
}

TEST(config, redis_keys) {
    auto cfg = parse_ok(R"([redis]
url = "redis://:s3cret@10.0.0.5:6380/2"
channel_prefix = "app1:"
connect_timeout = "500ms"
command_timeout = "3s"
reconnect_backoff = { min = "50ms", max = "1m" }
)");
    ASSERT_TRUE(cfg.redis.enabled());
    EXPECT_EQ(cfg.redis.url, "redis://:s3cret@10.0.0.5:6380/2");
    EXPECT_EQ(cfg.redis.endpoint->host, "10.0.0.5");
    EXPECT_EQ(cfg.redis.endpoint->port, 6380);
    EXPECT_EQ(cfg.redis.endpoint->db, 2u);
    EXPECT_EQ(cfg.redis.endpoint->password, "s3cret");
    EXPECT_EQ(cfg.redis.masked_url(), "redis://:***@10.0.0.5:6380/2");
    EXPECT_EQ(cfg.redis.channel_prefix, "app1:");
    EXPECT_EQ(cfg.redis.connect_timeout, 500ms);
    EXPECT_EQ(cfg.redis.command_timeout, 3s);
    EXPECT_EQ(cfg.redis.reconnect_backoff_min, 50ms);
    EXPECT_EQ(cfg.redis.reconnect_backoff_max, 60s);

    cfg = parse_ok("[redis]\nurl = \"unix:///run/redis/redis.sock\"\nchannel_prefix = \"\"\n");
    ASSERT_TRUE(cfg.redis.enabled());
    EXPECT_EQ(cfg.redis.endpoint->kind, redis_url::transport::unix_socket);
    EXPECT_EQ(cfg.redis.endpoint->path, "/run/redis/redis.sock");
    EXPECT_EQ(cfg.redis.channel_prefix, "");
    EXPECT_EQ(cfg.redis.reconnect_backoff_max, 5s); // untouched keys keep their defaults

    cfg = parse_ok("[redis]\nurl = \"redis://redis.internal\"\nreconnect_backoff = { max = \"100ms\" }\n");
    EXPECT_EQ(cfg.redis.endpoint->host, "redis.internal");
    EXPECT_EQ(cfg.redis.reconnect_backoff_min, 100ms);
    EXPECT_EQ(cfg.redis.reconnect_backoff_max, 100ms);
    EXPECT_FALSE(parse_ok("[redis]\nurl = \"\"\n").redis.enabled());
    EXPECT_EQ(parse_ok(std::string("[redis]\nchannel_prefix = \"") + std::string(64, 'p') + "\"\n")
                  .redis.channel_prefix.size(),
              64u);
}

TEST(config, redis_errors_never_show_the_password) {
    const char* urls[] = {"redis://:hunter2@host:0", "redis://:hunter2@host/16", "redis://:hunter2@ho st",
                          "rediss://:hunter2@host", "redis://user:hunter2@[::1", "hunter2@host"};
    EXPECT_EQ(parse_fails("redis = \"redis://:hunter2@h\"\n").to_string().find("hunter2"), std::string::npos);
    for (const char* url : urls) {
        const auto err = parse_fails(std::string("[redis]\nurl = \"") + url + "\"\n");
        EXPECT_EQ(err.line, 2u);
        EXPECT_EQ(err.column, 7u);
        EXPECT_TRUE(err.message.starts_with("[redis] url: invalid URL \"")) << err.message;
        EXPECT_EQ(err.to_string().find("hunter2"), std::string::npos) << err.to_string();
    }
}

// One rejected file: where the error must point and what it must say.
struct bad_file {
    const char* name;
    const char* text;
    std::uint32_t line;
    std::uint32_t column;
    const char* message; // the whole message, or (ending in "...") its beginning
};

void PrintTo(const bad_file& bad, std::ostream* os) {
    *os << bad.name;
}

const bad_file bad_files[] = {
    {"syntax_error", "[server]\nworkers = = 4\n", 2, 11, "Error while parsing value..."},
    {"table_defined_twice", "[log]\nlevel = \"info\"\n[log]\n", 3, 1, "Error while parsing table header..."},
    {"unknown_key", "[server]\nworkers = 2\n  threads = 4\n", 3, 3, "unknown key 'threads' in [server]"},
    {"unknown_key_in_listener", "[[listener]]\naddress = \"127.0.0.1:80\"\nport = 80\n", 3, 1,
     "unknown key 'port' in [[listener]]"},
    {"unknown_key_in_route", "[[route]]\npath = \"/\"\nkind = \"static\"\ndir = \"/srv\"\n", 4, 1,
     "unknown key 'dir' in [[route]]"},
    {"unknown_key_in_inline_table", "[supervisor]\nrestart_backoff = { min = \"1s\", mx = \"2s\" }\n", 2, 33,
     "unknown key 'mx' in [supervisor] restart_backoff"},
    {"first_unknown_key_is_reported", "[log]\nzzz = 1\naaa = 2\n", 2, 1, "unknown key 'zzz' in [log]"},
    {"unknown_sub_table", "[http]\nmax_body_size = 1\n[http.limits]\n", 3, 7, "unknown key 'limits' in [http]"},
    {"unknown_section", "[server]\nworkers = 2\n\n[servr]\nworkers = 3\n", 4, 2, "unknown section [servr]"},
    {"unknown_array_section", "[[listeners]]\naddress = \"0.0.0.0:80\"\n", 1, 3, "unknown section [[listeners]]"},
    {"unknown_top_level_key", "\nverbose = true\n", 2, 1, "unknown key 'verbose' at the top level"},
    {"section_not_a_table", "server = 4\n", 1, 10, "server: expected a table ([server]), got integer"},
    {"listener_not_an_array", "[listener]\naddress = \"0.0.0.0:80\"\n", 1, 1,
     "listener: expected an array of tables ([[listener]]), got table"},
    {"route_array_of_strings", "route = [\"/a\"]\n", 1, 10,
     "route: expected an array of tables ([[route]]), got an array containing \"/a\""},
    {"duration_as_integer", "[websocket]\nidle_timeout = 60\n", 2, 16,
     "[websocket] idle_timeout: expected a duration string like \"30s\", got integer (durations need a unit, e.g. "
     "\"60s\")"},
    {"negative_duration_integer", "[http]\nheader_timeout = -5\n", 2, 18,
     "[http] header_timeout: expected a duration string like \"30s\", got integer (durations need a unit, e.g. "
     "\"30s\")"},
    {"duration_as_boolean", "[http]\nheader_timeout = true\n", 2, 18,
     "[http] header_timeout: expected a duration string like \"30s\", got boolean"},
    {"bad_duration", "[http]\nkeepalive_timeout = \"10 s\"\n", 2, 21,
     "[http] keepalive_timeout: invalid duration \"10 s\" (use e.g. \"250ms\", \"30s\", \"1m30s\", \"2h\")"},
    {"zero_duration", "[websocket]\nidle_timeout = \"0s\"\n", 2, 16,
     "[websocket] idle_timeout: must be greater than 0"},
    {"bad_duration_in_inline_table", "[supervisor]\nrestart_backoff = { min = \"1x\" }\n", 2, 27,
     "[supervisor] restart_backoff.min: invalid duration \"1x\"..."},
    {"backoff_max_below_min", "[supervisor]\nrestart_backoff = { min = \"5s\", max = \"1s\" }\n", 2, 39,
     "[supervisor] restart_backoff.max: min (5s) must not be greater than max (1s)"},
    {"backoff_min_above_default_max", "[supervisor]\nrestart_backoff = { min = \"1m\" }\n", 2, 27,
     "[supervisor] restart_backoff.min: min (1m) must not be greater than max (10s)"},
    {"backoff_not_a_table", "[supervisor]\nrestart_backoff = \"1s\"\n", 2, 19,
     "[supervisor] restart_backoff: expected an inline table like { min = \"100ms\", max = \"10s\" }, got \"1s\""},
    {"bad_size", "[http]\nmax_body_size = \"1 MiB\"\n", 2, 17,
     "[http] max_body_size: invalid size \"1 MiB\" (use e.g. \"512\", \"16KiB\", \"1MiB\", \"10MB\")"},
    {"size_as_float", "[http]\nmax_body_size = 1.5\n", 2, 17,
     "[http] max_body_size: expected a size like \"16KiB\" or an integer number of bytes, got float"},
    {"size_below_minimum", "[http]\nmax_header_size = 512\n", 2, 19,
     "[http] max_header_size: must be between 1KiB and 1MiB, got 512 bytes"},
    {"size_above_maximum", "[websocket]\nmax_message_size = \"65MiB\"\n", 2, 20,
     "[websocket] max_message_size: must be between 1KiB and 64MiB, got 65MiB"},
    {"negative_size", "[http]\nmax_body_size = -1\n", 2, 17, "[http] max_body_size: must not be negative, got -1"},
    {"size_overflow", "[http]\nmax_body_size = \"17179869184GiB\"\n", 2, 17, "[http] max_body_size: invalid size..."},
    {"body_too_large", "[http]\nmax_body_size = \"2GiB\"\n", 2, 17,
     "[http] max_body_size: must be at most 1GiB, got 2GiB"},
    {"bad_address", "[[listener]]\naddress = \"localhost:80\"\n", 2, 11,
     "[[listener]] address: invalid address \"localhost:80\" (expected \"a.b.c.d:port\" or \"[v6]:port\", no host "
     "names)"},
    {"address_not_a_string", "[[listener]]\naddress = 80\n", 2, 11,
     "[[listener]] address: expected a string, got integer"},
    {"missing_address", "[[listener]]\nmode = \"shared\"\n", 1, 1, "[[listener]] is missing required key 'address'"},
    {"duplicate_listener",
     "[[listener]]\naddress = \"0.0.0.0:80\"\n\n[[listener]]\nmode = \"shared\"\naddress = \"0.0.0.0:80\"\n", 6, 11,
     "[[listener]] address: \"0.0.0.0:80\" is the same endpoint as the listener on line 2"},
    {"no_listeners", "listener = []\n", 1, 12, "at least one [[listener]] is required"},
    {"bad_mode", "[[listener]]\naddress = \"0.0.0.0:80\"\nmode = \"fork\"\n", 3, 8,
     "[[listener]] mode: unknown value \"fork\" (expected one of: handoff, shared, reuseport)"},
    {"backlog_out_of_range", "[[listener]]\naddress = \"0.0.0.0:80\"\nbacklog = 0\n", 3, 11,
     "[[listener]] backlog: must be between 1 and 65535, got 0"},
    {"backlog_wrong_type", "[[listener]]\naddress = \"0.0.0.0:80\"\nbacklog = \"big\"\n", 3, 11,
     "[[listener]] backlog: expected an integer, got \"big\""},
    {"bad_enum_value", "[log]\nlevel = \"verbose\"\n", 2, 9,
     "[log] level: unknown value \"verbose\" (expected one of: trace, debug, info, warn, error)"},
    {"bad_log_format", "[log]\nformat = 1\n", 2, 10, "[log] format: expected a string, got integer"},
    {"bad_policy", "[scheduler]\npolicy = \"random\"\n", 2, 10,
     "[scheduler] policy: unknown value \"random\" (expected one of: least-conn, round-robin)"},
    {"workers_zero", "[server]\nworkers = 0\n", 2, 11,
     "[server] workers: must be between 1 and 1024 (or \"auto\"), got 0"},
    {"workers_too_many", "[server]\nworkers = 1025\n", 2, 11,
     "[server] workers: must be between 1 and 1024 (or \"auto\"), got 1025"},
    {"worker_scheduling_unknown", "[server]\nworker_scheduling = \"fifo\"\n", 2, 21,
     "[server] worker_scheduling: must be \"batch\" or \"normal\", got \"fifo\""},
    {"supervisor_scheduling_unknown", "[server]\nsupervisor_scheduling = \"idle\"\n", 2, 25,
     "[server] supervisor_scheduling: must be \"batch\" or \"normal\", got \"idle\""},
    {"supervisor_scheduling_not_a_string", "[server]\nsupervisor_scheduling = 1\n", 2, 25,
     "[server] supervisor_scheduling: expected a string, got integer"},
    {"workers_bad_string", "[server]\nworkers = \"many\"\n", 2, 11,
     "[server] workers: expected an integer 1..1024 or \"auto\", got \"many\""},
    {"route_missing_path", "[[route]]\nkind = \"echo\"\n", 1, 1, "[[route]] is missing required key 'path'"},
    {"route_missing_kind", "[[route]]\npath = \"/a\"\nkind = \"echo\"\n  [[route]]\n  path = \"/b\"\n", 4, 3,
     "[[route]] is missing required key 'kind'"},
    {"route_bad_kind", "[[route]]\npath = \"/a\"\nkind = \"proxy\"\n", 3, 8,
     "[[route]] kind: unknown value \"proxy\" (expected one of: echo, static, pubsub)"},
    {"raw_pubsub_path_without_slash", "[[route]]\npath = \"/a\"\nkind = \"pubsub\"\n", 2, 8,
     "[[route]] path: a raw pubsub route takes the channel from the path, so it must end with '/' (e.g. \"/a/\")"},
    {"protocol_on_static_route", "[[route]]\npath = \"/a\"\nkind = \"static\"\nprotocol = \"json\"\n", 4, 12,
     "[[route]] protocol: only allowed on a route with kind = \"pubsub\""},
    {"bad_protocol", "[[route]]\npath = \"/a\"\nkind = \"pubsub\"\nprotocol = \"xml\"\n", 4, 12,
     "[[route]] protocol: unknown value \"xml\" (expected one of: raw, json)"},
    {"token_not_a_string", "[publish]\ntokens = [\"ok\", 5]\n", 2, 17, "[publish] tokens: expected a string, got integer"},
    {"token_with_space", "[publish]\ntokens = [\"a b\"]\n", 2, 11,
     "[publish] tokens: a token may hold printable ASCII only, without spaces"},
    {"tokens_not_an_array", "[publish]\ntokens = \"x\"\n", 2, 10, "[publish] tokens: expected an array of strings, got \"x\""},
    {"send_queue_too_small", "[websocket]\nsend_queue_limit = 10\n", 2, 20,
     "[websocket] send_queue_limit: must be between 1KiB and 1GiB, got 10 bytes"},
    {"route_relative_path", "[[route]]\npath = \"echo\"\nkind = \"echo\"\n", 2, 8,
     "[[route]] path: must start with '/', got \"echo\""},
    {"root_on_echo_route", "[[route]]\npath = \"/e\"\nkind = \"echo\"\nroot = \"/srv\"\n", 4, 8,
     "[[route]] root: only allowed on a route with kind = \"static\""},
    {"relative_root", "[[route]]\npath = \"/\"\nkind = \"static\"\nroot = \"www\"\n", 4, 8,
     "[[route]] root: must be an absolute path, got \"www\""},
    {"admin_public_without_token", "[admin]\naddress = \"0.0.0.0:9090\"\n", 2, 11,
     "[admin] address: a non-loopback admin address (\"0.0.0.0:9090\") requires [admin] token to be set"},
    {"admin_bad_address", "[admin]\naddress = \"localhost:9090\"\n", 2, 11,
     "[admin] address: invalid address \"localhost:9090\"..."},
    {"admin_token_with_space", "[admin]\ntoken = \"a b\"\n", 2, 9,
     "[admin] token: may hold printable ASCII only, without spaces"},
    {"admin_same_as_listener", "[[listener]]\naddress = \"127.0.0.1:9090\"\n", 1, 1,
     "[admin] address \"127.0.0.1:9090\" is also a [[listener]] address"},
    {"control_socket_relative", "[server]\ncontrol_socket = \"run/x.sock\"\n", 2, 18,
     "[server] control_socket: must be an absolute path (or \"\" for none), got \"run/x.sock\""},
    {"control_socket_too_long", "[server]\ncontrol_socket = \"/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.sock\"\n", 2, 18,
     "[server] control_socket: a Unix socket path may be at most 107 bytes, got 124"},
    {"heartbeat_too_fast", "[supervisor]\nheartbeat_interval = \"10ms\"\n", 2, 22,
     "[supervisor] heartbeat_interval: must be at least 50ms, got 10ms"},
    {"watchdog_below_three_heartbeats", "[supervisor]\nheartbeat_interval = \"1s\"\nwatchdog_timeout = \"2500ms\"\n", 3,
     20, "[supervisor] watchdog_timeout: watchdog_timeout (2s500ms) must be at least 3 times heartbeat_interval (1s)"},
    {"heartbeat_over_a_third_of_default_watchdog", "[supervisor]\nheartbeat_interval = \"4s\"\n", 2, 22,
     "[supervisor] heartbeat_interval: watchdog_timeout (10s) must be at least 3 times heartbeat_interval (4s)"},
    {"worker_memory_too_small", "[supervisor]\nmax_worker_memory = \"1MiB\"\n", 2, 21,
     "[supervisor] max_worker_memory: must be 0 (no limit) or at least 16MiB, got 1MiB"},
    {"duplicate_route", "[[route]]\npath = \"/a\"\nkind = \"echo\"\n[[route]]\nkind = \"static\"\npath = \"/a\"\n",
     6, 8, "[[route]] path: duplicate route \"/a\" (first on line 2)"},
    {"root_workers_without_opt_in", "[server]\nworkers = 2\nuser = \"root\"\n", 3, 8,
     "[server] user: \"root\" would run the workers as root; set allow_root_workers = true in [server] to do that "
     "on purpose"},
    {"root_workers_with_opt_in_false", "[server]\nallow_root_workers = false\nuser = \"root\"\n", 3, 8,
     "[server] user: \"root\" would run the workers as root..."},
    {"user_not_a_string", "[server]\nuser = 65534\n", 2, 8, "[server] user: expected a string, got integer"},
    {"user_with_space", "[server]\nuser = \"no body\"\n", 2, 8,
     "[server] user: invalid user name \"no body\" (expected 1 to 32 of A-Z a-z 0-9 . _ -, not starting with '-'; "
     "or \"\" to keep the user sockherd was started as)"},
    {"user_starting_with_dash", "[server]\nuser = \"-nobody\"\n", 2, 8,
     "[server] user: invalid user name \"-nobody\"..."},
    {"user_with_slash", "[server]\nuser = \"../root\"\n", 2, 8, "[server] user: invalid user name \"../root\"..."},
    {"user_with_colon", "[server]\nuser = \"nobody:nogroup\"\n", 2, 8,
     "[server] user: invalid user name \"nobody:nogroup\"..."},
    {"user_too_long", "[server]\nuser = \"a12345678901234567890123456789012\"\n", 2, 8,
     "[server] user: invalid user name \"a12345678901234567890123456789012\"..."},
    {"allow_root_workers_not_a_boolean", "[server]\nallow_root_workers = \"yes\"\n", 2, 22,
     "[server] allow_root_workers: expected true or false, got \"yes\""},
    {"redis_unknown_key", "[redis]\nurl = \"redis://h\"\ndatabase = 1\n", 3, 1, "unknown key 'database' in [redis]"},
    {"redis_url_not_a_string", "[redis]\nurl = 6379\n", 2, 7, "[redis] url: expected a string, got integer"},
    {"redis_url_bad_scheme", "[redis]\nurl = \"http://h\"\n", 2, 7,
     "[redis] url: invalid URL \"http://h\": expected redis://[:password@]host[:port][/db] or unix:///path"},
    {"redis_url_bad_port_masked", "[redis]\nurl = \"redis://:pw@h:70000\"\n", 2, 7,
     "[redis] url: invalid URL \"redis://:***@h:70000\": invalid port \"70000\" (1 to 65535)"},
    {"redis_url_db_out_of_range", "[redis]\nurl = \"redis://h/16\"\n", 2, 7,
     "[redis] url: invalid URL \"redis://h/16\": invalid database \"16\" (0 to 15)"},
    {"redis_url_tls", "[redis]\nurl = \"rediss://h\"\n", 2, 7,
     "[redis] url: invalid URL \"rediss://h\": TLS (rediss://) is not supported"},
    {"redis_url_relative_unix", "[redis]\nurl = \"unix://run/r.sock\"\n", 2, 7,
     "[redis] url: invalid URL \"unix://run/r.sock\": expected unix:///absolute/path"},
    {"redis_prefix_too_long",
     "[redis]\nchannel_prefix = \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"\n", 2, 18,
     "[redis] channel_prefix: must be at most 64 bytes, got 65"},
    {"redis_prefix_with_space", "[redis]\nchannel_prefix = \"my app:\"\n", 2, 18,
     "[redis] channel_prefix: may hold printable ASCII only, without spaces"},
    {"redis_prefix_with_control", "[redis]\nchannel_prefix = \"a\\tb\"\n", 2, 18,
     "[redis] channel_prefix: may hold printable ASCII only, without spaces"},
    {"redis_zero_timeout", "[redis]\nconnect_timeout = \"0s\"\n", 2, 19,
     "[redis] connect_timeout: must be greater than 0"},
    {"redis_command_timeout_integer", "[redis]\ncommand_timeout = 2\n", 2, 19,
     "[redis] command_timeout: expected a duration string like \"30s\"..."},
    {"redis_backoff_max_below_min", "[redis]\nreconnect_backoff = { min = \"1s\", max = \"10ms\" }\n", 2, 41,
     "[redis] reconnect_backoff.max: min (1s) must not be greater than max (10ms)"},
    {"redis_backoff_not_a_table", "[redis]\nreconnect_backoff = \"1s\"\n", 2, 21,
     "[redis] reconnect_backoff: expected an inline table like { min = \"100ms\", max = \"5s\" }, got \"1s\""},
    {"redis_backoff_unknown_key", "[redis]\nreconnect_backoff = { minimum = \"1s\" }\n", 2, 23,
     "unknown key 'minimum' in [redis] reconnect_backoff"},
    {"redis_not_a_table", "redis = \"redis://h\"\n", 1, 9,
     "redis: expected a table ([redis]) with url = \"...\", got a string"},
};

class config_errors : public testing::TestWithParam<bad_file> {};

TEST_P(config_errors, point_at_the_offending_line_and_column) {
    const auto& bad = GetParam();
    const auto err = parse_fails(bad.text);
    EXPECT_EQ(err.source_name, "test.toml");
    EXPECT_EQ(err.line, bad.line) << err.to_string();
    EXPECT_EQ(err.column, bad.column) << err.to_string();
    std::string_view expected = bad.message;
    if (expected.ends_with("...")) {
        expected.remove_suffix(3);
        EXPECT_TRUE(err.message.starts_with(expected)) << err.message;
    } else {
        EXPECT_EQ(err.message, expected);
    }
}

INSTANTIATE_TEST_SUITE_P(config, config_errors, testing::ValuesIn(bad_files),
                         [](const auto& p) { return std::string(p.param.name); });

TEST(config, garbage_is_an_error_not_an_exception) {
    const std::string inputs[] = {"\xff\xfe\x00", "[[", "a = \"\\u0000\"\n[x", std::string(5000, '['),
                                  "[[listener]]\naddress = \"1.2.3.4\\u0000:80\"\n", "\n\n\n=\n",
                                  // These trip an assert() in toml++ 3.3 (tomlplusplus#301) without NDEBUG.
                                  "[[[a]]]", "[=", "[[#]]", "[log]\nlevel = \"info\"\n[[ [x]]\n"};
    for (const auto& text : inputs) {
        config_result result;
        EXPECT_NO_THROW(result = parse_config(text, "junk"));
        ASSERT_TRUE(std::holds_alternative<config_error>(result)) << text;
        EXPECT_EQ(std::get<config_error>(result).source_name, "junk");
        EXPECT_FALSE(std::get<config_error>(result).message.empty());
    }
}

TEST(config_error, to_string) {
    EXPECT_EQ((config_error{"a.toml", 3, 7, "unknown key 'x' in [log]"}.to_string()),
              "a.toml:3:7: unknown key 'x' in [log]");
    EXPECT_EQ((config_error{"/etc/s.toml", 0, 0, "cannot read: Permission denied"}.to_string()),
              "/etc/s.toml: cannot read: Permission denied");
    EXPECT_EQ(parse_fails("[log]\nlevel = 3\n").to_string(),
              "test.toml:2:9: [log] level: expected a string, got integer");
}

TEST(config, enum_names) {
    EXPECT_EQ(to_string(listener_mode::handoff), "handoff");
    EXPECT_EQ(to_string(listener_mode::shared), "shared");
    EXPECT_EQ(to_string(listener_mode::reuseport), "reuseport");
    EXPECT_EQ(to_string(schedule_policy::least_conn), "least-conn");
    EXPECT_EQ(to_string(schedule_policy::round_robin), "round-robin");
    EXPECT_EQ(to_string(route_kind::echo), "echo");
    EXPECT_EQ(to_string(route_kind::static_files), "static");
}

// A temporary directory, removed with what is in it.
class temp_dir {
public:
    temp_dir() {
        char templ[] = "/tmp/config_test.XXXXXX";
        if (::mkdtemp(templ) == nullptr)
            throw std::runtime_error("mkdtemp failed");
        path_ = templ;
    }
    ~temp_dir() {
        std::error_code ec;
        std::filesystem::remove_all(path_, ec);
    }
    temp_dir(const temp_dir&) = delete;
    temp_dir& operator=(const temp_dir&) = delete;
    std::string file(const std::string& name, const std::string& text) const {
        const auto p = path_ + "/" + name;
        std::ofstream(p) << text;
        return p;
    }
    const std::string& path() const { return path_; }

private:
    std::string path_;
};

TEST(load_config_file, reads_and_parses_the_file) {
    temp_dir dir;
    const auto path = dir.file("s.toml", "[server]\nworkers = 2\n");
    auto result = load_config_file(path);
    ASSERT_TRUE(std::holds_alternative<config>(result)) << std::get<config_error>(result).to_string();
    const auto& cfg = std::get<config>(result);
    EXPECT_EQ(cfg.server.workers, 2u);
    EXPECT_EQ(cfg.source_name, path);
    EXPECT_EQ(cfg.source_text, "[server]\nworkers = 2\n");
}

TEST(load_config_file, errors_name_the_file) {
    temp_dir dir;
    const auto path = dir.file("bad.toml", "[server]\nworkers = 0\n");
    auto result = load_config_file(path);
    ASSERT_TRUE(std::holds_alternative<config_error>(result));
    EXPECT_EQ(std::get<config_error>(result).to_string(),
              path + ":2:11: [server] workers: must be between 1 and 1024 (or \"auto\"), got 0");
}

TEST(load_config_file, unreadable_files_have_no_position) {
    temp_dir dir;
    const auto missing = dir.path() + "/missing.toml";
    auto result = load_config_file(missing);
    ASSERT_TRUE(std::holds_alternative<config_error>(result));
    const auto& err = std::get<config_error>(result);
    EXPECT_EQ(err.source_name, missing);
    EXPECT_EQ(err.line, 0u);
    EXPECT_EQ(err.column, 0u);
    EXPECT_EQ(err.message, "cannot read: No such file or directory");
    EXPECT_EQ(err.to_string(), missing + ": cannot read: No such file or directory");

    result = load_config_file(dir.path());
    ASSERT_TRUE(std::holds_alternative<config_error>(result));
    EXPECT_EQ(std::get<config_error>(result).message, "cannot read: Is a directory");
}

TEST(parse_duration, good) {
    const std::pair<const char*, std::int64_t> cases[] = {
        {"0s", 0},
        {"0ms", 0},
        {"250ms", 250},
        {"30s", 30'000},
        {"1m", 60'000},
        {"1m30s", 90'000},
        {"2h", 7'200'000},
        {"1h2m3s4ms", 3'723'004},
        {"1h500ms", 3'600'500},
        {"007s", 7'000},
        {"90m", 5'400'000},
        {"9223372036854775807ms", std::numeric_limits<std::int64_t>::max()},
        {"2562047788015h", 2562047788015 * 3'600'000},
        {"2562047788015h12m", 2562047788015 * 3'600'000 + 720'000},
    };
    for (const auto& [text, ms] : cases) {
        const auto d = parse_duration(text);
        ASSERT_TRUE(d) << text;
        EXPECT_EQ(d->count(), ms) << text;
    }
}

TEST(parse_duration, bad) {
    const char* cases[] = {
        "", "30", "s", "ms", "30 s", " 30s", "30s ", "-5s", "+5s", "1.5s", "30S", "30sec", "30d", "1s1m", "1s1s",
        "1m30", "5h-1m", "0x10s", "1,000ms", "\u00b5s",
        "9223372036854775808ms",  // one past the largest millisecond count
        "18446744073709551616ms", // does not fit in 64 bits
        "2562047788016h",         // hours * 3600000 past the limit
        "2562047788015h13m",      // the sum past the limit
        "5124095576030431h",      // the multiplication overflows 64 bits
    };
    for (const char* text : cases)
        EXPECT_FALSE(parse_duration(text)) << '"' << text << '"';
}

TEST(parse_size, good) {
    const std::pair<const char*, std::uint64_t> cases[] = {
        {"0", 0},
        {"512", 512},
        {"512B", 512},
        {"16KiB", 16 * 1024},
        {"1MiB", 1024 * 1024},
        {"2GiB", 2ull * 1024 * 1024 * 1024},
        {"10kB", 10'000},
        {"10KB", 10'000},
        {"1MB", 1'000'000},
        {"3GB", 3'000'000'000},
        {"18446744073709551615", std::numeric_limits<std::uint64_t>::max()},
        {"17179869183GiB", 17179869183ull << 30},
    };
    for (const auto& [text, bytes] : cases) {
        const auto n = parse_size(text);
        ASSERT_TRUE(n) << text;
        EXPECT_EQ(*n, bytes) << text;
    }
}

TEST(parse_size, bad) {
    const char* cases[] = {
        "", "KiB", "B", "16 KiB", " 16", "16 ", "16kib", "16KIB", "16Kib", "16kb", "16mb", "16K", "16k", "1.5MiB", "-1",
        "+1", "1e6", "16TiB", "0x10",
        "18446744073709551616", // does not fit in 64 bits
        "17179869184GiB",       // 2^64: the multiplication overflows
        "18446744073709552kB",
    };
    for (const char* text : cases)
        EXPECT_FALSE(parse_size(text)) << '"' << text << '"';
}

TEST(parse_address, good) {
    const std::tuple<const char*, const char*, unsigned short> cases[] = {
        {"0.0.0.0:8080", "0.0.0.0", 8080},   {"127.0.0.1:0", "127.0.0.1", 0},
        {"1.2.3.4:65535", "1.2.3.4", 65535}, {"[::]:80", "::", 80},
        {"[::1]:8080", "::1", 8080},         {"[2001:db8::7]:443", "2001:db8::7", 443},
        {"[::ffff:10.0.0.1]:1", "::ffff:10.0.0.1", 1},
    };
    for (const auto& [text, address, port] : cases) {
        const auto ep = parse_address(text);
        ASSERT_TRUE(ep) << text;
        EXPECT_EQ(ep->address(), boost::asio::ip::make_address(address)) << text;
        EXPECT_EQ(ep->port(), port) << text;
    }
    EXPECT_TRUE(parse_address("0.0.0.0:80")->address().is_v4());
    EXPECT_TRUE(parse_address("[::]:80")->address().is_v6());
}

TEST(parse_address, bad) {
    const std::string cases[] = {
        "", ":", "8080", ":80", "127.0.0.1", "127.0.0.1:", "127.0.0.1:65536", "127.0.0.1:-1", "127.0.0.1:+80",
        "127.0.0.1:80x", "127.0.0.1: 80", " 127.0.0.1:80", "127.0.0.1:99999999999999999999", "localhost:80",
        "example.com:443", "::1:80", "::1", "[::1]", "[::1]80", "[::1]:", "[127.0.0.1]:80", "[[::1]]:80", "1.2.3:80",
        "256.1.1.1:80", "1.2.3.4.5:80", "*:80", std::string("1.2.3.4\0x:80", 12)};
    for (const auto& text : cases)
        EXPECT_FALSE(parse_address(text)) << '"' << text << '"';
}

TEST(units, format_duration_and_size) {
    EXPECT_EQ(format_duration(0ms), "0s");
    EXPECT_EQ(format_duration(250ms), "250ms");
    EXPECT_EQ(format_duration(10s), "10s");
    EXPECT_EQ(format_duration(90s), "1m30s");
    EXPECT_EQ(format_duration(7'200'000ms), "2h");
    EXPECT_EQ(format_duration(3'723'004ms), "1h2m3s4ms");
    EXPECT_EQ(parse_duration(format_duration(3'723'004ms)), 3'723'004ms);
    EXPECT_EQ(format_size(0), "0 bytes");
    EXPECT_EQ(format_size(1500), "1500 bytes");
    EXPECT_EQ(format_size(16 * 1024), "16KiB");
    EXPECT_EQ(format_size(1024 * 1024), "1MiB");
    EXPECT_EQ(format_size(3ull << 30), "3GiB");
    EXPECT_EQ(format_size(1536 * 1024), "1536KiB");
}

} // namespace
} // namespace sockherd

namespace sockherd {
namespace {

TEST(config, edge_keys) {
    const auto cfg = parse_ok(R"(
[[listener]]
address = "127.0.0.1:9443"
proxy_protocol = true
tls = { cert = "/etc/ssl/a.pem", key = "/etc/ssl/a.key" }

[[listener]]
address = "127.0.0.1:9080"

[http]
max_requests_per_connection = 50
trusted_proxies = ["10.0.0.0/8", "::1", "127.0.0.1"]

[websocket]
ping_interval = "10s"
idle_timeout = "30s"
allowed_origins = ["https://app.example.com", "https://*.example.org"]

[limits]
max_connections_per_worker = 5000
max_connections_per_ip = 0
proxy_header_timeout = "2s"
tls_handshake_timeout = "3s"

[log]
access = true
)");
    ASSERT_EQ(cfg.listeners.size(), 2u);
    EXPECT_TRUE(cfg.listeners[0].proxy_protocol);
    ASSERT_TRUE(cfg.listeners[0].tls);
    EXPECT_EQ(cfg.listeners[0].tls->cert, "/etc/ssl/a.pem");
    EXPECT_EQ(cfg.listeners[0].tls->key, "/etc/ssl/a.key");
    EXPECT_FALSE(cfg.listeners[1].proxy_protocol);
    EXPECT_FALSE(cfg.listeners[1].tls);
    EXPECT_EQ(cfg.http.max_requests_per_connection, 50u);
    ASSERT_EQ(cfg.http.trusted_proxies.size(), 3u);
    EXPECT_EQ(cfg.http.trusted_proxies[0].prefix, 8u);
    EXPECT_EQ(cfg.websocket.ping_interval, 10s);
    EXPECT_EQ(cfg.websocket.allowed_origins.size(), 2u);
    EXPECT_TRUE(cfg.websocket.allowed_origins[1].wildcard);
    EXPECT_EQ(cfg.limits.max_connections_per_worker, 5000u);
    EXPECT_EQ(cfg.limits.max_connections_per_ip, 0u);
    EXPECT_EQ(cfg.limits.proxy_header_timeout, 2s);
    EXPECT_EQ(cfg.limits.tls_handshake_timeout, 3s);
    EXPECT_TRUE(cfg.log.access);
}

TEST(config, edge_defaults) {
    const auto cfg = default_config();
    EXPECT_FALSE(cfg.listeners.at(0).proxy_protocol);
    EXPECT_FALSE(cfg.listeners.at(0).tls);
    EXPECT_EQ(cfg.http.max_requests_per_connection, 1000u);
    EXPECT_TRUE(cfg.http.trusted_proxies.empty());
    EXPECT_EQ(cfg.websocket.ping_interval, 25s);
    EXPECT_LT(cfg.websocket.ping_interval, cfg.websocket.idle_timeout);
    EXPECT_TRUE(cfg.websocket.allowed_origins.empty());
    EXPECT_EQ(cfg.limits.max_connections_per_worker, 0u);
    EXPECT_EQ(cfg.limits.max_connections_per_ip, 4096u);
    EXPECT_EQ(cfg.limits.proxy_header_timeout, 5s);
    EXPECT_EQ(cfg.limits.tls_handshake_timeout, 10s);
    EXPECT_FALSE(cfg.log.access);
}

TEST(config, short_idle_timeout_halves_the_default_ping_interval) {
    const auto cfg = parse_ok("[websocket]\nidle_timeout = \"10s\"\n");
    EXPECT_EQ(cfg.websocket.ping_interval, 5s);
    EXPECT_EQ(parse_ok("[websocket]\nidle_timeout = \"10s\"\nping_interval = \"0s\"\n").websocket.ping_interval, 0s);
}

TEST(config, edge_key_errors) {
    struct bad {
        const char* text;
        const char* message_start;
    };
    const bad cases[] = {
        {"[websocket]\nidle_timeout = \"10s\"\nping_interval = \"10s\"\n",
         "[websocket] ping_interval: ping_interval (10s) must be shorter than idle_timeout (10s)"},
        {"[websocket]\nallowed_origins = [\"example.com\"]\n", "[websocket] allowed_origins: invalid entry \"example.com\""},
        {"[websocket]\nallowed_origins = \"*\"\n", "[websocket] allowed_origins: expected an array of strings"},
        {"[http]\ntrusted_proxies = [\"10.1.2.3/8\"]\n", "[http] trusted_proxies: invalid entry \"10.1.2.3/8\""},
        {"[http]\ntrusted_proxies = [10]\n", "[http] trusted_proxies: expected a string"},
        {"[http]\nmax_requests_per_connection = 0\n", "[http] max_requests_per_connection: must be between 1"},
        {"[http]\nmax_requests_per_connection = \"10\"\n", "[http] max_requests_per_connection: expected an integer"},
        {"[limits]\nmax_connections_per_ip = -1\n", "[limits] max_connections_per_ip: must be between 0"},
        {"[limits]\nproxy_header_timeout = \"0s\"\n", "[limits] proxy_header_timeout: must be greater than 0"},
        {"[limits]\nmax_conns = 1\n", "unknown key 'max_conns' in [limits]"},
        {"[[listener]]\naddress = \"127.0.0.1:1\"\nproxy_protocol = \"yes\"\n",
         "[[listener]] proxy_protocol: expected true or false"},
        {"[[listener]]\naddress = \"127.0.0.1:1\"\ntls = { cert = \"a.pem\", key = \"/k\" }\n",
         "[[listener]] tls.cert: must be an absolute path"},
        {"[[listener]]\naddress = \"127.0.0.1:1\"\ntls = { cert = \"/a.pem\" }\n",
         "[[listener]] tls is missing required key 'key'"},
        {"[[listener]]\naddress = \"127.0.0.1:1\"\ntls = { cert = \"/a\", key = \"/b\", ca = \"/c\" }\n",
         "unknown key 'ca' in [[listener]] tls"},
        {"[[listener]]\naddress = \"127.0.0.1:1\"\ntls = \"/a.pem\"\n", "[[listener]] tls: expected an inline table"},
    };
    for (const auto& c : cases) {
        const auto err = parse_fails(c.text);
        EXPECT_TRUE(err.message.starts_with(c.message_start)) << c.text << "\n-> " << err.message;
        EXPECT_GT(err.line, 0u) << c.text;
    }
}

} // namespace
} // namespace sockherd
