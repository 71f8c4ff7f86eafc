#pragma once
// Namespace aliases shared by every sockherd source. Boost 1.74's coroutine support under
// C++20 needs <utility> before Asio, so this header is the only place that includes Asio first.

#include <utility>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>

namespace sockherd {
namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = boost::beast::http;
namespace websocket = boost::beast::websocket;
using error_code = boost::system::error_code;
using tcp = boost::asio::ip::tcp;
} // namespace sockherd
