#include "worker/publish_api.hpp"

#include <nlohmann/json.hpp>

#include "worker/json_ops.hpp"

namespace sockherd::worker::publish_api {
namespace {

// Equal length and equal bytes, looking at every byte of `expected` whatever `given` holds.
bool constant_time_equal(std::string_view given, std::string_view expected) {
    unsigned char diff = given.size() == expected.size() ? 0 : 1;
    for (std::size_t i = 0; i < expected.size(); ++i) {
        const unsigned char g = given.empty() ? 0 : static_cast<unsigned char>(given[i % given.size()]);
        diff |= static_cast<unsigned char>(g ^ static_cast<unsigned char>(expected[i]));
    }
    return diff == 0;
}

string_response error(const request& req, http::status status, std::string message) {
    return make_response(req, status, "{\"error\":" + [&] {
        std::string quoted;
        json_ops::append_json_string(quoted, message);
        return quoted;
    }() + "}\n", "application/json");
}

} // namespace

bool bearer_token_ok(const request& req, const std::vector<std::string>& tokens) {
    const auto it = req.find(http::field::authorization);
    if (it == req.end())
        return false;
    std::string_view value = it->value();
    constexpr std::string_view scheme = "Bearer ";
    if (value.size() <= scheme.size() || !beast::iequals(value.substr(0, scheme.size()), scheme))
        return false;
    value.remove_prefix(scheme.size());
    bool ok = false;
    for (const auto& t : tokens)
        ok |= constant_time_equal(value, t); // no early exit: every token is compared
    return ok;
}

std::variant<shared_message, string_response> check(const request& req, std::string_view path, const config& cfg) {
    if (cfg.publish.tokens.empty())
        return make_response(req, http::status::not_found, "not found\n");
    if (req.method() != http::verb::post) {
        auto res = error(req, http::status::method_not_allowed, "use POST");
        res.set(http::field::allow, "POST");
        return res;
    }
    if (!bearer_token_ok(req, cfg.publish.tokens)) {
        auto res = error(req, http::status::unauthorized, "missing or wrong bearer token");
        res.set(http::field::www_authenticate, "Bearer realm=\"sockherd publish\"");
        return res;
    }
    const std::string_view channel = path.substr(prefix.size());
    if (!valid_channel_name(channel))
        return error(req, http::status::bad_request,
                     "bad channel name: 1 to 200 bytes of A-Z a-z 0-9 - _ . : @");
    const std::string& body = req.body();
    if (body.size() > cfg.websocket.max_message_size)
        return error(req, http::status::payload_too_large,
                     "body over max_message_size (" + std::to_string(cfg.websocket.max_message_size) + " bytes)");

    // The body's Content-Type says what it is: bytes, a JSON value, or (anything else) text.
    std::string_view type;
    if (const auto ct = req.find(http::field::content_type); ct != req.end())
        type = ct->value().substr(0, ct->value().find(';'));
    payload_kind kind = payload_kind::text;
    if (beast::iequals(type, "application/octet-stream")) {
        kind = payload_kind::binary;
    } else if (beast::iequals(type, "application/json")) {
        if (!nlohmann::json::accept(body))
            return error(req, http::status::bad_request, "Content-Type is application/json but the body is not JSON");
        kind = payload_kind::json;
    } else if (!json_ops::valid_utf8(body)) {
        return error(req, http::status::bad_request,
                     "a text body must be UTF-8; send bytes with Content-Type: application/octet-stream");
    }
    if (kind == payload_kind::json) {
        // Stored compact, as JSON-protocol publishes are, so subscribers get one form.
        return std::make_shared<const pubsub_message>(
            pubsub_message{std::string(channel), kind, nlohmann::json::parse(body).dump()});
    }
    return std::make_shared<const pubsub_message>(pubsub_message{std::string(channel), kind, body});
}

string_response accepted(const request& req, std::string_view channel, std::uint32_t workers) {
    std::string body = "{\"channel\":";
    json_ops::append_json_string(body, channel);
    body += ",\"workers\":" + std::to_string(workers) + "}\n";
    return make_response(req, http::status::accepted, std::move(body), "application/json");
}

} // namespace sockherd::worker::publish_api
