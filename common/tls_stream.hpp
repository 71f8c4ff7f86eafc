#pragma once
// The two kinds of client stream a worker serves: plain TCP, and TLS over TCP (OpenSSL through
// Beast's ssl_stream). Sessions are templates on these.

#include <boost/asio/ssl.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/beast/websocket/ssl.hpp>

#include "common/net.hpp"

namespace sockherd {

using plain_stream = beast::tcp_stream;
using tls_stream = beast::ssl_stream<beast::tcp_stream>;

template <class Stream>
inline constexpr bool is_tls = std::is_same_v<Stream, tls_stream>;

} // namespace sockherd
