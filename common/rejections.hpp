#pragma once
// Why a worker turned a client away or cut it off: one counter per reason, kept by each worker,
// sent in its heartbeat, shown per worker and summed in /status.json ("rejections") and in
// /metrics (sockherd_worker_rejections_total{reason=...}). Every limit and every kind of
// malformed input has its own reason, so an operator sees which one clients run into.
//
// The names are part of the status and metrics interface: add reasons at the end, never rename.

#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace sockherd {

enum class rejection : std::uint8_t {
    malformed_request,     // HTTP request the parser rejected (bad request line, chunked garbage): 400
    header_too_large,      // request line + headers over [http] max_header_size: 431
    header_timeout,        // whole request header not received within [http] header_timeout: 408
    body_too_large,        // request body over [http] max_body_size: 413
    ws_bad_handshake,      // a WebSocket route without a valid Upgrade (key, version, headers): 400/426
    ws_protocol_error,     // a frame breaking RFC 6455 (unmasked, reserved bits/opcodes, bad control/close): 1002
    ws_invalid_utf8,       // a text message that is not UTF-8: 1007
    ws_message_too_big,    // a message over [websocket] max_message_size: 1009
    ws_pong_timeout,       // no pong (nor anything else) within [websocket] idle_timeout
    origin_refused,        // a WebSocket handshake from an Origin not in allowed_origins: 403
    worker_connections,    // the worker already holds [limits] max_connections_per_worker: 503
    ip_connections,        // the client address already holds [limits] max_connections_per_ip: 429
    keepalive_requests,    // [limits] max_requests_per_connection served: the connection closes after it
    subscriptions,         // a JSON subscribe over [websocket] max_subscriptions: an error reply
    proxy_header_invalid,  // no valid PROXY protocol header on a proxy_protocol listener: closed
    proxy_header_timeout,  // the PROXY header not received within [limits] proxy_header_timeout: closed
    tls_handshake_failed,  // TLS handshake failed (garbage, plaintext, no shared cipher): closed
    tls_handshake_timeout, // TLS handshake not done within [limits] tls_handshake_timeout: closed
};

inline constexpr std::size_t rejection_count = static_cast<std::size_t>(rejection::tls_handshake_timeout) + 1;

inline constexpr std::array<std::string_view, rejection_count> rejection_names = {
    "malformed_request",    "header_too_large",     "header_timeout",       "body_too_large",
    "ws_bad_handshake",     "ws_protocol_error",    "ws_invalid_utf8",      "ws_message_too_big",
    "ws_pong_timeout",      "origin_refused",       "worker_connections",   "ip_connections",
    "keepalive_requests",   "subscriptions",        "proxy_header_invalid", "proxy_header_timeout",
    "tls_handshake_failed", "tls_handshake_timeout",
};

constexpr std::string_view to_string(rejection r) { return rejection_names[static_cast<std::size_t>(r)]; }

// A limit (size, time, count) rather than malformed or refused input: what the older
// limit_hits_total counter sums; the rest are in bad_requests_total.
constexpr bool is_limit(rejection r) {
    switch (r) {
    case rejection::header_too_large:
    case rejection::header_timeout:
    case rejection::body_too_large:
    case rejection::ws_message_too_big:
    case rejection::ws_pong_timeout:
    case rejection::worker_connections:
    case rejection::ip_connections:
    case rejection::keepalive_requests:
    case rejection::subscriptions:
    case rejection::proxy_header_timeout:
    case rejection::tls_handshake_timeout: return true;
    default: return false;
    }
}

// Counters indexed by rejection.
using rejection_counts = std::array<std::uint64_t, rejection_count>;

} // namespace sockherd
