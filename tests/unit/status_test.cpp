#include "supervisor/status.hpp"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

namespace sockherd::supervisor {
namespace {

using json = nlohmann::json;

// The worker_counters fields under their documented names, stated here independently of the
// renderer's own table so a field wired to the wrong name fails.
const std::vector<std::pair<std::string, std::uint64_t worker_counters::*>> counter_names = {
    {"connections", &worker_counters::connections},
    {"connections_total", &worker_counters::connections_total},
    {"ws_sessions", &worker_counters::ws_sessions},
    {"ws_sessions_total", &worker_counters::ws_sessions_total},
    {"http_requests_total", &worker_counters::http_requests_total},
    {"messages_in_total", &worker_counters::messages_in_total},
    {"messages_out_total", &worker_counters::messages_out_total},
    {"bytes_in_total", &worker_counters::bytes_in_total},
    {"bytes_out_total", &worker_counters::bytes_out_total},
    {"send_queue_drops_total", &worker_counters::send_queue_drops_total},
    {"slow_consumer_disconnects_total", &worker_counters::slow_consumer_disconnects_total},
    {"publishes_total", &worker_counters::publishes_total},
    {"publish_drops_total", &worker_counters::publish_drops_total},
    {"deliveries_total", &worker_counters::deliveries_total},
    {"limit_hits_total", &worker_counters::limit_hits_total},
    {"bad_requests_total", &worker_counters::bad_requests_total},
    {"rss_bytes", &worker_counters::rss_bytes},
};

// Every counter of a row gets a distinct value: base + its index.
worker_counters counters_from(std::uint64_t base) {
    worker_counters c;
    std::uint64_t i = 0;
    for (const auto& [name, member] : counter_names)
        c.*member = base + i++;
    for (auto& r : c.rejections_total)
        r = base + 100 + i++;
    c.uptime_ms = base * 1000;
    return c;
}

// Four rows: slot 0 up, slot 1 waiting to restart (no pid), slot 2 up, and a draining leftover
// of slot 1 (same id, its own pid).
node_snapshot sample_snapshot() {
    node_snapshot s;
    s.version = "0.1.0";
    s.pid = 4242;
    s.state = "running";
    s.started_at_unix = 1'700'000'000;
    s.uptime_seconds = 3 * 3600 + 2 * 60 + 1.5;
    s.generation = 3;
    s.config_source = "/etc/sockherd/sockherd.toml";
    s.last_reload = {"ok", "workers 2 -> 3", 1'700'005'000};
    s.workers_configured = 3;
    s.workers_up = 2;

    worker_row w0;
    w0.id = 0;
    w0.pid = 101;
    w0.state = "up";
    w0.generation = 3;
    w0.uptime_seconds = 600.25;
    w0.heartbeat_age_seconds = 0.5;
    w0.counters = counters_from(1000);
    w0.counters.rss_bytes = 43'200'000; // 41.2 MiB
    w0.relay_drops_total = 2;

    worker_row w1;
    w1.id = 1;
    w1.state = "failing";
    w1.generation = 3;
    w1.restarts = 4;
    w1.last_exit = "exited with status 1";
    w1.relay_drops_total = 7;

    worker_row w2 = w0;
    w2.id = 2;
    w2.pid = 103;
    w2.counters = counters_from(3000);
    w2.relay_drops_total = 0;

    worker_row leftover;
    leftover.id = 1;
    leftover.pid = 99;
    leftover.state = "draining";
    leftover.generation = 2;
    leftover.uptime_seconds = 7200;
    leftover.heartbeat_age_seconds = 1.0;
    leftover.counters = counters_from(9000);
    leftover.restarts = 4;

    s.workers = {w0, w1, w2, leftover};
    s.listeners = {{"0.0.0.0:8080", "handoff", true, 1234}, {"[::]:8080", "reuseport", false, 5}};
    s.handoffs_total = 77;
    s.relays_total = 88;
    s.worker_restarts_total = 4;
    s.watchdog_kills_total = 1;
    s.memory_replacements_total = 2;
    s.pubsub_channels = 9;
    return s;
}

// A snapshot whose strings come from a hostile or broken environment.
node_snapshot hostile_snapshot() {
    node_snapshot s = sample_snapshot();
    s.version = "0.1.0\"evil";
    s.config_source = "</code><script>alert(\"x\")</script>&\x1b[31mred\xff\xfe.toml";
    s.workers[1].last_exit = "<img src=x onerror=alert(1)>\nkilled by watchdog: 'x'";
    s.workers[0].state = "up\" onmouseover=\"alert(1)";
    s.last_reload.message = "line 3: <b>bad</b>";
    s.listeners[0].address = "a\"b\\c\nd";
    return s;
}

std::vector<std::string> keys_of(const json& o) {
    std::vector<std::string> keys;
    for (const auto& [k, v] : o.items())
        keys.push_back(k);
    return keys;
}

std::vector<std::string> sorted(std::vector<std::string> v) {
    std::sort(v.begin(), v.end());
    return v;
}

// ---- status.json ----------------------------------------------------------------------------

TEST(StatusJson, top_level_fields_and_values) {
    const auto s = sample_snapshot();
    const json j = json::parse(render_status_json(s));
    EXPECT_EQ(sorted(keys_of(j)),
              sorted({"version", "pid", "state", "started_at", "uptime_seconds", "generation", "config", "last_reload",
                      "workers_configured", "workers_up", "healthy", "workers", "listeners", "totals", "redis"}));
    EXPECT_EQ(j["version"], "0.1.0");
    EXPECT_TRUE(j["redis"].is_null()) << "no bridge: redis is null";
    EXPECT_EQ(j["pid"], 4242);
    EXPECT_EQ(j["state"], "running");
    EXPECT_EQ(j["started_at"], 1'700'000'000);
    EXPECT_DOUBLE_EQ(j["uptime_seconds"].get<double>(), 10921.5);
    EXPECT_EQ(j["generation"], 3);
    EXPECT_EQ(j["config"], "/etc/sockherd/sockherd.toml");
    EXPECT_EQ(j["last_reload"], (json{{"result", "ok"}, {"message", "workers 2 -> 3"}, {"at", 1'700'005'000}}));
    EXPECT_EQ(j["workers_configured"], 3);
    EXPECT_EQ(j["workers_up"], 2);
    EXPECT_EQ(j["healthy"], true);
    json totals = j["totals"];
    totals.erase("rejections"); // checked in worker_objects_are_flat_with_every_counter
    EXPECT_EQ(totals, (json{{"handoffs", 77},
                                 {"relays", 88},
                                 {"worker_restarts", 4},
                                 {"watchdog_kills", 1},
                                 {"memory_replacements", 2},
                                 {"pubsub_channels", 9}}));
    ASSERT_EQ(j["listeners"].size(), 2u);
    EXPECT_EQ(j["listeners"][0],
              (json{{"address", "0.0.0.0:8080"}, {"mode", "handoff"}, {"accepting", true}, {"accepted_total", 1234}}));
    EXPECT_EQ(j["listeners"][1]["accepting"], false);
}

TEST(StatusJson, worker_objects_are_flat_with_every_counter) {
    const auto s = sample_snapshot();
    const json j = json::parse(render_status_json(s));
    ASSERT_EQ(j["workers"].size(), s.workers.size());

    std::vector<std::string> expected_keys{"id", "pid", "state", "generation", "uptime_seconds",
                                           "heartbeat_age_seconds", "worker_uptime_ms", "restarts", "last_exit",
                                           "relay_drops_total", "rejections"};
    for (const auto& [name, member] : counter_names)
        expected_keys.push_back(name);
    for (std::size_t i = 0; i < s.workers.size(); ++i) {
        const auto& w = j["workers"][i];
        const auto& row = s.workers[i];
        EXPECT_EQ(sorted(keys_of(w)), sorted(expected_keys)) << "worker " << i;
        EXPECT_EQ(w["id"], row.id);
        EXPECT_EQ(w["state"], row.state);
        EXPECT_EQ(w["generation"], row.generation);
        EXPECT_EQ(w["restarts"], row.restarts);
        EXPECT_EQ(w["last_exit"], row.last_exit);
        EXPECT_EQ(w["relay_drops_total"], row.relay_drops_total);
        EXPECT_EQ(w["worker_uptime_ms"], row.counters.uptime_ms);
        for (const auto& [name, member] : counter_names)
            EXPECT_EQ(w[name], row.counters.*member) << "worker " << i << " " << name;
        // Every reason under its documented name, and nothing else.
        ASSERT_TRUE(w["rejections"].is_object());
        EXPECT_EQ(w["rejections"].size(), rejection_count);
        EXPECT_EQ(w["rejections"]["malformed_request"], row.counters.rejections_total[0]);
        EXPECT_EQ(w["rejections"]["tls_handshake_timeout"], row.counters.rejections_total[rejection_count - 1]);
        for (std::size_t r = 0; r < rejection_count; ++r)
            EXPECT_EQ(w["rejections"][std::string(rejection_names[r])], row.counters.rejections_total[r]);
    }
    // The node's totals: each reason summed over the rows.
    const auto& totals = j["totals"]["rejections"];
    ASSERT_TRUE(totals.is_object());
    for (std::size_t r = 0; r < rejection_count; ++r) {
        std::uint64_t sum = 0;
        for (const auto& row : s.workers)
            sum += row.counters.rejections_total[r];
        EXPECT_EQ(totals[std::string(rejection_names[r])], sum) << rejection_names[r];
    }
    EXPECT_EQ(j["workers"][0]["pid"], 101);
    EXPECT_DOUBLE_EQ(j["workers"][0]["uptime_seconds"].get<double>(), 600.25);
    EXPECT_DOUBLE_EQ(j["workers"][0]["heartbeat_age_seconds"].get<double>(), 0.5);
    EXPECT_EQ(j["workers"][0]["messages_in_total"], 1005);
    EXPECT_EQ(j["workers"][3]["pid"], 99);
}

TEST(StatusJson, missing_values_are_null) {
    auto s = sample_snapshot();
    s.last_reload = {};
    const json j = json::parse(render_status_json(s));
    EXPECT_TRUE(j["workers"][1]["pid"].is_null());
    EXPECT_TRUE(j["workers"][1]["heartbeat_age_seconds"].is_null());
    EXPECT_EQ(j["last_reload"]["result"], "none");
    EXPECT_TRUE(j["last_reload"]["at"].is_null());
}

TEST(StatusJson, unhealthy_without_workers_up) {
    auto s = sample_snapshot();
    s.workers_up = 0;
    EXPECT_EQ(json::parse(render_status_json(s))["healthy"], false);
    s = sample_snapshot();
    s.state = "draining";
    EXPECT_EQ(json::parse(render_status_json(s))["healthy"], false);
}

TEST(StatusJson, odd_bytes_still_make_valid_json) {
    const auto s = hostile_snapshot();
    json j;
    ASSERT_NO_THROW(j = json::parse(render_status_json(s)));
    const auto config = j["config"].get<std::string>();
    EXPECT_NE(config.find("\xEF\xBF\xBD"), std::string::npos) << "invalid bytes become U+FFFD";
    EXPECT_NE(config.find("<script>"), std::string::npos) << "JSON carries the string itself";
    EXPECT_EQ(j["listeners"][0]["address"], "a\"b\\c\nd");
}

// ---- status page ----------------------------------------------------------------------------

struct html_row {
    std::string id, state, body;
};

// The rows of class `cls` inside the tbody of the table with id `table_id`.
std::vector<html_row> rows_of(const std::string& html, const std::string& table_id, const std::string& cls) {
    std::vector<html_row> rows;
    const auto table = html.find("<table id=\"" + table_id + "\">");
    if (table == std::string::npos)
        return rows;
    const auto tbody = html.find("<tbody>", table);
    const auto end = html.find("</tbody>", tbody);
    if (tbody == std::string::npos || end == std::string::npos || html.find("</table>", table) < end)
        return rows;
    const std::string body = html.substr(tbody, end - tbody);
    const std::regex tr("<tr class=\"" + cls +
                        "\"(?: data-id=\"([^\"]*)\" data-state=\"([^\"]*)\")?>([\\s\\S]*?)</tr>");
    for (std::sregex_iterator it(body.begin(), body.end(), tr), last; it != last; ++it)
        rows.push_back({(*it)[1], (*it)[2], (*it)[3]});
    return rows;
}

std::size_t count(const std::string& s, const std::string& what) {
    std::size_t n = 0;
    for (auto p = s.find(what); p != std::string::npos; p = s.find(what, p + what.size()))
        ++n;
    return n;
}

TEST(StatusHtml, self_contained_page_with_refresh) {
    const auto html = render_status_html(sample_snapshot());
    EXPECT_TRUE(html.starts_with("<!DOCTYPE html>"));
    EXPECT_NE(html.find("<meta http-equiv=\"refresh\" content=\"2\">"), std::string::npos);
    EXPECT_NE(html.find("<meta charset=\"utf-8\">"), std::string::npos);
    EXPECT_EQ(html.find("<script"), std::string::npos);
    EXPECT_EQ(html.find("src="), std::string::npos);
    EXPECT_EQ(html.find("<link"), std::string::npos);
    EXPECT_EQ(html.find("http://"), std::string::npos);
    EXPECT_EQ(html.find("https://"), std::string::npos);
    EXPECT_EQ(html.find("url("), std::string::npos);
    EXPECT_EQ(count(html, "id=\"node\""), 1u);
    EXPECT_TRUE(html.ends_with("</html>\n"));
}

TEST(StatusHtml, node_summary) {
    const auto html = render_status_html(sample_snapshot());
    const auto node = html.find("id=\"node\"");
    const auto end = html.find("</section>", node);
    ASSERT_NE(node, std::string::npos);
    ASSERT_NE(end, std::string::npos);
    const auto summary = html.substr(node, end - node);
    for (const char* want : {"0.1.0", "4242", "running", "3h 02m", "/etc/sockherd/sockherd.toml", "ok at 2023-11-14",
                             "workers 2 -&gt; 3", "2 of 3 up", "healthy"})
        EXPECT_NE(summary.find(want), std::string::npos) << want;
}

TEST(StatusHtml, one_worker_row_per_row_in_order) {
    const auto s = sample_snapshot();
    const auto html = render_status_html(s);
    const auto rows = rows_of(html, "workers", "worker");
    ASSERT_EQ(rows.size(), s.workers.size());
    for (std::size_t i = 0; i < rows.size(); ++i) {
        EXPECT_EQ(rows[i].id, std::to_string(s.workers[i].id));
        EXPECT_EQ(rows[i].state, s.workers[i].state);
        EXPECT_EQ(count(rows[i].body, "<td"), 11u) << "row " << i;
    }
    EXPECT_EQ(count(html, "</th>"), 11u + 4u);
    // Human units and the cells of a row without a process.
    EXPECT_NE(rows[0].body.find("41.2 MiB"), std::string::npos);
    EXPECT_NE(rows[0].body.find("10m 00s"), std::string::npos);
    EXPECT_NE(rows[0].body.find(">1005<"), std::string::npos) << "messages in";
    EXPECT_NE(rows[0].body.find(">1006<"), std::string::npos) << "messages out";
    EXPECT_NE(rows[1].body.find("exited with status 1"), std::string::npos);
    EXPECT_EQ(count(rows[1].body, "&mdash;"), 3u) << "pid, uptime, RSS";
    EXPECT_NE(rows[3].body.find("2h 00m"), std::string::npos);
    // State colours by class.
    EXPECT_NE(rows[0].body.find("class=\"state ok\""), std::string::npos);
    EXPECT_NE(rows[1].body.find("class=\"state bad\""), std::string::npos);
    EXPECT_NE(rows[3].body.find("class=\"state warn\""), std::string::npos);

    const auto listeners = rows_of(html, "listeners", "listener");
    ASSERT_EQ(listeners.size(), 2u);
    EXPECT_NE(listeners[0].body.find("0.0.0.0:8080"), std::string::npos);
    EXPECT_NE(listeners[0].body.find("1234"), std::string::npos);
    EXPECT_NE(listeners[1].body.find("paused"), std::string::npos);
}

TEST(StatusHtml, no_workers_still_renders_the_tables) {
    auto s = sample_snapshot();
    s.workers.clear();
    s.listeners.clear();
    const auto html = render_status_html(s);
    EXPECT_TRUE(rows_of(html, "workers", "worker").empty());
    EXPECT_NE(html.find("<table id=\"workers\">"), std::string::npos);
    EXPECT_NE(html.find("<table id=\"listeners\">"), std::string::npos);
}

TEST(StatusHtml, every_string_is_escaped) {
    const auto s = hostile_snapshot();
    const auto html = render_status_html(s);
    EXPECT_EQ(html.find("<script"), std::string::npos);
    EXPECT_EQ(html.find("<img"), std::string::npos);
    EXPECT_EQ(html.find("<b>"), std::string::npos);
    EXPECT_EQ(html.find("\x1b"), std::string::npos);
    EXPECT_EQ(html.find("\xff"), std::string::npos);
    EXPECT_NE(html.find("&lt;/code&gt;&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;"), std::string::npos);
    EXPECT_NE(html.find("&lt;img src=x onerror=alert(1)&gt;"), std::string::npos);
    EXPECT_NE(html.find("killed by watchdog: &#39;x&#39;"), std::string::npos);
    // The attribute cannot be broken out of: the row still parses, with the state escaped.
    const auto rows = rows_of(html, "workers", "worker");
    ASSERT_EQ(rows.size(), s.workers.size());
    EXPECT_EQ(rows[0].state, "up&quot; onmouseover=&quot;alert(1)");
    EXPECT_EQ(html.find("onmouseover=\""), std::string::npos);
    EXPECT_NE(html.find("class=\"state off\""), std::string::npos) << "an unknown state gets no colour of its own";
}

// ---- metrics --------------------------------------------------------------------------------

struct parsed_metrics {
    std::map<std::string, std::string> types; // family -> type
    std::map<std::string, double> series;     // name{labels} -> value
    std::vector<std::string> errors;
};

// A strict reading of the text format as this renderer is meant to write it: each family is a
// HELP line, a TYPE line with the same name, then only samples of that name.
parsed_metrics parse_metrics(const std::string& text) {
    parsed_metrics out;
    std::set<std::string> helped;
    std::string help_name, family;
    std::istringstream in(text);
    std::string line;
    int n = 0;
    const auto error = [&](const std::string& what) {
        out.errors.push_back("line " + std::to_string(n) + ": " + what);
    };
    const std::regex help_re("# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) \\S.*");
    const std::regex type_re("# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge)");
    const std::regex sample_re(
        "([a-zA-Z_:][a-zA-Z0-9_:]*)(\\{(?:[a-zA-Z_][a-zA-Z0-9_]*=\"(?:[^\"\\\\\\n]|\\\\[\\\\\"n])*\",?)*\\})? "
        "(-?[0-9.e+]+|NaN|[+-]Inf)");
    std::smatch m;
    while (std::getline(in, line)) {
        ++n;
        if (std::regex_match(line, m, help_re)) {
            if (!helped.insert(m[1]).second)
                error("second HELP for " + m[1].str());
            help_name = m[1];
            family.clear();
        } else if (std::regex_match(line, m, type_re)) {
            if (m[1] != help_name)
                error("TYPE " + m[1].str() + " does not follow its HELP");
            if (out.types.count(m[1]))
                error("second TYPE for " + m[1].str());
            const bool total = m[1].str().ends_with("_total");
            if ((m[2] == "counter") != total)
                error(m[1].str() + ": counters and only counters end in _total");
            family = m[1];
            out.types[family] = m[2];
        } else if (std::regex_match(line, m, sample_re)) {
            if (m[1] != family)
                error("sample " + m[1].str() + " outside its family (in " + family + ")");
            const std::string key = m[1].str() + m[2].str();
            if (!out.series.emplace(key, std::stod(m[3])).second)
                error("duplicate series " + key);
        } else {
            error("unreadable: " + line);
        }
    }
    if (!text.ends_with("\n"))
        error("no final newline");
    return out;
}

TEST(StatusMetrics, every_sample_belongs_to_a_described_family) {
    const auto text = render_metrics(sample_snapshot());
    const auto p = parse_metrics(text);
    EXPECT_TRUE(p.errors.empty()) << ::testing::PrintToString(p.errors) << "\n" << text;
    EXPECT_GT(p.series.size(), 50u);
}

TEST(StatusMetrics, node_families) {
    const auto p = parse_metrics(render_metrics(sample_snapshot()));
    ASSERT_TRUE(p.errors.empty());
    const std::map<std::string, double> want = {
        {"sockherd_info{version=\"0.1.0\"}", 1},
        {"sockherd_healthy", 1},
        {"sockherd_state{state=\"running\"}", 1},
        {"sockherd_state{state=\"draining\"}", 0},
        {"sockherd_uptime_seconds", 10921.5},
        {"sockherd_start_time_seconds", 1.7e9},
        {"sockherd_generation", 3},
        {"sockherd_workers_configured", 3},
        {"sockherd_workers_up", 2},
        {"sockherd_handoffs_total", 77},
        {"sockherd_relays_total", 88},
        {"sockherd_worker_restarts_total", 4},
        {"sockherd_watchdog_kills_total", 1},
        {"sockherd_memory_replacements_total", 2},
        {"sockherd_pubsub_channels", 9},
        {"sockherd_config_last_reload_successful", 1},
        {"sockherd_config_last_reload_timestamp_seconds", 1'700'005'000},
        {"sockherd_listener_accepted_total{listener=\"0.0.0.0:8080\"}", 1234},
        {"sockherd_listener_accepted_total{listener=\"[::]:8080\"}", 5},
        {"sockherd_listener_accepting{listener=\"[::]:8080\"}", 0},
    };
    for (const auto& [series, value] : want) {
        auto it = p.series.find(series);
        ASSERT_NE(it, p.series.end()) << series;
        EXPECT_DOUBLE_EQ(it->second, value) << series;
    }
    EXPECT_EQ(p.types.at("sockherd_handoffs_total"), "counter");
    EXPECT_EQ(p.types.at("sockherd_workers_up"), "gauge");
}

// ---- the Redis bridge ------------------------------------------------------------------------

redis_bridge::stats_snapshot sample_redis() {
    redis_bridge::stats_snapshot r;
    r.current = redis_bridge::state::disconnected;
    r.url = "redis://:***@10.0.0.5:6379/0";
    r.node_id = "00112233445566778899aabbccddeeff";
    r.subscriber = "waiting";
    r.publisher = "connecting";
    r.reconnects = 3;
    r.connect_failures = 4;
    r.timeouts = 1;
    r.messages_in = 100;
    r.messages_out = 200;
    r.dropped_while_disconnected = 7;
    r.dropped_backpressure = 2;
    r.publish_failures = 5;
    r.duplicates_skipped = 200;
    r.decode_errors = 6;
    r.wanted_channels = 9;
    r.subscribed_channels = 8;
    r.last_error = "subscriber: connection refused";
    return r;
}

TEST(StatusRedis, json_metrics_text_and_html_show_the_bridge) {
    auto s = sample_snapshot();
    s.redis = sample_redis();
    const json j = json::parse(render_status_json(s));
    const auto& r = j.at("redis");
    EXPECT_EQ(r.at("state"), "disconnected");
    EXPECT_EQ(r.at("url"), "redis://:***@10.0.0.5:6379/0");
    EXPECT_EQ(r.at("node_id"), "00112233445566778899aabbccddeeff");
    EXPECT_EQ(r.at("subscriber"), "waiting");
    EXPECT_EQ(r.at("publisher"), "connecting");
    EXPECT_EQ(r.at("reconnects"), 3);
    EXPECT_EQ(r.at("connect_failures"), 4);
    EXPECT_EQ(r.at("timeouts"), 1);
    EXPECT_EQ(r.at("messages_in"), 100);
    EXPECT_EQ(r.at("messages_out"), 200);
    EXPECT_EQ(r.at("dropped_while_disconnected"), 7);
    EXPECT_EQ(r.at("dropped_backpressure"), 2);
    EXPECT_EQ(r.at("publish_failures"), 5);
    EXPECT_EQ(r.at("duplicates_skipped"), 200);
    EXPECT_EQ(r.at("decode_errors"), 6);
    EXPECT_EQ(r.at("wanted_channels"), 9);
    EXPECT_EQ(r.at("subscribed_channels"), 8);
    EXPECT_EQ(r.at("last_error"), "subscriber: connection refused");

    const auto p = parse_metrics(render_metrics(s));
    ASSERT_TRUE(p.errors.empty()) << ::testing::PrintToString(p.errors);
    const std::map<std::string, double> want = {
        {"sockherd_redis_up", 0},
        {"sockherd_redis_reconnects_total", 3},
        {"sockherd_redis_connect_failures_total", 4},
        {"sockherd_redis_timeouts_total", 1},
        {"sockherd_redis_messages_in_total", 100},
        {"sockherd_redis_messages_out_total", 200},
        {"sockherd_redis_dropped_total{reason=\"disconnected\"}", 7},
        {"sockherd_redis_dropped_total{reason=\"backpressure\"}", 2},
        {"sockherd_redis_publish_failures_total", 5},
        {"sockherd_redis_duplicates_skipped_total", 200},
        {"sockherd_redis_decode_errors_total", 6},
        {"sockherd_redis_subscribed_channels", 8},
        {"sockherd_redis_wanted_channels", 9},
    };
    for (const auto& [series, value] : want) {
        auto it = p.series.find(series);
        ASSERT_NE(it, p.series.end()) << series;
        EXPECT_DOUBLE_EQ(it->second, value) << series;
    }
    EXPECT_EQ(p.types.at("sockherd_redis_dropped_total"), "counter");
    s.redis->current = redis_bridge::state::connected;
    EXPECT_EQ(parse_metrics(render_metrics(s)).series.at("sockherd_redis_up"), 1);

    const auto text = render_status_text(s);
    EXPECT_NE(text.find("redis connected (redis://:***@10.0.0.5:6379/0), 8/9 channels subscribed; 100 in, 200 out, "
                        "9 dropped, 3 reconnects; last error: subscriber: connection refused"),
              std::string::npos)
        << text;
    const auto html = render_status_html(s);
    EXPECT_NE(html.find("<section id=\"redis\">"), std::string::npos);
    EXPECT_NE(html.find("8/9 channels subscribed"), std::string::npos);

    // Off: no redis families at all, and no summary line.
    s.redis.reset();
    EXPECT_EQ(parse_metrics(render_metrics(s)).types.count("sockherd_redis_up"), 0u);
    EXPECT_EQ(render_status_text(s).find("redis "), std::string::npos);
}

TEST(StatusMetrics, per_worker_series_are_labelled_by_slot_and_pid) {
    const auto s = sample_snapshot();
    const auto p = parse_metrics(render_metrics(s));
    ASSERT_TRUE(p.errors.empty());
    // One family per worker counter, with each process's value.
    for (const auto& [name, member] : counter_names) {
        const std::string family = "sockherd_worker_" + name;
        ASSERT_TRUE(p.types.count(family)) << family;
        EXPECT_EQ(p.types.at(family), name.ends_with("_total") ? "counter" : "gauge") << family;
        for (const auto& w : s.workers) {
            if (!w.pid)
                continue;
            const auto key =
                family + "{worker=\"" + std::to_string(w.id) + "\",pid=\"" + std::to_string(*w.pid) + "\"}";
            ASSERT_TRUE(p.series.count(key)) << key;
            EXPECT_EQ(p.series.at(key), static_cast<double>(w.counters.*member)) << key;
        }
    }
    // Rejections: one series per process and reason.
    ASSERT_EQ(p.types.count("sockherd_worker_rejections_total"), 1u);
    EXPECT_EQ(p.types.at("sockherd_worker_rejections_total"), "counter");
    for (const auto& w : s.workers) {
        if (!w.pid)
            continue;
        for (std::size_t r = 0; r < rejection_count; ++r) {
            const auto key = "sockherd_worker_rejections_total{worker=\"" + std::to_string(w.id) + "\",pid=\"" +
                std::to_string(*w.pid) + "\",reason=\"" + std::string(rejection_names[r]) + "\"}";
            ASSERT_TRUE(p.series.count(key)) << key;
            EXPECT_EQ(p.series.at(key), static_cast<double>(w.counters.rejections_total[r])) << key;
        }
    }
    EXPECT_EQ(p.series.at("sockherd_worker_up{worker=\"0\",pid=\"101\"}"), 1);
    EXPECT_EQ(p.series.at("sockherd_worker_up{worker=\"1\"}"), 0);
    EXPECT_EQ(p.series.at("sockherd_worker_up{worker=\"1\",pid=\"99\"}"), 0);
    EXPECT_EQ(p.series.at("sockherd_worker_state{worker=\"1\",state=\"failing\"}"), 1);
    EXPECT_EQ(p.series.at("sockherd_worker_state{worker=\"1\",pid=\"99\",state=\"draining\"}"), 1);
    EXPECT_EQ(p.series.at("sockherd_worker_state{worker=\"1\",pid=\"99\",state=\"up\"}"), 0);
    EXPECT_EQ(p.series.at("sockherd_worker_heartbeat_age_seconds{worker=\"0\",pid=\"101\"}"), 0.5);
    // Slot-wide counters: once per slot, from the slot's own row.
    EXPECT_EQ(p.series.at("sockherd_worker_slot_restarts_total{worker=\"1\"}"), 4);
    EXPECT_EQ(p.series.at("sockherd_worker_relay_drops_total{worker=\"1\"}"), 7);
    EXPECT_EQ(p.series.at("sockherd_worker_relay_drops_total{worker=\"0\"}"), 2);
    // A row without a process has no per-process series.
    for (const auto& [key, value] : p.series) {
        if (key.find("{worker=\"1\"}") != std::string::npos) {
            EXPECT_TRUE(key.starts_with("sockherd_worker_up{") || key.starts_with("sockherd_worker_slot_restarts") ||
                        key.starts_with("sockherd_worker_relay_drops"))
                << key;
        }
    }
}

TEST(StatusMetrics, label_values_are_escaped) {
    const auto text = render_metrics(hostile_snapshot());
    const auto p = parse_metrics(text);
    EXPECT_TRUE(p.errors.empty()) << ::testing::PrintToString(p.errors);
    EXPECT_TRUE(p.series.count(R"(sockherd_listener_accepted_total{listener="a\"b\\c\nd"})")) << text;
    EXPECT_TRUE(p.series.count(R"(sockherd_info{version="0.1.0\"evil"})"));
    EXPECT_TRUE(p.series.count(R"x(sockherd_worker_state{worker="0",pid="101",state="up\" onmouseover=\"alert(1)"})x"));
}

TEST(StatusMetrics, duplicate_rows_do_not_make_duplicate_series) {
    auto s = sample_snapshot();
    s.workers.push_back(s.workers[0]); // same slot and pid twice
    s.workers.push_back(s.workers[1]); // same slot without a pid twice
    s.listeners.push_back(s.listeners[0]);
    const auto p = parse_metrics(render_metrics(s));
    EXPECT_TRUE(p.errors.empty()) << ::testing::PrintToString(p.errors);
}

// The real consumer's parser (prometheus_client, as Debian packages it) reads the document, and
// every family comes out typed: that parser turns anything it does not recognise into an
// "untyped" family rather than failing, so a clean parse alone proves little.
TEST(StatusMetrics, python_prometheus_client_parses_it) {
    if (std::system("/usr/bin/python3 -c 'import prometheus_client.parser' >/dev/null 2>&1") != 0)
        GTEST_SKIP() << "/usr/bin/python3 with prometheus_client is not installed";
    const auto dir = std::filesystem::temp_directory_path() / ("sockherd-status-test-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    const auto metrics = dir / "metrics.txt", script = dir / "check.py", result = dir / "result.json";
    const auto text = render_metrics(hostile_snapshot());
    std::ofstream(metrics, std::ios::binary) << text;
    std::ofstream(script) << R"(import json, sys
from prometheus_client.parser import text_string_to_metric_families
families = list(text_string_to_metric_families(open(sys.argv[1], encoding="utf-8").read()))
json.dump([{"name": f.name, "type": f.type,
            "samples": [{"name": s.name, "labels": s.labels, "value": s.value} for s in f.samples]}
           for f in families], open(sys.argv[2], "w"))
)";
    const std::string cmd = "/usr/bin/python3 " + script.string() + " " + metrics.string() + " " + result.string();
    ASSERT_EQ(std::system(cmd.c_str()), 0) << text;

    json families;
    std::ifstream(result) >> families;
    std::filesystem::remove_all(dir);
    const auto p = parse_metrics(text);
    EXPECT_EQ(families.size(), p.types.size());
    std::size_t samples = 0;
    bool found_listener = false;
    for (const auto& f : families) {
        EXPECT_NE(f["type"], "untyped") << f["name"];
        samples += f["samples"].size();
        for (const auto& sample : f["samples"])
            if (sample["name"] == "sockherd_listener_accepted_total" && sample["labels"]["listener"] == "a\"b\\c\nd")
                found_listener = sample["value"] == 1234.0;
    }
    EXPECT_EQ(samples, p.series.size());
    EXPECT_TRUE(found_listener) << "the escaped label value comes back as it was";
}

// ---- sockherd status ------------------------------------------------------------------------

TEST(StatusText, summary_and_aligned_table) {
    const auto s = sample_snapshot();
    const auto text = render_status_text(s);
    EXPECT_NE(text.find("sockherd 0.1.0"), std::string::npos);
    EXPECT_NE(text.find("pid 4242"), std::string::npos);
    EXPECT_NE(text.find("3h 02m"), std::string::npos);
    EXPECT_NE(text.find("config /etc/sockherd/sockherd.toml"), std::string::npos);
    EXPECT_NE(text.find("last reload ok at 2023-11-14"), std::string::npos);

    std::vector<std::string> lines;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);)
        lines.push_back(line);
    const auto header = std::find_if(lines.begin(), lines.end(), [](auto& l) { return l.starts_with("SLOT "); });
    ASSERT_NE(header, lines.end()) << text;
    const std::vector<std::string> columns{"SLOT", "PID",     "STATE", "UPTIME",   "CONNS",    "WS",
                                           "MSGS-IN", "MSGS-OUT", "RSS", "RESTARTS", "LAST-EXIT"};
    std::vector<std::size_t> at;
    for (const auto& c : columns) {
        at.push_back(header->find(c, at.empty() ? 0 : at.back()));
        ASSERT_NE(at.back(), std::string::npos) << c;
    }
    ASSERT_GE(lines.end() - header, static_cast<long>(s.workers.size() + 1));
    for (std::size_t i = 0; i < s.workers.size(); ++i) {
        const auto& row = header[static_cast<long>(i) + 1];
        // Every column starts where its heading does, after a blank.
        for (std::size_t c = 1; c < at.size(); ++c) {
            ASSERT_LT(at[c], row.size()) << row;
            EXPECT_EQ(row[at[c] - 1], ' ') << row;
            EXPECT_NE(row[at[c]], ' ') << "column " << columns[c] << " in: " << row;
        }
    }
    EXPECT_NE(header[1].find("41.2 MiB"), std::string::npos);
    EXPECT_TRUE(header[2].ends_with("exited with status 1"));
    EXPECT_EQ(header[2].substr(at[1], 2), "- ") << "no pid";
    EXPECT_NE(text.find("LISTENER"), std::string::npos);
    EXPECT_NE(text.find("[::]:8080"), std::string::npos);
}

TEST(StatusText, no_control_characters_reach_the_terminal) {
    const auto text = render_status_text(hostile_snapshot());
    for (char c : text)
        EXPECT_TRUE(c == '\n' || static_cast<unsigned char>(c) >= 0x20)
            << "byte " << static_cast<int>(static_cast<unsigned char>(c));
    EXPECT_EQ(text.find("\xff"), std::string::npos);
    // The multi-line exit reason stays on its row.
    EXPECT_NE(text.find("onerror=alert(1)>\xEF\xBF\xBDkilled by watchdog"), std::string::npos);
}

TEST(StatusText, human_durations) {
    auto s = sample_snapshot();
    s.workers.resize(1);
    for (const auto& [seconds, shown] : std::vector<std::pair<double, std::string>>{
             {0, "0s"}, {59.9, "59s"}, {61, "1m 01s"}, {3600, "1h 00m"}, {90061, "1d 01h"}}) {
        s.uptime_seconds = seconds;
        EXPECT_NE(render_status_text(s).find("uptime " + shown + " "), std::string::npos) << seconds;
    }
}

} // namespace
} // namespace sockherd::supervisor
