// Pub/sub across nodes through Redis ([redis] url): two nodes (two supervisors on their own ports,
// 2 workers each) share one redis-server that the test starts on a free loopback port
// (tests/redis_server.hpp; skipped only when /usr/bin/redis-server is missing). Subscribers on
// every worker of both nodes, publishers on both (raw WebSocket, JSON protocol, HTTP), order and
// exactly-once checks as in pubsub_test.cpp; a Redis killed and restarted mid-stream; binary and
// 1 MiB payloads; SUBSCRIBE/UNSUBSCRIBE following local interest, checked against Redis itself;
// /status.json's "redis" member and the sockherd_redis_* metrics.

#include <signal.h>

#include <algorithm>
#include <charconv>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/integration/harness.hpp"
#include "tests/integration/status_json.hpp"
#include "tests/redis_server.hpp"

namespace sockherd::test {
namespace {

using namespace std::chrono_literals;
using json = nlohmann::json;

constexpr std::size_t mib = 1024 * 1024;
const header_list auth{{"Authorization", "Bearer tok-123"}};

// ---- config -------------------------------------------------------------------------------------

struct bridged_options {
    std::string redis_url;                 // empty: no [redis] section at all
    std::string max_message_size = "1MiB";
    std::string max_body_size = "2MiB";
};

// As pubsub_test.cpp's nodes, with 2 workers: raw channels under /ws/, JSON ops on /pubsub,
// round-robin scheduling (consecutive connections alternate over the workers), publish token
// "tok-123"; and the bridge, with a short reconnect backoff so that a restarted Redis is
// found again within a second.
config_text bridged_config(const bridged_options& o) {
    config_text cfg{2};
    cfg.routes = "[[route]]\npath = \"/ws/\"\nkind = \"pubsub\"\n\n"
                 "[[route]]\npath = \"/pubsub\"\nkind = \"pubsub\"\nprotocol = \"json\"\n";
    cfg.extra = "[scheduler]\npolicy = \"round-robin\"\n\n"
                "[websocket]\nmax_message_size = \"" +
        o.max_message_size +
        "\"\nsend_queue_limit = \"16MiB\"\n\n"
        "[http]\nmax_body_size = \"" +
        o.max_body_size +
        "\"\n\n"
        "[publish]\ntokens = [\"tok-123\"]\n\n";
    if (!o.redis_url.empty())
        cfg.extra += "[redis]\nurl = \"" + o.redis_url +
            "\"\nconnect_timeout = \"1s\"\ncommand_timeout = \"2s\"\n"
            "reconnect_backoff = { min = \"50ms\", max = \"500ms\" }\n\n";
    return cfg;
}

config_text bridged_config(const redis_server& r) { return bridged_config(bridged_options{r.url()}); }

// Every test of the suite needs a redis-server.
class redis : public testing::Test {
protected:
    void SetUp() override {
        if (!redis_server_available())
            GTEST_SKIP() << redis_server_binary << " is missing (apt-get install redis-server)";
    }
};

// ---- small tools ---------------------------------------------------------------------------------

// Runs fn(0..n-1) on `threads` threads; item i goes to thread i % threads.
void parallel_for(std::size_t n, std::size_t threads, const std::function<void(std::size_t)>& fn) {
    std::vector<std::thread> pool;
    for (std::size_t t = 0; t < threads; ++t)
        pool.emplace_back([&, t] {
            for (std::size_t i = t; i < n; i += threads)
                fn(i);
        });
    for (auto& th : pool)
        th.join();
}

std::string shorten(std::string_view s, std::size_t max = 80) {
    if (s.size() <= max)
        return std::string(s);
    return std::string(s.substr(0, max)) + "... (" + std::to_string(s.size()) + " bytes)";
}

std::string random_bytes(std::size_t n, std::uint32_t seed) {
    std::mt19937 gen(seed);
    std::string s(n, '\0');
    for (auto& c : s)
        c = static_cast<char>(gen() & 0xff);
    return s;
}

std::optional<std::size_t> to_index(std::string_view s) {
    std::size_t v = 0;
    const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc() || end != s.data() + s.size() || s.empty())
        return std::nullopt;
    return v;
}

constexpr std::string_view base64_alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

std::string base64_encode(std::string_view bytes) {
    std::string out;
    out.reserve((bytes.size() + 2) / 3 * 4);
    for (std::size_t i = 0; i < bytes.size(); i += 3) {
        std::uint32_t v = static_cast<std::uint8_t>(bytes[i]) << 16;
        if (i + 1 < bytes.size())
            v |= static_cast<std::uint8_t>(bytes[i + 1]) << 8;
        if (i + 2 < bytes.size())
            v |= static_cast<std::uint8_t>(bytes[i + 2]);
        out.push_back(base64_alphabet[(v >> 18) & 63]);
        out.push_back(base64_alphabet[(v >> 12) & 63]);
        out.push_back(i + 1 < bytes.size() ? base64_alphabet[(v >> 6) & 63] : '=');
        out.push_back(i + 2 < bytes.size() ? base64_alphabet[v & 63] : '=');
    }
    return out;
}

std::optional<std::string> base64_decode(std::string_view text) {
    if (text.size() % 4 != 0)
        return std::nullopt;
    std::string out;
    out.reserve(text.size() / 4 * 3);
    for (std::size_t i = 0; i < text.size(); i += 4) {
        std::uint32_t v = 0;
        int pad = 0;
        for (std::size_t j = 0; j < 4; ++j) {
            const char c = text[i + j];
            std::uint32_t d = 0;
            if (c == '=' && i + 4 == text.size() && j >= 2) {
                ++pad;
            } else {
                if (pad > 0)
                    return std::nullopt;
                const auto pos = base64_alphabet.find(c);
                if (pos == std::string_view::npos)
                    return std::nullopt;
                d = static_cast<std::uint32_t>(pos);
            }
            v = (v << 6) | d;
        }
        out.push_back(static_cast<char>((v >> 16) & 0xff));
        if (pad < 2)
            out.push_back(static_cast<char>((v >> 8) & 0xff));
        if (pad < 1)
            out.push_back(static_cast<char>(v & 0xff));
    }
    return out;
}

// POST /publish/<channel>; empty when it answered 202 {"channel":…,"workers":<local_workers>}
// (`local_workers`: the node's workers with subscribers; nullopt: not checked).
std::string http_publish(const node& n, std::string_view channel, std::string body,
                         std::string_view content_type = "text/plain; charset=utf-8",
                         std::optional<unsigned> local_workers = std::nullopt, milliseconds timeout = default_timeout) {
    header_list headers = auth;
    headers.emplace_back("Content-Type", std::string(content_type));
    const auto r = http_request(n.port(), http::verb::post, "/publish/" + std::string(channel), headers,
                                std::move(body), timeout);
    if (r.status != 202)
        return "POST /publish/" + std::string(channel) + ": " + describe(r);
    if (local_workers) {
        const auto j = json::parse(r.body, nullptr, false);
        if (j != json{{"channel", channel}, {"workers", *local_workers}})
            return "POST /publish/" + std::string(channel) + ": 202 '" + r.body + "', expected workers " +
                std::to_string(*local_workers);
    }
    return {};
}

// ---- the bridge in /status.json -----------------------------------------------------------------

// The "redis" member (null when it is missing).
const json& redis_of(const json& st) {
    static const json none;
    const auto it = st.find("redis");
    return it == st.end() ? none : *it;
}

std::int64_t redis_int(const json& st, std::string_view key) { return int_field(redis_of(st), key); }
std::string redis_str(const json& st, std::string_view key) { return str_field(redis_of(st), key); }

// For failure messages: the "redis" member on one line.
std::string redis_dump(const std::optional<json>& st) {
    if (!st)
        return "(no status)";
    return redis_of(*st).dump();
}

// Both connections up, and Redis confirmed a subscription to every wanted channel (`channels`).
bool bridge_ready(const json& st, std::int64_t channels) {
    return redis_str(st, "state") == "connected" && redis_str(st, "subscriber") == "ready" &&
        redis_str(st, "publisher") == "ready" && redis_int(st, "wanted_channels") == channels &&
        redis_int(st, "subscribed_channels") == channels;
}

// Lost Redis: both connections down (retrying).
bool bridge_down(const json& st) {
    return redis_str(st, "state") == "disconnected" && redis_str(st, "subscriber") != "ready" &&
        redis_str(st, "publisher") != "ready";
}

// Every publish the bridge was handed, accounted for once: acknowledged, dropped or failed.
std::int64_t publishes_accounted(const json& st) {
    return redis_int(st, "messages_out") + redis_int(st, "dropped_while_disconnected") +
        redis_int(st, "dropped_backpressure") + redis_int(st, "publish_failures");
}

// Waits until both nodes' bridges are ready with `channels` channels and Redis itself counts
// `numsub` subscribers of `redis_channel` (one per node subscribed). Empty on success.
std::string wait_bridges_ready(const node& a, const node& b, redis_client& rc, std::int64_t channels,
                               const std::string& redis_channel, long long numsub, milliseconds timeout = 10s) {
    const auto deadline = clock::now() + timeout;
    for (const auto* n : {&a, &b}) {
        const auto w = wait_status(*n, [&](const json& st) { return bridge_ready(st, channels); },
                                   std::chrono::duration_cast<milliseconds>(deadline - clock::now()));
        if (!w.ok)
            return std::string(n == &a ? "node A" : "node B") + "'s bridge is not ready with " +
                std::to_string(channels) + " channel(s): " + redis_dump(w.last);
    }
    long long seen = -1;
    if (!wait_until([&] { return (seen = rc.pubsub_numsub(redis_channel)) == numsub; },
                    std::chrono::duration_cast<milliseconds>(deadline - clock::now())))
        return "PUBSUB NUMSUB " + redis_channel + " is " + std::to_string(seen) + ", expected " +
            std::to_string(numsub);
    return {};
}

// ---- /metrics ---------------------------------------------------------------------------------------

// The value of the sample written exactly `sample` (name and label set, e.g.
// sockherd_redis_dropped_total{reason="disconnected"}); nullopt when there is none or it is no number.
std::optional<double> metric(const std::string& text, std::string_view sample) {
    std::istringstream lines(text);
    std::string line;
    for (int i = 0; i < 100000 && std::getline(lines, line); ++i) {
        if (line.size() <= sample.size() || !line.starts_with(sample) || line[sample.size()] != ' ')
            continue;
        try {
            std::size_t used = 0;
            const std::string value = line.substr(sample.size() + 1);
            const double v = std::stod(value, &used);
            return used == value.size() ? std::optional<double>(v) : std::nullopt;
        } catch (const std::exception&) {
            return std::nullopt;
        }
    }
    return std::nullopt;
}

// "# TYPE <family> <type>" is there.
bool has_type(const std::string& text, std::string_view family, std::string_view type) {
    return text.find("\n# TYPE " + std::string(family) + " " + std::string(type) + "\n") != std::string::npos;
}

// ---- subscribers -------------------------------------------------------------------------------------

// One delivery as a raw subscriber sees it: text or bytes. A JSON-protocol delivery is unwrapped:
// base64 decoded for binary, a JSON value as its compact text (`value` holds it).
struct delivery {
    std::string error;
    bool text = false;
    std::string data;
    std::optional<json> value;
};

// A subscriber of one channel: a raw client of /ws/<channel>, or a JSON-protocol client that
// subscribed to it. Not thread-safe (one thread per subscriber at a time).
class subscriber {
public:
    // Connected and subscribed (the handshake, or the "subscribed" event, means live node-wide);
    // nullptr and `why` otherwise.
    static std::unique_ptr<subscriber> raw(std::uint16_t port, std::string channel, std::string& why) {
        auto s = std::unique_ptr<subscriber>(new subscriber(std::move(channel), false));
        if (auto ec = s->ws_.connect(port, "/ws/" + s->channel_)) {
            why = "/ws/" + s->channel_ + ": " + ec.message();
            return nullptr;
        }
        if (s->ws_.handshake_response().result() != http::status::switching_protocols) {
            why = "/ws/" + s->channel_ + ": status " + std::to_string(s->ws_.handshake_response().result_int());
            return nullptr;
        }
        if (!s->ws_.worker()) {
            why = "/ws/" + s->channel_ + ": no X-Sockherd-Worker in the handshake response";
            return nullptr;
        }
        s->worker_ = *s->ws_.worker();
        return s;
    }

    static std::unique_ptr<subscriber> json_protocol(std::uint16_t port, std::string channel, std::string& why) {
        auto s = std::unique_ptr<subscriber>(new subscriber(std::move(channel), true));
        if (why = s->json_connect(port); !why.empty())
            return nullptr;
        if (why = s->op_and_ack("subscribe", "subscribed"); !why.empty())
            return nullptr;
        return s;
    }

    unsigned worker() const { return worker_; }
    bool is_json() const { return json_; }
    ws_client& ws() { return ws_; }
    std::string describe() const {
        return std::string(json_ ? "JSON" : "raw") + " subscriber on worker " + std::to_string(worker_);
    }

    delivery next(milliseconds timeout = default_timeout) {
        delivery d;
        const auto m = ws_.receive(timeout);
        if (m.ec) {
            d.error = "receive: " + m.ec.message();
            return d;
        }
        if (!json_) {
            d.text = m.text;
            d.data = m.data;
            return d;
        }
        if (!m.text) {
            d.error = "a binary frame on the JSON protocol: '" + shorten(m.data) + "'";
            return d;
        }
        auto j = json::parse(m.data, nullptr, false);
        if (!j.is_object() || j.value("channel", "") != channel_ || !j.contains("data")) {
            d.error = "not a delivery on '" + channel_ + "': " + shorten(m.data, 200);
            return d;
        }
        if (j.size() == 3 && j.value("encoding", "") == "base64" && j["data"].is_string()) {
            const auto bytes = base64_decode(j["data"].get<std::string>());
            if (!bytes) {
                d.error = "data is not base64: " + shorten(m.data, 200);
                return d;
            }
            d.data = *bytes;
            return d;
        }
        if (j.size() != 2) {
            d.error = "unexpected delivery: " + shorten(m.data, 200);
            return d;
        }
        d.text = true;
        if (j["data"].is_string()) {
            d.data = j["data"].get<std::string>();
        } else {
            d.data = j["data"].dump();
            d.value = j["data"];
        }
        return d;
    }

    // JSON protocol only: {"op":"unsubscribe"} and its acknowledgement.
    std::string unsubscribe() { return op_and_ack("unsubscribe", "unsubscribed"); }

private:
    subscriber(std::string channel, bool json_protocol) : channel_(std::move(channel)), json_(json_protocol) {}

    std::string json_connect(std::uint16_t port) {
        if (auto ec = ws_.connect(port, "/pubsub"))
            return "/pubsub: " + ec.message();
        if (ws_.handshake_response().result() != http::status::switching_protocols)
            return "/pubsub: status " + std::to_string(ws_.handshake_response().result_int());
        const auto m = ws_.receive();
        if (m.ec)
            return "welcome: " + m.ec.message();
        const auto w = json::parse(m.data, nullptr, false);
        if (!w.is_object() || w.value("event", "") != "welcome" || !w.contains("worker") ||
            !w["worker"].is_number_unsigned())
            return "the first frame is not a welcome: " + shorten(m.data, 200);
        worker_ = w["worker"].get<unsigned>();
        if (ws_.worker() != worker_)
            return "the welcome names worker " + std::to_string(worker_) + ", X-Sockherd-Worker another";
        return {};
    }

    std::string op_and_ack(std::string_view op, std::string_view event) {
        if (auto ec = ws_.send_text(json{{"op", op}, {"channel", channel_}}.dump()))
            return std::string(op) + ": send: " + ec.message();
        const auto m = ws_.receive();
        if (m.ec)
            return std::string(op) + ": receive: " + m.ec.message();
        if (json::parse(m.data, nullptr, false) != json{{"event", event}, {"channel", channel_}})
            return std::string(op) + ": expected the '" + std::string(event) + "' event, got " + shorten(m.data, 200);
        return {};
    }

    std::string channel_;
    bool json_ = false;
    unsigned worker_ = 0;
    ws_client ws_;
};

// Connects `count` raw subscribers of `channel` (round-robin: alternating workers) and appends them.
std::string add_raw(std::vector<std::unique_ptr<subscriber>>& to, const node& n, const std::string& channel,
                    std::size_t count) {
    for (std::size_t i = 0; i < count; ++i) {
        std::string why;
        auto s = subscriber::raw(n.port(), channel, why);
        if (!s)
            return why;
        to.push_back(std::move(s));
    }
    return {};
}

// Workers -> subscribers on it.
std::map<unsigned, int> per_worker(const std::vector<std::unique_ptr<subscriber>>& subs) {
    std::map<unsigned, int> m;
    for (const auto& s : subs)
        ++m[s->worker()];
    return m;
}

// Nothing more arrives within `t`. The harness closes a connection whose read timed out: call last.
std::string expect_quiet(subscriber& s, milliseconds t) {
    const auto m = s.ws().receive(t);
    if (!m.ec)
        return std::string("an extra ") + (m.text ? "text" : "binary") + " message arrived: '" + shorten(m.data) + "'";
    if (m.ec != beast::error::timeout)
        return "the connection ended instead: " + m.ec.message();
    return {};
}

void expect_all_quiet(const std::vector<std::unique_ptr<subscriber>>& subs, std::string_view what,
                      failure_log& failures, milliseconds t = 300ms) {
    parallel_for(subs.size(), 4, [&](std::size_t i) {
        if (auto why = expect_quiet(*subs[i], t); !why.empty())
            failures.add(std::string(what) + " " + std::to_string(i) + " (" + subs[i]->describe() + "): " + why);
    });
}

// Receives one delivery and compares it with an expected one (type and bytes).
std::string expect_delivery(subscriber& s, std::string_view data, bool text, milliseconds timeout = 20s) {
    const auto d = s.next(timeout);
    if (!d.error.empty())
        return d.error;
    if (d.text != text)
        return std::string("expected a ") + (text ? "text" : "binary") + " message, got a " +
            (d.text ? "text" : "binary") + " one of " + std::to_string(d.data.size()) + " bytes: '" +
            shorten(d.data) + "'";
    if (d.data.size() != data.size())
        return "got " + std::to_string(d.data.size()) + " bytes, expected " + std::to_string(data.size()) + ": '" +
            shorten(d.data) + "'";
    if (d.data != data) {
        const auto at = std::mismatch(d.data.begin(), d.data.end(), data.begin()).first - d.data.begin();
        return "same size (" + std::to_string(data.size()) + " bytes), different bytes from offset " +
            std::to_string(at);
    }
    return {};
}

// ---- numbered streams ------------------------------------------------------------------------------

// What one observer must, may or must not get of a published message.
enum class expect : std::uint8_t { required, optional, forbidden };

// Messages "<source>:<index>" from named sources, each source numbering its messages 0, 1, 2, ...
// For one observer (a node's subscribers), rules[source][index] says what it must get of each
// message published so far. Filled by the publishing thread between reads.
struct stream_plan {
    std::vector<std::string> sources;
    std::vector<std::vector<expect>> rules;

    explicit stream_plan(std::vector<std::string> names)
        : sources(std::move(names)), rules(sources.size()) {}

    std::optional<std::pair<std::size_t, std::size_t>> parse(std::string_view s) const {
        const auto colon = s.find(':');
        if (colon == std::string_view::npos)
            return std::nullopt;
        const auto it = std::find(sources.begin(), sources.end(), s.substr(0, colon));
        const auto i = to_index(s.substr(colon + 1));
        if (it == sources.end() || !i)
            return std::nullopt;
        return std::pair{static_cast<std::size_t>(it - sources.begin()), *i};
    }
};

// One subscriber's progress through a numbered stream.
struct stream_state {
    std::vector<std::optional<std::size_t>> last;    // per source: the last index received
    std::vector<std::vector<std::size_t>> received;  // per source: every index received, in order
};

// Reads until every required message published so far has come. Each source's messages must come
// in order, at most once; no forbidden one; no required one skipped. Empty on success, else what
// went wrong first (the subscriber is then of no further use).
std::string catch_up(subscriber& s, const stream_plan& plan, stream_state& st, milliseconds timeout = 10s) {
    const auto n = plan.sources.size();
    st.last.resize(n);
    st.received.resize(n);
    auto first_missing = [&]() -> std::optional<std::pair<std::size_t, std::size_t>> {
        for (std::size_t k = 0; k < n; ++k)
            for (std::size_t i = st.last[k] ? *st.last[k] + 1 : 0; i < plan.rules[k].size(); ++i)
                if (plan.rules[k][i] == expect::required)
                    return std::pair{k, i};
        return std::nullopt;
    };
    auto name = [&](std::size_t k, std::size_t i) { return plan.sources[k] + ":" + std::to_string(i); };
    for (std::size_t guard = 0; guard < 1'000'000; ++guard) {
        const auto missing = first_missing();
        if (!missing)
            return {};
        const auto d = s.next(timeout);
        if (!d.error.empty())
            return "waiting for " + name(missing->first, missing->second) + ": " + d.error;
        if (!d.text)
            return "a binary message: '" + shorten(d.data) + "'";
        const auto id = plan.parse(d.data);
        if (!id || id->second >= plan.rules[id->first].size())
            return "an unexpected message: '" + shorten(d.data) + "'";
        const auto [k, i] = *id;
        if (st.last[k] && i <= *st.last[k])
            return name(k, i) + " after " + name(k, *st.last[k]) + " (a duplicate or reordering)";
        for (std::size_t j = st.last[k] ? *st.last[k] + 1 : 0; j < i; ++j)
            if (plan.rules[k][j] == expect::required)
                return name(k, i) + " came, but " + name(k, j) + " never did (lost)";
        if (plan.rules[k][i] == expect::forbidden)
            return name(k, i) + " came, but it must not have";
        st.last[k] = i;
        st.received[k].push_back(i);
    }
    return "too many messages";
}

// catch_up for every subscriber, in parallel; failures are collected.
void catch_up_all(const std::vector<std::unique_ptr<subscriber>>& subs, const stream_plan& plan,
                  std::vector<stream_state>& states, std::string_view what, failure_log& failures) {
    states.resize(subs.size());
    parallel_for(subs.size(), 4, [&](std::size_t i) {
        if (auto why = catch_up(*subs[i], plan, states[i]); !why.empty())
            failures.add(std::string(what) + " " + std::to_string(i) + " (" + subs[i]->describe() + "): " + why);
    });
}

// =====================================================================================================
// 1. Two nodes, every subscriber gets every message once, in order per publisher
// =====================================================================================================

TEST_F(redis, two_nodes_every_subscriber_gets_every_message_once_in_order) {
    redis_server rs;
    redis_client rc(rs.port());
    node a(bridged_config(rs));
    node b(bridged_config(rs));
    ASSERT_TRUE(a.wait_ready(2)) << "node A did not become ready";
    ASSERT_TRUE(b.wait_ready(2)) << "node B did not become ready";

    // Per node: 6 raw subscribers of "room" (3 per worker), 2 of which also publish (one on each
    // worker), and a JSON-protocol subscriber.
    struct side {
        node* n;
        std::string name;
        std::vector<std::unique_ptr<subscriber>> subs;
        std::map<unsigned, subscriber*> ws_publisher; // worker -> a raw subscriber that publishes
        std::unique_ptr<ws_client> json_publisher;    // /pubsub, not subscribed
    };
    std::vector<side> sides(2);
    sides[0].n = &a;
    sides[0].name = "A";
    sides[1].n = &b;
    sides[1].name = "B";
    for (auto& sd : sides) {
        ASSERT_EQ(add_raw(sd.subs, *sd.n, "room", 6), "") << "node " << sd.name;
        EXPECT_EQ(per_worker(sd.subs), (std::map<unsigned, int>{{0, 3}, {1, 3}}))
            << "round-robin did not spread node " << sd.name << "'s raw subscribers 3/3";
        for (auto& s : sd.subs)
            sd.ws_publisher.emplace(s->worker(), s.get());
        ASSERT_EQ(sd.ws_publisher.size(), 2u);
        std::string why;
        auto js = subscriber::json_protocol(sd.n->port(), "room", why);
        ASSERT_TRUE(js) << "node " << sd.name << ": " << why;
        sd.subs.push_back(std::move(js));
        sd.json_publisher = std::make_unique<ws_client>();
        ASSERT_FALSE(sd.json_publisher->connect(sd.n->port(), "/pubsub")) << "node " << sd.name;
        const auto welcome = sd.json_publisher->receive();
        ASSERT_FALSE(welcome.ec);
    }
    // Subscribers on all 4 workers of the two nodes.
    std::set<std::pair<std::string, unsigned>> workers_seen;
    for (const auto& sd : sides)
        for (const auto& s : sd.subs)
            workers_seen.emplace(sd.name, s->worker());
    EXPECT_EQ(workers_seen.size(), 4u);

    // The handshakes say "live on the whole node"; across nodes it is live once Redis confirmed
    // both nodes' SUBSCRIBE.
    ASSERT_EQ(wait_bridges_ready(a, b, rc, 1, "sockherd:room", 2), "");

    // Sources: per node, a raw WebSocket publisher on each worker, a JSON-protocol publisher and a
    // backend's sequential HTTP publishes (landing on both workers).
    constexpr std::size_t per_source = 60;
    stream_plan plan({"Aw0", "Aw1", "Aj", "Ah", "Bw0", "Bw1", "Bj", "Bh"});
    for (auto& r : plan.rules)
        r.assign(per_source, expect::required);

    failure_log failures;
    std::map<std::string, std::set<unsigned>> http_workers;
    std::mutex http_mutex;
    {
        std::vector<std::thread> pool;
        for (std::size_t si = 0; si < sides.size(); ++si) {
            auto& sd = sides[si];
            for (unsigned w : {0u, 1u})
                pool.emplace_back([&, w] {
                    const std::string src = sd.name + "w" + std::to_string(w);
                    for (std::size_t i = 0; i < per_source; ++i)
                        if (auto ec = sd.ws_publisher.at(w)->ws().send_text(src + ":" + std::to_string(i))) {
                            failures.add(src + " message " + std::to_string(i) + ": " + ec.message());
                            return;
                        }
                });
            pool.emplace_back([&] {
                const std::string src = sd.name + "j";
                for (std::size_t i = 0; i < per_source; ++i)
                    if (auto ec = sd.json_publisher->send_text(
                            json{{"op", "publish"}, {"channel", "room"}, {"data", src + ":" + std::to_string(i)}}
                                .dump())) {
                        failures.add(src + " message " + std::to_string(i) + ": " + ec.message());
                        return;
                    }
            });
            pool.emplace_back([&] {
                const std::string src = sd.name + "h";
                for (std::size_t i = 0; i < per_source; ++i) {
                    header_list headers = auth;
                    headers.emplace_back("Content-Type", "text/plain");
                    const auto r = http_request(sd.n->port(), http::verb::post, "/publish/room", headers,
                                                src + ":" + std::to_string(i));
                    if (r.status != 202 || json::parse(r.body, nullptr, false) !=
                                               json{{"channel", "room"}, {"workers", 2}}) {
                        failures.add(src + " POST " + std::to_string(i) + ": " + describe(r));
                        return;
                    }
                    std::lock_guard lock(http_mutex);
                    if (const auto w = r.worker())
                        http_workers[sd.name].insert(*w);
                }
            });
        }
        for (auto& th : pool)
            th.join();
    }
    ASSERT_EQ(failures.count(), 0u) << failures.str();
    EXPECT_EQ(http_workers["A"].size(), 2u) << "node A's POSTs did not land on both workers";
    EXPECT_EQ(http_workers["B"].size(), 2u) << "node B's POSTs did not land on both workers";

    // Everyone, on both nodes: all 8 x 60, each source in order, none twice; then nothing more.
    for (auto& sd : sides) {
        std::vector<stream_state> states;
        catch_up_all(sd.subs, plan, states, "node " + sd.name + " subscriber", failures);
    }
    EXPECT_EQ(failures.count(), 0u) << failures.str();
    for (auto& sd : sides)
        expect_all_quiet(sd.subs, "node " + sd.name + " subscriber", failures);
    EXPECT_EQ(failures.count(), 0u) << failures.str();

    // Each node sent its 240 to Redis once, got the other's 240, and skipped its own coming back.
    const std::int64_t each = 4 * per_source;
    for (auto* n : {&a, &b}) {
        const auto w = wait_status(*n, [&](const json& st) {
            return redis_int(st, "messages_out") == each && redis_int(st, "messages_in") == each &&
                redis_int(st, "duplicates_skipped") == each;
        }, 10s);
        EXPECT_TRUE(w.ok) << (n == &a ? "node A: " : "node B: ") << redis_dump(w.last);
        ASSERT_TRUE(w.last);
        for (const char* zero : {"dropped_while_disconnected", "dropped_backpressure", "publish_failures",
                                 "decode_errors", "reconnects", "connect_failures", "timeouts"})
            EXPECT_EQ(redis_int(*w.last, zero), 0) << zero << ": " << redis_dump(w.last);
    }
    a.assert_no_unexpected_errors();
    b.assert_no_unexpected_errors();
}

// =====================================================================================================
// 2. Redis killed and restarted mid-stream
// =====================================================================================================

TEST_F(redis, redis_restart_mid_stream) {
    redis_server rs;
    redis_client rc(rs.port());
    node a(bridged_config(rs));
    node b(bridged_config(rs));
    ASSERT_TRUE(a.wait_ready(2)) << "node A did not become ready";
    ASSERT_TRUE(b.wait_ready(2)) << "node B did not become ready";

    // Per node: 4 raw subscribers of "live" (2 per worker); the first also publishes. Every
    // message of a node then passes through its supervisor (a subscriber on the other worker
    // gets it by relay), so once a node's subscribers have all of its messages, the supervisor
    // has handed each of them to the bridge: the counters below are then final.
    std::vector<std::unique_ptr<subscriber>> subs_a, subs_b;
    ASSERT_EQ(add_raw(subs_a, a, "live", 4), "");
    ASSERT_EQ(add_raw(subs_b, b, "live", 4), "");
    ASSERT_EQ(per_worker(subs_a), (std::map<unsigned, int>{{0, 2}, {1, 2}}));
    ASSERT_EQ(per_worker(subs_b), (std::map<unsigned, int>{{0, 2}, {1, 2}}));
    ASSERT_EQ(wait_bridges_ready(a, b, rc, 1, "sockherd:live", 2), "");

    // Sources: per node a raw WebSocket publisher and a backend's HTTP publishes. plan_a is what
    // node A's subscribers must get, plan_b node B's.
    const std::vector<std::string> names{"Aw", "Ah", "Bw", "Bh"};
    const std::vector<char> home{'A', 'A', 'B', 'B'};
    stream_plan plan_a(names), plan_b(names);
    std::map<char, std::int64_t> published{{'A', 0}, {'B', 0}};
    enum class phase { connected, transition, outage };
    failure_log failures;

    // `rounds` rounds of one message per source. Local subscribers must get every message of their
    // own node in every phase. Across nodes: every one while both are connected; none during the
    // outage (Redis is down: nothing can carry it); in the transitions, maybe.
    auto publish = [&](phase ph, std::size_t rounds) {
        for (std::size_t r = 0; r < rounds; ++r)
            for (std::size_t k = 0; k < names.size(); ++k) {
                const auto index = plan_a.rules[k].size();
                const std::string msg = names[k] + ":" + std::to_string(index);
                const expect cross = ph == phase::connected ? expect::required
                    : ph == phase::outage                   ? expect::forbidden
                                                            : expect::optional;
                plan_a.rules[k].push_back(home[k] == 'A' ? expect::required : cross);
                plan_b.rules[k].push_back(home[k] == 'B' ? expect::required : cross);
                ++published[home[k]];
                auto& n = home[k] == 'A' ? a : b;
                if (names[k].back() == 'w') {
                    auto& pub = home[k] == 'A' ? *subs_a[0] : *subs_b[0];
                    if (auto ec = pub.ws().send_text(msg))
                        failures.add(msg + ": send: " + ec.message());
                } else if (auto why = http_publish(n, "live", msg, "text/plain", 2u); !why.empty()) {
                    failures.add(msg + ": " + why);
                }
            }
    };
    std::vector<stream_state> st_a, st_b;
    auto catch_up_both = [&](std::string_view when) {
        catch_up_all(subs_a, plan_a, st_a, std::string(when) + ": node A subscriber", failures);
        catch_up_all(subs_b, plan_b, st_b, std::string(when) + ": node B subscriber", failures);
    };

    // -- before: all delivered on both nodes.
    publish(phase::connected, 20);
    catch_up_both("before the kill");
    ASSERT_EQ(failures.count(), 0u) << failures.str();

    // -- kill; the first window. Messages published between the kill and the moment a node
    // notices are not asserted across nodes (they may be written to a dying connection, counted
    // as publish failures rather than drops); locally they must all arrive.
    rs.kill();
    publish(phase::transition, 5);
    catch_up_both("right after the kill");
    ASSERT_EQ(failures.count(), 0u) << failures.str();

    std::map<char, std::int64_t> dropped_before;
    for (auto [n, id] : {std::pair{&a, 'A'}, std::pair{&b, 'B'}}) {
        const auto w = wait_status(*n, bridge_down, 10s);
        ASSERT_TRUE(w.ok) << "node " << id << " does not report the bridge disconnected: " << redis_dump(w.last);
        dropped_before[id] = redis_int(*w.last, "dropped_while_disconnected");
        const auto m = n->admin_get("/metrics");
        EXPECT_EQ(metric(m.body, "sockherd_redis_up"), std::optional<double>(0)) << "node " << id;
    }

    // -- the outage: both nodes know. Local delivery goes on; nothing crosses; every publish is
    // dropped and counted, exactly.
    constexpr std::size_t outage_rounds = 10;
    publish(phase::outage, outage_rounds);
    catch_up_both("during the outage");
    ASSERT_EQ(failures.count(), 0u) << failures.str();
    for (auto [n, id] : {std::pair{&a, 'A'}, std::pair{&b, 'B'}}) {
        const std::int64_t expected = dropped_before[id] + 2 * static_cast<std::int64_t>(outage_rounds);
        const auto w = wait_status(*n, [&](const json& st) {
            return redis_int(st, "dropped_while_disconnected") >= expected;
        }, 5s);
        ASSERT_TRUE(w.last);
        EXPECT_EQ(redis_int(*w.last, "dropped_while_disconnected"), expected)
            << "node " << id << ": " << redis_dump(w.last);
        EXPECT_TRUE(bridge_down(*w.last)) << "node " << id << ": " << redis_dump(w.last);
        const auto m = n->admin_get("/metrics");
        EXPECT_EQ(metric(m.body, "sockherd_redis_dropped_total{reason=\"disconnected\"}"),
                  std::optional<double>(static_cast<double>(expected)))
            << "node " << id;
    }

    // -- Redis back on the same port; the second window. Redis pub/sub keeps nothing for a
    // subscriber that is not (yet again) subscribed: a message one node publishes after its
    // publisher reconnected but before the other node's subscriber has re-subscribed reaches
    // nobody there, and neither node can count it (the publisher got an acknowledgement, the
    // subscriber never saw it). So messages of this window are not asserted across nodes; locally
    // they must all arrive.
    ASSERT_TRUE(rs.start()) << "redis-server did not come back on port " << rs.port() << ":\n" << rs.log();
    const auto back_at = clock::now();
    rc = redis_client(rs.port()); // the old connection died with the old server
    publish(phase::transition, 5);
    catch_up_both("right after the restart");
    ASSERT_EQ(failures.count(), 0u) << failures.str();

    // Both bridges connected and re-subscribed within a few seconds.
    for (auto [n, id] : {std::pair{&a, 'A'}, std::pair{&b, 'B'}}) {
        const auto left = std::chrono::duration_cast<milliseconds>(back_at + 5s - clock::now());
        const auto w = wait_status(*n, [](const json& st) { return bridge_ready(st, 1); }, std::max(left, 0ms));
        ASSERT_TRUE(w.ok) << "node " << id << " not connected and subscribed again 5 s after Redis came back: "
                          << redis_dump(w.last);
        EXPECT_GE(redis_int(*w.last, "reconnects"), 2) << "node " << id << ": " << redis_dump(w.last);
    }
    ASSERT_TRUE(wait_until([&] { return rc.pubsub_numsub("sockherd:live") == 2; }, 5s))
        << "Redis does not list both nodes as subscribers of sockherd:live";

    // -- after: everything crosses again.
    publish(phase::connected, 20);
    catch_up_both("after the restart");
    ASSERT_EQ(failures.count(), 0u) << failures.str();
    expect_all_quiet(subs_a, "node A subscriber", failures);
    expect_all_quiet(subs_b, "node B subscriber", failures);
    EXPECT_EQ(failures.count(), 0u) << failures.str();

    // Across nodes, the subscribers of one node all got the same messages of the other (relays go
    // to every worker with interest), and as many as that node's bridge took in from Redis.
    auto cross_count = [&](const std::vector<stream_state>& sts, const std::vector<std::size_t>& foreign,
                           std::string_view id) -> std::int64_t {
        for (std::size_t i = 1; i < sts.size(); ++i)
            for (auto k : foreign)
                EXPECT_EQ(sts[i].received[k], sts[0].received[k])
                    << "node " << id << " subscribers 0 and " << i << " got different messages of " << names[k];
        std::int64_t n = 0;
        for (auto k : foreign)
            n += static_cast<std::int64_t>(sts[0].received[k].size());
        return n;
    };
    const auto in_a = cross_count(st_a, {2, 3}, "A");
    const auto in_b = cross_count(st_b, {0, 1}, "B");
    // For the record: how many of the other node's 2 x 2 x 5 transition messages got through.
    RecordProperty("transition_messages_crossed_to_A", static_cast<int>(in_a - 80));
    RecordProperty("transition_messages_crossed_to_B", static_cast<int>(in_b - 80));
    for (auto [n, id, in, own] :
         {std::tuple{&a, 'A', in_a, published['A']}, std::tuple{&b, 'B', in_b, published['B']}}) {
        // Every publish handed to the bridge is accounted for once: acknowledged, dropped, failed.
        const auto w = wait_status(*n, [&](const json& st) { return publishes_accounted(st) == own; }, 10s);
        EXPECT_TRUE(w.ok) << "node " << id << " published " << own << ": " << redis_dump(w.last);
        ASSERT_TRUE(w.last);
        EXPECT_EQ(redis_int(*w.last, "messages_in"), in) << "node " << id << ": " << redis_dump(w.last);
        // At least the 2 x 20 of each phase when both were connected.
        EXPECT_GE(redis_int(*w.last, "messages_out"), 80) << "node " << id << ": " << redis_dump(w.last);
        EXPECT_EQ(redis_int(*w.last, "decode_errors"), 0) << "node " << id;
        EXPECT_EQ(redis_int(*w.last, "dropped_backpressure"), 0) << "node " << id;
    }
    a.assert_no_unexpected_errors();
    b.assert_no_unexpected_errors();
}

// =====================================================================================================
// 3. Binary and large payloads across nodes
// =====================================================================================================

TEST_F(redis, binary_payload_and_1MiB_message_cross_nodes) {
    redis_server rs;
    redis_client rc(rs.port());
    bridged_options o{rs.url()};
    o.max_message_size = "2MiB";
    o.max_body_size = "3MiB";
    node a(bridged_config(o));
    node b(bridged_config(o));
    ASSERT_TRUE(a.wait_ready(2)) << "node A did not become ready";
    ASSERT_TRUE(b.wait_ready(2)) << "node B did not become ready";

    // Node A: a raw client that publishes (and, subscribed, gets its own messages) and a
    // JSON-protocol publisher. Node B: a raw subscriber on each worker and a JSON one.
    std::vector<std::unique_ptr<subscriber>> on_a, on_b;
    ASSERT_EQ(add_raw(on_a, a, "big", 1), "");
    ASSERT_EQ(add_raw(on_b, b, "big", 2), "");
    ASSERT_EQ(per_worker(on_b), (std::map<unsigned, int>{{0, 1}, {1, 1}}));
    {
        std::string why;
        auto js = subscriber::json_protocol(b.port(), "big", why);
        ASSERT_TRUE(js) << why;
        on_b.push_back(std::move(js));
    }
    ws_client json_pub;
    ASSERT_FALSE(json_pub.connect(a.port(), "/pubsub"));
    ASSERT_FALSE(json_pub.receive().ec); // the welcome
    ASSERT_EQ(wait_bridges_ready(a, b, rc, 1, "sockherd:big", 2), "");
    subscriber& pub = *on_a[0];

    std::string every_byte;
    for (int i = 0; i < 256; ++i)
        every_byte.push_back(static_cast<char>(i));
    const std::string random_mib = random_bytes(mib, 7);
    std::string utf8_mib; // valid UTF-8 with 1- to 4-byte sequences
    while (utf8_mib.size() < mib)
        utf8_mib += "a\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80 ";
    utf8_mib.resize(mib - (mib % 11));
    const std::string posted_mib = random_bytes(mib, 8);
    const std::string max_size = random_bytes(2 * mib, 9); // exactly [websocket] max_message_size

    // One message at a time: every subscriber of both nodes has it before the next is sent (the
    // sources differ, and only one source's order is guaranteed).
    std::size_t sent_count = 0;
    failure_log failures;
    std::vector<subscriber*> everyone;
    for (auto* v : {&on_a, &on_b})
        for (auto& s : *v)
            everyone.push_back(s.get());
    // `value`: a JSON value (JSON subscribers get it as such, raw ones as `data`, its compact text).
    auto everyone_gets = [&](const std::string& what, const std::string& data, bool text,
                             const std::optional<json>& value = std::nullopt) {
        ++sent_count;
        parallel_for(everyone.size(), 4, [&](std::size_t i) {
            subscriber& s = *everyone[i];
            std::string why;
            if (s.is_json() && value) {
                const auto d = s.next(20s);
                if (!d.error.empty())
                    why = d.error;
                else if (d.value != value)
                    why = "expected the value " + value->dump() + ", got '" + shorten(d.data) + "'";
            } else {
                why = expect_delivery(s, data, text);
            }
            if (!why.empty())
                failures.add(std::string(i < on_a.size() ? "node A " : "node B ") + s.describe() + ", " + what +
                             ": " + why);
        });
    };
    auto send_raw = [&](const std::string& what, const std::string& data, bool text) {
        if (auto ec = pub.ws().send(data, text, 20s)) {
            failures.add(what + ": send: " + ec.message());
            return;
        }
        everyone_gets(what, data, text);
    };

    send_raw("all 256 byte values, binary", every_byte, false);
    send_raw("1 MiB of random bytes, binary", random_mib, false);
    send_raw("1 MiB of UTF-8 text", utf8_mib, true);
    ASSERT_EQ(failures.count(), 0u) << failures.str();

    ASSERT_EQ(http_publish(a, "big", posted_mib, "application/octet-stream", 1u, 20s), "");
    everyone_gets("1 MiB POSTed as application/octet-stream", posted_mib, false);

    ASSERT_FALSE(json_pub.send_text(
        json{{"op", "publish"}, {"channel", "big"}, {"data", base64_encode(every_byte)}, {"encoding", "base64"}}
            .dump()));
    everyone_gets("all 256 byte values from the JSON protocol (base64)", every_byte, false);

    ASSERT_FALSE(json_pub.send_text(R"({"op":"publish","channel":"big","data":{ "b" : [1, 2], "a" : {"z":null}}})"));
    everyone_gets("a JSON value", R"({"a":{"z":null},"b":[1,2]})", true, json{{"a", {{"z", nullptr}}}, {"b", {1, 2}}});
    ASSERT_EQ(failures.count(), 0u) << failures.str();

    send_raw("2 MiB of random bytes (= max_message_size), binary", max_size, false);
    EXPECT_EQ(failures.count(), 0u) << failures.str();

    expect_all_quiet(on_b, "node B subscriber", failures);
    EXPECT_EQ(failures.count(), 0u) << failures.str();

    const auto w = wait_status(b, [&](const json& st) {
        return redis_int(st, "messages_in") == static_cast<std::int64_t>(sent_count);
    }, 10s);
    EXPECT_TRUE(w.ok) << redis_dump(w.last);
    ASSERT_TRUE(w.last);
    EXPECT_EQ(redis_int(*w.last, "decode_errors"), 0) << redis_dump(w.last);
    const auto wa = wait_status(a, [&](const json& st) {
        return redis_int(st, "messages_out") == static_cast<std::int64_t>(sent_count);
    }, 10s);
    EXPECT_TRUE(wa.ok) << redis_dump(wa.last);
    a.assert_no_unexpected_errors();
    b.assert_no_unexpected_errors();
}

// =====================================================================================================
// 4. SUBSCRIBE and UNSUBSCRIBE follow local interest
// =====================================================================================================

TEST_F(redis, node_unsubscribes_when_its_last_subscriber_leaves) {
    redis_server rs;
    redis_client rc(rs.port());
    node a(bridged_config(rs));
    node b(bridged_config(rs));
    ASSERT_TRUE(a.wait_ready(2)) << "node A did not become ready";
    ASSERT_TRUE(b.wait_ready(2)) << "node B did not become ready";

    auto channels = [&] {
        const auto r = rc.pubsub_channels("sockherd:*");
        EXPECT_TRUE(r.ok) << "PUBSUB CHANNELS failed";
        return r.channels;
    };
    using names = std::vector<std::string>;
    auto wanted_and_subscribed = [](const node& n, std::int64_t count) {
        return wait_status(n, [count](const json& st) {
            return redis_int(st, "wanted_channels") == count && redis_int(st, "subscribed_channels") == count;
        }, 10s);
    };
    ASSERT_TRUE(wait_status(a, [](const json& st) { return bridge_ready(st, 0); }, 10s).ok);
    ASSERT_TRUE(wait_status(b, [](const json& st) { return bridge_ready(st, 0); }, 10s).ok);
    EXPECT_EQ(channels(), names{});

    // A: a raw subscriber on each worker and a JSON one; B: one raw subscriber.
    std::vector<std::unique_ptr<subscriber>> raw_a, raw_b;
    ASSERT_EQ(add_raw(raw_a, a, "solo", 2), "");
    ASSERT_EQ(per_worker(raw_a), (std::map<unsigned, int>{{0, 1}, {1, 1}}));
    std::string why;
    auto json_a = subscriber::json_protocol(a.port(), "solo", why);
    ASSERT_TRUE(json_a) << why;
    ASSERT_EQ(add_raw(raw_b, b, "solo", 1), "");
    ASSERT_EQ(wait_bridges_ready(a, b, rc, 1, "sockherd:solo", 2), "");
    EXPECT_EQ(channels(), names{"sockherd:solo"});

    // A's raw subscribers leave; its JSON subscriber still holds the channel there.
    for (auto& s : raw_a)
        EXPECT_FALSE(s->ws().close());
    raw_a.clear();
    ASSERT_EQ(http_publish(b, "solo", "still one on A", "text/plain", 1u), "");
    EXPECT_EQ(expect_delivery(*json_a, "still one on A", true, default_timeout), "")
        << "A's remaining subscriber";
    EXPECT_EQ(expect_delivery(*raw_b[0], "still one on A", true, default_timeout), "");
    {
        const auto w = wanted_and_subscribed(a, 1);
        EXPECT_TRUE(w.ok) << redis_dump(w.last);
    }
    EXPECT_EQ(rc.pubsub_numsub("sockherd:solo"), 2);

    // The last one on A unsubscribes: A leaves the Redis channel, B stays.
    ASSERT_EQ(json_a->unsubscribe(), "");
    {
        const auto w = wanted_and_subscribed(a, 0);
        EXPECT_TRUE(w.ok) << "node A: " << redis_dump(w.last);
    }
    EXPECT_TRUE(wait_until([&] { return rc.pubsub_numsub("sockherd:solo") == 1; }, 10s))
        << "NUMSUB " << rc.pubsub_numsub("sockherd:solo");
    EXPECT_EQ(channels(), names{"sockherd:solo"}) << "B still has a subscriber";
    {
        const auto w = wanted_and_subscribed(b, 1);
        EXPECT_TRUE(w.ok) << "node B: " << redis_dump(w.last);
    }
    const auto in_before = redis_int(a.status_json().value_or(json()), "messages_in");
    ASSERT_EQ(http_publish(b, "solo", "only B", "text/plain", 1u), "");
    EXPECT_EQ(expect_delivery(*raw_b[0], "only B", true, default_timeout), "");
    EXPECT_TRUE(wait_status(b, [](const json& st) { return redis_int(st, "messages_out") == 2; }, 5s).ok);
    EXPECT_EQ(redis_int(a.status_json().value_or(json()), "messages_in"), in_before)
        << "A is not subscribed any more";
    EXPECT_EQ(expect_quiet(*json_a, 200ms), "") << "A's unsubscribed JSON client";

    // B's last one leaves: nobody is subscribed in Redis.
    EXPECT_FALSE(raw_b[0]->ws().close());
    raw_b.clear();
    {
        const auto w = wanted_and_subscribed(b, 0);
        EXPECT_TRUE(w.ok) << "node B: " << redis_dump(w.last);
    }
    EXPECT_TRUE(wait_until([&] { return channels().empty(); }, 10s)) << "PUBSUB CHANNELS still lists sockherd:solo";

    // A subscribes again; a publish on B, which has no subscriber of its own, still goes to Redis.
    ASSERT_EQ(add_raw(raw_a, a, "solo", 1), "");
    {
        const auto w = wanted_and_subscribed(a, 1);
        ASSERT_TRUE(w.ok) << "node A: " << redis_dump(w.last);
    }
    EXPECT_EQ(channels(), names{"sockherd:solo"});
    EXPECT_EQ(rc.pubsub_numsub("sockherd:solo"), 1);
    ASSERT_EQ(http_publish(b, "solo", "from B to A", "text/plain", 0u), "");
    EXPECT_EQ(expect_delivery(*raw_a[0], "from B to A", true, default_timeout), "");

    // Its worker killed: the subscriber is gone with it, and so is A's subscription.
    const auto victim = a.ready_pid(raw_a[0]->worker());
    ASSERT_TRUE(victim);
    ASSERT_EQ(::kill(*victim, SIGKILL), 0);
    {
        const auto w = wanted_and_subscribed(a, 0);
        EXPECT_TRUE(w.ok) << "node A after its subscriber's worker was killed: " << redis_dump(w.last);
    }
    EXPECT_TRUE(wait_until([&] { return channels().empty(); }, 10s)) << "PUBSUB CHANNELS still lists sockherd:solo";
    a.assert_no_unexpected_errors();
    b.assert_no_unexpected_errors();
}

// =====================================================================================================
// 5. Off by default
// =====================================================================================================

TEST_F(redis, redis_off_by_default_status_says_so) {
    node n(bridged_config(bridged_options{}));
    ASSERT_TRUE(n.wait_ready(2)) << "node did not become ready";
    const auto st = n.status_json();
    ASSERT_TRUE(st);
    ASSERT_TRUE(st->contains("redis")) << "no \"redis\" member in /status.json";
    EXPECT_TRUE((*st)["redis"].is_null()) << (*st)["redis"].dump();

    // Pub/sub as before: a subscriber on each worker, WebSocket and HTTP publishes.
    std::vector<std::unique_ptr<subscriber>> subs;
    ASSERT_EQ(add_raw(subs, n, "plain", 2), "");
    ASSERT_EQ(per_worker(subs), (std::map<unsigned, int>{{0, 1}, {1, 1}}));
    ASSERT_FALSE(subs[0]->ws().send_text("by websocket"));
    ASSERT_EQ(http_publish(n, "plain", "by http", "text/plain", 2u), "");
    for (auto& s : subs) {
        EXPECT_EQ(expect_delivery(*s, "by websocket", true, default_timeout), "") << s->describe();
        EXPECT_EQ(expect_delivery(*s, "by http", true, default_timeout), "") << s->describe();
    }
    failure_log failures;
    expect_all_quiet(subs, "subscriber", failures);
    EXPECT_EQ(failures.count(), 0u) << failures.str();
    const auto after = n.status_json();
    ASSERT_TRUE(after);
    EXPECT_TRUE(after->contains("redis") && (*after)["redis"].is_null());
    n.assert_no_unexpected_errors();
}

// =====================================================================================================
// 6. Status and metrics
// =====================================================================================================

TEST_F(redis, redis_status_and_metrics_show_the_bridge) {
    redis_server rs;
    redis_client rc(rs.port());
    node a(bridged_config(rs));
    node b(bridged_config(rs));
    ASSERT_TRUE(a.wait_ready(2)) << "node A did not become ready";
    ASSERT_TRUE(b.wait_ready(2)) << "node B did not become ready";
    std::vector<std::unique_ptr<subscriber>> on_a, on_b;
    ASSERT_EQ(add_raw(on_a, a, "stats", 1), "");
    ASSERT_EQ(add_raw(on_b, b, "stats", 1), "");
    ASSERT_EQ(wait_bridges_ready(a, b, rc, 1, "sockherd:stats", 2), "");

    constexpr int sent = 7;
    for (int i = 0; i < sent; ++i)
        ASSERT_FALSE(on_a[0]->ws().send_text("m" + std::to_string(i)));
    for (int i = 0; i < sent; ++i) {
        EXPECT_EQ(expect_delivery(*on_b[0], "m" + std::to_string(i), true, default_timeout), "") << "on B";
        EXPECT_EQ(expect_delivery(*on_a[0], "m" + std::to_string(i), true, default_timeout), "") << "on A";
    }

    const auto wa = wait_status(a, [](const json& st) {
        return redis_int(st, "messages_out") == sent && redis_int(st, "duplicates_skipped") == sent;
    }, 10s);
    const auto wb = wait_status(b, [](const json& st) { return redis_int(st, "messages_in") == sent; }, 10s);
    ASSERT_TRUE(wa.ok) << redis_dump(wa.last);
    ASSERT_TRUE(wb.ok) << redis_dump(wb.last);

    std::set<std::string> ids;
    for (const auto* st : {&*wa.last, &*wb.last}) {
        const json& r = redis_of(*st);
        ASSERT_TRUE(r.is_object()) << r.dump();
        for (const char* key : {"state", "url", "node_id", "subscriber", "publisher", "last_error"})
            EXPECT_TRUE(r.contains(key) && r[key].is_string()) << key << ": " << r.dump();
        for (const char* key : {"reconnects", "connect_failures", "timeouts", "messages_in", "messages_out",
                                "dropped_while_disconnected", "dropped_backpressure", "publish_failures",
                                "duplicates_skipped", "decode_errors", "wanted_channels", "subscribed_channels"})
            EXPECT_TRUE(r.contains(key) && r[key].is_number_unsigned()) << key << ": " << r.dump();
        EXPECT_EQ(str_field(r, "state"), "connected");
        EXPECT_EQ(str_field(r, "url"), rs.url() + "/0");
        EXPECT_TRUE(std::regex_match(str_field(r, "node_id"), std::regex("[0-9a-f]{32}"))) << r.dump();
        ids.insert(str_field(r, "node_id"));
        EXPECT_EQ(str_field(r, "subscriber"), "ready");
        EXPECT_EQ(str_field(r, "publisher"), "ready");
        EXPECT_EQ(int_field(r, "wanted_channels"), 1);
        EXPECT_EQ(int_field(r, "subscribed_channels"), 1);
        for (const char* zero : {"reconnects", "connect_failures", "timeouts", "dropped_while_disconnected",
                                 "dropped_backpressure", "publish_failures", "decode_errors"})
            EXPECT_EQ(int_field(r, zero), 0) << zero << ": " << r.dump();
    }
    EXPECT_EQ(ids.size(), 2u) << "the nodes share a node id";
    EXPECT_EQ(redis_int(*wa.last, "messages_in"), 0);
    EXPECT_EQ(redis_int(*wb.last, "messages_out"), 0);
    EXPECT_EQ(redis_int(*wb.last, "duplicates_skipped"), 0);

    // /metrics: the same numbers.
    const auto ma = a.admin_get("/metrics");
    const auto mb = b.admin_get("/metrics");
    ASSERT_EQ(ma.status, 200u) << describe(ma);
    ASSERT_EQ(mb.status, 200u) << describe(mb);
    for (const auto* m : {&ma.body, &mb.body}) {
        EXPECT_TRUE(has_type(*m, "sockherd_redis_up", "gauge"));
        EXPECT_TRUE(has_type(*m, "sockherd_redis_messages_in_total", "counter"));
        EXPECT_TRUE(has_type(*m, "sockherd_redis_messages_out_total", "counter"));
        EXPECT_TRUE(has_type(*m, "sockherd_redis_dropped_total", "counter"));
        EXPECT_TRUE(has_type(*m, "sockherd_redis_reconnects_total", "counter"));
        EXPECT_TRUE(has_type(*m, "sockherd_redis_subscribed_channels", "gauge"));
        EXPECT_EQ(metric(*m, "sockherd_redis_up"), std::optional<double>(1));
        EXPECT_EQ(metric(*m, "sockherd_redis_dropped_total{reason=\"disconnected\"}"), std::optional<double>(0));
        EXPECT_EQ(metric(*m, "sockherd_redis_dropped_total{reason=\"backpressure\"}"), std::optional<double>(0));
        EXPECT_EQ(metric(*m, "sockherd_redis_reconnects_total"), std::optional<double>(0));
        EXPECT_EQ(metric(*m, "sockherd_redis_subscribed_channels"), std::optional<double>(1));
    }
    EXPECT_EQ(metric(ma.body, "sockherd_redis_messages_out_total"), std::optional<double>(sent));
    EXPECT_EQ(metric(ma.body, "sockherd_redis_messages_in_total"), std::optional<double>(0));
    EXPECT_EQ(metric(mb.body, "sockherd_redis_messages_in_total"), std::optional<double>(sent));
    EXPECT_EQ(metric(mb.body, "sockherd_redis_messages_out_total"), std::optional<double>(0));
    a.assert_no_unexpected_errors();
    b.assert_no_unexpected_errors();
}

// =====================================================================================================
// 7. A reload of [websocket] max_message_size reaches the bridge
// =====================================================================================================

// A reload that changes only [websocket] max_message_size keeps the bridge but must give it the
// new limit: raised to 2 MiB on both nodes, a 1.5 MiB message reaches the other node's subscriber
// too (with the old limit it was a decode error there: "a payload over max_message_size").
TEST_F(redis, reload_of_max_message_size_reaches_the_bridge) {
    redis_server rs;
    redis_client rc(rs.port());
    node a(bridged_config(rs));
    node b(bridged_config(rs));
    ASSERT_TRUE(a.wait_ready(2)) << "node A did not become ready";
    ASSERT_TRUE(b.wait_ready(2)) << "node B did not become ready";
    const std::string before = "max_message_size = \"1MiB\"";
    for (auto* n : {&a, &b}) {
        std::ifstream in(n->config_path());
        std::stringstream text;
        text << in.rdbuf();
        std::string s = text.str();
        const auto at = s.find(before);
        ASSERT_NE(at, std::string::npos) << s;
        s.replace(at, before.size(), "max_message_size = \"2MiB\"");
        n->dir().write_file(n->config_path().filename(), s);
        ASSERT_TRUE(n->signal(SIGHUP));
        // last_reload turns "ok" once the workers have the new configuration, a moment after
        // the generation goes up.
        const auto w = wait_status(*n, [](const json& st) {
            return int_field(st, "generation") == 2 && str_field(last_reload(st), "result") != "none";
        }, 20s);
        ASSERT_TRUE(w.ok) << "no generation 2: " << rows(w.last);
        EXPECT_EQ(str_field(last_reload(*w.last), "result"), "ok");
    }
    std::vector<std::unique_ptr<subscriber>> on_a, on_b;
    ASSERT_EQ(add_raw(on_a, a, "r", 1), "");
    ASSERT_EQ(add_raw(on_b, b, "r", 1), "");
    ASSERT_EQ(wait_bridges_ready(a, b, rc, 1, "sockherd:r", 2), "");
    const std::string big = random_bytes(mib + mib / 2, 3);
    ASSERT_FALSE(on_a[0]->ws().send(big, false, 20s));
    EXPECT_EQ(expect_delivery(*on_a[0], big, false), "") << "node A's own subscriber";
    EXPECT_EQ(expect_delivery(*on_b[0], big, false), "") << "node B's subscriber, through Redis";
    const auto st = b.status_json();
    ASSERT_TRUE(st);
    EXPECT_EQ(redis_int(*st, "decode_errors"), 0) << redis_dump(st);
    a.assert_no_unexpected_errors();
    b.assert_no_unexpected_errors();
}

// =====================================================================================================
// 8. A reload that replaces the bridge keeps its counters (and its node id)
// =====================================================================================================

// Changing a [redis] key replaces the bridge; the new one must continue the old one's *_total
// counters (Prometheus counters that go backwards read as a restart) and keep the node id.
TEST_F(redis, reload_replacing_the_bridge_keeps_its_counters) {
    redis_server rs;
    redis_client rc(rs.port());
    node a(bridged_config(rs));
    node b(bridged_config(rs));
    ASSERT_TRUE(a.wait_ready(2)) << "node A did not become ready";
    ASSERT_TRUE(b.wait_ready(2)) << "node B did not become ready";
    std::vector<std::unique_ptr<subscriber>> on_a, on_b;
    ASSERT_EQ(add_raw(on_a, a, "c", 1), "");
    ASSERT_EQ(add_raw(on_b, b, "c", 1), "");
    ASSERT_EQ(wait_bridges_ready(a, b, rc, 1, "sockherd:c", 2), "");

    const auto send_and_expect = [&](int from, int to) {
        for (int i = from; i < to; ++i)
            ASSERT_FALSE(on_a[0]->ws().send_text("m" + std::to_string(i)));
        for (int i = from; i < to; ++i)
            EXPECT_EQ(expect_delivery(*on_b[0], "m" + std::to_string(i), true, default_timeout), "") << "on B";
    };
    send_and_expect(0, 3);
    auto w = wait_status(a, [](const json& st) { return redis_int(st, "messages_out") == 3; }, 10s);
    ASSERT_TRUE(w.ok) << redis_dump(w.last);
    const std::string id_before = redis_str(*w.last, "node_id");

    // Replace A's bridge: a different command timeout is a [redis] change.
    const std::string before = "command_timeout = \"2s\"";
    std::ifstream in(a.config_path());
    std::stringstream text;
    text << in.rdbuf();
    std::string s = text.str();
    const auto at = s.find(before);
    ASSERT_NE(at, std::string::npos) << s;
    s.replace(at, before.size(), "command_timeout = \"3s\"");
    a.dir().write_file(a.config_path().filename(), s);
    ASSERT_TRUE(a.signal(SIGHUP));
    w = wait_status(a, [](const json& st) {
        return int_field(st, "generation") == 2 && str_field(last_reload(st), "result") != "none" &&
            bridge_ready(st, 1);
    }, 20s);
    ASSERT_TRUE(w.ok) << "no generation 2 with the bridge ready: " << redis_dump(w.last);
    EXPECT_EQ(str_field(last_reload(*w.last), "result"), "ok");
    EXPECT_EQ(redis_int(*w.last, "messages_out"), 3) << "the counter went back: " << redis_dump(w.last);
    EXPECT_EQ(redis_str(*w.last, "node_id"), id_before) << "the node id changed";

    // The new bridge counts on from there; /metrics agrees.
    ASSERT_EQ(wait_bridges_ready(a, b, rc, 1, "sockherd:c", 2), "");
    send_and_expect(3, 5);
    w = wait_status(a, [](const json& st) { return redis_int(st, "messages_out") == 5; }, 10s);
    ASSERT_TRUE(w.ok) << redis_dump(w.last);
    EXPECT_EQ(redis_int(*w.last, "duplicates_skipped"), 5) << redis_dump(w.last);
    const auto m = a.admin_get("/metrics");
    ASSERT_EQ(m.status, 200u) << describe(m);
    EXPECT_EQ(metric(m.body, "sockherd_redis_messages_out_total"), std::optional<double>(5));
    a.assert_no_unexpected_errors();
    b.assert_no_unexpected_errors();
}

} // namespace
} // namespace sockherd::test
