#pragma once
// Who the client is behind trusted proxies: X-Forwarded-For ("client, proxy1, proxy2") and
// Forwarded ("for=192.0.2.60;proto=http, for=\"[2001:db8::1]:4711\""), honoured only when the
// connection's peer is in [http] trusted_proxies. Each trusted hop appends the address it got the
// request from, so the list is read from the right: the first address that is not itself a
// trusted proxy is the client (anything left of it was written by that client and proves
// nothing). Forwarded wins when both are present (RFC 7239 is the standard form).

#include <optional>
#include <string_view>
#include <vector>

#include <boost/asio/ip/address.hpp>

#include "common/cidr.hpp"

namespace sockherd {

// The client address for a request that came from `peer` with these header values ("" when a
// header is absent). `peer` itself when it is not trusted, or when the headers name no usable
// address (empty, garbage, "unknown", obfuscated identifiers); then the rightmost address is
// the answer only if it parses, never a guess.
boost::asio::ip::address forwarded_client(const boost::asio::ip::address& peer, std::string_view x_forwarded_for,
                                          std::string_view forwarded, const std::vector<cidr>& trusted);

} // namespace sockherd
