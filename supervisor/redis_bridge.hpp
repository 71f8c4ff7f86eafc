#pragma once
// The bridge that makes pub/sub channels span every node through Redis, owned by the supervisor
// (never by a worker): one subscriber connection that SUBSCRIBEs to exactly the channels the
// supervisor wants (those some local worker has interest in), and one publisher connection
// that PUBLISHes every message published on this node, once, in an envelope
// (common/redis_envelope.hpp) carrying this node's random id, so that the copy Redis hands
// back is recognized and skipped: local subscribers got it directly.
//
// Redis away: local delivery is unaffected (it never passes through here). Publishes are
// dropped and counted, not buffered: Redis pub/sub keeps nothing for subscribers that are not
// connected at that moment, and when this node cannot reach Redis the other nodes' subscriber
// connections are usually down or resubscribing too, so a replay would mostly reach nobody,
// would arrive late and out of order with what was published after it, and would need memory
// bounded by yet another limit. Both connections reconnect with backoff; the subscriber then
// subscribes again to every wanted channel.
//
// Rules: single-threaded on the supervisor's io_context. on_message runs inside the bridge's
// hiredis calls: it may call publish/want/unwant/stop, but must not destroy the bridge.
// on_state_change is posted (it runs in a later turn). The process must ignore SIGPIPE (the
// supervisor's main does): hiredis writes with write(2), not send(MSG_NOSIGNAL).

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "common/config.hpp"
#include "common/net.hpp"
#include "common/pubsub.hpp"
#include "common/redis_envelope.hpp"
#include "supervisor/redis_connection.hpp"

namespace sockherd::supervisor {

class redis_bridge {
public:
    enum class state : std::uint8_t {
        off,          // no [redis] url, not started, or stopped
        connecting,   // the first attempt of both connections is under way
        connected,    // both connections are up
        disconnected, // a connection failed or was lost and is not back yet (retrying)
    };

    struct limits {
        // Larger messages from Redis are decode errors (a relay must fit the worker channel and
        // the workers' own limit); the supervisor passes [websocket] max_message_size.
        std::uint64_t max_message_size = 1024 * 1024;
        // PUBLISHes written but not yet answered, in bytes: beyond this (Redis slow or stuck),
        // publishes are dropped and counted. Raised to at least two maximal messages.
        std::uint64_t max_unanswered_bytes = 32 * 1024 * 1024;
    };

    struct callbacks {
        // A message from another node on a wanted channel, ready to relay.
        std::function<void(shared_message)> on_message;
        std::function<void(state)> on_state_change;
    };

    // Since construction; what /status.json and /metrics show.
    struct stats_snapshot {
        state current = state::off;
        std::string url;         // password masked
        std::string node_id;     // this node's id in the envelopes, hex
        std::string subscriber;  // "ready", "connecting", "waiting", "idle"
        std::string publisher;
        std::uint64_t reconnects = 0;       // connections up again after a failure or loss (both connections)
        std::uint64_t connect_failures = 0; // attempts that failed (refused, AUTH, timeouts, ...)
        std::uint64_t timeouts = 0;         // connect and command timeouts among failures and losses
        std::uint64_t messages_in = 0;      // from Redis, relayed to on_message
        std::uint64_t messages_out = 0;     // PUBLISHes Redis acknowledged
        std::uint64_t dropped_while_disconnected = 0; // publishes not sent: the publisher was not up
        std::uint64_t dropped_backpressure = 0;       // publishes not sent: max_unanswered_bytes reached
        std::uint64_t publish_failures = 0; // sent, but answered with an error or lost with the connection
        std::uint64_t duplicates_skipped = 0; // this node's own messages coming back
        std::uint64_t decode_errors = 0;      // foreign or garbled messages on our channels (logged, skipped)
        std::size_t wanted_channels = 0;
        std::size_t subscribed_channels = 0; // as Redis last confirmed
        std::string last_error;              // the latest, "subscriber: ..." / "publisher: ..."; no password
    };

    // Channels per SUBSCRIBE / UNSUBSCRIBE command; more changes go in several commands.
    static constexpr std::size_t max_channels_per_command = 1024;

    // `cfg` must be enabled(). The node id is random unless given: tests, or a reload that
    // replaces the bridge and passes the old one's id, so its messages still in flight are skipped.
    redis_bridge(net::io_context& ioc, const config::redis_section& cfg, limits lim, callbacks cb,
                 std::optional<node_id> id = std::nullopt);
    ~redis_bridge();
    redis_bridge(const redis_bridge&) = delete;
    redis_bridge& operator=(const redis_bridge&) = delete;

    // Connects both connections (and keeps them connected until stop()).
    void start();
    // Closes both connections; publishes are then ignored. The wanted set is kept.
    void stop();

    // The supervisor's interest in a (valid) channel name: it counts workers, the bridge only
    // keeps the set. Changes made in one turn go to Redis together at the end of the turn, as
    // one SUBSCRIBE and one UNSUBSCRIBE; a want and unwant of the same channel cancel out.
    void want(const std::string& channel);
    void unwant(const std::string& channel);

    // A message published on this node: to Redis once, or dropped and counted.
    void publish(const pubsub_message& m);

    // A reload changed [websocket] max_message_size: messages from Redis are checked against the
    // new limit from now on (the unanswered-bytes cap grows with it, as in the constructor).
    void set_max_message_size(std::uint64_t bytes);

    // A reload replaced the bridge (a [redis] key changed): the new one continues the old one's
    // *_total counters, so the metrics never go backwards. Only the counters move; state,
    // channels and last_error are the new bridge's own.
    void continue_counters(const stats_snapshot& previous);

    state current() const { return state_; }
    stats_snapshot stats() const;
    const node_id& id() const { return id_; }

private:
    void schedule_flush();
    void flush();
    void send_channels(std::string_view command, std::vector<std::string>& channels);
    void on_subscriber_ready();
    void on_subscriber_down();
    void on_publisher_down();
    void on_subscription_reply(const redisReply* reply);
    void on_message(const redisReply& reply);
    void decode_error(std::string_view channel, std::string_view why);
    void update_state();

    net::io_context& ioc_;
    config::redis_section cfg_;
    limits limits_;
    callbacks callbacks_;
    node_id id_;
    std::string id_hex_;
    std::unique_ptr<redis_connection> subscriber_;
    std::unique_ptr<redis_connection> publisher_;
    state state_ = state::off;
    bool started_ = false;

    // wanted_: what the supervisor asked for. subscribed_: what this subscriber connection has
    // sent SUBSCRIBE for (and no UNSUBSCRIBE since). to_add_ / to_remove_: the difference, until
    // the next flush.
    std::unordered_set<std::string> wanted_;
    std::unordered_set<std::string> subscribed_;
    std::unordered_set<std::string> to_add_;
    std::unordered_set<std::string> to_remove_;
    bool flush_posted_ = false;
    std::size_t confirmed_ = 0;

    std::uint64_t seq_ = 0;
    std::uint64_t unanswered_bytes_ = 0;
    std::string frame_; // the envelope being published (hiredis copies it)
    stats_snapshot counts_; // the counters; stats() fills in the rest
    // What earlier bridges' connections counted (continue_counters): reconnects, connect
    // failures and timeouts live in the connections' own stats, which start again at zero.
    std::uint64_t carried_reconnects_ = 0;
    std::uint64_t carried_connect_failures_ = 0;
    std::uint64_t carried_timeouts_ = 0;
    std::string last_error_;

    struct occasional {
        std::chrono::steady_clock::time_point last{};
        bool logged = false;
        std::uint64_t skipped = 0;
        bool due(); // one line per interval; `skipped` counts the rest
    };
    occasional decode_log_, drop_log_, publish_error_log_;

    std::shared_ptr<char> alive_ = std::make_shared<char>(); // posted handlers hold weak_ptrs
};

std::string_view to_string(redis_bridge::state);

} // namespace sockherd::supervisor
