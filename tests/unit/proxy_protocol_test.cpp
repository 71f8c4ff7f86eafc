// Tests for common/proxy_protocol.cpp: the PROXY protocol v1/v2 header parser.

#include "common/proxy_protocol.hpp"

#include <algorithm>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace sockherd::proxy_protocol {
namespace {

using namespace std::string_literals;

const std::string signature("\r\n\r\n\0\r\nQUIT\n", 12);

// A v2 header: signature, version/command, family/transport, `length` (default: the body's), body.
std::string v2(unsigned ver_cmd, unsigned family, const std::string& body, int length = -1) {
    const auto n = static_cast<unsigned>(length < 0 ? body.size() : static_cast<std::size_t>(length));
    std::string s = signature;
    s += static_cast<char>(ver_cmd);
    s += static_cast<char>(family);
    s += static_cast<char>(n >> 8);
    s += static_cast<char>(n & 0xff);
    return s + body;
}

// 10.0.0.1:12345 -> 10.0.0.2:443
const std::string inet_block = "\x0a\x00\x00\x01\x0a\x00\x00\x02\x30\x39\x01\xbb"s;
// [2001:db8::1]:1 -> [::1]:65535
const std::string inet6_block =
    "\x20\x01\x0d\xb8\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01"s
    "\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01"s
    "\x00\x01\xff\xff"s;
const std::string unix_block = "/run/lb.sock" + std::string(108 - 12, '\0') + "/run/app.sock" +
                               std::string(108 - 13, '\0');

result parse_done(std::string_view in) {
    auto r = parse(in);
    EXPECT_EQ(r.st, status::done) << r.error;
    EXPECT_TRUE(r.error.empty());
    return r;
}

// Invalid, with a reason that is printable and contains `fragment`.
void expect_invalid(std::string_view in, std::string_view fragment, std::size_t max_v2 = default_max_v2_length) {
    const auto r = parse(in, max_v2);
    ASSERT_EQ(r.st, status::invalid) << "input: " << testing::PrintToString(std::string(in));
    EXPECT_NE(r.error.find(fragment), std::string::npos) << r.error;
    EXPECT_TRUE(std::all_of(r.error.begin(), r.error.end(), [](char c) { return c >= ' ' && c < 0x7f; }))
        << r.error;
}

// Every proper prefix needs more, the whole header is done at exactly its own length, and bytes
// after it change nothing.
void expect_incremental(const std::string& hdr, std::size_t max_v2 = default_max_v2_length) {
    for (std::size_t k = 0; k < hdr.size(); ++k)
        ASSERT_EQ(parse(std::string_view(hdr).substr(0, k), max_v2).st, status::need_more) << "prefix " << k;
    const auto whole = parse(hdr, max_v2);
    ASSERT_EQ(whole.st, status::done) << whole.error;
    EXPECT_EQ(whole.h.length, hdr.size());
    for (const auto& tail : {"GET / HTTP/1.1\r\n\r\n"s, "\r\n"s, "PROXY TCP4 "s, signature, "\0\xff"s}) {
        const std::string more = hdr + tail;
        const auto r = parse(more, max_v2);
        ASSERT_EQ(r.st, status::done);
        EXPECT_EQ(r.h.length, hdr.size());
        EXPECT_EQ(more.substr(r.h.length), tail);
        EXPECT_EQ(r.h.version, whole.h.version);
        EXPECT_EQ(r.h.cmd, whole.h.cmd);
        EXPECT_EQ(r.h.source, whole.h.source);
        EXPECT_EQ(r.h.destination, whole.h.destination);
    }
}

std::string endpoint_text(const std::optional<boost::asio::ip::tcp::endpoint>& ep) {
    if (!ep)
        return "none";
    const auto a = ep->address();
    return (a.is_v6() ? "[" + a.to_string() + "]" : a.to_string()) + ":" + std::to_string(ep->port());
}

// ---- v1 -----------------------------------------------------------------------------------

TEST(proxy_protocol_v1, tcp4) {
    const std::string hdr = "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n";
    const auto r = parse_done(hdr + "GET / HTTP/1.1\r\n");
    EXPECT_EQ(r.h.version, 1);
    EXPECT_EQ(r.h.cmd, command::proxy);
    EXPECT_EQ(r.h.length, hdr.size());
    EXPECT_EQ(endpoint_text(r.h.source), "192.168.0.1:56324");
    EXPECT_EQ(endpoint_text(r.h.destination), "192.168.0.11:443");
    expect_incremental(hdr);
}

TEST(proxy_protocol_v1, tcp4_extremes) {
    auto r = parse_done("PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\n");
    EXPECT_EQ(endpoint_text(r.h.source), "0.0.0.0:0");
    EXPECT_EQ(endpoint_text(r.h.destination), "255.255.255.255:65535");
    expect_incremental("PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n");
}

TEST(proxy_protocol_v1, tcp6) {
    const std::string hdr = "PROXY TCP6 2001:db8::1 ::ffff:10.0.0.1 1 65535\r\n";
    const auto r = parse_done(hdr);
    EXPECT_EQ(r.h.version, 1);
    EXPECT_EQ(endpoint_text(r.h.source), "[2001:db8::1]:1");
    EXPECT_EQ(endpoint_text(r.h.destination), "[::ffff:10.0.0.1]:65535");
    expect_incremental(hdr);
    expect_incremental("PROXY TCP6 FFFF:ffff:ffff:ffff:ffff:ffff:ffff:ffff ::1 65535 65535\r\n");
}

TEST(proxy_protocol_v1, unknown_keeps_no_addresses) {
    for (const auto& hdr : {"PROXY UNKNOWN\r\n"s, "PROXY UNKNOWN 1.2.3.4 whatever \t\r x\r\n"s}) {
        const auto r = parse_done(hdr + "data");
        EXPECT_EQ(r.h.version, 1);
        EXPECT_EQ(r.h.cmd, command::proxy);
        EXPECT_FALSE(r.h.source);
        EXPECT_FALSE(r.h.destination);
        EXPECT_EQ(r.h.length, hdr.size());
        expect_incremental(hdr);
    }
    EXPECT_EQ(parse("PROXY UNKNOWN\r\n").h.length, 15u);
}

TEST(proxy_protocol_v1, longest_line_is_107_bytes) {
    const std::string v6 = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
    const std::string longest = "PROXY UNKNOWN " + v6 + " " + v6 + " 65535 65535\r\n";
    ASSERT_EQ(longest.size(), v1_max_length);
    expect_incremental(longest);
    // One more byte before the CRLF: invalid as soon as the 107th byte is not the LF.
    const std::string over = "PROXY UNKNOWN " + v6 + " " + v6 + " 65535 655355\r\n";
    expect_invalid(std::string_view(over).substr(0, v1_max_length), "no CRLF within 107 bytes");
    expect_invalid(over, "no CRLF within 107 bytes");
    EXPECT_EQ(parse(std::string_view(over).substr(0, v1_max_length - 1)).st, status::need_more);
    // A TCP6 line with IPv4-mapped addresses written out in full does not fit.
    const std::string mapped = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255";
    expect_invalid("PROXY TCP6 " + mapped + " " + mapped + " 65535 65535\r\n", "no CRLF within 107 bytes");
    expect_invalid(std::string(200, 'P'), "not a PROXY header");
}

TEST(proxy_protocol_v1, crlf_required) {
    expect_invalid("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "LF without CR");
    expect_invalid("PROXY UNKNOWN\n", "LF without CR");
    expect_invalid("PROXY UNKNOWN foo\n\r\n", "LF without CR");
    expect_invalid("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n", "CR not followed by LF");
    expect_invalid("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX", "CR not followed by LF");
    // Cut short by a CR: already invalid there, before the stray byte after it.
    expect_invalid("PROXY TCP4 1.2.3.4\r5.6.7.8 1 2\r\n", "v1: missing destination address");
    expect_invalid("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX\r\n", "CR not followed by LF");
    EXPECT_EQ(parse("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r").st, status::need_more);
}

TEST(proxy_protocol_v1, bad_addresses) {
    for (const char* a : {"1.2.3", "1.2.3.4.5", "256.1.1.1", "01.2.3.4", "1.2.3.04", "1..2.3", "1.2.3.4.",
                          "0x1.2.3.4", "localhost", "::1", "::ffff:1.2.3.4", "1.2.3.4/8", "1234567890123456"})
        expect_invalid("PROXY TCP4 "s + a + " 5.6.7.8 1 2\r\n", "v1: bad source address for TCP4");
    for (const char* a : {"1.2.3.4", "2001:db8:::1", "1:2:3:4:5:6:7:8:9", "fe80::1%eth0", "[::1]", "g::1",
                          "2001:db8::1::2", "::ffff:1.2.3"})
        expect_invalid("PROXY TCP6 ::1 "s + a + " 1 2\r\n", "v1: bad destination address for TCP6");
    expect_invalid("PROXY TCP4 5.6.7.8 ::1 1 2\r\n", "v1: bad destination address for TCP4");
    expect_invalid("PROXY TCP6 1.2.3.4 ::1 1 2\r\n", "v1: bad source address for TCP6");
}

TEST(proxy_protocol_v1, bad_ports) {
    for (const char* p : {"65536", "99999", "123456", "-1", "+80", "080", "00", "8a", "0x50", "1e3", "80.0"}) {
        expect_invalid("PROXY TCP4 1.2.3.4 5.6.7.8 "s + p + " 443\r\n", "v1: bad source port");
        expect_invalid("PROXY TCP4 1.2.3.4 5.6.7.8 443 "s + p + "\r\n", "v1: bad destination port");
    }
}

TEST(proxy_protocol_v1, spaces_and_fields) {
    expect_invalid("PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "double space before the protocol");
    expect_invalid("PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n", "double space before the source address");
    expect_invalid("PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", "double space before the destination address");
    expect_invalid("PROXY TCP4 1.2.3.4 5.6.7.8  1 2\r\n", "double space before the source port");
    expect_invalid("PROXY TCP4 1.2.3.4 5.6.7.8 1  2\r\n", "double space before the destination port");
    expect_invalid("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", "text after the destination port");
    expect_invalid("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", "text after the destination port");
    expect_invalid("PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "missing destination port");
    expect_invalid("PROXY TCP4 1.2.3.4 5.6.7.8 1 \r\n", "missing destination port");
    expect_invalid("PROXY TCP4\r\n", "missing source address");
    expect_invalid("PROXY \r\n", "missing protocol");
    expect_invalid("PROXY TCP4\t1.2.3.4 5.6.7.8 1 2\r\n", "protocol is not TCP4, TCP6 or UNKNOWN");
    for (const char* family : {"TCP5", "tcp4", "UDP4", "TCP", "UNKNOWNX", "TCP46"})
        expect_invalid("PROXY "s + family + " 1.2.3.4 5.6.7.8 1 2\r\n", "protocol is not TCP4, TCP6 or UNKNOWN");
    expect_invalid("PROXY UNKNOWNX\r\n", "protocol is not TCP4, TCP6 or UNKNOWN");
    expect_invalid("PROXY\r\n", "not a PROXY header");
    expect_invalid("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n"s.replace(5, 1, "\t"), "not a PROXY header");
}

// Invalid as soon as the bytes received rule a header out, without waiting for the CRLF.
TEST(proxy_protocol_v1, invalid_before_the_line_ends) {
    expect_invalid("PROXY X", "protocol is not TCP4, TCP6 or UNKNOWN");
    expect_invalid("PROXY TCP7", "protocol is not TCP4, TCP6 or UNKNOWN");
    expect_invalid("PROXY TCP4 1.2.3.4:", "v1: bad source address for TCP4");
    expect_invalid("PROXY TCP4 1111111111111111", "v1: bad source address for TCP4");
    expect_invalid("PROXY TCP4 1.2.3.4 5.6.7.8 65536", "v1: bad source port");
    expect_invalid("PROXY TCP4 1.2.3.4 5.6.7.8 01", "v1: bad source port");
    expect_invalid("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 ", "text after the destination port");
    expect_invalid("PROXY TCP4 1.2.3.4 5.6.7.8 1 2X", "v1: bad destination port");
    EXPECT_EQ(parse("PROXY TCP4 1.2.3.4 5.6.7.8 6553").st, status::need_more);
    EXPECT_EQ(parse("PROXY UNK").st, status::need_more);
}

// Fed one byte at a time, the answer is need_more until it settles, and then never changes, not
// even its reason: a CR or LF in the wrong place is blamed only if the bytes before it were fine.
void expect_settles_once(const std::string& bytes) {
    std::optional<result> settled;
    for (std::size_t k = 0; k <= bytes.size(); ++k) {
        const auto r = parse(std::string_view(bytes).substr(0, k));
        if (settled) {
            EXPECT_EQ(r.st, settled->st) << "prefix " << k;
            EXPECT_EQ(r.error, settled->error) << "prefix " << k;
        } else if (r.st != status::need_more) {
            settled = r;
        }
    }
}

TEST(proxy_protocol_v1, verdict_never_changes) {
    for (const char* bytes : {"PROXY \rTCP4\n\r\n", "PROXY TCP4 1.2.3.4X\rY\r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX\n",
                              "PROXY TCP6 ::1 ::fvf 1 2\n", "PROXY UNK\rNOWN\r\n", "PROXY UNKNOWN\rx\r\n",
                              "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 "
                              "24 25 26 27 28 29 30 31 32 33 34 35 36 37 38 39 40\r\n"})
        expect_settles_once(bytes);
    expect_invalid("PROXY \rTCP4\r\n", "v1: missing protocol");
    expect_invalid("PROXY UNK\rNOWN\r\n", "v1: protocol is not TCP4, TCP6 or UNKNOWN");
    expect_invalid("PROXY UNKNOWN\rx\r\n", "v1: CR not followed by LF");
}

// ---- v2 -----------------------------------------------------------------------------------

TEST(proxy_protocol_v2, ipv4) {
    const auto hdr = v2(0x21, 0x11, inet_block);
    const auto r = parse_done(hdr + "\x16\x03\x01"s);
    EXPECT_EQ(r.h.version, 2);
    EXPECT_EQ(r.h.cmd, command::proxy);
    EXPECT_EQ(r.h.length, 28u);
    EXPECT_EQ(endpoint_text(r.h.source), "10.0.0.1:12345");
    EXPECT_EQ(endpoint_text(r.h.destination), "10.0.0.2:443");
    expect_incremental(hdr);
}

TEST(proxy_protocol_v2, ipv6) {
    const auto hdr = v2(0x21, 0x21, inet6_block);
    const auto r = parse_done(hdr);
    EXPECT_EQ(r.h.length, 52u);
    EXPECT_EQ(endpoint_text(r.h.source), "[2001:db8::1]:1");
    EXPECT_EQ(endpoint_text(r.h.destination), "[::1]:65535");
    expect_incremental(hdr);
}

TEST(proxy_protocol_v2, local_ignores_the_address_block) {
    for (const auto& hdr : {v2(0x20, 0x00, ""), v2(0x20, 0x11, inet_block), v2(0x20, 0x11, "xy"),
                            v2(0x20, 0xff, "anything at all")}) {
        const auto r = parse_done(hdr);
        EXPECT_EQ(r.h.version, 2);
        EXPECT_EQ(r.h.cmd, command::local);
        EXPECT_FALSE(r.h.source);
        EXPECT_FALSE(r.h.destination);
        EXPECT_EQ(r.h.length, hdr.size());
        expect_incremental(hdr);
    }
}

TEST(proxy_protocol_v2, families_without_tcp_addresses) {
    for (const auto& hdr : {v2(0x21, 0x00, ""), v2(0x21, 0x00, "opaque"), v2(0x21, 0x01, ""),
                            v2(0x21, 0x31, unix_block), v2(0x21, 0x32, unix_block), v2(0x21, 0x12, inet_block),
                            v2(0x21, 0x22, inet6_block), v2(0x21, 0x10, inet_block)}) {
        const auto r = parse_done(hdr);
        EXPECT_EQ(r.h.cmd, command::proxy);
        EXPECT_FALSE(r.h.source) << testing::PrintToString(hdr);
        EXPECT_FALSE(r.h.destination);
        expect_incremental(hdr);
    }
}

TEST(proxy_protocol_v2, tlvs_are_skipped) {
    // ALPN "h2", an authority, and a 5-byte NOOP.
    const std::string tlvs = "\x01\x00\x02h2"s + "\x02\x00\x0b" "example.com"s + "\x04\x00\x05"s + std::string(5, '\0');
    const auto hdr = v2(0x21, 0x11, inet_block + tlvs);
    const auto r = parse_done(hdr + "data");
    EXPECT_EQ(r.h.length, 16 + 12 + tlvs.size());
    EXPECT_EQ(endpoint_text(r.h.source), "10.0.0.1:12345");
    expect_incremental(hdr);
    expect_incremental(v2(0x21, 0x21, inet6_block + "\x04\x00\x00"s));
    expect_incremental(v2(0x21, 0x31, unix_block + "\x04\x00\x01x"s));
}

TEST(proxy_protocol_v2, bad_tlv_framing) {
    expect_invalid(v2(0x21, 0x11, inet_block + "\x01"s), "TLVs do not fill the header exactly");
    expect_invalid(v2(0x21, 0x11, inet_block + "\x01\x00"s), "TLVs do not fill the header exactly");
    expect_invalid(v2(0x21, 0x11, inet_block + "\x01\x00\x03h2"s), "TLVs do not fill the header exactly");
    expect_invalid(v2(0x21, 0x21, inet6_block + "\x01\x00\x01h2"s), "TLVs do not fill the header exactly");
}

TEST(proxy_protocol_v2, bad_version_and_command) {
    for (unsigned v : {0x01u, 0x11u, 0x31u, 0xf1u})
        expect_invalid(v2(v, 0x11, inet_block).substr(0, 13), "v2: version " + std::to_string(v >> 4) + ", expected 2");
    for (unsigned c : {0x22u, 0x23u, 0x2fu})
        expect_invalid(v2(c, 0x11, inet_block).substr(0, 13),
                       "v2: command " + std::to_string(c & 0xf) + " is neither LOCAL (0) nor PROXY (1)");
}

TEST(proxy_protocol_v2, undefined_family_with_proxy) {
    for (unsigned f : {0x41u, 0xf1u, 0x13u, 0x1fu})
        expect_invalid(v2(0x21, f, inet_block).substr(0, 14),
                       "v2: undefined address family or transport (family " + std::to_string(f >> 4) +
                           ", transport " + std::to_string(f & 0xf) + ")");
}

TEST(proxy_protocol_v2, address_block_too_short) {
    // Decided from the 16 fixed bytes, before the block arrives.
    expect_invalid(v2(0x21, 0x11, "", 11), "v2: length 11 too short for IPv4 addresses (12)");
    expect_invalid(v2(0x21, 0x21, inet_block), "v2: length 12 too short for IPv6 addresses (36)");
    expect_invalid(v2(0x21, 0x31, inet6_block), "v2: length 36 too short for UNIX addresses (216)");
    // A length that promises the block but is not there yet: wait.
    EXPECT_EQ(parse(v2(0x21, 0x11, inet_block).substr(0, 27)).st, status::need_more);
}

TEST(proxy_protocol_v2, length_cap) {
    expect_invalid(v2(0x21, 0x11, "", 4097), "v2: length 4097 over the 4096-byte limit");
    expect_invalid(v2(0x21, 0x11, "", 65535), "v2: length 65535 over the 4096-byte limit");
    expect_invalid(v2(0x20, 0x00, "", 13), "v2: length 13 over the 12-byte limit", 12);
    expect_incremental(v2(0x21, 0x11, inet_block), 12);
    expect_incremental(v2(0x20, 0x00, ""), 0);
    const auto big = v2(0x21, 0x11, inet_block + "\x04\x0f\xf1"s + std::string(4096 - 15, '\0'));
    ASSERT_EQ(big.size(), 16u + 4096u);
    expect_incremental(big);
    expect_incremental(v2(0x21, 0x11, inet_block + "\x04\xff\xf0"s + std::string(65535 - 15, 'x')), 65535);
}

// ---- not PROXY at all -------------------------------------------------------------------------

// The first byte that cannot belong to a header makes it invalid; before it, need_more.
void expect_rejected_at(const std::string& bytes, std::size_t distinguishing) {
    for (std::size_t k = 0; k < distinguishing; ++k)
        EXPECT_EQ(parse(std::string_view(bytes).substr(0, k)).st, status::need_more) << "prefix " << k;
    for (std::size_t k = distinguishing + 1; k <= bytes.size(); ++k)
        expect_invalid(std::string_view(bytes).substr(0, k), "not a PROXY header");
}

TEST(proxy_protocol_not_proxy, http_and_tls_rejected_at_first_distinguishing_byte) {
    expect_rejected_at("GET / HTTP/1.1\r\nHost: x\r\n\r\n", 0);
    expect_rejected_at("POST /publish/x HTTP/1.1\r\n", 1);
    expect_rejected_at("PUT / HTTP/1.1\r\n", 1);
    expect_rejected_at("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 2);
    expect_rejected_at("PROXX TCP4\r\n", 4);
    expect_rejected_at("proxy TCP4\r\n", 0);
    // A TLS 1.2 ClientHello record: handshake (0x16), version 3.1, then the handshake header.
    expect_rejected_at("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"s, 0);
    expect_rejected_at("SSH-2.0-OpenSSH_9.6\r\n", 0);
    // An empty line before a request, and the v2 signature gone wrong near its end.
    expect_rejected_at("\r\nGET / HTTP/1.1\r\n", 2);
    expect_rejected_at("\r\n\r\n\0\r\nQUIX\n\x21\x11\x00\x0c"s, 10);
    expect_rejected_at("\0\0\0\0"s, 0);
    EXPECT_EQ(parse("").st, status::need_more);
}

} // namespace
} // namespace sockherd::proxy_protocol
