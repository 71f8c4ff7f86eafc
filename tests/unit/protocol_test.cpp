#include "common/ipc/protocol.hpp"

#include <random>

#include <gtest/gtest.h>

namespace sockherd::ipc {
namespace {

std::span<const std::uint8_t> bytes_of(const std::string& s) {
    return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

decode_result round_trip(const message& m) {
    std::string buf;
    encode(m, buf);
    auto r = decode(bytes_of(buf));
    EXPECT_EQ(r.status, decode_status::ok);
    EXPECT_EQ(r.consumed, buf.size());
    EXPECT_EQ(r.type, static_cast<std::uint16_t>(type_of(m)));
    return r;
}

TEST(protocol, config_round_trip) {
    auto r = round_trip(config_msg{42, "[server]\nworkers = 3\n", {}});
    const auto& m = std::get<config_msg>(r.msg);
    EXPECT_EQ(m.generation, 42u);
    EXPECT_EQ(m.toml, "[server]\nworkers = 3\n");
    EXPECT_TRUE(m.tls.empty());
}

TEST(protocol, config_round_trip_carries_tls_material) {
    config_msg in{7, "x = 1\n", {}};
    in.tls.push_back({2, "-----BEGIN CERTIFICATE-----\nabc\n", std::string("key\0bytes", 9)});
    in.tls.push_back({0, "cert0", "key0"});
    const auto r = round_trip(in);
    const auto& m = std::get<config_msg>(r.msg);
    ASSERT_EQ(m.tls.size(), 2u);
    EXPECT_EQ(m.tls[0].listener, 2u);
    EXPECT_EQ(m.tls[0].cert_pem, in.tls[0].cert_pem);
    EXPECT_EQ(m.tls[0].key_pem, in.tls[0].key_pem);
    EXPECT_EQ(m.tls[1].listener, 0u);
    EXPECT_EQ(m.tls[1].key_pem, "key0");
}

TEST(protocol, handoff_round_trip_keeps_peers_and_count) {
    handoff_msg h;
    h.listener_id = 7;
    h.connections.push_back({{boost::asio::ip::make_address("127.0.0.9"), 4242}, {}});
    h.connections.push_back({{boost::asio::ip::make_address("::1"), 65535}, {}});
    auto r = round_trip(message(std::move(h)));
    const auto& m = std::get<handoff_msg>(r.msg);
    EXPECT_EQ(m.listener_id, 7);
    ASSERT_EQ(m.connections.size(), 2u);
    EXPECT_EQ(m.connections[0].peer.address().to_string(), "127.0.0.9");
    EXPECT_EQ(m.connections[0].peer.port(), 4242);
    EXPECT_EQ(m.connections[1].peer.address().to_string(), "::1");
    EXPECT_EQ(m.connections[1].peer.port(), 65535);
    EXPECT_FALSE(m.connections[0].fd); // descriptors travel beside the bytes
    EXPECT_EQ(descriptor_count(r.msg), 2u);
}

TEST(protocol, small_messages_round_trip) {
    EXPECT_EQ(std::get<drain_msg>(round_trip(drain_msg{30000}).msg).timeout_ms, 30000u);
    EXPECT_FALSE(std::get<drain_msg>(round_trip(drain_msg{1, false}).msg).node_stopping);
    EXPECT_TRUE(std::get<drain_msg>(round_trip(drain_msg{1, true}).msg).node_stopping);
    round_trip(stop_msg{});
    auto ready = std::get<ready_msg>(round_trip(ready_msg{9, 1234}).msg);
    EXPECT_EQ(ready.generation, 9u);
    EXPECT_EQ(ready.pid, 1234u);
    auto load = std::get<load_msg>(round_trip(load_msg{17, 1ull << 40}).msg);
    EXPECT_EQ(load.connections, 17u);
    EXPECT_EQ(load.handoffs_received, 1ull << 40);
    round_trip(drained_msg{});
    EXPECT_EQ(std::get<unknown_type_msg>(round_trip(unknown_type_msg{999}).msg).type, 999);
    EXPECT_EQ(descriptor_count(drain_msg{}), 0u);
}

TEST(protocol, heartbeat_round_trip_keeps_every_counter_in_place) {
    heartbeat_msg in;
    in.generation = 3;
    in.pid = 4242;
    std::uint64_t next = 1;
    // Distinct values, one of them over 32 bits, so a swapped or truncated field shows.
    heartbeat_msg::for_each_counter(in, [&](std::uint64_t& v) {
        v = (next << 33) + next;
        ++next;
    });
    auto out = std::get<heartbeat_msg>(round_trip(in).msg);
    EXPECT_EQ(out.generation, 3u);
    EXPECT_EQ(out.pid, 4242u);
    std::vector<std::uint64_t> a, b;
    heartbeat_msg::for_each_counter(in, [&](std::uint64_t v) { a.push_back(v); });
    heartbeat_msg::for_each_counter(out, [&](std::uint64_t v) { b.push_back(v); });
    EXPECT_EQ(a, b);
    EXPECT_EQ(a.size(), 18u + rejection_count);
    EXPECT_EQ(out.rejections_total, in.rejections_total);
    EXPECT_EQ(out.bad_requests_total, in.bad_requests_total);
    EXPECT_EQ(out.uptime_ms, in.uptime_ms);
}

TEST(protocol, large_payload_round_trip) {
    std::string big(1024 * 1024 + 17, 'x');
    auto r = round_trip(config_msg{1, big, {}});
    EXPECT_EQ(std::get<config_msg>(r.msg).toml.size(), big.size());
}

TEST(protocol, every_truncation_needs_more) {
    std::string buf;
    encode(config_msg{5, "abcdef", {}}, buf);
    for (std::size_t n = 0; n < buf.size(); ++n) {
        auto r = decode(bytes_of(buf.substr(0, n)));
        EXPECT_EQ(r.status, decode_status::need_more) << "prefix of " << n << " bytes";
        EXPECT_EQ(r.consumed, 0u);
    }
}

TEST(protocol, two_frames_decode_one_at_a_time) {
    std::string buf;
    encode(stop_msg{}, buf);
    encode(drain_msg{5}, buf);
    auto first = decode(bytes_of(buf));
    ASSERT_EQ(first.status, decode_status::ok);
    EXPECT_TRUE(std::holds_alternative<stop_msg>(first.msg));
    auto second = decode(bytes_of(buf).subspan(first.consumed));
    ASSERT_EQ(second.status, decode_status::ok);
    EXPECT_EQ(std::get<drain_msg>(second.msg).timeout_ms, 5u);
}

TEST(protocol, bad_version_is_malformed) {
    std::string buf;
    encode(stop_msg{}, buf);
    buf[4] = 2;
    EXPECT_EQ(decode(bytes_of(buf)).status, decode_status::malformed);
}

TEST(protocol, oversize_length_is_malformed_before_waiting_for_it) {
    std::string buf;
    encode(stop_msg{}, buf);
    const std::uint32_t len = max_payload + 1;
    for (int i = 0; i < 4; ++i)
        buf[i] = static_cast<char>(len >> (8 * i));
    EXPECT_EQ(decode(bytes_of(buf)).status, decode_status::malformed);
}

TEST(protocol, payload_that_does_not_match_its_type_is_malformed) {
    std::string buf;
    encode(drain_msg{1}, buf);
    buf.push_back('!'); // trailing byte inside the frame
    buf[0] = static_cast<char>(buf[0] + 1);
    EXPECT_EQ(decode(bytes_of(buf)).status, decode_status::malformed);

    std::string cfg;
    encode(config_msg{1, "abc", {}}, cfg);
    cfg[8 + 8] = 100; // string length larger than the payload
    EXPECT_EQ(decode(bytes_of(cfg)).status, decode_status::malformed);
}

TEST(protocol, listen_round_trip_keeps_listener_ids_and_count) {
    listen_msg l;
    l.sockets.push_back({3, {}});
    l.sockets.push_back({0, {}});
    const auto r = round_trip(message(std::move(l)));
    ASSERT_EQ(r.type, static_cast<std::uint16_t>(message_type::listen));
    const auto& m = std::get<listen_msg>(r.msg);
    ASSERT_EQ(m.sockets.size(), 2u);
    EXPECT_EQ(m.sockets[0].listener_id, 3);
    EXPECT_EQ(m.sockets[1].listener_id, 0);
    EXPECT_EQ(descriptor_count(r.msg), 2u);

    // "Accept on nothing": a valid message without descriptors.
    const auto e = round_trip(message(listen_msg{}));
    EXPECT_EQ(descriptor_count(e.msg), 0u);

    std::string many;
    encode(message(listen_msg{}), many);
    many[8] = static_cast<char>(max_listen_sockets + 1); // the count, past the limit
    EXPECT_EQ(decode(bytes_of(many)).status, decode_status::malformed);
}

TEST(protocol, handoff_with_zero_or_too_many_connections_is_malformed) {
    handoff_msg h;
    h.connections.push_back({{boost::asio::ip::make_address("127.0.0.1"), 1}, {}});
    std::string buf;
    encode(message(std::move(h)), buf);
    std::string zero = buf;
    zero[8 + 2] = 0;
    EXPECT_EQ(decode(bytes_of(zero)).status, decode_status::malformed);
    std::string many = buf;
    many[8 + 2] = static_cast<char>(max_handoff_batch + 1);
    EXPECT_EQ(decode(bytes_of(many)).status, decode_status::malformed);
    std::string family = buf;
    family[8 + 3] = 9; // neither v4 nor v6
    EXPECT_EQ(decode(bytes_of(family)).status, decode_status::malformed);
}

TEST(protocol, unknown_type_is_skipped_not_fatal) {
    std::string buf;
    encode(stop_msg{}, buf);
    buf[6] = static_cast<char>(0x34);
    buf[7] = static_cast<char>(0x12);
    buf.append("xyz");
    buf[0] = 3;
    auto r = decode(bytes_of(buf));
    EXPECT_EQ(r.status, decode_status::unknown_type);
    EXPECT_EQ(r.type, 0x1234);
    EXPECT_EQ(r.consumed, buf.size());
}

TEST(protocol, random_garbage_never_crashes_or_overreads) {
    std::mt19937 rng(12345);
    for (int i = 0; i < 20000; ++i) {
        std::vector<std::uint8_t> junk(rng() % 64);
        for (auto& b : junk)
            b = static_cast<std::uint8_t>(rng());
        if (junk.size() >= 6 && rng() % 2) {
            junk[4] = 1; // valid version, so payload decoders get exercised
            junk[5] = 0;
        }
        auto r = decode(junk);
        EXPECT_LE(r.consumed, junk.size());
    }
}

} // namespace
} // namespace sockherd::ipc

namespace sockherd::ipc {
namespace {

shared_message make(std::string channel, payload_kind kind, std::string payload) {
    return std::make_shared<const pubsub_message>(pubsub_message{std::move(channel), kind, std::move(payload)});
}

TEST(protocol, pubsub_messages_round_trip) {
    std::string bin("\0\x01\xff", 3);
    auto p = std::get<publish_msg>(
        round_trip(publish_msg{77, publish_msg::include_origin, make("room.1", payload_kind::binary, bin)}).msg);
    EXPECT_EQ(p.request_id, 77u);
    EXPECT_EQ(p.flags, publish_msg::include_origin);
    EXPECT_EQ(p.message->channel, "room.1");
    EXPECT_EQ(p.message->kind, payload_kind::binary);
    EXPECT_EQ(p.message->payload, bin);

    auto r = std::get<relay_msg>(round_trip(relay_msg{make("c", payload_kind::json, "{\"a\":1}")}).msg);
    EXPECT_EQ(r.message->kind, payload_kind::json);
    EXPECT_EQ(r.message->payload, "{\"a\":1}");

    auto a = std::get<publish_ack_msg>(round_trip(publish_ack_msg{5, 3}).msg);
    EXPECT_EQ(a.request_id, 5u);
    EXPECT_EQ(a.workers, 3u);

    auto i = std::get<interest_msg>(round_trip(interest_msg{9, {"a", "b"}, {"c"}}).msg);
    EXPECT_EQ(i.seq, 9u);
    EXPECT_EQ(i.added, (std::vector<std::string>{"a", "b"}));
    EXPECT_EQ(i.removed, (std::vector<std::string>{"c"}));
    EXPECT_EQ(std::get<interest_ack_msg>(round_trip(interest_ack_msg{9}).msg).seq, 9u);
}

TEST(protocol, pubsub_messages_with_bad_fields_are_malformed) {
    std::string bad_kind;
    encode(relay_msg{make("c", payload_kind::text, "x")}, bad_kind);
    bad_kind[8 + 4 + 1] = 7; // kind after the 1-byte channel name
    EXPECT_EQ(decode(bytes_of(bad_kind)).status, decode_status::malformed);

    std::string bad_name;
    encode(relay_msg{make("c", payload_kind::text, "x")}, bad_name);
    bad_name[8 + 4] = ' '; // not in the channel name set
    EXPECT_EQ(decode(bytes_of(bad_name)).status, decode_status::malformed);

    std::string too_many;
    encode(interest_msg{1, {"a"}, {}}, too_many);
    const std::uint32_t n = max_interest_channels + 1;
    for (int k = 0; k < 4; ++k)
        too_many[8 + 8 + k] = static_cast<char>(n >> (8 * k));
    EXPECT_EQ(decode(bytes_of(too_many)).status, decode_status::malformed);
}

} // namespace
} // namespace sockherd::ipc
