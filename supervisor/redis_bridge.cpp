// Pub/sub across nodes through Redis: see supervisor/redis_bridge.hpp.

#include "supervisor/redis_bridge.hpp"

#include <hiredis/hiredis.h>

#include <algorithm>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

namespace sockherd::supervisor {

namespace {

constexpr auto log_interval = std::chrono::seconds(10);

// Text from Redis for a log line: cut, control characters replaced.
std::string printable(std::string_view text, std::size_t max = 64) {
    std::string out;
    for (std::size_t i = 0; i < text.size() && i < max; ++i)
        out += (text[i] >= ' ' && text[i] < 0x7f) ? text[i] : '?';
    if (text.size() > max)
        out += "...";
    return out;
}

std::string_view string_of(const redisReply& r) { return {r.str, r.len}; }

} // namespace

bool redis_bridge::occasional::due() {
    const auto now = std::chrono::steady_clock::now();
    if (logged && now - last < log_interval) {
        ++skipped;
        return false;
    }
    logged = true;
    last = now;
    return true;
}

redis_bridge::redis_bridge(net::io_context& ioc, const config::redis_section& cfg, limits lim, callbacks cb,
                           std::optional<node_id> id)
    : ioc_(ioc), cfg_(cfg), limits_(lim), callbacks_(std::move(cb)), id_(id ? *id : random_node_id()),
      id_hex_(to_hex(id_)) {
    // Room for two maximal PUBLISH commands at least, or a maximal message could never go.
    limits_.max_unanswered_bytes =
        std::max<std::uint64_t>(limits_.max_unanswered_bytes, 2 * (limits_.max_message_size + 64 * 1024));
}

void redis_bridge::set_max_message_size(std::uint64_t bytes) {
    limits_.max_message_size = bytes;
    limits_.max_unanswered_bytes = std::max<std::uint64_t>(limits_.max_unanswered_bytes, 2 * (bytes + 64 * 1024));
}

void redis_bridge::continue_counters(const stats_snapshot& previous) {
    counts_.messages_in += previous.messages_in;
    counts_.messages_out += previous.messages_out;
    counts_.dropped_while_disconnected += previous.dropped_while_disconnected;
    counts_.dropped_backpressure += previous.dropped_backpressure;
    counts_.publish_failures += previous.publish_failures;
    counts_.duplicates_skipped += previous.duplicates_skipped;
    counts_.decode_errors += previous.decode_errors;
    // previous.reconnects etc. already include what that bridge carried itself.
    carried_reconnects_ += previous.reconnects;
    carried_connect_failures_ += previous.connect_failures;
    carried_timeouts_ += previous.timeouts;
}

redis_bridge::~redis_bridge() {
    alive_.reset();
    // The connections go first (declared after what their handlers touch); no handler runs.
    subscriber_.reset();
    publisher_.reset();
}

void redis_bridge::start() {
    if (started_ || !cfg_.endpoint)
        return;
    started_ = true;
    redis_connection::settings s{"subscriber",
                                 *cfg_.endpoint,
                                 cfg_.connect_timeout,
                                 cfg_.command_timeout,
                                 cfg_.reconnect_backoff_min,
                                 cfg_.reconnect_backoff_max};
    spdlog::info("redis: bridge to {} (channels \"{}<channel>\", node id {})", cfg_.masked_url(), cfg_.channel_prefix,
                 id_hex_);
    subscriber_ = std::make_unique<redis_connection>(
        ioc_, s,
        redis_connection::events{[this] { on_subscriber_ready(); }, [this] { on_subscriber_down(); },
                                 [this](const redisReply& r) { on_message(r); }});
    s.name = "publisher";
    publisher_ = std::make_unique<redis_connection>(
        ioc_, s, redis_connection::events{[this] { update_state(); }, [this] { on_publisher_down(); }, nullptr});
    update_state();
    subscriber_->start();
    publisher_->start();
}

void redis_bridge::stop() {
    if (!started_)
        return;
    started_ = false;
    subscriber_->stop();
    publisher_->stop();
    subscribed_.clear();
    to_remove_.clear();
    to_add_ = wanted_;
    confirmed_ = 0;
    update_state();
}

void redis_bridge::want(const std::string& channel) {
    if (!wanted_.insert(channel).second)
        return;
    if (subscribed_.contains(channel))
        to_remove_.erase(channel);
    else
        to_add_.insert(channel);
    schedule_flush();
}

void redis_bridge::unwant(const std::string& channel) {
    if (wanted_.erase(channel) == 0)
        return;
    if (subscribed_.contains(channel))
        to_remove_.insert(channel);
    else
        to_add_.erase(channel);
    schedule_flush();
}

void redis_bridge::schedule_flush() {
    if (flush_posted_)
        return;
    flush_posted_ = true;
    net::post(ioc_, [this, alive = std::weak_ptr<char>(alive_)] {
        if (alive.expired())
            return;
        flush_posted_ = false;
        flush();
    });
}

// Sends what changed since the last flush; nothing while the subscriber is down (on_ready
// sends the whole wanted set).
void redis_bridge::flush() {
    if (!subscriber_ || subscriber_->current() != redis_connection::state::ready)
        return;
    if (to_add_.empty() && to_remove_.empty())
        return;
    std::vector<std::string> add(to_add_.begin(), to_add_.end());
    std::vector<std::string> remove(to_remove_.begin(), to_remove_.end());
    to_add_.clear();
    to_remove_.clear();
    for (const auto& c : add)
        subscribed_.insert(c);
    for (const auto& c : remove)
        subscribed_.erase(c);
    spdlog::debug("redis: subscribing to {} more, unsubscribing from {} channel(s); {} wanted", add.size(),
                  remove.size(), wanted_.size());
    // SUBSCRIBE first: UNSUBSCRIBE in hiredis 0.14 needs the connection in subscribed mode.
    send_channels("SUBSCRIBE", add);
    send_channels("UNSUBSCRIBE", remove);
}

void redis_bridge::send_channels(std::string_view command, std::vector<std::string>& channels) {
    std::vector<std::string_view> args;
    for (std::size_t i = 0; i < channels.size(); i += max_channels_per_command) {
        const auto n = std::min(max_channels_per_command, channels.size() - i);
        args.assign({command});
        for (std::size_t k = i; k < i + n; ++k) {
            channels[k].insert(0, cfg_.channel_prefix);
            args.emplace_back(channels[k]);
        }
        // A refusal means the connection just went down: on_ready sends everything again.
        if (!subscriber_->send(args, n, [this](const redisReply* r) { on_subscription_reply(r); }))
            return;
    }
}

void redis_bridge::on_subscriber_ready() {
    // A new connection subscribes to nothing yet: everything wanted is to be subscribed.
    subscribed_.clear();
    to_remove_.clear();
    to_add_ = wanted_;
    confirmed_ = 0;
    if (!wanted_.empty())
        spdlog::info("redis: subscribing to {} channel(s)", wanted_.size());
    flush();
    update_state();
}

void redis_bridge::on_publisher_down() {
    last_error_ = "publisher: " + publisher_->last_error();
    update_state();
}

void redis_bridge::on_subscriber_down() {
    last_error_ = "subscriber: " + subscriber_->last_error();
    subscribed_.clear();
    to_remove_.clear();
    to_add_ = wanted_;
    confirmed_ = 0;
    update_state();
}

// ["subscribe" | "unsubscribe", channel, count of this connection's subscriptions]
void redis_bridge::on_subscription_reply(const redisReply* reply) {
    if (reply == nullptr)
        return; // the connection went down; on_ready subscribes again
    if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 3 && reply->element[2]->type == REDIS_REPLY_INTEGER) {
        confirmed_ = static_cast<std::size_t>(std::max<long long>(0, reply->element[2]->integer));
        return;
    }
    if (reply->type == REDIS_REPLY_ERROR) {
        last_error_ = "subscriber: SUBSCRIBE: " + printable(string_of(*reply), 200);
        spdlog::warn("redis: {}", last_error_);
    }
}

// ["message", channel, payload] (pmessage is never subscribed to).
void redis_bridge::on_message(const redisReply& reply) {
    if (reply.elements != 3 || reply.element[1]->type != REDIS_REPLY_STRING ||
        reply.element[2]->type != REDIS_REPLY_STRING)
        return decode_error("?", "not a [message, channel, payload] array");
    const std::string_view channel = string_of(*reply.element[1]);
    const std::string_view bytes = string_of(*reply.element[2]);
    if (!channel.starts_with(cfg_.channel_prefix))
        return decode_error(channel, "a channel without the prefix");
    const auto name = channel.substr(cfg_.channel_prefix.size());
    if (!valid_channel_name(name))
        return decode_error(channel, "not a valid channel name");
    redis_envelope env;
    if (const auto status = decode(bytes, env); status != envelope_status::ok)
        return decode_error(channel, to_string(status));
    if (env.origin == id_) {
        ++counts_.duplicates_skipped; // published here: local subscribers have it already
        return;
    }
    if (env.payload.size() > limits_.max_message_size)
        return decode_error(channel, "a payload over max_message_size (" + std::to_string(env.payload.size()) +
                                         " bytes)");
    if (env.kind == payload_kind::json && !nlohmann::json::accept(env.payload))
        return decode_error(channel, "a JSON payload that is not JSON");
    ++counts_.messages_in;
    if (callbacks_.on_message)
        callbacks_.on_message(std::make_shared<const pubsub_message>(
            pubsub_message{std::string(name), env.kind, std::string(env.payload)}));
}

void redis_bridge::decode_error(std::string_view channel, std::string_view why) {
    ++counts_.decode_errors;
    if (!decode_log_.due())
        return;
    const auto skipped = std::exchange(decode_log_.skipped, 0);
    spdlog::warn("redis: skipped a message on \"{}\": {}{}", printable(channel), why,
                 skipped == 0 ? std::string()
                              : " (and " + std::to_string(skipped) + " more since the last message)");
}

void redis_bridge::publish(const pubsub_message& m) {
    if (!started_)
        return;
    const auto drop = [this](std::uint64_t& counter, std::string_view why) {
        ++counter;
        if (!drop_log_.due())
            return;
        const auto skipped = std::exchange(drop_log_.skipped, 0);
        spdlog::warn("redis: dropped a publish ({}){}; local subscribers still got it", why,
                     skipped == 0 ? std::string()
                                  : " (and " + std::to_string(skipped) + " more since the last message)");
    };
    if (publisher_->current() != redis_connection::state::ready)
        return drop(counts_.dropped_while_disconnected, "the Redis publisher connection is down");
    const std::uint64_t size = envelope_header_size + cfg_.channel_prefix.size() + m.channel.size() + m.payload.size();
    if (unanswered_bytes_ + size > limits_.max_unanswered_bytes)
        return drop(counts_.dropped_backpressure, "Redis is not keeping up: too many unanswered publishes");

    frame_.clear();
    encode(redis_envelope{id_, seq_ + 1, m.kind, m.payload}, frame_);
    const std::string redis_channel = cfg_.channel_prefix + m.channel;
    const std::string_view args[] = {"PUBLISH", redis_channel, frame_};
    const bool sent = publisher_->send(args, 1, [this, size](const redisReply* r) {
        unanswered_bytes_ -= size;
        if (r != nullptr && r->type != REDIS_REPLY_ERROR) {
            ++counts_.messages_out;
            return;
        }
        ++counts_.publish_failures;
        if (r != nullptr)
            last_error_ = "publisher: PUBLISH: " + printable(string_of(*r), 200);
        if (publish_error_log_.due())
            spdlog::warn("redis: a publish failed: {}{}",
                         r != nullptr ? last_error_ : std::string("the connection went down before Redis answered"),
                         publish_error_log_.skipped == 0
                             ? std::string()
                             : " (and " + std::to_string(std::exchange(publish_error_log_.skipped, 0)) + " more)");
    });
    if (!sent)
        return drop(counts_.dropped_while_disconnected, "the Redis publisher connection is down");
    ++seq_;
    unanswered_bytes_ += size;
}

void redis_bridge::update_state() {
    state next = state::off;
    if (started_ && subscriber_ && publisher_) {
        const bool up = subscriber_->current() == redis_connection::state::ready &&
                        publisher_->current() == redis_connection::state::ready;
        next = up ? state::connected
                  : (subscriber_->failing() || publisher_->failing()) ? state::disconnected : state::connecting;
    }
    if (next == state_)
        return;
    const auto previous = std::exchange(state_, next);
    if (next == state::connected)
        spdlog::info("redis: bridge connected to {}; {} channel(s) wanted", cfg_.masked_url(), wanted_.size());
    else if (next == state::disconnected)
        spdlog::warn("redis: bridge disconnected from {}: {}; local delivery goes on, publishes to Redis are "
                     "dropped (counted) until it is back",
                     cfg_.masked_url(), last_error_);
    else if (next == state::off && previous != state::off)
        spdlog::info("redis: bridge stopped");
    if (callbacks_.on_state_change)
        net::post(ioc_, [this, alive = std::weak_ptr<char>(alive_), next] {
            if (!alive.expired())
                callbacks_.on_state_change(next);
        });
}

redis_bridge::stats_snapshot redis_bridge::stats() const {
    stats_snapshot s = counts_;
    s.current = state_;
    s.url = cfg_.masked_url();
    s.node_id = id_hex_;
    s.wanted_channels = wanted_.size();
    s.subscribed_channels = subscriber_ && subscriber_->current() == redis_connection::state::ready ? confirmed_ : 0;
    s.reconnects = carried_reconnects_;
    s.connect_failures = carried_connect_failures_;
    s.timeouts = carried_timeouts_;
    s.subscriber = subscriber_ ? std::string(to_string(subscriber_->current())) : "idle";
    s.publisher = publisher_ ? std::string(to_string(publisher_->current())) : "idle";
    for (const auto* c : {subscriber_.get(), publisher_.get()}) {
        if (c == nullptr)
            continue;
        const auto& n = c->stats();
        s.reconnects += n.connects > 0 ? n.connects - 1 : 0;
        s.connect_failures += n.failures;
        s.timeouts += n.timeouts;
    }
    s.last_error = last_error_;
    return s;
}

std::string_view to_string(redis_bridge::state s) {
    switch (s) {
    case redis_bridge::state::off: return "off";
    case redis_bridge::state::connecting: return "connecting";
    case redis_bridge::state::connected: return "connected";
    case redis_bridge::state::disconnected: return "disconnected";
    }
    return "?";
}

} // namespace sockherd::supervisor
