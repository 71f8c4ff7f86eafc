#pragma once
// The supervisor <-> worker channel protocol: every message either side may send, one encode and
// one decode. Both ends are the same binary; the version still guards against a stale worker.
//
// Protocol description
//   Transport: one AF_UNIX SOCK_STREAM socketpair per worker, created by the supervisor before it
//   spawns the worker. A stream (not SEQPACKET) so that messages of any size up to max_payload
//   pass whatever the socket buffer size is.
//   Frame: header { u32 payload_length; u16 version; u16 type } then payload_length bytes.
//   All integers little-endian, explicit width. Strings: u32 length + bytes.
//   Descriptors: only `handoff` (accepted connections) and `listen` (listening sockets) carry
//   them, as SCM_RIGHTS on the sendmsg that carries the frame's first byte, never ahead of it;
//   the receiver keeps arriving descriptors in FIFO order and gives such a message exactly its
//   count. Any other descriptor is a protocol error.
//   Unknown type: answered with `unknown_type`, logged, skipped (its length is known).
//   Malformed frame (bad version, oversize, payload not matching its type): the receiver closes
//   the channel; the supervisor then replaces the worker.
//
//   supervisor -> worker: config, handoff, listen, drain, stop, relay, publish_ack, interest_ack
//   worker -> supervisor: ready, load, drained, publish, interest, heartbeat
//   either direction:     unknown_type
//
//   Pub/sub: a worker announces the channels it has local subscribers for (`interest`, deltas,
//   numbered); the supervisor acknowledges each one once it applies to every later relay, so a
//   subscription is live node-wide when its ack arrives. A worker delivers its own publishes
//   locally and sends them once to the supervisor (`publish`), which relays them only to the
//   other workers with interest. One stream per worker keeps per-publisher order.

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <variant>
#include <vector>

#include <boost/asio/ip/tcp.hpp>
#include <boost/container/static_vector.hpp>

#include "common/pubsub.hpp"
#include "common/rejections.hpp"
#include "common/unique_fd.hpp"

namespace sockherd::ipc {

inline constexpr std::uint16_t protocol_version = 1;
inline constexpr std::size_t header_size = 8;
// Large enough for a config file or a maximal pub/sub payload with its envelope.
inline constexpr std::uint32_t max_payload = 64 * 1024 * 1024 + 4096;
// Connections one handoff may carry (SCM_MAX_FD is 253; the receive buffer is sized for this).
inline constexpr std::size_t max_handoff_batch = 64;
// Listening sockets one listen message may carry (one per listener of the config at most:
// config.hpp's max_listeners).
inline constexpr std::size_t max_listen_sockets = 64;

enum class message_type : std::uint16_t {
    config = 1,
    handoff = 2,
    drain = 3,
    stop = 4,
    relay = 5,
    publish_ack = 6,
    interest_ack = 7,
    listen = 8,
    ready = 64,
    load = 65,
    drained = 66,
    publish = 67,
    interest = 68,
    heartbeat = 69,
    unknown_type = 127,
};

// Supervisor -> worker: the validated TOML text of one generation. Sent first, before any
// handoff; the worker parses it with the same parser and answers `ready`.
struct config_msg {
    std::uint64_t generation = 0;
    std::string toml;
    // The PEM files of the TLS listeners, read by the supervisor: the worker may not be able to.
    struct tls_entry {
        std::uint16_t listener = 0; // index in the config's listeners
        std::string cert_pem;
        std::string key_pem;
    };
    std::vector<tls_entry> tls;
};

struct handoff_entry {
    boost::asio::ip::tcp::endpoint peer;
    unique_fd fd; // empty in a decoded message until the channel attaches the received descriptor
};

// Supervisor -> worker: accepted connections from one listener.
struct handoff_msg {
    handoff_msg() = default;
    handoff_msg(handoff_msg&&) = default;
    handoff_msg& operator=(handoff_msg&&) = default;
    handoff_msg(const handoff_msg&) = delete; // descriptors are owned: move only
    handoff_msg& operator=(const handoff_msg&) = delete;

    std::uint16_t listener_id = 0;
    boost::container::static_vector<handoff_entry, max_handoff_batch> connections;
};

// Supervisor -> worker: the listening sockets this worker accepts on by itself (listener modes
// `shared` and `reuseport`; `handoff` listeners are the supervisor's), the whole set every time:
// after `config` at start and after each reload. A socket of the previous set that is not in the
// new one is no longer accepted on. A draining worker accepts on none.
struct listen_entry {
    std::uint16_t listener_id = 0; // index in the config's listeners
    unique_fd fd; // empty in a decoded message until the channel attaches the received descriptor
};
struct listen_msg {
    listen_msg() = default;
    listen_msg(listen_msg&&) = default;
    listen_msg& operator=(listen_msg&&) = default;
    listen_msg(const listen_msg&) = delete; // descriptors are owned: move only
    listen_msg& operator=(const listen_msg&) = delete;

    std::vector<listen_entry> sockets; // at most max_listen_sockets
};

// Supervisor -> worker: take no new work; close idle keep-alive connections, finish in-flight
// responses, close WebSockets with 1001 within `timeout_ms`, then send `drained` and exit.
// `node_stopping`: the whole node is going away (SIGTERM, `sockherd stop`), so /healthz says
// "draining" and a WebSocket handshake in flight is refused with 503. Otherwise only this worker
// retires (reload roll, scale-down, memory replacement) while the node serves on: a request that
// was on its way to it is still served in full, a WebSocket included (closed with 1001 by the
// deadline like the others), so a client never sees the node refuse it.
struct drain_msg {
    std::uint32_t timeout_ms = 0;
    bool node_stopping = false;
};

// Supervisor -> worker: exit now.
struct stop_msg {};

// Worker -> supervisor: config applied; the worker accepts handoffs from now on.
struct ready_msg {
    std::uint64_t generation = 0;
    std::uint32_t pid = 0;
};

// Worker -> supervisor: current load for least-conn scheduling. Sent at most once per event-loop
// turn, when it changed. `handoffs_received` lets the supervisor count hand-offs in flight.
struct load_msg {
    std::uint32_t connections = 0;
    std::uint64_t handoffs_received = 0;
};

// Worker -> supervisor: the worker is alive and this is what it has done, every
// heartbeat_interval (and once at start). The supervisor's watchdog kills a worker whose
// heartbeats stop. Counters named *_total only grow over the worker's life.
struct heartbeat_msg {
    std::uint64_t generation = 0;
    std::uint32_t pid = 0;
    std::uint64_t uptime_ms = 0;
    std::uint64_t rss_bytes = 0;
    std::uint64_t connections = 0;      // open now (HTTP and WebSocket)
    std::uint64_t ws_sessions = 0;      // open now
    std::uint64_t connections_total = 0;
    std::uint64_t ws_sessions_total = 0;
    std::uint64_t http_requests_total = 0;
    std::uint64_t messages_in_total = 0;
    std::uint64_t messages_out_total = 0;
    std::uint64_t bytes_in_total = 0;
    std::uint64_t bytes_out_total = 0;
    std::uint64_t send_queue_drops_total = 0;
    std::uint64_t slow_consumer_disconnects_total = 0;
    std::uint64_t publishes_total = 0;
    std::uint64_t publish_drops_total = 0;
    std::uint64_t deliveries_total = 0;
    std::uint64_t limit_hits_total = 0;
    std::uint64_t bad_requests_total = 0;
    rejection_counts rejections_total{}; // per reason (common/rejections.hpp)

    // Every u64 counter in wire order: encode and decode both walk this one list.
    template <class Self, class F>
    static void for_each_counter(Self& m, F&& f) {
        for (auto* field : {&m.uptime_ms, &m.rss_bytes, &m.connections, &m.ws_sessions, &m.connections_total,
                            &m.ws_sessions_total, &m.http_requests_total, &m.messages_in_total,
                            &m.messages_out_total, &m.bytes_in_total, &m.bytes_out_total,
                            &m.send_queue_drops_total, &m.slow_consumer_disconnects_total, &m.publishes_total,
                            &m.publish_drops_total, &m.deliveries_total, &m.limit_hits_total,
                            &m.bad_requests_total})
            f(*field);
        for (auto& r : m.rejections_total)
            f(r);
    }
};

// Worker -> supervisor: every connection is closed; the worker exits next.
struct drained_msg {};

// Worker -> supervisor: a message published on this worker (already delivered locally).
// A non-zero request_id asks for a publish_ack (the HTTP publish API reports the count).
struct publish_msg {
    enum flag : std::uint8_t {
        // Relay to the publishing worker too (it did not deliver locally). HTTP publishes use it:
        // one backend's requests may land on different workers, and only the supervisor's single
        // order keeps them in sequence everywhere.
        include_origin = 1,
    };
    std::uint32_t request_id = 0;
    std::uint8_t flags = 0;
    shared_message message; // never null in a valid message
};

// Supervisor -> worker: a message published elsewhere, for this worker's local subscribers.
struct relay_msg {
    shared_message message; // never null in a valid message
};

// Supervisor -> worker: the publish with `request_id` went to `workers` other workers.
struct publish_ack_msg {
    std::uint32_t request_id = 0;
    std::uint32_t workers = 0;
};

// Worker -> supervisor: channels that gained their first / lost their last local subscriber.
struct interest_msg {
    std::uint64_t seq = 0; // increases by one per message from one worker
    std::vector<std::string> added;
    std::vector<std::string> removed;
};

// Supervisor -> worker: interest up to `seq` applies to every relay from now on.
struct interest_ack_msg {
    std::uint64_t seq = 0;
};

// Either direction: "did not recognize your last message" (its type), then carry on.
struct unknown_type_msg {
    std::uint16_t type = 0;
};

using message = std::variant<config_msg, handoff_msg, drain_msg, stop_msg, ready_msg, load_msg,
                             drained_msg, unknown_type_msg, publish_msg, relay_msg, publish_ack_msg,
                             interest_msg, interest_ack_msg, heartbeat_msg, listen_msg>;

// Channels one interest message may name (added + removed); larger changes are split.
inline constexpr std::size_t max_interest_channels = 4096;

message_type type_of(const message&);
std::string_view to_string(message_type);

// Appends the frame for `m` to `out`. Descriptors are not part of the bytes: the sender passes
// handoff_msg's fds beside the frame (see channel).
void encode(const message& m, std::string& out);

enum class decode_status {
    ok,           // `msg` holds the message, `consumed` bytes were used
    need_more,    // not a whole frame yet
    unknown_type, // a whole frame of a type this build does not know; `consumed` skips it
    malformed,    // bad version, oversize, or a payload that does not match its type
};

struct decode_result {
    decode_status status = decode_status::need_more;
    std::size_t consumed = 0;
    std::uint16_t type = 0;    // the frame's type (ok, unknown_type)
    const char* reason = "";   // for malformed: what was wrong
    message msg;
};

// Decodes the first frame in `in`. Never reads past `in`, never throws, never asserts on input.
decode_result decode(std::span<const std::uint8_t> in);

// How many descriptors travel with `m` (a handoff's connections, a listen's sockets, else 0).
std::size_t descriptor_count(const message& m);
// Calls f(unique_fd&) for each descriptor slot of `m`, in wire order (none for most messages).
template <class F>
void for_each_descriptor(message& m, F&& f) {
    if (auto* h = std::get_if<handoff_msg>(&m))
        for (auto& c : h->connections)
            f(c.fd);
    else if (auto* l = std::get_if<listen_msg>(&m))
        for (auto& e : l->sockets)
            f(e.fd);
}

} // namespace sockherd::ipc
