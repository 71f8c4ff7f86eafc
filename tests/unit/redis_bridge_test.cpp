// Tests for supervisor/redis_bridge.cpp (and supervisor/redis_connection.cpp) against a real
// redis-server, started by the fixture on a free loopback port. Skipped only when
// /usr/bin/redis-server is missing. Waits are on conditions with deadlines, driving the
// io_context meanwhile; nothing leaves loopback.

#include "supervisor/redis_bridge.hpp"

#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include <chrono>
#include <cstdlib>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "common/unique_fd.hpp"
#include "tests/redis_server.hpp"

namespace sockherd::supervisor {
namespace {

using namespace std::chrono_literals;
using clock = std::chrono::steady_clock;

// The launcher and the blocking client are shared with the integration tests.
using test::redis_server;
using redis_options = test::redis_server_options;
using sync_client = test::redis_client;

config::redis_section redis_config(const std::string& url) {
    config::redis_section r;
    r.url = url;
    auto parsed = parse_redis_url(url);
    if (auto* why = std::get_if<std::string>(&parsed))
        throw std::runtime_error("bad test url: " + *why);
    r.endpoint = std::get<redis_url>(std::move(parsed));
    r.connect_timeout = 2s;
    r.command_timeout = 2s;
    r.reconnect_backoff_min = 50ms;
    r.reconnect_backoff_max = 500ms;
    return r;
}

std::string envelope_bytes(const node_id& origin, std::uint64_t seq, payload_kind kind, std::string_view payload) {
    std::string out;
    encode(redis_envelope{origin, seq, kind, payload}, out);
    return out;
}

node_id other_node() {
    node_id id{};
    id.fill(0x5a);
    return id;
}

class redis_bridge_test : public testing::Test {
protected:
    // As the supervisor does: a Redis server that goes away mid-write must not kill the process.
    static void SetUpTestSuite() { ::signal(SIGPIPE, SIG_IGN); }

    void SetUp() override {
        if (!test::redis_server_available())
            GTEST_SKIP() << test::redis_server_binary << " is missing (apt-get install redis-server)";
    }

    void start_redis(redis_options o = {}) { redis_ = std::make_unique<redis_server>(std::move(o)); }
    std::string url() const { return redis_->url(); }

    std::unique_ptr<redis_bridge> make_bridge(const config::redis_section& cfg, redis_bridge::limits lim = {}) {
        auto b = std::make_unique<redis_bridge>(
            ioc_, cfg, lim,
            redis_bridge::callbacks{[this](shared_message m) { received_.push_back(std::move(m)); },
                                    [this](redis_bridge::state s) { states_.push_back(s); }});
        return b;
    }

    // Drives the io_context until `done` holds; false when `limit` passes first.
    bool run_until(const std::function<bool()>& done, clock::duration limit = 10s) {
        const auto deadline = clock::now() + limit;
        while (!done()) {
            if (clock::now() >= deadline)
                return false;
            ioc_.run_for(5ms);
        }
        return true;
    }

    // Drives the io_context for a while (to show that something does not happen).
    void run_for(clock::duration d) {
        const auto deadline = clock::now() + d;
        while (clock::now() < deadline)
            ioc_.run_for(5ms);
    }

    bool up_and_subscribed(const redis_bridge& b, std::size_t channels) {
        const auto s = b.stats();
        return s.current == redis_bridge::state::connected && s.subscribed_channels == channels;
    }

    std::vector<std::string> pubsub_channels(sync_client& c) { return c.pubsub_channels("sockherd:*").channels; }

    // "cmdstat_subscribe:calls=2,..." -> 2
    long long command_calls(sync_client& c, std::string_view command) {
        auto r = c.command({"INFO", "commandstats"});
        if (!r || r->type != REDIS_REPLY_STRING)
            return -1;
        const std::string text(r->str, r->len);
        const std::string key = "cmdstat_" + std::string(command) + ":calls=";
        const auto at = text.find(key);
        return at == std::string::npos ? 0 : std::atoll(text.c_str() + at + key.size());
    }

    net::io_context ioc_;
    net::executor_work_guard<net::io_context::executor_type> work_{ioc_.get_executor()};
    std::unique_ptr<redis_server> redis_;
    std::vector<shared_message> received_;
    std::vector<redis_bridge::state> states_;
};

TEST_F(redis_bridge_test, receives_an_enveloped_message_from_another_client) {
    start_redis();
    auto bridge = make_bridge(redis_config(url()));
    EXPECT_EQ(bridge->current(), redis_bridge::state::off);
    bridge->want("room1");
    bridge->start();
    ASSERT_TRUE(run_until([&] { return up_and_subscribed(*bridge, 1); })) << bridge->stats().last_error;

    sync_client client(redis_->port());
    auto r =
        client.command({"PUBLISH", "sockherd:room1", envelope_bytes(other_node(), 1, payload_kind::text, "hello")});
    ASSERT_TRUE(r);
    EXPECT_EQ(r->integer, 1); // our subscriber
    ASSERT_TRUE(run_until([&] { return received_.size() == 1; }));
    EXPECT_EQ(received_[0]->channel, "room1");
    EXPECT_EQ(received_[0]->kind, payload_kind::text);
    EXPECT_EQ(received_[0]->payload, "hello");

    const auto s = bridge->stats();
    EXPECT_EQ(s.messages_in, 1u);
    EXPECT_EQ(s.url, url() + "/0");
    EXPECT_EQ(s.node_id, to_hex(bridge->id()));
    EXPECT_EQ(s.subscriber, "ready");
    EXPECT_EQ(s.publisher, "ready");
    EXPECT_EQ(s.wanted_channels, 1u);
    EXPECT_EQ(s.reconnects, 0u);
    ASSERT_TRUE(run_until([&] { return !states_.empty() && states_.back() == redis_bridge::state::connected; }));
    EXPECT_EQ(states_.front(), redis_bridge::state::connecting);
}

TEST_F(redis_bridge_test, publishes_reach_a_raw_subscriber_in_an_envelope) {
    start_redis();
    sync_client subscriber(redis_->port());
    auto sub = subscriber.command({"SUBSCRIBE", "sockherd:news"});
    ASSERT_TRUE(sub && sub->type == REDIS_REPLY_ARRAY);

    auto bridge = make_bridge(redis_config(url()));
    bridge->start();
    ASSERT_TRUE(run_until([&] { return bridge->current() == redis_bridge::state::connected; }));
    bridge->publish({"news", payload_kind::text, "first"});
    bridge->publish({"news", payload_kind::json, R"({"n":2})"});
    ASSERT_TRUE(run_until([&] { return bridge->stats().messages_out == 2; }));

    for (std::uint64_t seq = 1; seq <= 2; ++seq) {
        auto m = subscriber.next();
        ASSERT_TRUE(m);
        ASSERT_EQ(m->type, REDIS_REPLY_ARRAY);
        ASSERT_EQ(m->elements, 3u);
        EXPECT_EQ(std::string_view(m->element[1]->str, m->element[1]->len), "sockherd:news");
        redis_envelope env;
        ASSERT_EQ(decode(std::string_view(m->element[2]->str, m->element[2]->len), env), envelope_status::ok);
        EXPECT_EQ(env.origin, bridge->id());
        EXPECT_EQ(env.seq, seq);
        EXPECT_EQ(env.kind, seq == 1 ? payload_kind::text : payload_kind::json);
        EXPECT_EQ(env.payload, seq == 1 ? "first" : R"({"n":2})");
    }
}

TEST_F(redis_bridge_test, own_messages_are_skipped) {
    start_redis();
    auto bridge = make_bridge(redis_config(url()));
    bridge->want("echo");
    bridge->start();
    ASSERT_TRUE(run_until([&] { return up_and_subscribed(*bridge, 1); }));

    bridge->publish({"echo", payload_kind::text, "mine"});
    ASSERT_TRUE(run_until([&] { return bridge->stats().duplicates_skipped == 1; }));
    sync_client client(redis_->port());
    client.command({"PUBLISH", "sockherd:echo", envelope_bytes(bridge->id(), 99, payload_kind::text, "also mine")});
    client.command({"PUBLISH", "sockherd:echo", envelope_bytes(other_node(), 1, payload_kind::text, "theirs")});
    ASSERT_TRUE(run_until([&] { return received_.size() == 1 && bridge->stats().messages_out == 1; }));
    EXPECT_EQ(received_[0]->payload, "theirs");
    const auto s = bridge->stats();
    EXPECT_EQ(s.duplicates_skipped, 2u);
    EXPECT_EQ(s.messages_in, 1u);
    EXPECT_EQ(s.messages_out, 1u);
}

TEST_F(redis_bridge_test, binary_text_json_and_1MiB_payloads_cross_between_two_bridges) {
    start_redis();
    auto a = make_bridge(redis_config(url()));
    std::vector<shared_message> at_b;
    auto b = std::make_unique<redis_bridge>(
        ioc_, redis_config(url()), redis_bridge::limits{},
        redis_bridge::callbacks{[&](shared_message m) { at_b.push_back(std::move(m)); }, nullptr});
    ASSERT_NE(a->id(), b->id());
    b->want("bin");
    a->start();
    b->start();
    ASSERT_TRUE(run_until([&] { return up_and_subscribed(*b, 1) && a->current() == redis_bridge::state::connected; }));

    std::string all_bytes;
    for (int i = 0; i < 256; ++i)
        all_bytes += static_cast<char>(i);
    std::string big(1024 * 1024, '\0');
    std::mt19937 rng(7);
    for (auto& c : big)
        c = static_cast<char>(rng());
    const std::vector<pubsub_message> sent{
        {"bin", payload_kind::binary, all_bytes},
        {"bin", payload_kind::binary, big},
        {"bin", payload_kind::text, "gr\xc3\xbc\xc3\x9f \xf0\x9f\x98\x80"},
        {"bin", payload_kind::json, R"({"k":[1,"two",null]})"},
        {"bin", payload_kind::binary, ""},
    };
    for (const auto& m : sent)
        a->publish(m);
    // The acknowledgements come on `a`'s own connection, maybe after `b` has everything.
    ASSERT_TRUE(run_until([&] { return at_b.size() == sent.size() && a->stats().messages_out == sent.size(); }));
    for (std::size_t i = 0; i < sent.size(); ++i) {
        EXPECT_EQ(at_b[i]->channel, "bin");
        EXPECT_EQ(at_b[i]->kind, sent[i].kind) << i;
        EXPECT_TRUE(at_b[i]->payload == sent[i].payload) << i << ": " << at_b[i]->payload.size() << " bytes";
    }
    EXPECT_EQ(a->stats().messages_out, sent.size());
    EXPECT_EQ(b->stats().messages_in, sent.size());
    EXPECT_TRUE(received_.empty()); // `a` wants nothing
}

TEST_F(redis_bridge_test, want_and_unwant_batch_subscribe_and_unsubscribe) {
    start_redis();
    sync_client client(redis_->port());
    auto bridge = make_bridge(redis_config(url()));
    bridge->start();
    ASSERT_TRUE(run_until([&] { return bridge->current() == redis_bridge::state::connected; }));

    // One turn: three channels in one SUBSCRIBE; a want undone in the same turn never goes out.
    bridge->want("a");
    bridge->want("b");
    bridge->want("c");
    bridge->want("x");
    bridge->unwant("x");
    bridge->want("a"); // twice: still one subscription
    ASSERT_TRUE(run_until([&] { return bridge->stats().subscribed_channels == 3; }));
    EXPECT_EQ(pubsub_channels(client), (std::vector<std::string>{"sockherd:a", "sockherd:b", "sockherd:c"}));
    EXPECT_EQ(command_calls(client, "subscribe"), 1);

    bridge->unwant("b");
    bridge->unwant("nonexistent");
    ASSERT_TRUE(run_until([&] { return bridge->stats().subscribed_channels == 2; }));
    EXPECT_EQ(pubsub_channels(client), (std::vector<std::string>{"sockherd:a", "sockherd:c"}));
    EXPECT_EQ(command_calls(client, "unsubscribe"), 1);

    // Unwant then want again in one turn: stays subscribed, nothing sent.
    bridge->unwant("a");
    bridge->want("a");
    run_for(100ms);
    EXPECT_EQ(command_calls(client, "unsubscribe"), 1);
    EXPECT_EQ(command_calls(client, "subscribe"), 1);

    bridge->unwant("a");
    bridge->unwant("c");
    ASSERT_TRUE(run_until([&] { return pubsub_channels(client).empty() && bridge->stats().subscribed_channels == 0; }));
    EXPECT_EQ(bridge->stats().wanted_channels, 0u);
    // And back: the connection is usable after it left subscribed mode.
    bridge->want("d");
    ASSERT_TRUE(run_until([&] { return bridge->stats().subscribed_channels == 1; }));
    EXPECT_EQ(pubsub_channels(client), (std::vector<std::string>{"sockherd:d"}));
    client.command({"PUBLISH", "sockherd:d", envelope_bytes(other_node(), 1, payload_kind::text, "d")});
    ASSERT_TRUE(run_until([&] { return received_.size() == 1; }));
}

TEST_F(redis_bridge_test, many_channels_go_in_several_commands) {
    start_redis();
    sync_client client(redis_->port());
    auto bridge = make_bridge(redis_config(url()));
    const std::size_t n = redis_bridge::max_channels_per_command * 2 + 5;
    for (std::size_t i = 0; i < n; ++i)
        bridge->want("ch" + std::to_string(i));
    bridge->start();
    ASSERT_TRUE(run_until([&] { return up_and_subscribed(*bridge, n); }));
    EXPECT_EQ(command_calls(client, "subscribe"), 3);
    EXPECT_EQ(pubsub_channels(client).size(), n);
}

TEST_F(redis_bridge_test, survives_a_redis_restart_and_counts_what_it_dropped) {
    start_redis();
    auto bridge = make_bridge(redis_config(url()));
    bridge->want("r");
    bridge->want("s");
    bridge->start();
    ASSERT_TRUE(run_until([&] { return up_and_subscribed(*bridge, 2); }));

    redis_->kill();
    ASSERT_TRUE(run_until([&] {
        const auto s = bridge->stats();
        return s.current == redis_bridge::state::disconnected && s.publisher != "ready" && s.subscriber != "ready";
    }));
    for (int i = 0; i < 3; ++i)
        bridge->publish({"r", payload_kind::text, "lost"});
    auto s = bridge->stats();
    EXPECT_EQ(s.dropped_while_disconnected, 3u);
    EXPECT_EQ(s.messages_out, 0u);
    EXPECT_EQ(s.subscribed_channels, 0u);
    EXPECT_FALSE(s.last_error.empty());

    ASSERT_TRUE(redis_->start());
    ASSERT_TRUE(run_until([&] { return up_and_subscribed(*bridge, 2); }, 10s)) << bridge->stats().last_error;
    s = bridge->stats();
    EXPECT_GE(s.reconnects, 2u); // both connections
    EXPECT_EQ(s.dropped_while_disconnected, 3u);

    sync_client client(redis_->port());
    client.command({"PUBLISH", "sockherd:s", envelope_bytes(other_node(), 1, payload_kind::text, "back")});
    ASSERT_TRUE(run_until([&] { return received_.size() == 1; }));
    EXPECT_EQ(received_[0]->payload, "back");
    bridge->publish({"r", payload_kind::text, "sent"});
    ASSERT_TRUE(run_until([&] { return bridge->stats().messages_out == 1; }));

    // The application saw the whole story.
    ASSERT_TRUE(run_until([&] { return !states_.empty() && states_.back() == redis_bridge::state::connected; }));
    const std::vector<redis_bridge::state> expected{redis_bridge::state::connecting, redis_bridge::state::connected,
                                                    redis_bridge::state::disconnected,
                                                    redis_bridge::state::connected};
    EXPECT_EQ(states_, expected);
}

TEST_F(redis_bridge_test, host_names_are_resolved_and_every_address_is_tried) {
    start_redis(); // listens on 127.0.0.1 only: "localhost" may resolve to ::1 first
    auto bridge = make_bridge(redis_config("redis://localhost:" + std::to_string(redis_->port())));
    bridge->want("h");
    bridge->start();
    ASSERT_TRUE(run_until([&] { return up_and_subscribed(*bridge, 1); })) << bridge->stats().last_error;
    EXPECT_EQ(bridge->stats().url, "redis://localhost:" + std::to_string(redis_->port()) + "/0");
}

TEST_F(redis_bridge_test, connect_timeout_when_the_server_never_answers) {
    // Listening but never accepting or answering: TCP connects (the kernel queues it), PING
    // stays unanswered.
    unique_fd listener(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::bind(listener.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    ASSERT_EQ(::listen(listener.get(), 16), 0);
    socklen_t len = sizeof addr;
    ::getsockname(listener.get(), reinterpret_cast<sockaddr*>(&addr), &len);

    auto cfg = redis_config("redis://127.0.0.1:" + std::to_string(ntohs(addr.sin_port)));
    cfg.connect_timeout = 200ms;
    auto bridge = make_bridge(cfg);
    bridge->start();
    ASSERT_TRUE(run_until([&] { return bridge->stats().timeouts >= 2; }, 5s));
    const auto s = bridge->stats();
    EXPECT_EQ(s.current, redis_bridge::state::disconnected);
    EXPECT_NE(s.last_error.find("connect_timeout (200ms)"), std::string::npos) << s.last_error;
    EXPECT_GE(s.connect_failures, 2u);
    bridge->publish({"x", payload_kind::text, "nowhere"});
    EXPECT_EQ(bridge->stats().dropped_while_disconnected, 1u);
}

TEST_F(redis_bridge_test, connect_timeout_when_syns_go_unanswered) {
    // A listener with a full accept queue: the kernel drops further SYNs, so connect() itself
    // hangs (hiredis 0.14 has no timeout for that).
    unique_fd listener(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::bind(listener.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    ASSERT_EQ(::listen(listener.get(), 0), 0);
    socklen_t len = sizeof addr;
    ::getsockname(listener.get(), reinterpret_cast<sockaddr*>(&addr), &len);
    std::vector<unique_fd> fillers;
    for (int i = 0; i < 4; ++i) {
        fillers.emplace_back(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
        ::connect(fillers.back().get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr);
    }

    auto cfg = redis_config("redis://127.0.0.1:" + std::to_string(ntohs(addr.sin_port)));
    cfg.connect_timeout = 150ms;
    auto bridge = make_bridge(cfg);
    bridge->start();
    ASSERT_TRUE(run_until([&] { return bridge->stats().timeouts >= 2; }, 5s));
    EXPECT_EQ(bridge->current(), redis_bridge::state::disconnected);
}

TEST_F(redis_bridge_test, refused_connections_are_retried_with_backoff) {
    // Bound (so nobody else takes the port meanwhile) but not listening: connections are refused.
    unique_fd bound(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::bind(bound.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    socklen_t len = sizeof addr;
    ::getsockname(bound.get(), reinterpret_cast<sockaddr*>(&addr), &len);
    auto cfg = redis_config("redis://127.0.0.1:" + std::to_string(ntohs(addr.sin_port)));
    cfg.reconnect_backoff_min = 10ms;
    cfg.reconnect_backoff_max = 40ms;
    auto bridge = make_bridge(cfg);
    bridge->start();
    ASSERT_TRUE(run_until([&] { return bridge->stats().connect_failures >= 10; }, 5s));
    const auto s = bridge->stats();
    EXPECT_EQ(s.current, redis_bridge::state::disconnected);
    EXPECT_NE(s.last_error.find("refused"), std::string::npos) << s.last_error;
    EXPECT_EQ(s.timeouts, 0u);
}

TEST_F(redis_bridge_test, command_timeout_when_redis_stops_answering) {
    start_redis();
    auto cfg = redis_config(url());
    cfg.command_timeout = 300ms;
    cfg.connect_timeout = 300ms;
    auto bridge = make_bridge(cfg);
    bridge->start();
    ASSERT_TRUE(run_until([&] { return bridge->current() == redis_bridge::state::connected; }));

    redis_->pause();
    bridge->publish({"t", payload_kind::text, "into the void"});
    redis_bridge::stats_snapshot s;
    ASSERT_TRUE(run_until(
        [&] {
            s = bridge->stats(); // as it was when the timeout hit, before any later attempt
            return s.timeouts >= 1;
        },
        5s));
    EXPECT_EQ(s.publish_failures, 1u); // lost with the connection, counted
    EXPECT_NE(s.publisher, "ready");
    EXPECT_NE(s.last_error.find("command_timeout (300ms)"), std::string::npos) << s.last_error;

    redis_->resume();
    ASSERT_TRUE(run_until([&] { return bridge->current() == redis_bridge::state::connected; }, 10s))
        << bridge->stats().last_error;
    bridge->publish({"t", payload_kind::text, "heard"});
    ASSERT_TRUE(run_until([&] { return bridge->stats().messages_out == 1; }));
}

TEST_F(redis_bridge_test, publishes_beyond_the_unanswered_limit_are_dropped_and_counted) {
    start_redis();
    auto cfg = redis_config(url());
    cfg.command_timeout = 20s; // the pause below must not end the connection
    redis_bridge::limits lim;
    lim.max_message_size = 1024;
    lim.max_unanswered_bytes = 1; // raised to two maximal messages: 2 * (1024 + 64KiB)
    auto bridge = make_bridge(cfg, lim);
    bridge->start();
    ASSERT_TRUE(run_until([&] { return bridge->current() == redis_bridge::state::connected; }));

    redis_->pause();
    const std::string chunk(64 * 1024, 'z');
    for (int i = 0; i < 10; ++i)
        bridge->publish({"bp", payload_kind::text, chunk});
    auto s = bridge->stats();
    EXPECT_EQ(s.dropped_backpressure, 8u);
    EXPECT_EQ(s.dropped_while_disconnected, 0u);
    redis_->resume();
    ASSERT_TRUE(run_until([&] { return bridge->stats().messages_out == 2; }));
    bridge->publish({"bp", payload_kind::text, chunk}); // room again
    ASSERT_TRUE(run_until([&] { return bridge->stats().messages_out == 3; }));
    EXPECT_EQ(bridge->stats().dropped_backpressure, 8u);
}

TEST_F(redis_bridge_test, foreign_and_garbled_messages_are_counted_not_delivered) {
    start_redis();
    redis_bridge::limits lim;
    lim.max_message_size = 1024;
    auto bridge = make_bridge(redis_config(url()), lim);
    bridge->want("g");
    bridge->start();
    ASSERT_TRUE(run_until([&] { return up_and_subscribed(*bridge, 1); }));

    sync_client client(redis_->port());
    const auto other = other_node();
    client.command({"PUBLISH", "sockherd:g", "not an envelope"});
    client.command({"PUBLISH", "sockherd:g", ""});
    client.command({"PUBLISH", "sockherd:g", envelope_bytes(other, 1, payload_kind::text, "bad \xff utf-8")});
    client.command({"PUBLISH", "sockherd:g", envelope_bytes(other, 2, payload_kind::json, "{not json")});
    client.command({"PUBLISH", "sockherd:g", envelope_bytes(other, 3, payload_kind::binary, std::string(1025, 'x'))});
    auto version2 = envelope_bytes(other, 4, payload_kind::text, "from the future");
    version2[4] = 2;
    client.command({"PUBLISH", "sockherd:g", version2});
    client.command({"PUBLISH", "sockherd:g", envelope_bytes(other, 5, payload_kind::binary, std::string(1024, 'y'))});
    ASSERT_TRUE(run_until([&] { return received_.size() == 1; }));
    EXPECT_EQ(received_[0]->payload.size(), 1024u);
    EXPECT_EQ(bridge->stats().decode_errors, 6u);
    EXPECT_EQ(bridge->stats().messages_in, 1u);
}

TEST_F(redis_bridge_test, unix_socket_and_password) {
    start_redis({.password = "s3cret pass", .unix_socket = true});
    auto cfg = redis_config("unix://:s3cret%20pass@" + redis_->socket_path());
    cfg.channel_prefix = "app:";
    auto bridge = make_bridge(cfg);
    bridge->want("u");
    bridge->start();
    ASSERT_TRUE(run_until([&] { return up_and_subscribed(*bridge, 1); })) << bridge->stats().last_error;
    EXPECT_EQ(bridge->stats().url, "unix://:***@" + redis_->socket_path());

    sync_client client(redis_->port(), "s3cret pass");
    client.command({"PUBLISH", "app:u", envelope_bytes(other_node(), 1, payload_kind::text, "via unix")});
    ASSERT_TRUE(run_until([&] { return received_.size() == 1; }));
    EXPECT_EQ(received_[0]->channel, "u");
}

TEST_F(redis_bridge_test, a_wrong_password_is_an_error_that_does_not_show_the_password) {
    start_redis({.password = "right"});
    auto bridge = make_bridge(redis_config("redis://:wrong-hunter2@127.0.0.1:" + std::to_string(redis_->port())));
    bridge->start();
    ASSERT_TRUE(run_until([&] { return bridge->stats().connect_failures >= 2; }));
    const auto s = bridge->stats();
    EXPECT_EQ(s.current, redis_bridge::state::disconnected);
    EXPECT_NE(s.last_error.find("AUTH refused"), std::string::npos) << s.last_error;
    EXPECT_EQ(s.last_error.find("hunter2"), std::string::npos);
    EXPECT_EQ(s.url.find("hunter2"), std::string::npos);
}

TEST_F(redis_bridge_test, stop_from_a_callback_and_start_again) {
    start_redis();
    auto cfg = redis_config(url());
    std::unique_ptr<redis_bridge> bridge;
    int messages = 0;
    bridge = std::make_unique<redis_bridge>(ioc_, cfg, redis_bridge::limits{},
                                            redis_bridge::callbacks{[&](shared_message) {
                                                                        ++messages;
                                                                        bridge->stop(); // inside hiredis
                                                                    },
                                                                    nullptr});
    bridge->want("st");
    bridge->start();
    ASSERT_TRUE(run_until([&] { return up_and_subscribed(*bridge, 1); }));
    sync_client client(redis_->port());
    for (int i = 0; i < 3; ++i) // several in one read: the rest must not arrive after stop()
        client.command({"PUBLISH", "sockherd:st", envelope_bytes(other_node(), 1, payload_kind::text, "m")});
    ASSERT_TRUE(run_until([&] { return messages >= 1 && bridge->current() == redis_bridge::state::off; }));
    run_for(50ms);
    EXPECT_EQ(messages, 1);
    EXPECT_TRUE(run_until([&] { return pubsub_channels(client).empty(); })); // Redis saw the close

    bridge->start(); // the wanted set was kept
    ASSERT_TRUE(run_until([&] { return up_and_subscribed(*bridge, 1); }));
}

TEST_F(redis_bridge_test, destroying_at_any_moment_is_safe) {
    start_redis();
    const auto cfg = redis_config(url());
    sync_client client(redis_->port());
    // Each bridge dies at a different point of its life: before connecting, while connecting,
    // connected, with replies in flight. Then the io_context runs what is left over.
    for (int round = 0; round < 12; ++round) {
        auto bridge = make_bridge(cfg);
        bridge->want("d");
        bridge->start();
        for (int turns = 0; turns < round * 3; ++turns)
            ioc_.poll_one();
        bridge->publish({"d", payload_kind::text, "x"});
        bridge.reset();
        run_for(10ms);
    }
    // A destroyed bridge that was connected while Redis goes away.
    auto bridge = make_bridge(cfg);
    bridge->start();
    ASSERT_TRUE(run_until([&] { return bridge->current() == redis_bridge::state::connected; }));
    bridge->publish({"d", payload_kind::text, "x"});
    redis_->kill();
    bridge.reset();
    run_for(50ms);
}

} // namespace
} // namespace sockherd::supervisor
