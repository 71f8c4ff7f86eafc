#include <gtest/gtest.h>

#include "common/forwarded.hpp"

namespace sockherd {
namespace {

boost::asio::ip::address ip(const char* s) { return boost::asio::ip::make_address(s); }

const std::vector<cidr> trusted = {*parse_cidr("10.0.0.0/8"), *parse_cidr("::1")};

TEST(forwarded, untrusted_peers_headers_are_ignored) {
    EXPECT_EQ(forwarded_client(ip("203.0.113.5"), "198.51.100.1", forwarded_syntax::x_forwarded_for, trusted), ip("203.0.113.5"));
    EXPECT_EQ(forwarded_client(ip("203.0.113.5"), "for=198.51.100.1", forwarded_syntax::forwarded, trusted), ip("203.0.113.5"));
    EXPECT_EQ(forwarded_client(ip("10.0.0.1"), "198.51.100.1", forwarded_syntax::x_forwarded_for, {}), ip("10.0.0.1")) << "nothing trusted";
}

TEST(forwarded, x_forwarded_for_is_read_from_the_right) {
    EXPECT_EQ(forwarded_client(ip("10.0.0.1"), "198.51.100.1", forwarded_syntax::x_forwarded_for, trusted), ip("198.51.100.1"));
    // The client wrote a fake first entry; the trusted proxy appended the real address.
    EXPECT_EQ(forwarded_client(ip("10.0.0.1"), "1.2.3.4, 198.51.100.7", forwarded_syntax::x_forwarded_for, trusted), ip("198.51.100.7"));
    // Two trusted hops.
    EXPECT_EQ(forwarded_client(ip("10.0.0.1"), "198.51.100.7, 10.9.9.9", forwarded_syntax::x_forwarded_for, trusted), ip("198.51.100.7"));
    EXPECT_EQ(forwarded_client(ip("10.0.0.1"), "198.51.100.7:5555", forwarded_syntax::x_forwarded_for, trusted), ip("198.51.100.7"));
    EXPECT_EQ(forwarded_client(ip("10.0.0.1"), "[2001:db8::7]:80", forwarded_syntax::x_forwarded_for, trusted), ip("2001:db8::7"));
    EXPECT_EQ(forwarded_client(ip("::1"), "2001:db8::8", forwarded_syntax::x_forwarded_for, trusted), ip("2001:db8::8"));
    EXPECT_EQ(forwarded_client(ip("::ffff:10.0.0.1"), "::ffff:198.51.100.9", forwarded_syntax::x_forwarded_for, trusted), ip("198.51.100.9"));
}

TEST(forwarded, garbage_gives_the_peer) {
    for (const char* bad : {"", "  ", "unknown", "not an ip", "1.2.3.4, garbage", "1.2.3.999", ",", "fe80::1%eth0"})
        EXPECT_EQ(forwarded_client(ip("10.0.0.1"), bad, forwarded_syntax::x_forwarded_for, trusted), ip("10.0.0.1")) << bad;
    // Only trusted hops: no client named.
    EXPECT_EQ(forwarded_client(ip("10.0.0.1"), "10.0.0.2, 10.0.0.3", forwarded_syntax::x_forwarded_for, trusted), ip("10.0.0.1"));
}

TEST(forwarded, only_the_configured_header_counts) {
    // A proxy appending to X-Forwarded-For passes the client's own Forwarded through: reading
    // X-Forwarded-For, sockherd must not look at it (the caller passes only the chosen header).
    EXPECT_EQ(forwarded_client(ip("10.0.0.1"), "for=198.51.100.2", forwarded_syntax::x_forwarded_for, trusted),
              ip("10.0.0.1")) << "Forwarded syntax is not an X-Forwarded-For address";
    EXPECT_EQ(forwarded_client(ip("10.0.0.1"), "198.51.100.2", forwarded_syntax::forwarded, trusted), ip("10.0.0.1"))
        << "a bare address is not a Forwarded element";
}

TEST(forwarded, forwarded_header_is_parsed) {
    EXPECT_EQ(forwarded_client(ip("10.0.0.1"), "for=198.51.100.2;proto=https", forwarded_syntax::forwarded, trusted),
              ip("198.51.100.2"));
    EXPECT_EQ(forwarded_client(ip("10.0.0.1"), "proto=http;For=\"[2001:db8::3]:4711\"", forwarded_syntax::forwarded, trusted),
              ip("2001:db8::3"));
    EXPECT_EQ(forwarded_client(ip("10.0.0.1"), "for=192.0.2.9, for=10.1.1.1", forwarded_syntax::forwarded, trusted), ip("192.0.2.9"));
    EXPECT_EQ(forwarded_client(ip("10.0.0.1"), "for=_hidden", forwarded_syntax::forwarded, trusted), ip("10.0.0.1"));
    EXPECT_EQ(forwarded_client(ip("10.0.0.1"), "by=1.2.3.4", forwarded_syntax::forwarded, trusted), ip("10.0.0.1"));
}

TEST(forwarded, long_lists_are_bounded) {
    std::string many;
    for (int i = 0; i < 1000; ++i)
        many += "10.0.0.9, ";
    many += "10.0.0.9";
    EXPECT_EQ(forwarded_client(ip("10.0.0.1"), many, forwarded_syntax::x_forwarded_for, trusted), ip("10.0.0.1"));
}

} // namespace
} // namespace sockherd
