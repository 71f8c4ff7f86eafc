// Pub/sub across worker processes, from outside: raw and JSON WebSocket subscribers spread over
// the workers by round-robin, WebSocket and HTTP publishers, 1 MiB messages, slow consumers, and
// a worker killed in the middle of a stream. Every test starts its own node.

#include <signal.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <regex>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/integration/harness.hpp"

namespace sockherd::test {
namespace {

using namespace std::chrono_literals;
using json = nlohmann::json;

constexpr std::size_t mib = 1024 * 1024;
const header_list auth{{"Authorization", "Bearer tok-123"}};

// ---- config -------------------------------------------------------------------------------------

struct pubsub_options {
    unsigned workers = 3;
    std::string send_queue_limit = "4MiB";
    bool tokens = true;
    std::string more; // extra TOML, appended
};

// Raw channels under /ws/, JSON ops on /pubsub, round-robin scheduling (consecutive connections
// alternate over the workers), 1 MiB messages, publish token "tok-123".
config_text pubsub_config(const pubsub_options& o = pubsub_options()) {
    config_text cfg{o.workers};
    cfg.routes = "[[route]]\npath = \"/ws/\"\nkind = \"pubsub\"\n\n"
                 "[[route]]\npath = \"/pubsub\"\nkind = \"pubsub\"\nprotocol = \"json\"\n";
    cfg.extra = "[scheduler]\npolicy = \"round-robin\"\n\n"
                "[websocket]\nmax_message_size = \"1MiB\"\nsend_queue_limit = \"" +
        o.send_queue_limit +
        "\"\nmax_subscriptions = 100\n\n"
        "[http]\nmax_body_size = \"2MiB\"\n\n";
    if (o.tokens)
        cfg.extra += "[publish]\ntokens = [\"tok-123\"]\n\n";
    cfg.extra += o.more;
    return cfg;
}

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

std::optional<std::string> base64_decode(std::string_view text) {
    static constexpr std::string_view alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
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
                const auto pos = alphabet.find(c);
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

std::optional<std::size_t> to_index(std::string_view s) {
    std::size_t v = 0;
    const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc() || end != s.data() + s.size() || s.empty())
        return std::nullopt;
    return v;
}

// ---- WebSocket helpers -----------------------------------------------------------------------------

// A connected client that got 101 and an X-Sockherd-Worker header; nullptr (and `why`) otherwise.
std::unique_ptr<ws_client> connect_ws(std::uint16_t port, std::string_view target, std::string& why) {
    auto c = std::make_unique<ws_client>();
    if (auto ec = c->connect(port, target)) {
        why = std::string(target) + ": " + ec.message();
        return nullptr;
    }
    if (c->handshake_response().result() != http::status::switching_protocols) {
        why = std::string(target) + ": status " + std::to_string(c->handshake_response().result_int());
        return nullptr;
    }
    if (!c->worker()) {
        why = std::string(target) + ": no X-Sockherd-Worker in the handshake response";
        return nullptr;
    }
    return c;
}

// A message's (source, index), as a publisher numbered it.
using seq_parser = std::function<std::optional<std::pair<std::size_t, std::size_t>>(std::string_view)>;

// "p<k>:<i>"
std::optional<std::pair<std::size_t, std::size_t>> parse_pk(std::string_view s) {
    if (s.empty() || s[0] != 'p')
        return std::nullopt;
    const auto colon = s.find(':');
    if (colon == std::string_view::npos)
        return std::nullopt;
    const auto k = to_index(s.substr(1, colon - 1));
    const auto i = to_index(s.substr(colon + 1));
    if (!k || !i)
        return std::nullopt;
    return std::pair{*k, *i};
}

// "<prefix><i>": one source.
seq_parser prefixed(std::string prefix) {
    return [prefix](std::string_view s) -> std::optional<std::pair<std::size_t, std::size_t>> {
        if (!s.starts_with(prefix))
            return std::nullopt;
        const auto i = to_index(s.substr(prefix.size()));
        if (!i)
            return std::nullopt;
        return std::pair<std::size_t, std::size_t>{0, *i};
    };
}

// Reads exactly sources * per_source text messages; each source's indexes must come as 0, 1, 2, ...
// (every one, once, in order). Empty on success, else what went wrong first.
std::string expect_sequences(ws_client& c, std::size_t sources, std::size_t per_source, const seq_parser& parse,
                             milliseconds timeout = default_timeout) {
    std::vector<std::size_t> next(sources, 0);
    const std::size_t total = sources * per_source;
    auto progress = [&] {
        std::string s = " (next expected per source:";
        for (auto v : next)
            s += " " + std::to_string(v);
        return s + ")";
    };
    for (std::size_t m = 0; m < total; ++m) {
        const auto got = c.receive(timeout);
        if (got.ec)
            return "message " + std::to_string(m) + " of " + std::to_string(total) + ": " + got.ec.message() +
                progress();
        if (!got.text)
            return "message " + std::to_string(m) + " is binary: '" + shorten(got.data) + "'";
        const auto id = parse(got.data);
        if (!id || id->first >= sources || id->second >= per_source)
            return "message " + std::to_string(m) + " is unexpected: '" + shorten(got.data) + "'" + progress();
        if (id->second != next[id->first])
            return "message " + std::to_string(m) + ": source " + std::to_string(id->first) + " expected " +
                std::to_string(next[id->first]) + ", got " + std::to_string(id->second) +
                (id->second < next[id->first] ? " (a duplicate or reordering)" : " (a gap)");
        ++next[id->first];
    }
    return {};
}

// Nothing more arrives within `t`. The harness closes a connection whose read timed out: call last.
std::string expect_quiet(ws_client& c, milliseconds t) {
    const auto m = c.receive(t);
    if (!m.ec)
        return std::string("an extra ") + (m.text ? "text" : "binary") + " message arrived: '" + shorten(m.data) + "'";
    if (m.ec != beast::error::timeout)
        return "the connection ended instead: " + m.ec.message();
    return {};
}

// Every client waits `t` for a message that must not come; what does arrive is a failure.
void expect_all_quiet(const std::vector<std::unique_ptr<ws_client>>& clients, std::string_view what,
                      failure_log& failures, milliseconds t = 300ms) {
    parallel_for(clients.size(), 4, [&](std::size_t i) {
        if (auto why = expect_quiet(*clients[i], t); !why.empty())
            failures.add(std::string(what) + " " + std::to_string(i) + ": " + why);
    });
}

// Receives one message and compares it with an expected one (type and bytes).
std::string expect_message(ws_client& c, std::string_view data, bool text, milliseconds timeout = default_timeout) {
    const auto m = c.receive(timeout);
    if (m.ec)
        return "receive: " + m.ec.message();
    if (m.text != text)
        return std::string("expected a ") + (text ? "text" : "binary") + " message, got a " +
            (m.text ? "text" : "binary") + " one: '" + shorten(m.data) + "'";
    if (m.data != data)
        return "expected '" + shorten(data) + "', got '" + shorten(m.data) + "'";
    return {};
}

struct json_message {
    std::string error; // empty: `value` holds the parsed frame
    std::string text;
    json value;
};

// A client of the JSON protocol (/pubsub).
class json_client {
public:
    // Connects and reads the welcome. Empty on success, else why not.
    std::string connect(std::uint16_t port) {
        if (auto ec = ws_.connect(port, "/pubsub"))
            return "connect: " + ec.message();
        if (ws_.handshake_response().result() != http::status::switching_protocols)
            return "handshake status " + std::to_string(ws_.handshake_response().result_int());
        const auto w = next();
        if (!w.error.empty())
            return "welcome: " + w.error;
        if (!w.value.is_object() || w.value.size() != 2 || w.value.value("event", "") != "welcome" ||
            !w.value.contains("worker") || !w.value["worker"].is_number_unsigned())
            return "the first frame is not a welcome: " + w.text;
        worker_ = w.value["worker"].get<unsigned>();
        if (ws_.worker() != worker_)
            return "the welcome says worker " + std::to_string(worker_) + ", X-Sockherd-Worker says '" +
                (ws_.worker() ? std::to_string(*ws_.worker()) : std::string("none")) + "'";
        return {};
    }

    unsigned worker() const { return worker_; }
    ws_client& ws() { return ws_; }

    std::string send(std::string_view text, milliseconds timeout = default_timeout) {
        if (auto ec = ws_.send_text(text, timeout))
            return "send: " + ec.message();
        return {};
    }
    std::string send_op(const json& op, milliseconds timeout = default_timeout) { return send(op.dump(), timeout); }
    std::string publish(std::string_view channel, const json& data, milliseconds timeout = default_timeout) {
        return send_op(json{{"op", "publish"}, {"channel", channel}, {"data", data}}, timeout);
    }

    json_message next(milliseconds timeout = default_timeout) {
        json_message out;
        const auto m = ws_.receive(timeout);
        if (m.ec) {
            out.error = "receive: " + m.ec.message();
            return out;
        }
        out.text = m.data;
        if (!m.text) {
            out.error = "a binary frame: '" + shorten(m.data) + "'";
            return out;
        }
        out.value = json::parse(m.data, nullptr, false);
        if (out.value.is_discarded())
            out.error = "not JSON: '" + shorten(m.data) + "'";
        return out;
    }

    // Sends the op and expects {"event":"<event>","channel":"<channel>"} as the next frame.
    std::string op_and_ack(std::string_view op, std::string_view event, std::string_view channel) {
        if (auto why = send_op(json{{"op", op}, {"channel", channel}}); !why.empty())
            return why;
        const auto m = next();
        if (!m.error.empty())
            return std::string(op) + ": " + m.error;
        if (m.value != json{{"event", event}, {"channel", channel}})
            return std::string(op) + " " + std::string(channel) + ": expected the '" + std::string(event) +
                "' event, got " + shorten(m.text, 300);
        return {};
    }
    std::string subscribe(std::string_view channel) { return op_and_ack("subscribe", "subscribed", channel); }
    std::string unsubscribe(std::string_view channel) { return op_and_ack("unsubscribe", "unsubscribed", channel); }

private:
    ws_client ws_;
    unsigned worker_ = 0;
};

// Connects JSON clients until one is on a worker other than `not_on` (round-robin: the next one).
std::unique_ptr<json_client> json_client_not_on(std::uint16_t port, unsigned not_on, std::string& why) {
    for (int attempt = 0; attempt < 6; ++attempt) {
        auto c = std::make_unique<json_client>();
        if (why = c->connect(port); !why.empty())
            return nullptr;
        if (c->worker() != not_on)
            return c;
    }
    why = "every JSON client landed on worker " + std::to_string(not_on);
    return nullptr;
}

// A WebSocket client that only connects and sends text, with TCP_NODELAY. The harness's ws_client
// leaves Nagle on: a client that sends messages smaller than the loopback MSS (64 KiB) and gets
// nothing back then waits for the server's delayed ACK (~40 ms) before each message, which turns a
// flood into a trickle.
class nodelay_sender {
public:
    nodelay_sender() : ws_(ioc_) {}
    nodelay_sender(const nodelay_sender&) = delete;
    nodelay_sender& operator=(const nodelay_sender&) = delete;

    error_code connect(std::uint16_t port, std::string_view target, milliseconds timeout = default_timeout) {
        auto& lowest = beast::get_lowest_layer(ws_);
        const tcp::endpoint ep{net::ip::make_address_v4("127.0.0.1"), port};
        if (auto ec = run(timeout, [&](auto handler) { lowest.async_connect(ep, std::move(handler)); }))
            return ec;
        error_code ec;
        lowest.socket().set_option(tcp::no_delay(true), ec);
        if (ec)
            return ec;
        const std::string host = "127.0.0.1:" + std::to_string(port);
        return run(timeout,
                   [&](auto handler) { ws_.async_handshake(response_, host, target, std::move(handler)); });
    }
    // X-Sockherd-Worker of the handshake response.
    std::optional<unsigned> worker() const {
        const auto it = response_.find("X-Sockherd-Worker");
        if (it == response_.end())
            return std::nullopt;
        const auto v = to_index(std::string_view(it->value().data(), it->value().size()));
        if (!v)
            return std::nullopt;
        return static_cast<unsigned>(*v);
    }
    error_code send_text(std::string_view data, milliseconds timeout = default_timeout) {
        ws_.text(true);
        return run(timeout,
                   [&](auto handler) { ws_.async_write(net::buffer(data.data(), data.size()), std::move(handler)); });
    }

private:
    // Runs the operation `start` begins to completion, bounded by `timeout` (the tcp_stream's expiry
    // closes the socket, which completes it) and a hard limit a little later.
    template <class Start>
    error_code run(milliseconds timeout, Start&& start) {
        auto& lowest = beast::get_lowest_layer(ws_);
        auto done = std::make_shared<std::optional<error_code>>();
        lowest.expires_after(timeout);
        start([done](error_code ec, auto&&...) { *done = ec; });
        auto run_until = [&](clock::time_point limit) {
            while (!*done && clock::now() < limit) {
                if (ioc_.stopped())
                    ioc_.restart();
                ioc_.run_one_until(limit);
            }
        };
        run_until(clock::now() + timeout + 2s);
        if (!*done) {
            lowest.close();
            run_until(clock::now() + 2s);
            if (!*done)
                return net::error::timed_out;
        }
        return **done;
    }

    net::io_context ioc_;
    websocket::stream<beast::tcp_stream> ws_;
    websocket::response_type response_;
};

const std::regex& slow_consumer_line() {
    static const std::regex re(R"(\[worker \d+\] info: .*slow consumer)");
    return re;
}

// ---- 1. fan-in from three raw publishers -------------------------------------------------------

TEST(pubsub, fan_in_order_exactly_once) {
    node n(pubsub_config());
    ASSERT_TRUE(n.wait_ready(3)) << "node did not become ready";

    constexpr std::size_t subscribers_n = 60;
    constexpr std::size_t publishers_n = 3;
    constexpr std::size_t per_publisher = 200;

    // Every client is a subscriber of "room"; the publishers too.
    std::vector<std::unique_ptr<ws_client>> clients;
    std::map<unsigned, int> per_worker;
    for (std::size_t i = 0; i < subscribers_n; ++i) {
        std::string why;
        auto c = connect_ws(n.port(), "/ws/room", why);
        ASSERT_TRUE(c) << "subscriber " << i << ": " << why;
        ++per_worker[*c->worker()];
        clients.push_back(std::move(c));
    }
    EXPECT_EQ(per_worker, (std::map<unsigned, int>{{0, 20}, {1, 20}, {2, 20}}))
        << "round-robin did not spread 60 sessions 20/20/20";

    std::map<unsigned, ws_client*> publisher_on;
    for (int attempt = 0; attempt < 12 && publisher_on.size() < publishers_n; ++attempt) {
        std::string why;
        auto c = connect_ws(n.port(), "/ws/room", why);
        ASSERT_TRUE(c) << "publisher: " << why;
        publisher_on.emplace(*c->worker(), c.get());
        clients.push_back(std::move(c));
    }
    ASSERT_EQ(publisher_on.size(), publishers_n) << "no publisher on every worker";
    std::vector<ws_client*> publishers;
    for (const auto& [k, c] : publisher_on)
        publishers.push_back(c);

    failure_log failures;
    const auto t0 = clock::now();
    {
        std::vector<std::thread> pool;
        for (std::size_t k = 0; k < publishers_n; ++k)
            pool.emplace_back([&, k] {
                for (std::size_t i = 0; i < per_publisher; ++i)
                    if (auto ec = publishers[k]->send_text("p" + std::to_string(k) + ":" + std::to_string(i))) {
                        failures.add("publisher " + std::to_string(k) + " message " + std::to_string(i) + ": " +
                                     ec.message());
                        return;
                    }
            });
        for (auto& th : pool)
            th.join();
    }
    ASSERT_EQ(failures.count(), 0u) << failures.str();

    parallel_for(clients.size(), 4, [&](std::size_t i) {
        if (auto why = expect_sequences(*clients[i], publishers_n, per_publisher, parse_pk); !why.empty())
            failures.add("client " + std::to_string(i) + " (worker " + std::to_string(*clients[i]->worker()) +
                         "): " + why);
    });
    EXPECT_EQ(failures.count(), 0u) << "of " << clients.size() << " clients: " << failures.str();
    RecordProperty("deliveries_ms",
                   static_cast<int>(std::chrono::duration_cast<milliseconds>(clock::now() - t0).count()));

    // Then nothing more: each client waits a while for a message that must not come.
    expect_all_quiet(clients, "client", failures);
    EXPECT_EQ(failures.count(), 0u) << failures.str();
    n.assert_no_unexpected_errors();
}

// ---- 2. sequential HTTP publishes landing on different workers ----------------------------------

TEST(pubsub, http_publish_in_order) {
    node n(pubsub_config());
    ASSERT_TRUE(n.wait_ready(3)) << "node did not become ready";

    constexpr std::size_t subscribers_n = 30;
    constexpr std::size_t messages = 200;
    std::vector<std::unique_ptr<ws_client>> subs;
    std::map<unsigned, int> per_worker;
    for (std::size_t i = 0; i < subscribers_n; ++i) {
        std::string why;
        auto c = connect_ws(n.port(), "/ws/room", why);
        ASSERT_TRUE(c) << "subscriber " << i << ": " << why;
        ++per_worker[*c->worker()];
        subs.push_back(std::move(c));
    }
    EXPECT_EQ(per_worker, (std::map<unsigned, int>{{0, 10}, {1, 10}, {2, 10}}));

    // One backend, one request after the other, each on a fresh connection.
    failure_log failures;
    std::map<unsigned, int> served_by;
    header_list headers = auth;
    headers.emplace_back("Content-Type", "text/plain; charset=utf-8");
    for (std::size_t i = 0; i < messages; ++i) {
        const auto r = http_request(n.port(), http::verb::post, "/publish/room", headers, std::to_string(i));
        if (!r.ok() || r.status != 202) {
            failures.add("POST " + std::to_string(i) + ": " + describe(r));
            continue;
        }
        const auto body = json::parse(r.body, nullptr, false);
        if (body != json{{"channel", "room"}, {"workers", 3}})
            failures.add("POST " + std::to_string(i) + ": 202 body '" + r.body + "', expected channel room, workers 3");
        if (const auto w = r.worker())
            ++served_by[*w];
        else
            failures.add("POST " + std::to_string(i) + ": no X-Sockherd-Worker");
    }
    ASSERT_EQ(failures.count(), 0u) << failures.str();
    EXPECT_EQ(served_by.size(), 3u) << "the POSTs did not land on every worker";

    parallel_for(subs.size(), 3, [&](std::size_t i) {
        if (auto why = expect_sequences(*subs[i], 1, messages, prefixed("")); !why.empty())
            failures.add("subscriber " + std::to_string(i) + " (worker " + std::to_string(*subs[i]->worker()) +
                         "): " + why);
    });
    EXPECT_EQ(failures.count(), 0u) << failures.str();

    expect_all_quiet(subs, "subscriber", failures);
    EXPECT_EQ(failures.count(), 0u) << failures.str();
    n.assert_no_unexpected_errors();
}

// ---- 3. the largest message, across workers --------------------------------------------------------

TEST(pubsub, one_mebibyte_across_workers) {
    node n(pubsub_config());
    ASSERT_TRUE(n.wait_ready(3)) << "node did not become ready";

    // One raw client on each worker (extra ones stay connected, unread).
    std::map<unsigned, std::unique_ptr<ws_client>> raw;
    std::vector<std::unique_ptr<ws_client>> extra;
    for (int attempt = 0; attempt < 12 && raw.size() < 3; ++attempt) {
        std::string why;
        auto c = connect_ws(n.port(), "/ws/big", why);
        ASSERT_TRUE(c) << why;
        const unsigned w = *c->worker();
        if (raw.count(w))
            extra.push_back(std::move(c));
        else
            raw.emplace(w, std::move(c));
    }
    ASSERT_EQ(raw.size(), 3u) << "no raw client on every worker";
    json_client js;
    ASSERT_EQ(js.connect(n.port()), "");
    ASSERT_EQ(js.subscribe("big"), "");

    auto expect_binary = [](ws_client& c, const std::string& payload) -> std::string {
        const auto m = c.receive(20s);
        if (m.ec)
            return "receive: " + m.ec.message();
        if (m.text)
            return "a text message of " + std::to_string(m.data.size()) + " bytes";
        if (m.data.size() != payload.size())
            return "got " + std::to_string(m.data.size()) + " bytes, expected " + std::to_string(payload.size());
        if (m.data != payload)
            return "same size, different bytes";
        return {};
    };
    auto expect_json_binary = [&js](const std::string& payload) -> std::string {
        const auto m = js.next(20s);
        if (!m.error.empty())
            return m.error;
        if (!m.value.is_object() || m.value.size() != 3 || m.value.value("channel", "") != "big" ||
            m.value.value("encoding", "") != "base64" || !m.value.contains("data") || !m.value["data"].is_string())
            return "unexpected delivery: " + shorten(m.text, 200);
        const auto bytes = base64_decode(m.value["data"].get<std::string>());
        if (!bytes)
            return "data is not base64";
        if (bytes->size() != payload.size())
            return "decoded " + std::to_string(bytes->size()) + " bytes, expected " + std::to_string(payload.size());
        if (*bytes != payload)
            return "decoded bytes differ";
        return {};
    };

    // A raw WebSocket publisher on worker 0.
    const std::string payload = random_bytes(mib, 1);
    ASSERT_FALSE(raw[0]->send_binary(payload, 20s));
    for (unsigned k : {1u, 2u, 0u})
        EXPECT_EQ(expect_binary(*raw[k], payload), "") << "raw subscriber on worker " << k;
    EXPECT_EQ(expect_json_binary(payload), "") << "JSON subscriber on worker " << js.worker();

    // The same size through HTTP.
    const std::string posted = random_bytes(mib, 2);
    header_list octets = auth;
    octets.emplace_back("Content-Type", "application/octet-stream");
    const auto r = http_request(n.port(), http::verb::post, "/publish/big", octets, posted, 20s);
    ASSERT_EQ(r.status, 202u) << describe(r);
    EXPECT_EQ(json::parse(r.body, nullptr, false), (json{{"channel", "big"}, {"workers", 3}})) << r.body;
    for (unsigned k : {0u, 1u, 2u})
        EXPECT_EQ(expect_binary(*raw[k], posted), "") << "raw subscriber on worker " << k << " (HTTP publish)";
    EXPECT_EQ(expect_json_binary(posted), "") << "JSON subscriber (HTTP publish)";

    // One byte more is refused, and nothing of it is delivered: the next message is the next POST.
    const auto too_big = http_request(n.port(), http::verb::post, "/publish/big", octets, posted + "x", 20s);
    EXPECT_EQ(too_big.status, 413u) << describe(too_big);
    header_list text = auth;
    text.emplace_back("Content-Type", "text/plain");
    const auto after = http_request(n.port(), http::verb::post, "/publish/big", text, "after");
    EXPECT_EQ(after.status, 202u) << describe(after);
    for (unsigned k : {0u, 1u, 2u})
        EXPECT_EQ(expect_message(*raw[k], "after", true), "") << "raw subscriber on worker " << k;
    const auto m = js.next();
    EXPECT_EQ(m.error, "");
    EXPECT_EQ(m.value, (json{{"channel", "big"}, {"data", "after"}})) << m.text;
    n.assert_no_unexpected_errors();
}

// ---- 4. JSON and raw clients on one channel ----------------------------------------------------------

TEST(pubsub, json_and_raw_interoperate) {
    node n(pubsub_config());
    ASSERT_TRUE(n.wait_ready(3)) << "node did not become ready";

    json_client js;
    ASSERT_EQ(js.connect(n.port()), "");
    ASSERT_EQ(js.subscribe("mix"), "");
    std::unique_ptr<ws_client> raw;
    for (int attempt = 0; attempt < 6 && !raw; ++attempt) {
        std::string why;
        auto c = connect_ws(n.port(), "/ws/mix", why);
        ASSERT_TRUE(c) << why;
        if (*c->worker() != js.worker())
            raw = std::move(c);
        else
            EXPECT_FALSE(c->close());
    }
    ASSERT_TRUE(raw) << "no raw client on a worker other than the JSON client's";

    auto expect_json = [&js](const json& expected) {
        const auto m = js.next();
        EXPECT_EQ(m.error, "");
        EXPECT_EQ(m.value, expected) << "got " << shorten(m.text, 300);
    };

    // raw text → {"channel","data":"…"}
    ASSERT_FALSE(raw->send_text("hello from raw"));
    expect_json({{"channel", "mix"}, {"data", "hello from raw"}});
    EXPECT_EQ(expect_message(*raw, "hello from raw", true), "") << "the raw sender gets its own message";

    // raw binary → base64
    static constexpr char raw_bytes[] = "\x00\x01\x02\x7f\x80\xfe\xff binary \xc3\x28";
    const std::string bytes(raw_bytes, sizeof raw_bytes - 1); // with a NUL and invalid UTF-8
    ASSERT_FALSE(raw->send_binary(bytes));
    {
        const auto m = js.next();
        ASSERT_EQ(m.error, "");
        ASSERT_TRUE(m.value.is_object() && m.value.contains("data") && m.value["data"].is_string()) << m.text;
        EXPECT_EQ(m.value.size(), 3u) << m.text;
        EXPECT_EQ(m.value.value("channel", ""), "mix") << m.text;
        EXPECT_EQ(m.value.value("encoding", ""), "base64") << m.text;
        EXPECT_EQ(base64_decode(m.value["data"].get<std::string>()), std::optional<std::string>(bytes)) << m.text;
    }
    EXPECT_EQ(expect_message(*raw, bytes, false), "");

    // JSON values → raw subscribers get the compact JSON text (keys sorted); strings → the string.
    ASSERT_EQ(js.send(R"({"op":"publish","channel":"mix","data":{"a":1}})"), "");
    EXPECT_EQ(expect_message(*raw, R"({"a":1})", true), "");
    expect_json({{"channel", "mix"}, {"data", {{"a", 1}}}});

    ASSERT_EQ(js.send(R"({"op":"publish","channel":"mix","data":{ "b" : [1, 2], "a" : {"z":null, "y":true} }})"), "");
    EXPECT_EQ(expect_message(*raw, R"({"a":{"y":true,"z":null},"b":[1,2]})", true), "");
    {
        const auto m = js.next();
        EXPECT_EQ(m.text, R"({"channel":"mix","data":{"a":{"y":true,"z":null},"b":[1,2]}})");
    }

    ASSERT_EQ(js.send(R"({"op":"publish","channel":"mix","data":"hi"})"), "");
    EXPECT_EQ(expect_message(*raw, "hi", true), "");
    expect_json({{"channel", "mix"}, {"data", "hi"}});

    // Malformed or unknown ops: an error event each, and the connection stays usable.
    for (const std::string_view bad : {std::string_view("nope"), std::string_view(R"({"op":"x"})"),
                                       std::string_view(R"({"op":"subscribe","channel":"bad name"})"),
                                       std::string_view(R"({"op":"publish","channel":"mix"})")}) {
        ASSERT_EQ(js.send(bad), "");
        const auto m = js.next();
        ASSERT_EQ(m.error, "") << "after sending " << bad;
        EXPECT_TRUE(m.value.is_object() && m.value.value("event", "") == "error" && m.value.contains("error") &&
                    m.value["error"].is_string() && !m.value["error"].get<std::string>().empty())
            << "sent " << bad << ", got " << m.text;
    }
    ASSERT_TRUE(js.ws().is_open());
    ASSERT_FALSE(raw->send_text("still here"));
    expect_json({{"channel", "mix"}, {"data", "still here"}});
    EXPECT_EQ(expect_message(*raw, "still here", true), "");
    ASSERT_EQ(js.publish("mix", "and back"), "");
    EXPECT_EQ(expect_message(*raw, "and back", true), "");
    expect_json({{"channel", "mix"}, {"data", "and back"}});

    EXPECT_FALSE(raw->close());
    EXPECT_FALSE(js.ws().close());
    n.assert_no_unexpected_errors();
}

// ---- 5. unsubscribe ---------------------------------------------------------------------------------

TEST(pubsub, unsubscribe_stops_delivery) {
    node n(pubsub_config());
    ASSERT_TRUE(n.wait_ready(3)) << "node did not become ready";

    json_client sub;
    ASSERT_EQ(sub.connect(n.port()), "");
    ASSERT_EQ(sub.subscribe("chan-a"), "");
    ASSERT_EQ(sub.subscribe("chan-b"), "");
    // A raw witness on A shows that A's message was really published.
    std::string why;
    auto witness = connect_ws(n.port(), "/ws/chan-a", why);
    ASSERT_TRUE(witness) << why;
    auto pub = json_client_not_on(n.port(), sub.worker(), why);
    ASSERT_TRUE(pub) << why;

    ASSERT_EQ(sub.unsubscribe("chan-a"), "");
    ASSERT_EQ(pub->publish("chan-a", "to A"), "");
    ASSERT_EQ(pub->publish("chan-b", "to B"), "");
    EXPECT_EQ(expect_message(*witness, "to A", true), "") << "A's message was not published";
    {
        const auto m = sub.next();
        ASSERT_EQ(m.error, "");
        EXPECT_EQ(m.value, (json{{"channel", "chan-b"}, {"data", "to B"}})) << "got " << m.text;
    }
    // Once more, and then silence.
    ASSERT_EQ(pub->publish("chan-a", "to A again"), "");
    ASSERT_EQ(pub->publish("chan-b", "to B again"), "");
    EXPECT_EQ(expect_message(*witness, "to A again", true), "");
    {
        const auto m = sub.next();
        ASSERT_EQ(m.error, "");
        EXPECT_EQ(m.value, (json{{"channel", "chan-b"}, {"data", "to B again"}})) << "got " << m.text;
    }
    EXPECT_EQ(expect_quiet(sub.ws(), 300ms), "");
    n.assert_no_unexpected_errors();
}

// ---- 6. a slow consumer ------------------------------------------------------------------------------

TEST(pubsub, slow_consumer_is_disconnected) {
    pubsub_options o;
    o.send_queue_limit = "64KiB";
    node n(pubsub_config(o));
    ASSERT_TRUE(n.wait_ready(3)) << "node did not become ready";

    // The publisher speaks JSON: it is not a subscriber itself, so it never has to read.
    nodelay_sender pub;
    ASSERT_FALSE(pub.connect(n.port(), "/pubsub"));
    ASSERT_TRUE(pub.worker());
    const unsigned pub_worker = *pub.worker();
    std::map<unsigned, std::unique_ptr<ws_client>> fast;
    std::unique_ptr<ws_client> slow;
    std::vector<std::unique_ptr<ws_client>> spare;
    for (int attempt = 0; attempt < 12 && (fast.size() < 3 || !slow); ++attempt) {
        std::string why;
        auto c = connect_ws(n.port(), "/ws/flood", why);
        ASSERT_TRUE(c) << why;
        const unsigned w = *c->worker();
        if (!fast.count(w))
            fast.emplace(w, std::move(c));
        else if (!slow && w != pub_worker)
            slow = std::move(c);
        else
            spare.push_back(std::move(c));
    }
    ASSERT_EQ(fast.size(), 3u) << "no fast subscriber on every worker";
    ASSERT_TRUE(slow) << "no slow subscriber away from the publisher's worker";
    for (auto& c : spare)
        EXPECT_FALSE(c->close()); // unread, they would be slow consumers too

    // A fast subscriber keeps up, but "fast" must not depend on scheduling luck: the publisher
    // stays at most `window` messages ahead of the slowest fast subscriber, and window messages fit
    // in the 64 KiB send queue. The slow one never reads: kernel buffers (a few MiB on loopback)
    // fill, then its queue passes the limit. The flood goes on until the node logs the cut, then
    // 2 MiB more (64 MiB at most); a last message "end" closes it.
    constexpr std::size_t limit = 64 * 1024;
    constexpr std::size_t window = 2;
    constexpr std::size_t message_size = limit / window - 1024;
    constexpr std::size_t max_messages = 64 * mib / message_size;
    constexpr std::size_t after_cut = 2 * mib / message_size;
    std::vector<ws_client*> readers;
    for (auto& [k, c] : fast)
        readers.push_back(c.get());

    failure_log failures;
    std::mutex mutex;
    std::condition_variable cv;
    std::array<std::size_t, 3> received{};
    std::array<std::optional<std::size_t>, 3> end_after{};
    bool reader_failed = false;
    const auto t0 = clock::now();
    std::vector<std::thread> pool;
    for (std::size_t k = 0; k < readers.size(); ++k)
        pool.emplace_back([&, k] {
            for (std::size_t i = 0;; ++i) {
                const auto m = readers[k]->receive(10s);
                std::string why;
                const std::string prefix = std::to_string(i) + ":";
                if (m.ec)
                    why = "receive: " + m.ec.message();
                else if (m.text && m.data == "end")
                    why = "end";
                else if (!m.text || m.data.size() != message_size || !m.data.starts_with(prefix))
                    why = std::string(m.text ? "text" : "binary") + " message of " + std::to_string(m.data.size()) +
                        " bytes: '" + shorten(m.data, 20) + "'";
                std::lock_guard lock(mutex);
                if (why == "end") {
                    end_after[k] = i;
                    return;
                }
                if (!why.empty()) {
                    failures.add("fast subscriber " + std::to_string(k) + ", message " + std::to_string(i) + ": " +
                                 why);
                    reader_failed = true;
                    cv.notify_all();
                    return;
                }
                received[k] = i + 1;
                cv.notify_all();
            }
        });

    std::size_t sent = 0;
    std::optional<std::size_t> cut_at;
    for (; sent < max_messages; ++sent) {
        if (!cut_at && sent % 16 == 0 && n.count_log(slow_consumer_line()) > 0)
            cut_at = sent;
        if (cut_at && sent >= *cut_at + after_cut)
            break;
        {
            std::unique_lock lock(mutex);
            const bool ok = cv.wait_for(lock, 10s, [&] {
                return reader_failed || *std::min_element(received.begin(), received.end()) + window >= sent + 1;
            });
            if (!ok)
                failures.add("publisher: fast subscribers stuck before message " + std::to_string(sent));
            if (!ok || reader_failed)
                break;
        }
        std::string data = std::to_string(sent) + ":";
        data.resize(message_size, 'x');
        if (auto ec = pub.send_text(R"({"op":"publish","channel":"flood","data":")" + data + "\"}", 10s)) {
            failures.add("publisher, message " + std::to_string(sent) + ": " + ec.message());
            break;
        }
    }
    EXPECT_FALSE(pub.send_text(R"({"op":"publish","channel":"flood","data":"end"})"));
    for (auto& th : pool)
        th.join();
    EXPECT_EQ(failures.count(), 0u) << failures.str();
    for (std::size_t k = 0; k < readers.size(); ++k) {
        EXPECT_EQ(end_after[k], std::optional<std::size_t>(sent)) << "fast subscriber " << k;
        EXPECT_TRUE(readers[k]->is_open()) << "fast subscriber " << k;
    }
    RecordProperty("flood_ms", static_cast<int>(std::chrono::duration_cast<milliseconds>(clock::now() - t0).count()));
    RecordProperty("flood_messages", static_cast<int>(sent));
    ASSERT_TRUE(cut_at) << "no slow-consumer cut after " << sent << " messages of " << message_size << " bytes";
    RecordProperty("cut_after_messages", static_cast<int>(*cut_at));

    EXPECT_EQ(n.count_log(slow_consumer_line()), 1u) << "only the one that never reads is slow";
    const auto ci = slow->read_until_close(30s);
    EXPECT_EQ(ci.code, std::optional<std::uint16_t>(1008))
        << ci.ec.message() << " after " << ci.messages_skipped << " message(s)";
    EXPECT_EQ(ci.reason, "slow consumer");
    EXPECT_LT(ci.messages_skipped, sent);
    n.assert_no_unexpected_errors();
}

// ---- 7. the publish API's refusals ------------------------------------------------------------------

TEST(pubsub, publish_auth_and_validation) {
    node n(pubsub_config());
    ASSERT_TRUE(n.wait_ready(3)) << "node did not become ready";
    std::string why;
    auto sub = connect_ws(n.port(), "/ws/room", why);
    ASSERT_TRUE(sub) << why;

    auto post = [&](std::string_view target, const header_list& headers, std::string body) {
        return http_request(n.port(), http::verb::post, target, headers, std::move(body));
    };
    auto with = [](header_list h, std::string k, std::string v) {
        h.emplace_back(std::move(k), std::move(v));
        return h;
    };

    for (const auto& headers : {header_list{}, header_list{{"Authorization", "Bearer wrong"}},
                                header_list{{"Authorization", "Bearer tok-1234"}},
                                header_list{{"Authorization", "Bearer tok-12"}},
                                header_list{{"Authorization", "Basic dG9rLTEyMw=="}},
                                header_list{{"Authorization", "Bearer "}}}) {
        const auto r = post("/publish/room", headers, "nope");
        const std::string sent = headers.empty() ? "no Authorization" : headers[0].second;
        EXPECT_EQ(r.status, 401u) << sent << ": " << describe(r);
        EXPECT_TRUE(r.header("WWW-Authenticate").starts_with("Bearer")) << sent << ": WWW-Authenticate '"
                                                                        << r.header("WWW-Authenticate") << "'";
    }

    EXPECT_EQ(post("/publish/bad%20name", auth, "x").status, 400u);
    EXPECT_EQ(post("/publish/" + std::string(201, 'a'), auth, "x").status, 400u);
    EXPECT_EQ(post("/publish/", auth, "x").status, 400u);
    EXPECT_EQ(post("/publish/a/b", auth, "x").status, 400u);
    {
        const auto r = post("/publish/" + std::string(200, 'a'), auth, "x");
        EXPECT_EQ(r.status, 202u) << "a 200-byte channel name is valid: " << describe(r);
        EXPECT_EQ(json::parse(r.body, nullptr, false), (json{{"channel", std::string(200, 'a')}, {"workers", 0}}))
            << r.body;
    }
    {
        const auto r = post("/publish/room", with(auth, "Content-Type", "application/octet-stream"),
                            std::string(mib + 1, 'z'));
        EXPECT_EQ(r.status, 413u) << describe(r);
    }
    EXPECT_EQ(post("/publish/room", with(auth, "Content-Type", "text/plain"), "\xff\xfe not UTF-8").status, 400u);
    EXPECT_EQ(post("/publish/room", with(auth, "Content-Type", "application/json"), "{not json").status, 400u);
    {
        const auto r = http_request(n.port(), http::verb::get, "/publish/x", auth);
        EXPECT_EQ(r.status, 405u) << describe(r);
        EXPECT_NE(r.header("Allow").find("POST"), std::string::npos) << "Allow '" << r.header("Allow") << "'";
    }

    // None of the refused ones reached the subscriber: its next message is this one.
    {
        const auto r = post("/publish/room", with(auth, "Content-Type", "text/plain"), "ok");
        EXPECT_EQ(r.status, 202u) << describe(r);
        EXPECT_EQ(json::parse(r.body, nullptr, false), (json{{"channel", "room"}, {"workers", 1}})) << r.body;
    }
    EXPECT_EQ(expect_message(*sub, "ok", true), "");
    EXPECT_EQ(expect_quiet(*sub, 200ms), "");
    n.assert_no_unexpected_errors();

    // Without [publish] tokens there is no publish API at all.
    node bare(pubsub_config([] {
        pubsub_options o;
        o.tokens = false;
        return o;
    }()));
    ASSERT_TRUE(bare.wait_ready(3)) << "node without tokens did not become ready";
    EXPECT_EQ(http_request(bare.port(), http::verb::post, "/publish/room", auth, "x").status, 404u);
    EXPECT_EQ(http_request(bare.port(), http::verb::post, "/publish/room", {}, "x").status, 404u);
    EXPECT_EQ(http_request(bare.port(), http::verb::get, "/publish/room").status, 404u);
    bare.assert_no_unexpected_errors();
}

// ---- 8. a worker killed while a stream is flowing ---------------------------------------------------

TEST(pubsub, worker_killed_mid_stream) {
    pubsub_options o;
    o.more = "[supervisor]\nrestart_backoff = { min = \"100ms\", max = \"2s\" }\n";
    node n(pubsub_config(o));
    ASSERT_TRUE(n.wait_ready(3)) << "node did not become ready";

    std::map<unsigned, std::vector<std::unique_ptr<ws_client>>> by_worker;
    for (int i = 0; i < 9; ++i) {
        std::string why;
        auto c = connect_ws(n.port(), "/ws/s", why);
        ASSERT_TRUE(c) << why;
        by_worker[*c->worker()].push_back(std::move(c));
    }
    for (unsigned k : {0u, 1u, 2u})
        ASSERT_GE(by_worker[k].size(), 2u) << "worker " << k << " has fewer than 2 sessions";
    ws_client& publisher = *by_worker[0].front();
    const auto victim = n.ready_pid(2);
    ASSERT_TRUE(victim);

    constexpr std::size_t messages = 300;
    for (std::size_t i = 0; i < messages; ++i) {
        ASSERT_FALSE(publisher.send_text("m" + std::to_string(i))) << "message " << i;
        if (i == messages / 2 - 1) {
            ASSERT_EQ(::kill(*victim, SIGKILL), 0);
        }
        if ((i + 1) % 50 == 0)
            std::this_thread::sleep_for(20ms);
    }

    // Worker 0 (the publisher's, the publisher included) and worker 1: everything, in order.
    for (unsigned k : {0u, 1u})
        for (std::size_t i = 0; i < by_worker[k].size(); ++i)
            EXPECT_EQ(expect_sequences(*by_worker[k][i], 1, messages, prefixed("m")), "")
                << "session " << i << " on worker " << k;
    // The killed worker's sessions: an in-order prefix, then the connection ends (no hang).
    for (auto& c : by_worker[2]) {
        std::size_t next = 0;
        for (; next <= messages; ++next) {
            const auto m = c->receive(5s);
            if (m.ec) {
                EXPECT_NE(m.ec, beast::error::timeout) << "a session of the killed worker is still open";
                break;
            }
            EXPECT_EQ(m.data, "m" + std::to_string(next));
        }
        EXPECT_LT(next, messages) << "a session of the killed worker got everything";
    }

    const std::regex killed_line("\\[supervisor\\] warn(ing)?: worker 2: pid " + std::to_string(*victim) +
                                 " killed by signal 9");
    EXPECT_TRUE(n.wait_for_log(killed_line, 5s));
    ASSERT_TRUE(wait_until([&] { return n.ready_count(2) >= 2; }, 10s)) << "no new worker 2";
    EXPECT_EQ(n.ready_count(2), 2u);
    const auto replacement = n.ready_pid(2);
    ASSERT_TRUE(replacement);
    EXPECT_NE(*replacement, *victim);

    // A new subscriber on the new worker 2 gets what is published from now on.
    std::unique_ptr<ws_client> fresh;
    std::vector<std::unique_ptr<ws_client>> others;
    for (int attempt = 0; attempt < 6 && !fresh; ++attempt) {
        std::string why;
        auto c = connect_ws(n.port(), "/ws/s", why);
        ASSERT_TRUE(c) << why;
        if (*c->worker() == 2)
            fresh = std::move(c);
        else
            others.push_back(std::move(c));
    }
    ASSERT_TRUE(fresh) << "no session on the new worker 2";
    ASSERT_FALSE(publisher.send_text("after"));
    EXPECT_EQ(expect_message(*fresh, "after", true), "") << "the new worker 2's subscriber";
    for (unsigned k : {0u, 1u})
        for (auto& c : by_worker[k])
            EXPECT_EQ(expect_message(*c, "after", true), "") << "a subscriber on worker " << k;
    for (auto& c : others)
        EXPECT_EQ(expect_message(*c, "after", true), "") << "a subscriber connected after the restart";
    n.assert_no_unexpected_errors();
}

} // namespace
} // namespace sockherd::test
