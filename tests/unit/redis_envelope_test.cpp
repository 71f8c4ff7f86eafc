// Tests for common/redis_envelope.cpp: the bytes of a message travelling through Redis.

#include "common/redis_envelope.hpp"

#include <random>
#include <set>
#include <string>

#include <gtest/gtest.h>

namespace sockherd {
namespace {

node_id some_id() {
    node_id id{};
    for (std::size_t i = 0; i < id.size(); ++i)
        id[i] = static_cast<std::uint8_t>(0xa0 + i);
    return id;
}

std::string encoded(const redis_envelope& e) {
    std::string out;
    encode(e, out);
    return out;
}

TEST(redis_envelope, layout) {
    const auto bytes = encoded({some_id(), 0x0102030405060708ull, payload_kind::binary, "xyz"});
    ASSERT_EQ(bytes.size(), envelope_header_size + 3);
    EXPECT_EQ(bytes.substr(0, 4), "SHRB");
    EXPECT_EQ(bytes[4], 1);
    for (std::size_t i = 0; i < 16; ++i)
        EXPECT_EQ(static_cast<std::uint8_t>(bytes[5 + i]), 0xa0 + i);
    EXPECT_EQ(bytes.substr(21, 8), std::string("\x01\x02\x03\x04\x05\x06\x07\x08", 8)); // big-endian
    EXPECT_EQ(bytes[29], 1);                                                           // binary
    EXPECT_EQ(bytes.substr(30), "xyz");
}

TEST(redis_envelope, round_trips_every_kind) {
    std::string all_bytes;
    for (int b = 0; b < 256; ++b)
        all_bytes += static_cast<char>(b);
    const struct {
        payload_kind kind;
        std::string payload;
    } cases[] = {
        {payload_kind::text, "hello"},
        {payload_kind::text, "gr\xc3\xbc\xc3\x9f \xe2\x82\xac \xf0\x9f\x98\x80"},
        {payload_kind::text, ""},
        {payload_kind::binary, all_bytes},
        {payload_kind::binary, std::string(1 << 20, '\0')},
        {payload_kind::json, R"({"a":[1,2,{"b":null}]})"},
    };
    std::uint64_t seq = 1;
    for (const auto& c : cases) {
        const auto bytes = encoded({some_id(), seq, c.kind, c.payload});
        redis_envelope out;
        ASSERT_EQ(decode(bytes, out), envelope_status::ok);
        EXPECT_EQ(out.origin, some_id());
        EXPECT_EQ(out.seq, seq);
        EXPECT_EQ(out.kind, c.kind);
        EXPECT_EQ(out.payload, c.payload);
        seq = seq * 1000 + 7;
    }
    redis_envelope out;
    ASSERT_EQ(decode(encoded({some_id(), ~0ull, payload_kind::text, "x"}), out), envelope_status::ok);
    EXPECT_EQ(out.seq, ~0ull);
}

TEST(redis_envelope, encode_appends) {
    std::string out = "prefix";
    encode({some_id(), 1, payload_kind::text, "p"}, out);
    EXPECT_EQ(out.substr(0, 6), "prefix");
    redis_envelope e;
    EXPECT_EQ(decode(std::string_view(out).substr(6), e), envelope_status::ok);
}

TEST(redis_envelope, rejects_garbage) {
    const auto good = encoded({some_id(), 5, payload_kind::text, "ok"});
    redis_envelope out;
    EXPECT_EQ(decode("", out), envelope_status::too_short);
    EXPECT_EQ(decode("SHR", out), envelope_status::too_short);
    EXPECT_EQ(decode(std::string_view(good).substr(0, envelope_header_size - 1), out), envelope_status::too_short);
    EXPECT_EQ(decode("hello", out), envelope_status::bad_magic);
    EXPECT_EQ(decode(R"({"channel":"c","data":"a json message from someone else"})", out), envelope_status::bad_magic);

    auto bad = good;
    bad[0] = 's';
    EXPECT_EQ(decode(bad, out), envelope_status::bad_magic);
    bad = good;
    bad[4] = 2;
    EXPECT_EQ(decode(bad, out), envelope_status::unsupported_version);
    bad = good;
    bad[29] = 3; // no such kind
    EXPECT_EQ(decode(bad, out), envelope_status::bad_flags);
    bad[29] = 0x40; // a reserved bit
    EXPECT_EQ(decode(bad, out), envelope_status::bad_flags);

    // Text and JSON must be UTF-8; binary may be anything.
    for (const char* invalid : {"\xff", "\xc0\x80", "\xe0\x80\x80", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xe2\x82",
                                "a\x80", "\xf8\x88\x80\x80\x80"}) {
        EXPECT_EQ(decode(encoded({some_id(), 1, payload_kind::text, invalid}), out), envelope_status::invalid_utf8)
            << invalid;
        EXPECT_EQ(decode(encoded({some_id(), 1, payload_kind::json, invalid}), out), envelope_status::invalid_utf8);
        EXPECT_EQ(decode(encoded({some_id(), 1, payload_kind::binary, invalid}), out), envelope_status::ok);
    }
    for (const auto s : {envelope_status::ok, envelope_status::too_short, envelope_status::bad_magic,
                         envelope_status::unsupported_version, envelope_status::bad_flags,
                         envelope_status::invalid_utf8})
        EXPECT_NE(to_string(s), "?");
}

TEST(redis_envelope, random_bytes_never_crash) {
    std::mt19937_64 rng(42);
    std::string bytes;
    const auto header = encoded({some_id(), 1, payload_kind::text, ""});
    for (int i = 0; i < 20000; ++i) {
        bytes.clear();
        if (i % 2 == 0)
            bytes = header.substr(0, rng() % (header.size() + 1)); // a valid start, then noise
        const auto n = rng() % 64;
        for (std::size_t k = 0; k < n; ++k)
            bytes += static_cast<char>(rng());
        redis_envelope out;
        const auto status = decode(bytes, out);
        if (status == envelope_status::ok) {
            EXPECT_EQ(out.payload.size(), bytes.size() - envelope_header_size);
            EXPECT_TRUE(out.kind == payload_kind::binary || valid_utf8(out.payload));
        }
    }
}

TEST(redis_envelope, valid_utf8) {
    EXPECT_TRUE(valid_utf8(""));
    EXPECT_TRUE(valid_utf8("plain ascii, longer than eight bytes"));
    EXPECT_TRUE(valid_utf8("\xc2\x80\xdf\xbf\xe0\xa0\x80\xef\xbf\xbf\xf0\x90\x80\x80\xf4\x8f\xbf\xbf"));
    EXPECT_TRUE(valid_utf8(std::string("nul \0 inside", 12)));
    EXPECT_FALSE(valid_utf8("0123456789abcdef\x80"));
    EXPECT_FALSE(valid_utf8("\xef\xbf"));
    EXPECT_FALSE(valid_utf8("\xc1\xbf"));         // overlong
    EXPECT_FALSE(valid_utf8("\xf0\x8f\xbf\xbf")); // overlong
    EXPECT_FALSE(valid_utf8("\xed\xbf\xbf"));     // surrogate
}

TEST(redis_envelope, node_ids_are_random) {
    std::set<node_id> seen;
    for (int i = 0; i < 100; ++i)
        seen.insert(random_node_id());
    EXPECT_EQ(seen.size(), 100u);
    EXPECT_EQ(to_hex(some_id()), "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf");
}

} // namespace
} // namespace sockherd
