#include "worker/json_ops.hpp"

#include <cstdint>
#include <random>
#include <string>
#include <variant>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

namespace jo = sockherd::worker::json_ops;
using sockherd::payload_kind;
using sockherd::pubsub_message;
using namespace std::string_literals;

namespace {

jo::op parse_ok(std::string_view frame) {
    auto r = jo::parse(frame);
    if (auto* e = std::get_if<jo::op_error>(&r)) {
        ADD_FAILURE() << "unexpected error for " << frame << ": " << e->message;
        return {};
    }
    return std::get<jo::op>(std::move(r));
}

jo::op_error parse_err(std::string_view frame) {
    auto r = jo::parse(frame);
    if (auto* o = std::get_if<jo::op>(&r)) {
        ADD_FAILURE() << "unexpected success for " << frame.substr(0, 200) << " (channel " << o->channel << ")";
        return {};
    }
    return std::get<jo::op_error>(std::move(r));
}

// Expects frame to be rejected with a message containing `part`, and the given op/channel.
void expect_error(std::string_view frame, std::string_view part, std::string_view op = "",
                  std::string_view channel = "") {
    SCOPED_TRACE(std::string(frame.substr(0, 200)));
    const auto e = parse_err(frame);
    EXPECT_NE(e.message.find(part), std::string::npos) << "message: " << e.message;
    EXPECT_EQ(e.op, op);
    EXPECT_EQ(e.channel, channel);
}

std::string random_bytes(std::mt19937& rng, std::size_t n) {
    std::uniform_int_distribution<int> byte(0, 255);
    std::string s(n, '\0');
    for (auto& c : s)
        c = static_cast<char>(byte(rng));
    return s;
}

} // namespace

// ---- parse: accepted ops ----

TEST(json_ops_parse, subscribe_and_unsubscribe) {
    auto s = parse_ok(R"({"op":"subscribe","channel":"room-1"})");
    EXPECT_EQ(s.kind, jo::op_kind::subscribe);
    EXPECT_EQ(s.channel, "room-1");
    EXPECT_EQ(s.data, "");

    auto u = parse_ok(" { \"channel\" : \"a.b:c@d_e\" ,\n\t\"op\" : \"unsubscribe\" } ");
    EXPECT_EQ(u.kind, jo::op_kind::unsubscribe);
    EXPECT_EQ(u.channel, "a.b:c@d_e");
}

TEST(json_ops_parse, publish_string_is_text_with_decoded_content) {
    auto p = parse_ok(R"({"op":"publish","channel":"c","data":"say \"hi\"\n\u00e9\ud83d\ude00\u0000!"})");
    EXPECT_EQ(p.kind, jo::op_kind::publish);
    EXPECT_EQ(p.channel, "c");
    EXPECT_EQ(p.data_kind, payload_kind::text);
    EXPECT_EQ(p.data, "say \"hi\"\n\xC3\xA9\xF0\x9F\x98\x80\0!"s);

    auto empty = parse_ok(R"({"data":"","channel":"c","op":"publish"})");
    EXPECT_EQ(empty.data_kind, payload_kind::text);
    EXPECT_EQ(empty.data, "");
}

TEST(json_ops_parse, publish_other_values_are_compact_json) {
    const std::pair<std::string_view, std::string_view> cases[] = {
        {R"({ "b" : 1, "a" : [ 1, 2, {"x": null} ] })", R"({"a":[1,2,{"x":null}],"b":1})"},
        {"[]", "[]"},
        {"{}", "{}"},
        {"42", "42"},
        {"-7", "-7"},
        {"1.5", "1.5"},
        {"1e2", "100.0"},
        {"18446744073709551615", "18446744073709551615"},
        {"true", "true"},
        {"false", "false"},
        {"null", "null"},
        {R"([["deep",{"k":"\u00e9\n"}]])", "[[\"deep\",{\"k\":\"\xC3\xA9\\n\"}]]"},
    };
    for (const auto& [in, out] : cases) {
        SCOPED_TRACE(std::string(in));
        auto p = parse_ok(R"({"op":"publish","channel":"c","data":)" + std::string(in) + "}");
        EXPECT_EQ(p.data_kind, payload_kind::json);
        EXPECT_EQ(p.data, out);
    }
}

TEST(json_ops_parse, publish_base64_is_binary) {
    auto p = parse_ok(R"({"op":"publish","channel":"c","encoding":"base64","data":"AAEC/w=="})");
    EXPECT_EQ(p.data_kind, payload_kind::binary);
    EXPECT_EQ(p.data, "\x00\x01\x02\xFF"s);

    auto empty = parse_ok(R"({"op":"publish","channel":"c","data":"","encoding":"base64"})");
    EXPECT_EQ(empty.data_kind, payload_kind::binary);
    EXPECT_EQ(empty.data, "");
}

TEST(json_ops_parse, channel_length_limit_is_200_bytes) {
    const std::string c200(200, 'x');
    EXPECT_EQ(parse_ok(R"({"op":"subscribe","channel":")" + c200 + "\"}").channel, c200);
    expect_error(R"({"op":"subscribe","channel":")" + c200 + "x\"}", "1-200 bytes", "subscribe");
}

// ---- parse: errors ----

TEST(json_ops_parse, invalid_json) {
    expect_error("", "invalid JSON at byte 1");
    expect_error(R"({"op":"subscribe","channel":"c")", "invalid JSON at byte");
    expect_error(R"({"op":"subscribe","channel":"c"} x)", "invalid JSON at byte 34");
    expect_error(R"({"op":"subscribe","channel":"c"}{})", "invalid JSON");
    expect_error(R"({op:"subscribe"})", "invalid JSON at byte 2");
    expect_error("{\"op\":\"subscribe\",\"channel\":\"c\xFF\"}", "invalid JSON");   // invalid UTF-8
    expect_error(R"({"op":"publish","channel":"c","data":"\ud800"})", "invalid JSON"); // lone surrogate
    expect_error(R"({"op":"publish","channel":"c","data":1e400})", "number overflow");
    expect_error(R"({"op":"subscribe","channel":"c",})", "invalid JSON");
    // The diagnostic never quotes the rest of a long frame back.
    const auto e = parse_err(R"({"op":"publish","channel":"c","data":")" + std::string(100000, 'a'));
    EXPECT_LT(e.message.size(), 300u) << e.message.substr(0, 300);
}

TEST(json_ops_parse, not_an_object) {
    for (std::string_view f : {"[]", "[1,{\"op\":\"subscribe\"}]", "\"subscribe\"", "42", "null", "true"})
        expect_error(f, "frame must be a JSON object");
}

TEST(json_ops_parse, op_errors) {
    expect_error(R"({"channel":"c"})", "missing \"op\"", "", "c");
    expect_error(R"({"op":1,"channel":"c"})", "\"op\" must be a string", "", "c");
    expect_error(R"({"op":null,"channel":"c"})", "\"op\" must be a string", "", "c");
    expect_error(R"({"op":["subscribe"],"channel":"c"})", "\"op\" must be a string", "", "c");
    expect_error(R"({"op":"sub","channel":"c"})", "unknown op 'sub'", "", "c");
    expect_error(R"({"op":"Subscribe","channel":"c"})", "unknown op 'Subscribe'", "", "c");
    const auto e = parse_err(R"({"op":")" + std::string(5000, 'z') + R"(","channel":"c"})");
    EXPECT_NE(e.message.find("unknown op 'zzz"), std::string::npos);
    EXPECT_LT(e.message.size(), 200u);
}

TEST(json_ops_parse, channel_errors) {
    expect_error(R"({"op":"subscribe"})", "missing \"channel\"", "subscribe");
    expect_error(R"({"op":"unsubscribe","channel":5})", "\"channel\" must be a string", "unsubscribe");
    expect_error(R"({"op":"publish","channel":{},"data":1})", "\"channel\" must be a string", "publish");
    for (std::string_view bad : {"", "a b", "a/b", "caf\\u00e9", "a\\u0000"}) {
        const std::string frame = R"({"op":"subscribe","channel":")" + std::string(bad) + "\"}";
        expect_error(frame, "1-200 bytes", "subscribe");
        expect_error(frame, "A-Z a-z 0-9 - _ . : @", "subscribe");
    }
}

TEST(json_ops_parse, data_and_encoding_errors) {
    expect_error(R"({"op":"publish","channel":"c"})", "publish requires \"data\"", "publish", "c");
    expect_error(R"({"op":"publish","channel":"c","encoding":"base64"})", "publish requires \"data\"", "publish",
                 "c");
    expect_error(R"({"op":"subscribe","channel":"c","data":"x"})", "subscribe does not take \"data\"", "subscribe",
                 "c");
    expect_error(R"({"op":"unsubscribe","channel":"c","data":null})", "unsubscribe does not take \"data\"",
                 "unsubscribe", "c");
    expect_error(R"({"op":"subscribe","channel":"c","encoding":"base64"})", "subscribe does not take \"encoding\"",
                 "subscribe", "c");
    expect_error(R"({"op":"publish","channel":"c","data":"AA==","encoding":"hex"})", "\"encoding\" must be \"base64\"",
                 "publish", "c");
    expect_error(R"({"op":"publish","channel":"c","data":"AA==","encoding":"BASE64"})",
                 "\"encoding\" must be \"base64\"", "publish", "c");
    expect_error(R"({"op":"publish","channel":"c","data":"AA==","encoding":1})", "\"encoding\" must be \"base64\"",
                 "publish", "c");
    expect_error(R"({"op":"publish","channel":"c","data":[1],"encoding":"base64"})",
                 "requires \"data\" to be a string", "publish", "c");
    expect_error(R"({"op":"publish","channel":"c","data":"abc","encoding":"base64"})", "not valid base64", "publish",
                 "c");
    expect_error(R"({"op":"publish","channel":"c","data":"YQ==\n","encoding":"base64"})", "not valid base64",
                 "publish", "c");
}

TEST(json_ops_parse, unknown_and_duplicate_keys) {
    expect_error(R"({"op":"subscribe","channel":"c","chanel":"d"})", "unknown key 'chanel'", "subscribe", "c");
    expect_error(R"({"Op":"x","op":"publish","channel":"c","data":1})", "unknown key 'Op'", "publish", "c");
    expect_error(R"({"op":"publish","channel":"c","data":1,"extra":{"deep":[1,2]}})", "unknown key 'extra'",
                 "publish", "c");
    expect_error(R"({"op":"subscribe","channel":"c","op":"publish"})", "duplicate key 'op'", "subscribe", "c");
    expect_error(R"({"op":"publish","channel":"c","data":1,"data":{"a":2}})", "duplicate key 'data'", "publish",
                 "c");
}

TEST(json_ops_parse, nesting_is_bounded_before_it_can_overflow) {
    expect_error(std::string(100000, '['), "nested deeper than 64");
    expect_error(std::string(1 << 20, '['), "nested deeper than 64");
    expect_error(R"({"op":"publish","channel":"c","data":)" + std::string(1 << 20, '['), "nested deeper than 64");
    std::string objects;
    for (int i = 0; i < 100000; ++i)
        objects += "{\"a\":";
    expect_error(R"({"op":"publish","channel":"c","data":)" + objects, "nested deeper than 64");

    // The op object is level 1, so "data" may nest 63 more levels, not 64.
    auto nested = [](int levels) {
        return R"({"op":"publish","channel":"c","data":)" + std::string(levels, '[') + std::string(levels, ']') + "}";
    };
    auto ok = parse_ok(nested(63));
    EXPECT_EQ(ok.data_kind, payload_kind::json);
    EXPECT_EQ(ok.data, std::string(63, '[') + std::string(63, ']'));
    expect_error(nested(64), "nested deeper than 64");
}

// ---- base64 ----

TEST(json_ops_base64, rfc4648_vectors) {
    const std::pair<std::string_view, std::string_view> vectors[] = {
        {"", ""},         {"f", "Zg=="},         {"fo", "Zm8="},         {"foo", "Zm9v"},
        {"foob", "Zm9vYg=="}, {"fooba", "Zm9vYmE="}, {"foobar", "Zm9vYmFy"}, {"\xFB\xFF\xBF", "+/+/"},
    };
    for (const auto& [raw, enc] : vectors) {
        EXPECT_EQ(jo::base64_encode(raw), enc);
        EXPECT_EQ(jo::base64_decode(enc), std::string(raw));
    }
}

TEST(json_ops_base64, random_round_trips_for_all_lengths) {
    std::mt19937 rng(12345);
    for (std::size_t n = 0; n <= 70; ++n) {
        for (int rep = 0; rep < 8; ++rep) {
            const auto bytes = random_bytes(rng, n);
            const auto enc = jo::base64_encode(bytes);
            ASSERT_EQ(enc.size(), (n + 2) / 3 * 4);
            const auto dec = jo::base64_decode(enc);
            ASSERT_TRUE(dec.has_value()) << enc;
            ASSERT_EQ(*dec, bytes) << "length " << n;
        }
    }
}

TEST(json_ops_base64, decode_is_strict) {
    for (std::string_view bad : {
             "Zg",        // no padding
             "Zg=",       // short padding
             "Z===",      // three pad characters
             "====",      // only padding
             "=Zm9",      // padding first
             "Zg=a",      // data after padding
             "Zg==Zg==",  // padding in the middle
             "Zm9v=",     // length not a multiple of 4
             "Zh==",      // unused bits set (non-canonical)
             "Zm9=",      // unused bits set (non-canonical)
             "Zm 9v",     // whitespace
             "Zm9v\n",    // trailing newline
             "Zm-_",      // base64url alphabet
             "Zm9v\xFF\xFF\xFF\xFF",
         })
        EXPECT_FALSE(jo::base64_decode(bad).has_value()) << bad;
    EXPECT_FALSE(jo::base64_decode("Zm9\0"s).has_value());
}

// ---- encoding ----

TEST(json_ops_encode, delivery_shapes) {
    EXPECT_EQ(jo::encode_delivery({"c", payload_kind::text, "hello"}), R"({"channel":"c","data":"hello"})");
    EXPECT_EQ(jo::encode_delivery({"c", payload_kind::text, ""}), R"({"channel":"c","data":""})");
    EXPECT_EQ(jo::encode_delivery({"room.1", payload_kind::binary, "\x00\x01\x02\xFF"s}),
              R"({"channel":"room.1","data":"AAEC/w==","encoding":"base64"})");
    EXPECT_EQ(jo::encode_delivery({"c", payload_kind::binary, ""}), R"({"channel":"c","data":"","encoding":"base64"})");
    EXPECT_EQ(jo::encode_delivery({"c", payload_kind::json, R"({"a":[1,"x"]})"}),
              R"({"channel":"c","data":{"a":[1,"x"]}})");
    EXPECT_EQ(jo::encode_delivery({"c", payload_kind::json, "42"}), R"({"channel":"c","data":42})");
    EXPECT_EQ(jo::encode_delivery({"c", payload_kind::json, ""}), R"({"channel":"c","data":null})");
}

TEST(json_ops_encode, text_escaping) {
    const std::string text = "say \"hi\" \\ /\n\r\t\b\f\x01\x1f\x7f\0end \xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80"s;
    EXPECT_EQ(jo::encode_delivery({"c", payload_kind::text, text}),
              "{\"channel\":\"c\",\"data\":\"say \\\"hi\\\" \\\\ /\\n\\r\\t\\b\\f\\u0001\\u001f\x7f\\u0000end "
              "\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80\"}");
    const auto back = nlohmann::json::parse(jo::encode_delivery({"c", payload_kind::text, text}));
    EXPECT_EQ(back.at("data").get<std::string>(), text);
}

TEST(json_ops_encode, invalid_utf8_becomes_replacement_characters) {
    // Each maximal ill-formed subsequence becomes one U+FFFD: a stray byte, a truncated lead, a
    // surrogate (ED A0 80: three), an overlong (C0 AF: two), a sequence cut at the end.
    const std::string bad = "a\xFF" "b\xC3(\xED\xA0\x80z\xC0\xAF|\xF0\x9F\x98";
    const std::string fffd = "\xEF\xBF\xBD";
    const auto out = jo::encode_delivery({"c", payload_kind::text, bad});
    EXPECT_EQ(out, "{\"channel\":\"c\",\"data\":\"a" + fffd + "b" + fffd + "(" + fffd + fffd + fffd + "z" + fffd +
                       fffd + "|" + fffd + "\"}");
    const auto back = nlohmann::json::parse(out);
    EXPECT_EQ(back.at("channel"), "c");
    EXPECT_EQ(back.at("data").get<std::string>(), "a" + fffd + "b" + fffd + "(" + fffd + fffd + fffd + "z" + fffd +
                                                       fffd + "|" + fffd);
}

TEST(json_ops_encode, random_bytes_always_give_valid_json) {
    std::mt19937 rng(777);
    for (int i = 0; i < 2000; ++i) {
        const auto bytes = random_bytes(rng, static_cast<std::size_t>(i % 64));
        const auto out = jo::encode_delivery({"c", payload_kind::text, bytes});
        ASSERT_TRUE(nlohmann::json::accept(out)) << out;
    }
}

TEST(json_ops_encode, random_valid_utf8_round_trips_exactly) {
    std::mt19937 rng(4242);
    std::uniform_int_distribution<std::uint32_t> plane(0, 3);
    auto append_utf8 = [](std::string& s, std::uint32_t cp) {
        if (cp < 0x80) {
            s += static_cast<char>(cp);
        } else if (cp < 0x800) {
            s += static_cast<char>(0xC0 | (cp >> 6));
            s += static_cast<char>(0x80 | (cp & 0x3F));
        } else if (cp < 0x10000) {
            s += static_cast<char>(0xE0 | (cp >> 12));
            s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
            s += static_cast<char>(0x80 | (cp & 0x3F));
        } else {
            s += static_cast<char>(0xF0 | (cp >> 18));
            s += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
            s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
            s += static_cast<char>(0x80 | (cp & 0x3F));
        }
    };
    const std::uint32_t limits[] = {0x7F, 0x7FF, 0xFFFF, 0x10FFFF};
    for (int i = 0; i < 2000; ++i) {
        std::string text;
        for (int k = 0; k < i % 40; ++k) {
            std::uint32_t cp = std::uniform_int_distribution<std::uint32_t>(0, limits[plane(rng)])(rng);
            if (cp >= 0xD800 && cp <= 0xDFFF)
                cp = '"';
            append_utf8(text, cp);
        }
        const auto out = jo::encode_delivery({"c", payload_kind::text, text});
        const auto back = nlohmann::json::parse(out, nullptr, false);
        ASSERT_FALSE(back.is_discarded()) << out;
        ASSERT_EQ(back.at("data").get<std::string>(), text);
    }
}

TEST(json_ops_encode, events_and_errors) {
    EXPECT_EQ(jo::encode_event("subscribed", "room-1"), R"({"event":"subscribed","channel":"room-1"})");
    EXPECT_EQ(jo::encode_event("unsubscribed", "c"), R"({"event":"unsubscribed","channel":"c"})");
    EXPECT_EQ(jo::encode_error({"bad \"x\"", "", ""}), R"({"event":"error","error":"bad \"x\""})");
    EXPECT_EQ(jo::encode_error({"m", "publish", ""}), R"({"event":"error","error":"m","op":"publish"})");
    EXPECT_EQ(jo::encode_error({"m", "", "c"}), R"({"event":"error","error":"m","channel":"c"})");
    EXPECT_EQ(jo::encode_error({"m", "subscribe", "c"}),
              R"({"event":"error","error":"m","op":"subscribe","channel":"c"})");
}

TEST(json_ops_encode, error_replies_for_every_parse_error_are_valid_json) {
    for (std::string_view f : {"", "[", "{\"op\":\"\xFF\"}", "{\"op\":\"x\",\"channel\":\"c\"}",
                               "{\"op\":\"subscribe\",\"channel\":\"c\",\"\xC3\xA9\\n\\\"\":1}"}) {
        const auto e = parse_err(f);
        const auto reply = nlohmann::json::parse(jo::encode_error(e), nullptr, false);
        ASSERT_FALSE(reply.is_discarded()) << jo::encode_error(e);
        EXPECT_EQ(reply.at("event"), "error");
        EXPECT_EQ(reply.at("error").get<std::string>(), e.message);
    }
}

// ---- round trips: publish → delivery → subscriber ----

TEST(json_ops_round_trip, delivery_parses_back_to_the_same_channel_and_data) {
    const pubsub_message messages[] = {
        {"c", payload_kind::text, "plain"},
        {"room:42@eu", payload_kind::text, "quote \" backslash \\ newline \n nul \0 \xE2\x82\xAC"s},
        {"bin", payload_kind::binary, "\x00\xFF\x10 binary\x80"s},
        {"bin", payload_kind::binary, ""},
        {"j", payload_kind::json, R"({"a":[1,2.5,null,true],"b":{"c":"\n"}})"},
        {"j", payload_kind::json, "\"str\""},
    };
    for (const auto& m : messages) {
        const auto out = jo::encode_delivery(m);
        SCOPED_TRACE(out);
        const auto back = nlohmann::json::parse(out);
        EXPECT_EQ(back.at("channel").get<std::string>(), m.channel);
        switch (m.kind) {
        case payload_kind::text:
            EXPECT_EQ(back.size(), 2u);
            EXPECT_EQ(back.at("data").get<std::string>(), m.payload);
            break;
        case payload_kind::binary:
            EXPECT_EQ(back.at("encoding"), "base64");
            EXPECT_EQ(jo::base64_decode(back.at("data").get<std::string>()), m.payload);
            break;
        case payload_kind::json:
            EXPECT_EQ(back.size(), 2u);
            EXPECT_EQ(back.at("data").dump(), m.payload);
            break;
        }

        // A delivery plus "op":"publish" is a publish of the same message (json strings aside,
        // which a JSON publish cannot produce: a string "data" is text).
        if (m.kind == payload_kind::json && m.payload.front() == '"')
            continue;
        const auto republished = parse_ok("{\"op\":\"publish\"," + out.substr(1));
        EXPECT_EQ(republished.channel, m.channel);
        EXPECT_EQ(republished.data_kind, m.kind);
        EXPECT_EQ(republished.data, m.payload);
    }
}

TEST(json_ops_round_trip, random_binary_through_publish_and_delivery) {
    std::mt19937 rng(99);
    for (std::size_t n = 0; n <= 70; ++n) {
        const auto bytes = random_bytes(rng, n);
        const auto p = parse_ok(R"({"op":"publish","channel":"c","encoding":"base64","data":")" +
                                jo::base64_encode(bytes) + "\"}");
        ASSERT_EQ(p.data_kind, payload_kind::binary);
        ASSERT_EQ(p.data, bytes);
        const auto back = nlohmann::json::parse(jo::encode_delivery({p.channel, p.data_kind, p.data}));
        ASSERT_EQ(jo::base64_decode(back.at("data").get<std::string>()), bytes);
    }
}
