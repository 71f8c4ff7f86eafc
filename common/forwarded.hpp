#pragma once
// Who the client is behind trusted proxies: X-Forwarded-For ("client, proxy1, proxy2") or
// Forwarded ("for=192.0.2.60;proto=http, for=\"[2001:db8::1]:4711\""), honoured only when the
// connection's peer is in [http] trusted_proxies, and only the one header the proxies are
// configured to write ([http] forwarded_header): a proxy that appends to X-Forwarded-For passes a
// client's own Forwarded header through untouched, so reading both would let the client choose.
// Each trusted hop appends the address it got the request from, so the list is read from the
// right: the first address that is not itself a trusted proxy is the client (anything left of it
// was written by that client and proves nothing).

#include <optional>
#include <string_view>
#include <vector>

#include <boost/asio/ip/address.hpp>

#include "common/cidr.hpp"

namespace sockherd {

// The client address for a request that came from `peer`. `peer` itself when it is not trusted,
// or when the header names no usable address (empty, garbage, "unknown", obfuscated
// identifiers): an address is the answer only if it parses, never a guess.
enum class forwarded_syntax { x_forwarded_for, forwarded };

// `header`: every line of the chosen header, comma-joined ("" when absent).
boost::asio::ip::address forwarded_client(const boost::asio::ip::address& peer, std::string_view header,
                                          forwarded_syntax syntax, const std::vector<cidr>& trusted);

} // namespace sockherd
