#pragma once
// The PROXY protocol header (HAProxy's specification, versions 1 and 2) that a load balancer puts
// in front of the client's bytes on a `proxy_protocol = true` listener: who the client really is.
// The worker parses it before HTTP; this file is only the parser: pure, no I/O, and it allocates
// nothing but a result's error string.
//
// Incremental: pass every byte received so far; on need_more, read more and call again with the
// whole buffer. The answer is `invalid` as soon as the bytes already rule a header out (an HTTP
// request is refused at "G", a TLS ClientHello at its first byte), and `done` exactly when the
// header's last byte has arrived. Once done or invalid, more bytes never change the answer.

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include <boost/asio/ip/tcp.hpp>

namespace sockherd::proxy_protocol {

// The longest v1 line the specification allows, "PROXY " to CRLF included.
inline constexpr std::size_t v1_max_length = 107;
// The fixed part of a v2 header: signature, version/command, family/protocol, length.
inline constexpr std::size_t v2_fixed_length = 16;
// The default cap on a v2 header's variable part (addresses and TLVs), beside the 16 fixed bytes.
inline constexpr std::size_t default_max_v2_length = 4096;

enum class status { need_more, done, invalid };
enum class command { local, proxy };

struct header {
    int version = 0; // 1 or 2
    command cmd = command::proxy;
    // Set (both) for PROXY over TCP with IPv4/IPv6: v1 TCP4/TCP6, v2 AF_INET/AF_INET6 + STREAM.
    // Absent for v2 LOCAL, v1 UNKNOWN, and v2 UNSPEC, UNIX or DGRAM: the caller then keeps the
    // socket's own peer.
    std::optional<boost::asio::ip::tcp::endpoint> source, destination;
    std::size_t length = 0; // bytes of the header, to consume; the application data follows
};

struct result {
    status st = status::need_more;
    header h;          // meaningful when st == done
    std::string error; // when invalid: a short printable reason, never a copy of the peer's bytes
};

// Parses the PROXY header at the start of `received`. `max_v2_length` caps the bytes after a v2
// header's 16 fixed ones (addresses and TLVs); a longer header is invalid. Never reads past
// `received`, never throws on input.
result parse(std::string_view received, std::size_t max_v2_length = default_max_v2_length);

} // namespace sockherd::proxy_protocol
