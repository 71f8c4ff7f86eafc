#pragma once
// POST /publish/<channel>: how a backend publishes to a channel over HTTP. The checks are pure
// functions of the request and the config; the http_session does the publishing.

#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "common/config.hpp"
#include "common/pubsub.hpp"
#include "worker/response.hpp"

namespace sockherd::worker::publish_api {

inline constexpr std::string_view prefix = "/publish/";

// True if `Authorization: Bearer <token>` names one of `tokens`. Compares in time that does not
// depend on where the given token differs from a configured one.
bool bearer_token_ok(const request& req, const std::vector<std::string>& tokens);

// Checks a request whose path starts with `prefix`. Either the message to publish, or the error
// response to send (404 when publishing is disabled, 405, 401, 400, 413, 415).
std::variant<shared_message, string_response> check(const request& req, std::string_view path, const config& cfg);

// The 202 body: {"channel":"c","workers":N}.
string_response accepted(const request& req, std::string_view channel, std::uint32_t workers);

} // namespace sockherd::worker::publish_api
