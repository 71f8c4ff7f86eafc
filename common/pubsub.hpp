#pragma once
// A published pub/sub message, as every process of the node sees it: immutable once built and
// shared (one allocation) by every subscriber queue and relay that carries it.

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

namespace sockherd {

// What a payload is, so each subscriber gets it in its own protocol's form.
enum class payload_kind : std::uint8_t {
    text = 0,   // UTF-8 text (a WebSocket text frame; a JSON string)
    binary = 1, // bytes (a binary frame; base64 with "encoding":"base64" in JSON)
    json = 2,   // a JSON value's text, from a JSON-protocol publish (raw subscribers get the text)
};

struct pubsub_message {
    std::string channel;
    payload_kind kind = payload_kind::text;
    std::string payload;
};

using shared_message = std::shared_ptr<const pubsub_message>;

inline constexpr std::size_t max_channel_name = 200;

// Channel names: 1 to 200 bytes of A-Z a-z 0-9 and - _ . : @ (safe in a URL path, a JSON
// string, a log line and a Redis key without escaping).
constexpr bool valid_channel_name(std::string_view name) {
    if (name.empty() || name.size() > max_channel_name)
        return false;
    for (char c : name) {
        const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
                        c == '_' || c == '.' || c == ':' || c == '@';
        if (!ok)
            return false;
    }
    return true;
}

} // namespace sockherd
