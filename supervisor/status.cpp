// The renderers of a node_snapshot: see supervisor/status.hpp.

#include "supervisor/status.hpp"

#include <algorithm>
#include <cmath>
#include <ctime>
#include <initializer_list>
#include <iterator>
#include <set>
#include <string_view>
#include <utility>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/units.hpp"

namespace sockherd::supervisor {
namespace {

// ordered_json keeps the documented field order, which is the order a person reads.
using json = nlohmann::ordered_json;

enum class metric_type { counter, gauge };

// worker_counters field by field (uptime_ms aside), in status.json's order. The key is the JSON
// field and, prefixed with sockherd_worker_, the metric family; counters' keys end in _total.
struct counter_field {
    std::string_view key;
    std::uint64_t worker_counters::*member;
    metric_type type;
    std::string_view help;
};

constexpr counter_field counter_fields[] = {
    {"connections", &worker_counters::connections, metric_type::gauge,
     "Connections open in the worker (HTTP and WebSocket)."},
    {"connections_total", &worker_counters::connections_total, metric_type::counter,
     "Connections the worker has accepted."},
    {"ws_sessions", &worker_counters::ws_sessions, metric_type::gauge, "WebSocket sessions open in the worker."},
    {"ws_sessions_total", &worker_counters::ws_sessions_total, metric_type::counter,
     "WebSocket sessions the worker has opened."},
    {"http_requests_total", &worker_counters::http_requests_total, metric_type::counter,
     "HTTP requests the worker has received."},
    {"messages_in_total", &worker_counters::messages_in_total, metric_type::counter,
     "WebSocket messages the worker has received."},
    {"messages_out_total", &worker_counters::messages_out_total, metric_type::counter,
     "WebSocket messages the worker has sent."},
    {"bytes_in_total", &worker_counters::bytes_in_total, metric_type::counter,
     "Bytes the worker has read from clients."},
    {"bytes_out_total", &worker_counters::bytes_out_total, metric_type::counter,
     "Bytes the worker has written to clients."},
    {"send_queue_drops_total", &worker_counters::send_queue_drops_total, metric_type::counter,
     "Messages dropped from the send queues of consumers that fell behind."},
    {"slow_consumer_disconnects_total", &worker_counters::slow_consumer_disconnects_total, metric_type::counter,
     "Clients disconnected for not keeping up with their messages."},
    {"publishes_total", &worker_counters::publishes_total, metric_type::counter,
     "Messages published on the worker (WebSocket or HTTP)."},
    {"publish_drops_total", &worker_counters::publish_drops_total, metric_type::counter,
     "Publishes the worker could not pass on."},
    {"deliveries_total", &worker_counters::deliveries_total, metric_type::counter,
     "Messages the worker handed to its local subscribers."},
    {"limit_hits_total", &worker_counters::limit_hits_total, metric_type::counter,
     "Limits the worker's clients ran into (sizes, timeouts, connection counts): the limit reasons of "
     "sockherd_worker_rejections_total."},
    {"bad_requests_total", &worker_counters::bad_requests_total, metric_type::counter,
     "Malformed or refused input (requests, handshakes, frames, PROXY headers, TLS, origins, publishes): the "
     "other reasons of sockherd_worker_rejections_total, and JSON ops answered with an error."},
    {"rss_bytes", &worker_counters::rss_bytes, metric_type::gauge,
     "Resident set size of the worker process in bytes."},
};

constexpr std::string_view node_states[] = {"running", "draining", "stopping"};
constexpr std::string_view worker_states[] = {"up", "starting", "draining", "failing", "stopped"};

// ---- text hygiene ---------------------------------------------------------------------------

enum class line_breaks { keep, replace };

struct utf8_lead {
    unsigned char first, last; // lead byte range
    std::size_t length;
    unsigned char second_lo, second_hi;
};
constexpr utf8_lead utf8_leads[] = {
    {0xC2, 0xDF, 2, 0x80, 0xBF}, {0xE0, 0xE0, 3, 0xA0, 0xBF}, {0xE1, 0xEC, 3, 0x80, 0xBF},
    {0xED, 0xED, 3, 0x80, 0x9F}, {0xEE, 0xEF, 3, 0x80, 0xBF}, {0xF0, 0xF0, 4, 0x90, 0xBF},
    {0xF1, 0xF3, 4, 0x80, 0xBF}, {0xF4, 0xF4, 4, 0x80, 0x8F},
};

// `s` with invalid UTF-8 and control characters (C0 but, when kept, tab and newline; DEL; C1)
// replaced by U+FFFD: config paths and exit reasons are bytes from outside, and neither a
// browser, a terminal (escape sequences) nor a Prometheus parser should see them raw.
std::string printable(std::string_view s, line_breaks breaks) {
    constexpr std::string_view replacement = "\xEF\xBF\xBD";
    std::string out;
    out.reserve(s.size());
    std::size_t i = 0;
    while (i < s.size()) {
        const auto c = static_cast<unsigned char>(s[i]);
        if (c < 0x80) {
            const bool line_break = c == '\t' || c == '\n';
            const bool control = (c < 0x20 && !(line_break && breaks == line_breaks::keep)) || c == 0x7F;
            if (control)
                out += replacement;
            else
                out += static_cast<char>(c);
            ++i;
            continue;
        }
        // Well-formed sequences (Unicode table 3-7): no overlongs, no surrogates, nothing past
        // U+10FFFF.
        const auto* l = std::find_if(std::begin(utf8_leads), std::end(utf8_leads),
                                     [c](const utf8_lead& x) { return c >= x.first && c <= x.last; });
        const std::size_t n = l == std::end(utf8_leads) ? 0 : l->length;
        bool ok = n > 0 && i + n <= s.size();
        for (std::size_t k = 1; ok && k < n; ++k) {
            const auto b = static_cast<unsigned char>(s[i + k]);
            ok = k == 1 ? (b >= l->second_lo && b <= l->second_hi) : (b >= 0x80 && b <= 0xBF);
        }
        const bool c1_control = ok && c == 0xC2 && static_cast<unsigned char>(s[i + 1]) < 0xA0;
        if (!ok || c1_control) {
            out += replacement;
            i += ok ? n : 1;
            continue;
        }
        out.append(s.substr(i, n));
        i += n;
    }
    return out;
}

std::string html_escape(std::string_view s) {
    std::string out;
    out.reserve(s.size() + 16);
    for (char c : printable(s, line_breaks::keep)) {
        switch (c) {
        case '&': out += "&amp;"; break;
        case '<': out += "&lt;"; break;
        case '>': out += "&gt;"; break;
        case '"': out += "&quot;"; break;
        case '\'': out += "&#39;"; break;
        default: out += c;
        }
    }
    return out;
}

// Characters on a terminal (code points; wide characters count as one).
std::size_t display_width(std::string_view s) {
    std::size_t n = 0;
    for (char c : s)
        n += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
    return n;
}

// ---- human units ----------------------------------------------------------------------------

// "42s", "5m 07s", "3h 02m", "2d 04h": two units are enough to read at a glance.
std::string human_duration(double seconds) {
    if (!std::isfinite(seconds) || seconds < 0)
        return "-";
    const auto s = static_cast<std::uint64_t>(std::min(seconds, 1e15));
    if (s < 60)
        return fmt::format("{}s", s);
    if (s < 3600)
        return fmt::format("{}m {:02}s", s / 60, s % 60);
    if (s < 86400)
        return fmt::format("{}h {:02}m", s / 3600, s % 3600 / 60);
    return fmt::format("{}d {:02}h", s / 86400, s % 86400 / 3600);
}

// "2024-05-01 12:00:00 UTC".
std::string utc_time(std::int64_t unix_seconds) {
    const auto t = static_cast<std::time_t>(unix_seconds);
    std::tm tm{};
    char buf[64];
    if (::gmtime_r(&t, &tm) == nullptr || std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S UTC", &tm) == 0)
        return std::to_string(unix_seconds);
    return buf;
}

std::string reload_summary(const reload_result& r) {
    std::string out = r.result;
    if (r.at_unix)
        out += " at " + utc_time(*r.at_unix);
    if (!r.message.empty())
        out += ": " + r.message;
    return out;
}

// Seconds rounded to milliseconds for JSON: more digits are noise.
double json_seconds(double s) { return std::isfinite(s) ? std::round(s * 1000) / 1000 : s; }

// ---- Prometheus exposition ------------------------------------------------------------------

std::string label_value(std::string_view v) {
    std::string out;
    for (char c : printable(v, line_breaks::keep)) {
        if (c == '\\') out += "\\\\";
        else if (c == '"') out += "\\\"";
        else if (c == '\n') out += "\\n";
        else out += c;
    }
    return out;
}

// {a="x",b="y"}; label names are ours, values are escaped.
std::string label_set(std::initializer_list<std::pair<std::string_view, std::string_view>> labels) {
    std::string out = "{";
    for (const auto& [name, value] : labels) {
        if (out.size() > 1)
            out += ',';
        fmt::format_to(std::back_inserter(out), "{}=\"{}\"", name, label_value(value));
    }
    out += '}';
    return out;
}

// Appends families to a document: HELP and TYPE once, then the family's samples.
class exposition {
public:
    explicit exposition(std::string& out) : out_(out) {}

    void family(std::string_view name, metric_type type, std::string_view help) {
        name_ = name;
        fmt::format_to(std::back_inserter(out_), "# HELP {} {}\n# TYPE {} {}\n", name, help, name,
                       type == metric_type::counter ? "counter" : "gauge");
    }
    void sample(std::string_view labels, std::uint64_t value) {
        fmt::format_to(std::back_inserter(out_), "{}{} {}\n", name_, labels, value);
    }
    void sample(std::string_view labels, double value) {
        if (std::isnan(value))
            fmt::format_to(std::back_inserter(out_), "{}{} NaN\n", name_, labels);
        else if (std::isinf(value))
            fmt::format_to(std::back_inserter(out_), "{}{} {}Inf\n", name_, labels, value > 0 ? '+' : '-');
        else
            fmt::format_to(std::back_inserter(out_), "{}{} {}\n", name_, labels, value);
    }
    // A family with one unlabelled sample.
    template <class T>
    void single(std::string_view name, metric_type type, std::string_view help, T value) {
        family(name, type, help);
        sample("", value);
    }

private:
    std::string& out_;
    std::string_view name_;
};

// The label sets of one worker row. A process is {worker, pid}: a draining leftover shares its
// slot's id, the pid keeps its series apart. Slot-wide counters (restarts, relay drops) are
// {worker} and come from the first row of each slot, which is the slot's own. Empty strings mean
// "no series of that kind for this row".
struct row_labels {
    std::string worker, pid; // label values; pid empty without a process
    std::string state;       // worker_up: process labels, or {worker} without a process
    std::string process;     // per-process families; empty without a pid
    std::string slot;        // slot-wide families
};

std::vector<row_labels> labels_of(const std::vector<worker_row>& rows) {
    std::vector<row_labels> out;
    std::set<std::string> seen_state;
    std::set<unsigned> seen_slots;
    for (const auto& w : rows) {
        row_labels l;
        l.worker = std::to_string(w.id);
        if (w.pid) {
            l.pid = std::to_string(*w.pid);
            l.process = label_set({{"worker", l.worker}, {"pid", l.pid}});
        }
        l.state = w.pid ? l.process : label_set({{"worker", l.worker}});
        if (!seen_state.insert(l.state).second) {
            // A second row with the same slot and pid (or two without a pid): its series would clash.
            l.state.clear();
            l.process.clear();
        }
        if (seen_slots.insert(w.id).second)
            l.slot = label_set({{"worker", l.worker}});
        out.push_back(std::move(l));
    }
    return out;
}

// ---- plain-text table -----------------------------------------------------------------------

// Left-aligned columns two spaces apart; the last column is not padded.
std::string text_table(const std::vector<std::vector<std::string>>& rows) {
    std::vector<std::size_t> widths;
    for (const auto& r : rows) {
        widths.resize(std::max(widths.size(), r.size()));
        for (std::size_t c = 0; c < r.size(); ++c)
            widths[c] = std::max(widths[c], display_width(r[c]));
    }
    std::string out;
    for (const auto& r : rows) {
        for (std::size_t c = 0; c < r.size(); ++c) {
            out += r[c];
            if (c + 1 < r.size())
                out.append(widths[c] - display_width(r[c]) + 2, ' ');
        }
        out += '\n';
    }
    return out;
}

std::string text_cell(std::string_view s) {
    return s.empty() ? "-" : printable(s, line_breaks::replace);
}

// The state's CSS class: only the states we know get a colour, and nothing else from the snapshot
// ends up in a class attribute.
std::string_view state_class(std::string_view state) {
    if (state == "up" || state == "running")
        return "ok";
    if (state == "starting" || state == "draining" || state == "stopping")
        return "warn";
    if (state == "failing")
        return "bad";
    return "off";
}

constexpr std::string_view page_style = R"(
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:1.5em;color:#1f2328;background:#fff}
h1{font-size:1.4em;margin:0 0 .4em}h2{font-size:1.1em;margin:1.4em 0 .4em}
.muted{color:#656d76;font-weight:normal}
#node dl{display:grid;grid-template-columns:max-content 1fr;gap:.2em 1.2em;margin:0}
#node dt{color:#656d76}#node dd{margin:0}
table{border-collapse:collapse;font-variant-numeric:tabular-nums}
th,td{padding:.3em .7em;border-bottom:1px solid #d0d7de;text-align:left;white-space:nowrap}
th{background:#f6f8fa;font-weight:600}.num{text-align:right}td.wrap{white-space:normal;max-width:30em}
.state{display:inline-block;padding:0 .5em;border-radius:1em;font-weight:600}
.ok{color:#116329;background:#dafbe1}.warn{color:#7d4e00;background:#fff8c5}
.bad{color:#a40e26;background:#ffebe9}.off{color:#57606a;background:#eaeef2}
code{font:12px ui-monospace,monospace}
)";

} // namespace

namespace {

// "connected (redis://127.0.0.1:6379), 3/3 channels subscribed; 10 in, 12 out, 0 dropped, …"
std::string redis_summary(const redis_bridge::stats_snapshot& r) {
    std::string s = std::string(to_string(r.current)) + " (" + r.url + "), " + std::to_string(r.subscribed_channels) +
        "/" + std::to_string(r.wanted_channels) + " channels subscribed; " + std::to_string(r.messages_in) + " in, " +
        std::to_string(r.messages_out) + " out, " +
        std::to_string(r.dropped_while_disconnected + r.dropped_backpressure) + " dropped, " +
        std::to_string(r.reconnects) + " reconnects";
    if (!r.last_error.empty())
        s += "; last error: " + r.last_error;
    return s;
}

} // namespace

std::string render_status_json(const node_snapshot& s) {
    json workers = json::array();
    for (const auto& w : s.workers) {
        json o;
        o["id"] = w.id;
        o["pid"] = w.pid ? json(*w.pid) : json(nullptr);
        o["state"] = w.state;
        o["generation"] = w.generation;
        o["uptime_seconds"] = json_seconds(w.uptime_seconds);
        o["heartbeat_age_seconds"] =
            w.heartbeat_age_seconds ? json(json_seconds(*w.heartbeat_age_seconds)) : json(nullptr);
        for (const auto& f : counter_fields)
            o[std::string(f.key)] = w.counters.*f.member;
        json rejections = json::object();
        for (std::size_t i = 0; i < rejection_count; ++i)
            rejections[std::string(rejection_names[i])] = w.counters.rejections_total[i];
        o["rejections"] = std::move(rejections);
        o["worker_uptime_ms"] = w.counters.uptime_ms;
        o["restarts"] = w.restarts;
        o["last_exit"] = w.last_exit;
        o["relay_drops_total"] = w.relay_drops_total;
        workers.push_back(std::move(o));
    }
    json listeners = json::array();
    for (const auto& l : s.listeners)
        listeners.push_back({{"address", l.address}, {"mode", l.mode}, {"accepting", l.accepting},
                             {"accepted_total", l.accepted_total}});

    json doc;
    doc["version"] = s.version;
    doc["pid"] = s.pid;
    doc["state"] = s.state;
    doc["started_at"] = s.started_at_unix;
    doc["uptime_seconds"] = json_seconds(s.uptime_seconds);
    doc["generation"] = s.generation;
    doc["config"] = s.config_source;
    doc["last_reload"] = {{"result", s.last_reload.result},
                          {"message", s.last_reload.message},
                          {"at", s.last_reload.at_unix ? json(*s.last_reload.at_unix) : json(nullptr)}};
    doc["workers_configured"] = s.workers_configured;
    doc["workers_up"] = s.workers_up;
    doc["healthy"] = s.healthy();
    doc["workers"] = std::move(workers);
    doc["listeners"] = std::move(listeners);
    doc["totals"] = {{"handoffs", s.handoffs_total},
                     {"relays", s.relays_total},
                     {"worker_restarts", s.worker_restarts_total},
                     {"watchdog_kills", s.watchdog_kills_total},
                     {"memory_replacements", s.memory_replacements_total},
                     {"pubsub_channels", s.pubsub_channels}};
    // Summed over the workers in the table (a restarted worker's counters start again at zero).
    json rejection_totals = json::object();
    for (std::size_t i = 0; i < rejection_count; ++i) {
        std::uint64_t sum = 0;
        for (const auto& w : s.workers)
            sum += w.counters.rejections_total[i];
        rejection_totals[std::string(rejection_names[i])] = sum;
    }
    doc["totals"]["rejections"] = std::move(rejection_totals);
    if (s.redis) {
        const auto& r = *s.redis;
        doc["redis"] = {{"state", to_string(r.current)},
                        {"url", r.url},
                        {"node_id", r.node_id},
                        {"subscriber", r.subscriber},
                        {"publisher", r.publisher},
                        {"reconnects", r.reconnects},
                        {"connect_failures", r.connect_failures},
                        {"timeouts", r.timeouts},
                        {"messages_in", r.messages_in},
                        {"messages_out", r.messages_out},
                        {"dropped_while_disconnected", r.dropped_while_disconnected},
                        {"dropped_backpressure", r.dropped_backpressure},
                        {"publish_failures", r.publish_failures},
                        {"duplicates_skipped", r.duplicates_skipped},
                        {"decode_errors", r.decode_errors},
                        {"wanted_channels", r.wanted_channels},
                        {"subscribed_channels", r.subscribed_channels},
                        {"last_error", r.last_error}};
    } else {
        doc["redis"] = nullptr;
    }
    // replace: a config path or exit reason that is not UTF-8 must not make the document invalid.
    return doc.dump(2, ' ', false, json::error_handler_t::replace) + "\n";
}

std::string render_status_html(const node_snapshot& s) {
    std::string out;
    auto o = std::back_inserter(out);
    fmt::format_to(o,
                   "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
                   "<meta http-equiv=\"refresh\" content=\"2\">\n"
                   "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
                   "<title>sockherd: {}, {}/{} workers up</title>\n<style>{}</style>\n</head>\n<body>\n",
                   html_escape(s.state), s.workers_up, s.workers_configured, page_style);

    fmt::format_to(o, "<section id=\"node\">\n<h1>sockherd <span class=\"muted\">{}</span></h1>\n<dl>\n",
                   html_escape(s.version));
    fmt::format_to(o, "<dt>State</dt><dd><span class=\"state {}\">{}</span> <span class=\"state {}\">{}</span></dd>\n",
                   state_class(s.state), html_escape(s.state), s.healthy() ? "ok" : "bad",
                   s.healthy() ? "healthy" : "unhealthy");
    fmt::format_to(o, "<dt>Workers</dt><dd>{} of {} up</dd>\n", s.workers_up, s.workers_configured);
    fmt::format_to(o, "<dt>PID</dt><dd>{}</dd>\n", s.pid);
    fmt::format_to(o, "<dt>Uptime</dt><dd>{} <span class=\"muted\">since {}</span></dd>\n",
                   human_duration(s.uptime_seconds), utc_time(s.started_at_unix));
    fmt::format_to(o, "<dt>Generation</dt><dd>{}</dd>\n", s.generation);
    fmt::format_to(o, "<dt>Config</dt><dd><code>{}</code></dd>\n", html_escape(s.config_source));
    fmt::format_to(o, "<dt>Last reload</dt><dd class=\"wrap\">{}</dd>\n", html_escape(reload_summary(s.last_reload)));
    fmt::format_to(o,
                   "<dt>Totals</dt><dd>{} hand-offs, {} relays, {} worker restarts, {} watchdog kills, "
                   "{} memory replacements, {} pub/sub channels</dd>\n</dl>\n</section>\n",
                   s.handoffs_total, s.relays_total, s.worker_restarts_total, s.watchdog_kills_total,
                   s.memory_replacements_total, s.pubsub_channels);
    if (s.redis)
        fmt::format_to(o, "<section id=\"redis\">\n<h2>Redis bridge</h2>\n<p class=\"wrap\">{}</p>\n</section>\n",
                       html_escape(redis_summary(*s.redis)));

    out += "<h2>Workers</h2>\n<table id=\"workers\">\n<thead><tr><th class=\"num\">Slot</th>"
           "<th class=\"num\">PID</th><th>State</th><th class=\"num\">Uptime</th><th class=\"num\">Connections</th>"
           "<th class=\"num\">WebSocket sessions</th>"
           "<th class=\"num\">Msgs in</th><th class=\"num\">Msgs out</th><th class=\"num\">RSS</th>"
           "<th class=\"num\">Restarts</th><th>Last exit</th></tr></thead>\n<tbody>\n";
    for (const auto& w : s.workers) {
        const std::string state = html_escape(w.state);
        const std::string heartbeat =
            w.heartbeat_age_seconds ? fmt::format("last heartbeat {:.1f}s ago", *w.heartbeat_age_seconds)
                                    : std::string("no heartbeat yet");
        fmt::format_to(o, "<tr class=\"worker\" data-id=\"{}\" data-state=\"{}\"><td class=\"num\">{}</td>", w.id,
                       state, w.id);
        if (w.pid)
            fmt::format_to(o, "<td class=\"num\">{}</td>", *w.pid);
        else
            out += "<td class=\"num\">&mdash;</td>";
        fmt::format_to(o, "<td><span class=\"state {}\" title=\"{}\">{}</span></td>", state_class(w.state),
                       heartbeat, state);
        if (w.pid)
            fmt::format_to(o, "<td class=\"num\">{}</td>", human_duration(w.uptime_seconds));
        else
            out += "<td class=\"num\">&mdash;</td>";
        fmt::format_to(o, "<td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>"
                          "<td class=\"num\">{}</td>",
                       w.counters.connections, w.counters.ws_sessions, w.counters.messages_in_total,
                       w.counters.messages_out_total);
        if (w.pid && w.counters.rss_bytes > 0)
            fmt::format_to(o, "<td class=\"num\">{}</td>", human_size(w.counters.rss_bytes));
        else
            out += "<td class=\"num\">&mdash;</td>";
        fmt::format_to(o, "<td class=\"num\">{}</td><td class=\"wrap\">{}</td></tr>\n", w.restarts,
                       w.last_exit.empty() ? std::string("&mdash;") : html_escape(w.last_exit));
    }
    out += "</tbody>\n</table>\n";

    out += "<h2>Listeners</h2>\n<table id=\"listeners\">\n<thead><tr><th>Address</th><th>Mode</th>"
           "<th>Accepting</th><th class=\"num\">Accepted</th></tr></thead>\n<tbody>\n";
    for (const auto& l : s.listeners)
        fmt::format_to(o,
                       "<tr class=\"listener\"><td><code>{}</code></td><td>{}</td>"
                       "<td><span class=\"state {}\">{}</span></td><td class=\"num\">{}</td></tr>\n",
                       html_escape(l.address), html_escape(l.mode), l.accepting ? "ok" : "warn",
                       l.accepting ? "yes" : "paused", l.accepted_total);
    out += "</tbody>\n</table>\n";
    out += "<p class=\"muted\">Refreshes every 2 s. Also: <a href=\"/status.json\">status.json</a>, "
           "<a href=\"/metrics\">metrics</a>.</p>\n</body>\n</html>\n";
    return out;
}

std::string render_metrics(const node_snapshot& s) {
    std::string out;
    exposition m(out);
    using enum metric_type;

    m.family("sockherd_info", gauge, "Always 1; the version label names the running sockherd.");
    m.sample(label_set({{"version", s.version}}), std::uint64_t{1});
    m.family("sockherd_state", gauge,
             "1 for the node's current state (running, draining, stopping), 0 for the others.");
    bool known_state = false;
    for (auto st : node_states) {
        known_state = known_state || st == s.state;
        m.sample(label_set({{"state", st}}), std::uint64_t{st == s.state});
    }
    if (!known_state)
        m.sample(label_set({{"state", s.state}}), std::uint64_t{1});
    m.single("sockherd_healthy", gauge,
             "1 when the node is running with at least one worker up (what /healthz answers).",
             std::uint64_t{s.healthy()});
    m.single("sockherd_start_time_seconds", gauge, "When the supervisor started, in seconds since the epoch.",
             static_cast<double>(s.started_at_unix));
    m.single("sockherd_uptime_seconds", gauge, "Seconds since the supervisor started.", s.uptime_seconds);
    m.single("sockherd_generation", gauge, "Configuration generation (1 at start, +1 per successful reload).",
             s.generation);
    m.single("sockherd_config_last_reload_successful", gauge, "0 when the last configuration reload failed, else 1.",
             std::uint64_t{s.last_reload.result != "failed"});
    m.family("sockherd_config_last_reload_timestamp_seconds", gauge,
             "When the configuration was last reloaded, in seconds since the epoch (absent before a reload).");
    if (s.last_reload.at_unix)
        m.sample("", static_cast<double>(*s.last_reload.at_unix));
    m.single("sockherd_workers_configured", gauge, "Worker slots the configuration asks for.",
             std::uint64_t{s.workers_configured});
    m.single("sockherd_workers_up", gauge, "Workers in state up.", std::uint64_t{s.workers_up});
    m.single("sockherd_handoffs_total", counter, "Connections the supervisor handed to workers.", s.handoffs_total);
    m.single("sockherd_relays_total", counter, "Pub/sub messages the supervisor relayed to workers.", s.relays_total);
    m.single("sockherd_worker_restarts_total", counter, "Worker processes started to replace one that exited.",
             s.worker_restarts_total);
    m.single("sockherd_watchdog_kills_total", counter, "Workers killed for missing their heartbeats.",
             s.watchdog_kills_total);
    m.single("sockherd_memory_replacements_total", counter, "Workers replaced for going over their memory limit.",
             s.memory_replacements_total);
    m.single("sockherd_pubsub_channels", gauge, "Pub/sub channels some worker has subscribers for.",
             s.pubsub_channels);
    if (s.redis) {
        const auto& r = *s.redis;
        m.single("sockherd_redis_up", gauge, "1 while the Redis bridge is connected (both connections), else 0.",
                 std::uint64_t{r.current == redis_bridge::state::connected});
        m.single("sockherd_redis_reconnects_total", counter, "Redis connections re-established after a loss.",
                 r.reconnects);
        m.single("sockherd_redis_connect_failures_total", counter, "Attempts to connect to Redis that failed.",
                 r.connect_failures);
        m.single("sockherd_redis_timeouts_total", counter, "Redis connects or commands that timed out.", r.timeouts);
        m.single("sockherd_redis_messages_in_total", counter, "Messages from other nodes received through Redis.",
                 r.messages_in);
        m.single("sockherd_redis_messages_out_total", counter, "Messages published to Redis and acknowledged.",
                 r.messages_out);
        m.family("sockherd_redis_dropped_total", counter,
                 "Messages not published to Redis: the publisher was disconnected, or too far behind.");
        m.sample(label_set({{"reason", "disconnected"}}), r.dropped_while_disconnected);
        m.sample(label_set({{"reason", "backpressure"}}), r.dropped_backpressure);
        m.single("sockherd_redis_publish_failures_total", counter,
                 "Publishes Redis refused or lost with the connection.", r.publish_failures);
        m.single("sockherd_redis_duplicates_skipped_total", counter,
                 "This node's own messages that came back from Redis and were skipped.", r.duplicates_skipped);
        m.single("sockherd_redis_decode_errors_total", counter,
                 "Messages on this node's Redis channels that were not sockherd envelopes.", r.decode_errors);
        m.single("sockherd_redis_subscribed_channels", gauge, "Channels Redis confirmed this node is subscribed to.",
                 static_cast<std::uint64_t>(r.subscribed_channels));
        m.single("sockherd_redis_wanted_channels", gauge, "Channels some local worker has subscribers for.",
                 static_cast<std::uint64_t>(r.wanted_channels));
    }

    std::vector<std::string> listener_labels;
    std::set<std::string> seen_listeners;
    for (const auto& l : s.listeners) {
        auto labels = label_set({{"listener", l.address}});
        listener_labels.push_back(seen_listeners.insert(labels).second ? std::move(labels) : std::string());
    }
    m.family("sockherd_listener_accepting", gauge, "1 while the listener accepts connections, 0 while it is paused.");
    for (std::size_t i = 0; i < s.listeners.size(); ++i)
        if (!listener_labels[i].empty())
            m.sample(listener_labels[i], std::uint64_t{s.listeners[i].accepting});
    m.family("sockherd_listener_accepted_total", counter, "Connections the listener has accepted.");
    for (std::size_t i = 0; i < s.listeners.size(); ++i)
        if (!listener_labels[i].empty())
            m.sample(listener_labels[i], s.listeners[i].accepted_total);

    // Per worker. Family by family, each over every row, so a family's samples stay together.
    const auto rows = labels_of(s.workers);
    const auto each_row = [&](auto&& emit) {
        for (std::size_t i = 0; i < s.workers.size(); ++i)
            emit(s.workers[i], rows[i]);
    };
    m.family("sockherd_worker_up", gauge, "1 when the worker is up (ready for connections), else 0.");
    each_row([&](const worker_row& w, const row_labels& l) {
        if (!l.state.empty())
            m.sample(l.state, std::uint64_t{w.state == "up"});
    });
    m.family("sockherd_worker_state", gauge,
             "1 for the worker's current state (up, starting, draining, failing, stopped), 0 for the others.");
    each_row([&](const worker_row& w, const row_labels& l) {
        if (l.state.empty())
            return;
        const auto labels = [&](std::string_view st) {
            return l.pid.empty() ? label_set({{"worker", l.worker}, {"state", st}})
                                 : label_set({{"worker", l.worker}, {"pid", l.pid}, {"state", st}});
        };
        bool known = false;
        for (auto st : worker_states) {
            known = known || st == w.state;
            m.sample(labels(st), std::uint64_t{st == w.state});
        }
        if (!known)
            m.sample(labels(w.state), std::uint64_t{1});
    });
    m.family("sockherd_worker_generation", gauge, "Configuration generation the worker runs.");
    each_row([&](const worker_row& w, const row_labels& l) {
        if (!l.process.empty())
            m.sample(l.process, w.generation);
    });
    m.family("sockherd_worker_uptime_seconds", gauge, "Seconds since the worker process was started.");
    each_row([&](const worker_row& w, const row_labels& l) {
        if (!l.process.empty())
            m.sample(l.process, w.uptime_seconds);
    });
    m.family("sockherd_worker_heartbeat_age_seconds", gauge, "Seconds since the worker's last heartbeat.");
    each_row([&](const worker_row& w, const row_labels& l) {
        if (!l.process.empty() && w.heartbeat_age_seconds)
            m.sample(l.process, *w.heartbeat_age_seconds);
    });
    for (const auto& f : counter_fields) {
        const std::string name = "sockherd_worker_" + std::string(f.key);
        m.family(name, f.type, f.help);
        each_row([&](const worker_row& w, const row_labels& l) {
            if (!l.process.empty())
                m.sample(l.process, w.counters.*f.member);
        });
    }
    m.family("sockherd_worker_rejections_total", counter,
             "Clients the worker turned away or cut off, by reason (a limit hit or malformed input).");
    each_row([&](const worker_row& w, const row_labels& l) {
        if (l.process.empty())
            return;
        for (std::size_t i = 0; i < rejection_count; ++i)
            m.sample(label_set({{"worker", l.worker}, {"pid", l.pid}, {"reason", rejection_names[i]}}),
                     w.counters.rejections_total[i]);
    });
    m.family("sockherd_worker_slot_restarts_total", counter,
             "Processes the worker slot started after its first (the slot outlives its processes).");
    each_row([&](const worker_row& w, const row_labels& l) {
        if (!l.slot.empty())
            m.sample(l.slot, std::uint64_t{w.restarts});
    });
    m.family("sockherd_worker_relay_drops_total", counter,
             "Pub/sub relays the supervisor dropped for the worker slot because its channel was full.");
    each_row([&](const worker_row& w, const row_labels& l) {
        if (!l.slot.empty())
            m.sample(l.slot, w.relay_drops_total);
    });
    return out;
}

std::string render_status_text(const node_snapshot& s) {
    std::string out;
    auto o = std::back_inserter(out);
    fmt::format_to(o, "sockherd {}  pid {}  {}  {}\n", text_cell(s.version), s.pid, text_cell(s.state),
                   s.healthy() ? "healthy" : "UNHEALTHY");
    fmt::format_to(o, "uptime {} (since {})  generation {}  workers {}/{} up\n", human_duration(s.uptime_seconds),
                   utc_time(s.started_at_unix), s.generation, s.workers_up, s.workers_configured);
    fmt::format_to(o, "config {}\n", text_cell(s.config_source));
    fmt::format_to(o, "last reload {}\n", text_cell(reload_summary(s.last_reload)));
    fmt::format_to(o,
                   "hand-offs {}  relays {}  worker restarts {}  watchdog kills {}  memory replacements {}  "
                   "pub/sub channels {}\n\n",
                   s.handoffs_total, s.relays_total, s.worker_restarts_total, s.watchdog_kills_total,
                   s.memory_replacements_total, s.pubsub_channels);
    if (s.redis)
        fmt::format_to(o, "redis {}\n\n", text_cell(redis_summary(*s.redis)));

    std::vector<std::vector<std::string>> workers{
        {"SLOT", "PID", "STATE", "UPTIME", "CONNS", "WS", "MSGS-IN", "MSGS-OUT", "RSS", "RESTARTS", "LAST-EXIT"}};
    for (const auto& w : s.workers) {
        const auto& c = w.counters;
        workers.push_back({std::to_string(w.id), w.pid ? std::to_string(*w.pid) : "-", text_cell(w.state),
                           w.pid ? human_duration(w.uptime_seconds) : "-", std::to_string(c.connections),
                           std::to_string(c.ws_sessions), std::to_string(c.messages_in_total),
                           std::to_string(c.messages_out_total),
                           w.pid && c.rss_bytes > 0 ? human_size(c.rss_bytes) : "-", std::to_string(w.restarts),
                           text_cell(w.last_exit)});
    }
    out += text_table(workers);

    std::vector<std::vector<std::string>> listeners{{"LISTENER", "MODE", "ACCEPTING", "ACCEPTED"}};
    for (const auto& l : s.listeners)
        listeners.push_back({text_cell(l.address), text_cell(l.mode), l.accepting ? "yes" : "paused",
                             std::to_string(l.accepted_total)});
    out += '\n';
    out += text_table(listeners);
    return out;
}

} // namespace sockherd::supervisor
