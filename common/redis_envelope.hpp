#pragma once
// How one pub/sub message travels between nodes through Redis: the bytes of one PUBLISH
// payload, written and read by the supervisor's Redis bridge (supervisor/redis_bridge.hpp).
//
// Envelope
//   magic "SHRB" (4 bytes) | version u8 = 1 | origin node id (16 bytes) | sequence u64 (big-endian)
//   | flags u8 (bits 0-1: payload_kind text/binary/json; bits 2-7 zero) | payload: the rest, as is
// The channel is not inside: it is the Redis channel without the configured prefix.
// The node id is random per supervisor start, so a node recognizes (and skips) its own messages
// when Redis hands them back; the sequence counts that node's publishes from 1. Text and JSON
// payloads must be UTF-8 (decode checks); binary payloads are any bytes, unchanged.
// decode never trusts its input: anything else on a bridged channel is an error, not a crash.

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/pubsub.hpp"

namespace sockherd {

using node_id = std::array<std::uint8_t, 16>;

struct redis_envelope {
    node_id origin{};
    std::uint64_t seq = 0;
    payload_kind kind = payload_kind::text;
    std::string_view payload; // decode: points into the decoded bytes
};

inline constexpr std::string_view envelope_magic = "SHRB";
inline constexpr std::uint8_t envelope_version = 1;
inline constexpr std::size_t envelope_header_size = 4 + 1 + 16 + 8 + 1;

enum class envelope_status : std::uint8_t {
    ok,
    too_short,           // fewer bytes than a header
    bad_magic,           // not an envelope (another publisher on the channel?)
    unsupported_version, // a newer sockherd
    bad_flags,           // an unknown payload kind or a reserved bit set
    invalid_utf8,        // a text or JSON payload that is not UTF-8
};

// Appends the envelope for `e` (header, then e.payload) to `out`.
void encode(const redis_envelope& e, std::string& out);

// Reads `bytes` into `out` (whose payload then points into `bytes`). Anything but ok leaves
// `out` unspecified.
envelope_status decode(std::string_view bytes, redis_envelope& out);

std::string_view to_string(envelope_status);

// 16 bytes from the kernel's random source (getrandom), for this process's node id.
node_id random_node_id();
// 32 lowercase hex digits.
std::string to_hex(const node_id&);

// Well-formed UTF-8 (no overlong forms, no surrogates, nothing above U+10FFFF).
bool valid_utf8(std::string_view text);

} // namespace sockherd
