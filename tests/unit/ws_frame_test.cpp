// Tests for common/ws_frame.cpp: the RFC 6455 client frame parser, the server frame encoder, the
// UTF-8 validator and the send queue.

#include "common/ws_frame.hpp"

#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace sockherd::ws {
namespace {

using namespace std::string_literals;
using kind = frame_parser::event_kind;

// `prefix` then `n` (appended: GCC 12's -Wrestrict misreads "literal" + std::to_string(n) at -O3).
std::string with_number(std::string prefix, std::uint64_t n) { return prefix.append(std::to_string(n)); }

// ---- building client frames ---------------------------------------------------------------------

struct frame_spec {
    std::uint8_t op = 0x1;
    std::string payload;
    bool fin = true;
    std::uint8_t rsv = 0; // bit 2: RSV1, bit 1: RSV2, bit 0: RSV3
    bool masked = true;
    int length_bits = 0;                 // 0: the shortest form; 16 or 64: that form whatever the length
    std::uint64_t declared = UINT64_MAX; // a length other than the payload's (header-only tests)
    std::array<std::uint8_t, 4> mask{0x37, 0xfa, 0x21, 0x3d};
};

std::string client_frame(const frame_spec& f) {
    std::string out;
    out += static_cast<char>((f.fin ? 0x80 : 0) | ((f.rsv & 7) << 4) | (f.op & 0x0f));
    const std::uint64_t len = f.declared != UINT64_MAX ? f.declared : f.payload.size();
    const char mask_bit = f.masked ? static_cast<char>(0x80) : 0;
    const int bits = f.length_bits != 0 ? f.length_bits : len < 126 ? 7 : len <= 0xffff ? 16 : 64;
    if (bits == 7) {
        out += static_cast<char>(mask_bit | static_cast<char>(len));
    } else if (bits == 16) {
        out += static_cast<char>(mask_bit | 126);
        out += static_cast<char>(len >> 8);
        out += static_cast<char>(len & 0xff);
    } else {
        out += static_cast<char>(mask_bit | 127);
        for (int s = 56; s >= 0; s -= 8)
            out += static_cast<char>((len >> s) & 0xff);
    }
    if (f.masked)
        for (auto b : f.mask)
            out += static_cast<char>(b);
    for (std::size_t i = 0; i < f.payload.size(); ++i)
        out += static_cast<char>(static_cast<std::uint8_t>(f.payload[i]) ^ (f.masked ? f.mask[i % 4] : 0));
    return out;
}

frame_spec text(std::string payload, bool fin = true) { return {0x1, std::move(payload), fin}; }
frame_spec binary(std::string payload, bool fin = true) { return {0x2, std::move(payload), fin}; }
frame_spec cont(std::string payload, bool fin = true) { return {0x0, std::move(payload), fin}; }
frame_spec control(std::uint8_t op, std::string payload) { return {op, std::move(payload), true}; }

std::string close_payload(std::uint16_t code, std::string_view reason = {}) {
    std::string p{static_cast<char>(code >> 8), static_cast<char>(code & 0xff)};
    return p + std::string(reason);
}

std::string frames(const std::vector<frame_spec>& fs) {
    std::string out;
    for (const auto& f : fs)
        out += client_frame(f);
    return out;
}

// ---- what the parser says, as text -------------------------------------------------------------

// Everything the parser reported for `bytes` fed in pieces of `piece` bytes (0: all at once; or
// sizes from `random_pieces`), one line per event, payload joined per message or control frame
// (so any split gives the same lines): "H<op> fin|more <len>", "M<op> <payload>",
// "C<op> <payload>[ <code>]", "E<code>".
std::vector<std::string> transcript(const std::string& bytes, std::size_t piece, std::uint64_t max = 0,
                                    std::mt19937* random_pieces = nullptr) {
    frame_parser p(max);
    std::vector<std::uint8_t> buf(bytes.begin(), bytes.end());
    std::vector<std::string> out;
    std::string message, ctrl;
    std::size_t pos = 0;
    while (pos < buf.size()) {
        std::size_t n = piece == 0 ? buf.size() - pos : std::min(piece, buf.size() - pos);
        if (random_pieces)
            n = std::min<std::size_t>(buf.size() - pos, (*random_pieces)() % 40 + 1);
        std::uint8_t* in = buf.data() + pos;
        std::size_t left = n;
        for (int guard = 0; guard < 100000; ++guard) {
            std::size_t used = 0;
            const auto e = p.next(in, left, used);
            EXPECT_LE(used, left);
            in += used;
            left -= used;
            if (e.kind == kind::need_more) {
                EXPECT_EQ(left, 0u) << "need_more before the input was consumed";
                break;
            }
            switch (e.kind) {
            case kind::header:
                out.push_back(with_number("H", static_cast<int>(e.op)) + " " + (e.fin ? "fin " : "more ") +
                              std::to_string(e.length));
                break;
            case kind::payload:
                EXPECT_GT(e.size, 0u);
                (is_control(e.op) ? ctrl : message).append(reinterpret_cast<const char*>(e.data), e.size);
                break;
            case kind::message_end:
                out.push_back(with_number("M", static_cast<int>(e.op)) + " " + message);
                message.clear();
                break;
            case kind::control:
                out.push_back(with_number("C", static_cast<int>(e.op)) + " " + ctrl +
                              (e.op == opcode::close ? with_number(" ", e.code) : std::string()));
                ctrl.clear();
                break;
            case kind::error: out.push_back(with_number("E", e.code)); return out;
            case kind::need_more: break;
            }
        }
        pos += n;
    }
    return out;
}

std::vector<std::string> parse_all(const std::string& bytes, std::uint64_t max = 0) { return transcript(bytes, 0, max); }

// The last event line (the error, when there is one).
std::string last(const std::vector<std::string>& t) { return t.empty() ? std::string("(none)") : t.back(); }

// ---- frames that parse --------------------------------------------------------------------------

TEST(ws_frame, a_masked_text_frame_is_unmasked_in_place) {
    const std::string bytes = client_frame(text("Hello"));
    std::vector<std::uint8_t> buf(bytes.begin(), bytes.end());
    frame_parser p;
    std::size_t used = 0;
    auto e = p.next(buf.data(), buf.size(), used);
    ASSERT_EQ(e.kind, kind::header);
    EXPECT_EQ(e.op, opcode::text);
    EXPECT_TRUE(e.fin);
    EXPECT_EQ(e.length, 5u);
    EXPECT_EQ(used, 6u);
    std::size_t pos = used;
    e = p.next(buf.data() + pos, buf.size() - pos, used);
    ASSERT_EQ(e.kind, kind::payload);
    EXPECT_EQ(e.data, buf.data() + pos) << "the payload is not where it arrived";
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(e.data), e.size), "Hello");
    pos += used;
    e = p.next(buf.data() + pos, buf.size() - pos, used);
    EXPECT_EQ(e.kind, kind::message_end);
    EXPECT_EQ(e.op, opcode::text);
    e = p.next(buf.data() + pos, buf.size() - pos, used);
    EXPECT_EQ(e.kind, kind::need_more);
}

TEST(ws_frame, seven_sixteen_and_sixty_four_bit_lengths) {
    for (std::size_t n : {0u, 1u, 125u, 126u, 127u, 65535u, 65536u, 70000u}) {
        std::string payload(n, 'x');
        for (std::size_t i = 0; i < n; ++i)
            payload[i] = static_cast<char>(i * 7);
        const auto t = parse_all(client_frame(binary(payload)));
        ASSERT_EQ(t.size(), 2u) << n;
        EXPECT_EQ(t[0], with_number("H2 fin ", n));
        EXPECT_EQ(t[1], "M2 " + payload) << n;
    }
}

TEST(ws_frame, fragments_with_control_frames_between_them) {
    const auto t = parse_all(frames({text("Hel", false), control(0x9, "ping!"), cont("lo ", false), control(0xA, ""),
                                     cont("world"), binary("b")}));
    const std::vector<std::string> expected{"H1 more 3", "H9 fin 5", "C9 ping!",       "H0 more 3", "H10 fin 0",
                                            "C10 ",      "H0 fin 5", "M1 Hello world", "H2 fin 1",  "M2 b"};
    EXPECT_EQ(t, expected);
}

TEST(ws_frame, a_close_frame_gives_its_code_and_ends_the_input) {
    EXPECT_EQ(parse_all(client_frame(control(0x8, close_payload(1000, "bye"))) + client_frame(text("after"))),
              (std::vector<std::string>{"H8 fin 5", "C8 \x03\xe8"s + "bye 1000"}));
    EXPECT_EQ(parse_all(client_frame(control(0x8, ""))), (std::vector<std::string>{"H8 fin 0", "C8  1005"}));
    for (std::uint16_t code : {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999,
                               4000, 4999}) {
        const auto t = parse_all(client_frame(control(0x8, close_payload(code))));
        EXPECT_EQ(last(t).substr(0, 1), "C") << code;
        EXPECT_TRUE(last(t).ends_with(with_number(" ", code))) << code << ": " << last(t);
    }
}

// ---- the rules, each with the close code it earns -----------------------------------------------

TEST(ws_frame, unmasked_client_frame_is_1002) {
    auto f = text("plain");
    f.masked = false;
    EXPECT_EQ(parse_all(client_frame(f)), std::vector<std::string>{"E1002"});
}

TEST(ws_frame, reserved_bits_are_1002) {
    for (std::uint8_t rsv : {4, 2, 1, 7}) {
        auto f = text("x");
        f.rsv = rsv;
        EXPECT_EQ(last(parse_all(client_frame(f))), "E1002") << int(rsv);
        auto c = cont("y");
        c.rsv = rsv;
        EXPECT_EQ(last(parse_all(client_frame(text("x", false)) + client_frame(c))), "E1002") << int(rsv);
    }
}

TEST(ws_frame, reserved_opcodes_are_1002) {
    for (std::uint8_t op : {3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF})
        EXPECT_EQ(parse_all(client_frame({op, "r"})), std::vector<std::string>{"E1002"}) << int(op);
}

TEST(ws_frame, control_frames_over_125_bytes_or_fragmented_are_1002) {
    EXPECT_EQ(last(parse_all(client_frame(control(0x9, std::string(126, 'p'))))), "E1002");
    EXPECT_EQ(last(parse_all(client_frame(control(0xA, std::string(125, 'p'))))), "C10 " + std::string(125, 'p'));
    auto big = control(0x9, std::string(200, 'p'));
    big.length_bits = 16;
    EXPECT_EQ(last(parse_all(client_frame(big))), "E1002");
    for (std::uint8_t op : {0x8, 0x9, 0xA}) {
        auto f = control(op, "");
        f.fin = false;
        EXPECT_EQ(last(parse_all(client_frame(f))), "E1002") << int(op);
    }
}

TEST(ws_frame, continuation_without_a_message_and_new_message_inside_one_are_1002) {
    EXPECT_EQ(parse_all(client_frame(cont("orphan"))), std::vector<std::string>{"E1002"});
    EXPECT_EQ(last(parse_all(frames({text("whole"), cont("late")}))), "E1002");
    EXPECT_EQ(last(parse_all(frames({text("part", false), text("new")}))), "E1002");
    EXPECT_EQ(last(parse_all(frames({binary("part", false), binary("new", false)}))), "E1002");
}

TEST(ws_frame, lengths_not_in_their_shortest_form_or_with_the_top_bit_are_1002) {
    auto f = binary("short");
    f.length_bits = 16;
    EXPECT_EQ(parse_all(client_frame(f)), std::vector<std::string>{"E1002"});
    f.length_bits = 64;
    EXPECT_EQ(parse_all(client_frame(f)), std::vector<std::string>{"E1002"});
    auto top = binary("");
    top.declared = 0x8000000000000000ULL;
    EXPECT_EQ(parse_all(client_frame(top)), std::vector<std::string>{"E1002"});
    top.declared = UINT64_MAX - 1;
    EXPECT_EQ(parse_all(client_frame(top)), std::vector<std::string>{"E1002"});
}

TEST(ws_frame, message_over_max_message_size_is_1009_from_the_header_alone) {
    EXPECT_EQ(parse_all(client_frame(binary(std::string(100, 'm'))), 100).back(), "M2 " + std::string(100, 'm'));
    // Only the header of a frame one byte too big: decided before any payload arrives.
    auto big = binary("");
    big.declared = 101;
    EXPECT_EQ(parse_all(client_frame(big), 100), std::vector<std::string>{"E1009"});
    big.declared = 1ULL << 40;
    EXPECT_EQ(parse_all(client_frame(big), 100), std::vector<std::string>{"E1009"});
    // Summed over fragments: 50 + 50 fit, one more byte does not.
    const std::string half(50, 'f');
    EXPECT_EQ(parse_all(frames({binary(half, false), cont(half)}), 100).back(), "M2 " + half + half);
    const auto t = parse_all(frames({binary(half, false), cont(half, false), cont("x")}), 100);
    EXPECT_EQ(t, (std::vector<std::string>{"H2 more 50", "H0 more 50", "E1009"}));
    // Control frames do not count towards it.
    EXPECT_EQ(parse_all(frames({binary(half, false), control(0x9, std::string(100, 'p')), cont(half)}), 100).back(),
              "M2 " + half + half);
}

TEST(ws_frame, text_that_is_not_utf8_is_1007) {
    EXPECT_EQ(last(parse_all(client_frame(text("caf\xc3\x28 au lait")))), "E1007");
    // Split over fragments: the first ends inside a two-byte sequence, the second does not continue it.
    EXPECT_EQ(last(parse_all(frames({text("caf\xc3", false), cont("\x28 au lait")}))), "E1007");
    // A code point split over fragments is fine.
    EXPECT_EQ(last(parse_all(frames({text("caf\xc3", false), cont("\xa9 \xf0\x9f", false), cont("\x98\x80")}))),
              "M1 caf\xc3\xa9 \xf0\x9f\x98\x80");
    // Truncated at the end of the message.
    EXPECT_EQ(last(parse_all(client_frame(text("euro \xe2\x82")))), "E1007");
    EXPECT_EQ(last(parse_all(frames({text("euro \xe2", false), cont("\x82")}))), "E1007");
    // Binary messages are not checked.
    EXPECT_EQ(last(parse_all(client_frame(binary("\xc3\x28\xff")))), "M2 \xc3\x28\xff");
    // Invalid bytes are caught as they arrive, before the message ends.
    EXPECT_EQ(parse_all(client_frame(text("\xff", false))), (std::vector<std::string>{"H1 more 1", "E1007"}));
}

TEST(ws_frame, close_frames_that_break_the_rules) {
    EXPECT_EQ(parse_all(client_frame(control(0x8, "\x03"))), std::vector<std::string>{"E1002"});
    for (std::uint16_t code : {0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535})
        EXPECT_EQ(last(parse_all(client_frame(control(0x8, close_payload(code, "bye"))))), "E1002") << code;
    EXPECT_EQ(last(parse_all(client_frame(control(0x8, close_payload(1000, "\xc3\x28"))))), "E1007");
    EXPECT_EQ(last(parse_all(client_frame(control(0x8, close_payload(1000, "ok \xe2\x82"))))), "E1007");
    EXPECT_EQ(last(parse_all(client_frame(control(0x8, close_payload(1000, "caf\xc3\xa9"))))),
              "C8 \x03\xe8" "caf\xc3\xa9 1000");
}

TEST(ws_frame, after_an_error_the_parser_stays_failed) {
    frame_parser p;
    auto bytes = client_frame(cont("orphan")) + client_frame(text("valid"));
    std::vector<std::uint8_t> buf(bytes.begin(), bytes.end());
    std::size_t used = 0;
    const auto e = p.next(buf.data(), buf.size(), used);
    EXPECT_EQ(e.kind, kind::error);
    EXPECT_EQ(e.code, 1002);
    EXPECT_STRNE(e.reason, "");
    EXPECT_TRUE(p.failed());
    const auto again = p.next(buf.data() + used, buf.size() - used, used);
    EXPECT_EQ(again.kind, kind::error);
    EXPECT_EQ(again.code, 1002);
}

// ---- any split gives the same answer ------------------------------------------------------------

std::vector<std::string> samples() {
    const std::string big(70000, 'z');
    return {
        frames({text("Hello"), binary(std::string(300, '\x81')), control(0x9, "p"), text("caf\xc3\xa9")}),
        frames({text("frag \xe2", false), control(0xA, "pong"), cont("\x82\xac", false), cont(" end"),
                control(0x8, close_payload(1001, "going"))}),
        frames({binary(big), text("")}),
        frames({text("ok"), text("bad \xed\xa0\x80 surrogate")}),
        frames({binary("x", false), cont(std::string(200, 'y'), false), cont("z"), control(0x8, "\x03")}),
        frames({text("a"), cont("b")}),
        frames({control(0x8, close_payload(3000)), text("ignored")}),
    };
}

TEST(ws_frame, byte_at_a_time_equals_all_at_once) {
    for (const auto& s : samples()) {
        const auto whole = transcript(s, 0, 100000);
        EXPECT_EQ(transcript(s, 1, 100000), whole);
        EXPECT_EQ(transcript(s, 3, 100000), whole);
        EXPECT_EQ(transcript(s, 1000, 100000), whole);
        std::mt19937 rng(42);
        for (int i = 0; i < 5; ++i)
            EXPECT_EQ(transcript(s, 0, 100000, &rng), whole);
    }
}

TEST(ws_frame, the_transcript_tells_the_samples_apart) {
    // Guards the test above: a transcript that said nothing would make every split "equal".
    const auto all = samples();
    EXPECT_EQ(last(transcript(all[0], 0, 100000)), "M1 caf\xc3\xa9");
    EXPECT_EQ(last(transcript(all[1], 0, 100000)), "C8 \x03\xe9going 1001");
    EXPECT_EQ(last(transcript(all[3], 1, 100000)), "E1007");
    EXPECT_EQ(last(transcript(all[4], 1, 100000)), "E1002");
    EXPECT_EQ(last(transcript(all[5], 1, 100000)), "E1002");
    EXPECT_EQ(transcript(all[6], 1, 100000).size(), 2u);
}

// ---- UTF-8 --------------------------------------------------------------------------------------

TEST(ws_frame, utf8_accepts_every_valid_form_and_boundary) {
    for (const char* s : {"", "ascii only, longer than eight bytes", "\x7f", "\xc2\x80", "\xdf\xbf", "\xe0\xa0\x80",
                          "\xed\x9f\xbf", "\xee\x80\x80", "\xef\xbf\xbf", "\xf0\x90\x80\x80", "\xf4\x8f\xbf\xbf",
                          "mixed \xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80 text"})
        EXPECT_TRUE(is_utf8(s)) << s;
}

TEST(ws_frame, utf8_rejects_overlongs_surrogates_and_past_10ffff) {
    for (const char* s : {"\x80", "\xbf", "\xc0\x80", "\xc1\xbf", "\xe0\x80\x80", "\xe0\x9f\xbf", "\xf0\x80\x80\x80",
                          "\xf0\x8f\xbf\xbf", "\xed\xa0\x80", "\xed\xbf\xbf", "\xf4\x90\x80\x80", "\xf5\x80\x80\x80",
                          "\xf8\x88\x80\x80\x80", "\xff", "\xfe", "\xc3\x28", "\xe2\x28\xa1", "abcdefgh\xe2\x82\x28"})
        EXPECT_FALSE(is_utf8(s)) << "accepted: " << s;
}

TEST(ws_frame, utf8_truncated_sequences_are_incomplete_not_invalid) {
    for (const char* s : {"\xc3", "\xe2\x82", "\xf0\x9f\x98", "abc\xe2"}) {
        utf8_validator v;
        EXPECT_TRUE(v.feed(reinterpret_cast<const std::uint8_t*>(s), std::strlen(s))) << s;
        EXPECT_FALSE(v.complete()) << s;
        EXPECT_FALSE(is_utf8(s)) << s;
    }
    // Fed one byte at a time, a four-byte character is whole only at its last byte.
    utf8_validator v;
    const std::uint8_t emoji[] = {0xf0, 0x9f, 0x98, 0x80};
    for (std::size_t i = 0; i < 4; ++i) {
        ASSERT_TRUE(v.feed(emoji + i, 1));
        EXPECT_EQ(v.complete(), i == 3);
    }
}

// ---- the encoder --------------------------------------------------------------------------------

TEST(ws_frame, server_headers_use_the_shortest_length_and_no_mask) {
    std::uint8_t h[max_header_size] = {};
    ASSERT_EQ(encode_header(h, opcode::text, 0), 2u);
    EXPECT_EQ(h[0], 0x81);
    EXPECT_EQ(h[1], 0x00);
    ASSERT_EQ(encode_header(h, opcode::binary, 125), 2u);
    EXPECT_EQ(h[0], 0x82);
    EXPECT_EQ(h[1], 125);
    ASSERT_EQ(encode_header(h, opcode::text, 126), 4u);
    EXPECT_EQ(h[1], 126);
    EXPECT_EQ(h[2], 0);
    EXPECT_EQ(h[3], 126);
    ASSERT_EQ(encode_header(h, opcode::text, 65535), 4u);
    EXPECT_EQ(h[2], 0xff);
    EXPECT_EQ(h[3], 0xff);
    ASSERT_EQ(encode_header(h, opcode::binary, 65536), 10u);
    EXPECT_EQ(h[1], 127);
    EXPECT_EQ(std::vector<std::uint8_t>(h + 2, h + 10), (std::vector<std::uint8_t>{0, 0, 0, 0, 0, 1, 0, 0}));
    ASSERT_EQ(encode_header(h, opcode::ping, 0), 2u);
    EXPECT_EQ(h[0], 0x89);
    ASSERT_EQ(encode_header(h, opcode::text, 3, false), 2u);
    EXPECT_EQ(h[0], 0x01);
}

TEST(ws_frame, close_frames_carry_code_and_reason) {
    std::uint8_t f[max_close_frame] = {};
    const auto n = encode_close(f, 1008, "slow consumer");
    EXPECT_EQ(std::string(reinterpret_cast<char*>(f), n), "\x88\x0f\x03\xf0slow consumer"s);
    const std::string long_reason = std::string(122, 'r') + "\xc3\xa9"; // the 123rd byte starts a character
    const auto m = encode_close(f, 1001, long_reason);
    EXPECT_EQ(m, 2u + 2 + 122);
    EXPECT_TRUE(is_utf8(std::string(reinterpret_cast<char*>(f) + 4, m - 4)));
}

// A masked client version of a server frame parses back to the same message.
TEST(ws_frame, encoded_header_and_parser_agree) {
    for (std::size_t n : {0u, 5u, 125u, 126u, 65535u, 65536u}) {
        std::uint8_t h[max_header_size] = {};
        const auto hn = encode_header(h, opcode::binary, n);
        std::string bytes;
        bytes += static_cast<char>(h[0]);
        bytes += static_cast<char>(h[1] | 0x80); // a client's frame is masked: here with 0 0 0 0
        bytes.append(reinterpret_cast<const char*>(h) + 2, hn - 2);
        bytes += "\0\0\0\0"s;
        bytes += std::string(n, 'q');
        EXPECT_EQ(last(parse_all(bytes)), "M2 " + std::string(n, 'q')) << n;
    }
}

// ---- the send queue -----------------------------------------------------------------------------

out_frame frame_of(const std::string& payload, bool with_head = true) {
    auto owned = std::make_shared<const std::string>(payload);
    out_frame f;
    f.owner = owned;
    f.data = reinterpret_cast<const std::uint8_t*>(owned->data());
    f.size = owned->size();
    f.payload = owned->size();
    if (with_head)
        f.head_size = static_cast<std::uint8_t>(encode_header(f.head.data(), opcode::text, owned->size()));
    return f;
}

std::string gathered(const send_queue& q) {
    iovec iov[64];
    const auto k = q.gather(iov, 64);
    std::string out;
    for (std::size_t i = 0; i < k; ++i)
        out.append(static_cast<const char*>(iov[i].iov_base), iov[i].iov_len);
    return out;
}

// A close without a reason (a default string_view has no storage): just the code. Under UBSan
// this caught a memcpy from a null pointer that made every reasonless close end the worker.
TEST(ws_frame, close_frame_without_a_reason_is_the_code_alone) {
    std::uint8_t f[max_control_payload + 10];
    const auto n = encode_close(f, 1000, std::string_view{});
    ASSERT_EQ(n, 4u);
    EXPECT_EQ(f[0], 0x88);
    EXPECT_EQ(f[1], 2);
    EXPECT_EQ(f[2], 0x03);
    EXPECT_EQ(f[3], 0xE8);
}

TEST(ws_frame, send_queue_gathers_partial_writes_and_counts_finished_frames) {
    send_queue q;
    q.push(frame_of("one"));
    q.push(frame_of("\x81\x03two"s, false));
    q.push(frame_of("three"));
    EXPECT_EQ(q.size(), 3u);
    EXPECT_EQ(q.payload_bytes(), 3u + 5 + 5);
    EXPECT_EQ(gathered(q), "\x81\x03one\x81\x03two\x81\x05three"s);
    std::vector<std::size_t> done;
    q.consume(4, [&](const out_frame& f) { done.push_back(f.payload); });
    EXPECT_TRUE(done.empty());
    EXPECT_TRUE(q.front_started());
    EXPECT_EQ(gathered(q), "e\x81\x03two\x81\x05three"s);
    q.consume(6, [&](const out_frame& f) { done.push_back(f.payload); });
    EXPECT_EQ(done, (std::vector<std::size_t>{3, 5}));
    EXPECT_FALSE(q.front_started());
    EXPECT_EQ(q.payload_bytes(), 5u);
    q.consume(7, [&](const out_frame& f) { done.push_back(f.payload); });
    EXPECT_TRUE(q.empty());
    EXPECT_EQ(q.payload_bytes(), 0u);
}

TEST(ws_frame, send_queue_drops_only_frames_not_started) {
    send_queue q;
    q.push(frame_of("first"));
    q.push(frame_of("second"));
    q.push(frame_of("third"));
    q.consume(4, [](const out_frame&) {}); // the header and "fi"
    EXPECT_EQ(q.drop_unstarted(), 2u);
    EXPECT_EQ(q.size(), 1u);
    EXPECT_EQ(q.payload_bytes(), 5u);
    EXPECT_EQ(gathered(q), "rst");
    // A ping "between frames": after the started one, never inside it.
    q.insert(0, frame_of("ping"));
    EXPECT_EQ(gathered(q), "rst\x81\x04ping"s);
    q.consume(3, [](const out_frame&) {});
    q.insert(0, frame_of("101"));
    EXPECT_EQ(gathered(q), "\x81\x03" "101\x81\x04ping"s);
    EXPECT_EQ(q.drop_unstarted(), 2u);
    EXPECT_TRUE(q.empty());
    q.trim();
}

TEST(ws_frame, send_queue_gather_stops_at_the_iovec_limit) {
    send_queue q;
    for (int i = 0; i < 10; ++i)
        q.push(frame_of(with_number("m", static_cast<std::uint64_t>(i))));
    iovec iov[5];
    EXPECT_EQ(q.gather(iov, 5), 5u); // two frames and the next one's header
    std::size_t bytes = 0;
    for (auto& v : iov)
        bytes += v.iov_len;
    std::size_t finished = 0;
    q.consume(bytes, [&](const out_frame&) { ++finished; });
    EXPECT_EQ(finished, 2u);
    EXPECT_TRUE(q.front_started());
    EXPECT_EQ(gathered(q).substr(0, 2), "m2");
}

} // namespace
} // namespace sockherd::ws
