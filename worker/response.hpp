#pragma once
// The responses a worker's HTTP handlers produce. Boost 1.74 has no message_generator, so a
// handler returns one of these and the http_session writes whichever it holds.

#include <string>
#include <variant>

#include "common/net.hpp"

namespace sockherd::worker {

using request = http::request<http::string_body>;
using string_response = http::response<http::string_body>;
using file_response = http::response<http::file_body>;
using empty_response = http::response<http::empty_body>; // HEAD, 304: headers only
using response = std::variant<string_response, file_response, empty_response>;

// The headers every response of a worker carries, the WebSocket handshake's included: Server,
// and X-Sockherd-Worker naming the slot that served it.
template <class Message>
void decorate(Message& m, unsigned slot) {
    m.set(http::field::server, "sockherd");
    m.set("X-Sockherd-Worker", std::to_string(slot));
}

// A small text or JSON response with Content-Type and Content-Length set.
string_response make_response(const request& req, http::status status, std::string body,
                              std::string_view content_type = "text/plain; charset=utf-8");

} // namespace sockherd::worker
