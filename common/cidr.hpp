#pragma once
// Address ranges in CIDR notation ("10.0.0.0/8", "2001:db8::/32", or a single address), for
// [http] trusted_proxies. IPv4 clients seen through a dual-stack IPv6 socket (::ffff:a.b.c.d)
// match IPv4 ranges: the comparison is made on the IPv4 address.

#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

#include <boost/asio/ip/address.hpp>

namespace sockherd {

struct cidr {
    boost::asio::ip::address network; // host bits cleared
    unsigned prefix = 0;              // 0..32 (IPv4) or 0..128 (IPv6)

    bool contains(const boost::asio::ip::address& a) const;
};

// "a.b.c.d/n", "v6/n", or an address alone (/32 or /128). Host bits set below the prefix
// ("10.1.2.3/8") are rejected: such a range is almost always a typo. nullopt when invalid.
std::optional<cidr> parse_cidr(std::string_view text);

// An IPv4-mapped IPv6 address as the IPv4 address; anything else unchanged.
boost::asio::ip::address unmapped(const boost::asio::ip::address& a);

// Whether any range in `ranges` contains `a`.
bool any_contains(const std::vector<cidr>& ranges, const boost::asio::ip::address& a);

} // namespace sockherd
