#pragma once
// The pub/sub channel registry of one worker: which local sessions subscribe to which channel,
// and which channels this worker has announced interest in to the supervisor. Owned by the
// worker; sessions register and deregister themselves.

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/pubsub.hpp"

namespace sockherd::worker {

enum class wire_format { raw, json };

// One publish as local subscribers receive it: the message, plus its JSON-protocol form and the
// whole WebSocket frame of each wire format, each built once on the first subscriber that needs it
// and then shared. Server frames are never masked, so every subscriber of a format sends the same
// bytes.
class broadcast {
public:
    explicit broadcast(shared_message m) : message_(std::move(m)) {}
    const shared_message& message() const { return message_; }
    const std::shared_ptr<const std::string>& json_form() const;
    // The complete frame (header and payload) a subscriber speaking `f` sends: raw, a text or
    // binary frame of the payload; json, a text frame of json_form().
    const std::shared_ptr<const std::string>& frame(wire_format f) const;

private:
    shared_message message_;
    mutable std::shared_ptr<const std::string> json_;
    mutable std::shared_ptr<const std::string> raw_frame_;
    mutable std::shared_ptr<const std::string> json_frame_;
};

// What the hub needs from a session.
class subscriber {
public:
    virtual wire_format format() const = 0;
    // Queue `b` for sending. Must not subscribe or unsubscribe synchronously (defer instead).
    virtual void deliver(const broadcast& b) = 0;

protected:
    ~subscriber() = default;
};

class hub {
public:
    // Interest changes since the last take_interest(): channels that gained their first local
    // subscriber, and channels that lost their last one. A channel that did both cancels out.
    struct interest_change {
        std::vector<std::string> added;
        std::vector<std::string> removed;
    };

    // True if the subscription is new (false: `s` already subscribed to `channel`).
    bool subscribe(const std::string& channel, subscriber& s);
    // True if `s` was subscribed.
    bool unsubscribe(const std::string& channel, subscriber& s);

    // Hands `m` to every local subscriber of its channel; returns how many.
    // Subscribing or unsubscribing from inside deliver() is not allowed.
    std::size_t publish_local(const shared_message& m);

    std::size_t subscriber_count(const std::string& channel) const;
    std::size_t channel_count() const { return channels_.size(); }

    bool has_interest_change() const { return !pending_.empty(); }
    interest_change take_interest();

private:
    struct channel_entry {
        std::vector<subscriber*> subscribers;
    };
    enum class pending_change { added, removed };

    void note(const std::string& channel, pending_change change);

    std::unordered_map<std::string, channel_entry> channels_;
    std::unordered_map<std::string, pending_change> pending_;
    bool delivering_ = false;
};

} // namespace sockherd::worker
