#include <gtest/gtest.h>

#include "common/cidr.hpp"

namespace sockherd {
namespace {

boost::asio::ip::address ip(const char* s) { return boost::asio::ip::make_address(s); }

TEST(cidr, parses_ranges_and_single_addresses) {
    const auto a = parse_cidr("10.0.0.0/8");
    ASSERT_TRUE(a);
    EXPECT_EQ(a->prefix, 8u);
    EXPECT_EQ(a->network, ip("10.0.0.0"));
    const auto b = parse_cidr("192.168.1.7");
    ASSERT_TRUE(b);
    EXPECT_EQ(b->prefix, 32u);
    const auto c = parse_cidr("2001:db8::/32");
    ASSERT_TRUE(c);
    EXPECT_EQ(c->prefix, 32u);
    const auto d = parse_cidr("::1");
    ASSERT_TRUE(d);
    EXPECT_EQ(d->prefix, 128u);
    const auto all = parse_cidr("0.0.0.0/0");
    ASSERT_TRUE(all);
    EXPECT_TRUE(all->contains(ip("203.0.113.9")));
    EXPECT_FALSE(all->contains(ip("2001:db8::1"))) << "an IPv4 range never holds an IPv6 address";
}

TEST(cidr, rejects_what_is_not_a_range) {
    for (const char* bad : {"", "/8", "10.0.0.0/", "10.0.0.0/33", "::/129", "10.0.0.0/08", "10.0.0.0/-1",
                            "10.0.0.0/8x", "10.1.2.3/8", "example.com", "10.0.0", "fe80::1%eth0", "10.0.0.0/8/8",
                            "2001:db8::1/32", " 10.0.0.0/8"})
        EXPECT_FALSE(parse_cidr(bad)) << bad;
}

TEST(cidr, contains_by_prefix_bits) {
    const auto r = *parse_cidr("172.16.0.0/12");
    EXPECT_TRUE(r.contains(ip("172.16.0.1")));
    EXPECT_TRUE(r.contains(ip("172.31.255.255")));
    EXPECT_FALSE(r.contains(ip("172.32.0.0")));
    EXPECT_FALSE(r.contains(ip("172.15.255.255")));
    const auto v6 = *parse_cidr("2001:db8:8000::/33");
    EXPECT_TRUE(v6.contains(ip("2001:db8:8000::1")));
    EXPECT_TRUE(v6.contains(ip("2001:db8:ffff::1")));
    EXPECT_FALSE(v6.contains(ip("2001:db8:7fff::1")));
}

TEST(cidr, ipv4_mapped_clients_match_ipv4_ranges) {
    const auto r = *parse_cidr("127.0.0.0/8");
    EXPECT_TRUE(r.contains(ip("::ffff:127.0.0.1")));
    EXPECT_EQ(unmapped(ip("::ffff:10.1.2.3")), ip("10.1.2.3"));
    EXPECT_EQ(unmapped(ip("::1")), ip("::1"));
    // A mapped range is stored as IPv4.
    const auto m = parse_cidr("::ffff:10.0.0.1");
    ASSERT_TRUE(m);
    EXPECT_TRUE(m->network.is_v4());
    EXPECT_TRUE(any_contains({*parse_cidr("::1"), r}, ip("127.9.9.9")));
    EXPECT_FALSE(any_contains({}, ip("127.0.0.1")));
}

} // namespace
} // namespace sockherd
