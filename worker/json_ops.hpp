#pragma once
// The JSON wire format of the pub/sub protocol (a route with protocol = "json"): a pure codec,
// no I/O, used by each worker's WebSocket sessions. One JSON object per text frame.
//
// Client → node:
//   {"op":"subscribe","channel":"c"}
//   {"op":"unsubscribe","channel":"c"}
//   {"op":"publish","channel":"c","data":<any JSON value>}
//   {"op":"publish","channel":"c","data":"<base64>","encoding":"base64"}
// A string "data" publishes text (its decoded UTF-8); any other value publishes its compact JSON
// text (payload_kind::json); base64 publishes bytes. Unknown or duplicate keys, a "data" on
// (un)subscribe and nesting deeper than max_depth are errors.
//
// Node → client:
//   {"channel":"c","data":"text"}                           a text delivery
//   {"channel":"c","data":"AAEC","encoding":"base64"}       a binary delivery
//   {"channel":"c","data":{"any":"json"}}                   a JSON delivery (payload verbatim)
//   {"event":"welcome","worker":3}                          first frame: the worker serving it
//   {"event":"subscribed","channel":"c"}                    an acknowledgement (encode_event)
//   {"event":"error","error":"…","op":"…","channel":"…"}    a rejected op (encode_error)

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

#include "common/pubsub.hpp"

namespace sockherd::worker::json_ops {

// The deepest nesting of objects and arrays a frame may have; the enclosing op object is level 1.
inline constexpr std::size_t max_depth = 64;

enum class op_kind { subscribe, unsubscribe, publish };

// A well-formed client op. data_kind and data are meaningful only for publish (else text, "").
struct op {
    op_kind kind = op_kind::subscribe;
    std::string channel;
    payload_kind data_kind = payload_kind::text;
    std::string data;
};

// A rejected frame. op is the op's name and channel its channel once the frame is a JSON object
// whose "op" is a known op / whose "channel" is a valid name; otherwise they are empty.
struct op_error {
    std::string message;
    std::string op;
    std::string channel;
};

// Parses one text frame. Never throws for any input (only std::bad_alloc); nesting is bounded
// during the parse, so no input can exhaust the stack.
std::variant<op, op_error> parse(std::string_view frame);

// What a JSON-protocol subscriber receives for m. A json payload must be one compact JSON value
// (as parse produces); it is inserted without re-parsing (an empty one becomes null). Invalid
// UTF-8 in a text payload or channel is replaced by U+FFFD, so the output is always valid JSON.
std::string encode_delivery(const pubsub_message& m);

// {"event":"<event>","channel":"<channel>"}, e.g. encode_event("subscribed", "c").
std::string encode_event(std::string_view event, std::string_view channel);

// {"event":"error","error":"<message>"} plus "op" and "channel" when non-empty.
std::string encode_error(const op_error& e);

// Appends s to out as a quoted JSON string: escapes " \ and control characters (\n \r \t \b \f
// short forms, the rest \u00XX) and replaces each maximal ill-formed UTF-8 subsequence by U+FFFD.
void append_json_string(std::string& out, std::string_view s);

// True if `s` is well-formed UTF-8 (what a WebSocket text frame must carry).
bool valid_utf8(std::string_view s);

// RFC 4648 base64, standard alphabet, with padding.
std::string base64_encode(std::string_view bytes);

// Strict: standard alphabet only, length a multiple of 4, '=' only as final padding, no
// whitespace, and the unused bits of the last symbol zero (canonical). nullopt otherwise.
std::optional<std::string> base64_decode(std::string_view text);

} // namespace sockherd::worker::json_ops
