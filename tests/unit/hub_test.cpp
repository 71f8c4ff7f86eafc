#include "worker/hub.hpp"

#include <algorithm>
#include <functional>

#include <gtest/gtest.h>

namespace sockherd::worker {
namespace {

struct fake_subscriber final : subscriber {
    wire_format fmt = wire_format::raw;
    std::vector<shared_message> got;
    std::vector<std::string> json;
    wire_format format() const override { return fmt; }
    void deliver(const broadcast& b) override {
        got.push_back(b.message());
        if (fmt == wire_format::json)
            json.push_back(*b.json_form());
    }
};

shared_message msg(std::string channel, std::string payload, payload_kind k = payload_kind::text) {
    return std::make_shared<const pubsub_message>(pubsub_message{std::move(channel), k, std::move(payload)});
}

TEST(hub, delivers_to_every_subscriber_of_the_channel_only) {
    hub h;
    fake_subscriber a, b, c;
    h.subscribe("chat", a);
    h.subscribe("chat", b);
    h.subscribe("news", c);
    EXPECT_EQ(h.publish_local(msg("chat", "hi")), 2u);
    ASSERT_EQ(a.got.size(), 1u);
    ASSERT_EQ(b.got.size(), 1u);
    EXPECT_TRUE(c.got.empty());
    EXPECT_EQ(a.got[0].get(), b.got[0].get()) << "one shared buffer, not a copy per subscriber";
    EXPECT_EQ(h.publish_local(msg("nobody", "x")), 0u);
}

TEST(hub, subscribing_twice_is_one_subscription) {
    hub h;
    fake_subscriber a;
    EXPECT_TRUE(h.subscribe("chat", a));
    EXPECT_FALSE(h.subscribe("chat", a));
    h.publish_local(msg("chat", "x"));
    EXPECT_EQ(a.got.size(), 1u);
    EXPECT_EQ(h.subscriber_count("chat"), 1u);
}

TEST(hub, unsubscribe_stops_delivery) {
    hub h;
    fake_subscriber a, b;
    h.subscribe("chat", a);
    h.subscribe("chat", b);
    EXPECT_TRUE(h.unsubscribe("chat", a));
    EXPECT_FALSE(h.unsubscribe("chat", a));
    h.publish_local(msg("chat", "x"));
    EXPECT_TRUE(a.got.empty());
    EXPECT_EQ(b.got.size(), 1u);
}

TEST(hub, interest_changes_only_on_first_and_last_subscriber) {
    hub h;
    fake_subscriber a, b;
    h.subscribe("chat", a);
    h.subscribe("chat", b);
    auto c = h.take_interest();
    EXPECT_EQ(c.added, std::vector<std::string>{"chat"});
    EXPECT_TRUE(c.removed.empty());
    EXPECT_FALSE(h.has_interest_change());

    h.unsubscribe("chat", a);
    EXPECT_FALSE(h.has_interest_change()) << "b is still subscribed";
    h.unsubscribe("chat", b);
    c = h.take_interest();
    EXPECT_TRUE(c.added.empty());
    EXPECT_EQ(c.removed, std::vector<std::string>{"chat"});
    EXPECT_EQ(h.channel_count(), 0u);
}

TEST(hub, add_and_remove_in_one_round_cancel_out) {
    hub h;
    fake_subscriber a;
    h.subscribe("brief", a);
    h.unsubscribe("brief", a);
    EXPECT_FALSE(h.has_interest_change());

    h.subscribe("kept", a);
    h.take_interest();
    h.unsubscribe("kept", a);
    h.subscribe("kept", a); // the supervisor still has it: nothing to say
    EXPECT_FALSE(h.has_interest_change());
}

TEST(hub, json_form_is_built_once_and_shared) {
    hub h;
    fake_subscriber a, b;
    a.fmt = b.fmt = wire_format::json;
    h.subscribe("c", a);
    h.subscribe("c", b);
    h.publish_local(msg("c", "hello"));
    ASSERT_EQ(a.json.size(), 1u);
    EXPECT_EQ(a.json[0], R"({"channel":"c","data":"hello"})");
    EXPECT_EQ(a.json[0], b.json[0]);
}

TEST(hub, many_subscribers_leave_in_any_order) {
    hub h;
    std::vector<fake_subscriber> subs(100);
    for (auto& s : subs)
        h.subscribe("c", s);
    for (std::size_t i = 0; i < subs.size(); i += 2)
        h.unsubscribe("c", subs[i]);
    EXPECT_EQ(h.publish_local(msg("c", "x")), 50u);
    for (std::size_t i = 0; i < subs.size(); ++i)
        EXPECT_EQ(subs[i].got.size(), i % 2 ? 1u : 0u) << i;
}

} // namespace
} // namespace sockherd::worker

namespace sockherd::worker {
namespace {

// A subscriber that leaves the channel when it receives a message, the way a session cut off as
// a slow consumer does: not from inside deliver() (forbidden), but deferred to after the loop.
struct leaving_subscriber final : subscriber {
    std::vector<std::function<void()>>* deferred = nullptr;
    hub* h = nullptr;
    int got = 0;
    wire_format format() const override { return wire_format::raw; }
    void deliver(const broadcast&) override {
        ++got;
        deferred->push_back([this] { h->unsubscribe("c", *this); });
    }
};

TEST(hub, subscribers_leaving_after_a_delivery_do_not_disturb_it) {
    hub h;
    std::vector<std::function<void()>> deferred;
    std::vector<leaving_subscriber> subs(10);
    for (auto& s : subs) {
        s.deferred = &deferred;
        s.h = &h;
        h.subscribe("c", s);
    }
    EXPECT_EQ(h.take_interest().added, std::vector<std::string>{"c"});
    EXPECT_EQ(h.publish_local(msg("c", "x")), 10u);
    for (auto& s : subs)
        EXPECT_EQ(s.got, 1);
    for (auto& f : deferred)
        f();
    EXPECT_EQ(h.subscriber_count("c"), 0u);
    EXPECT_EQ(h.publish_local(msg("c", "y")), 0u);
    EXPECT_EQ(h.take_interest().removed, std::vector<std::string>{"c"});
}

struct reentrant_subscriber final : subscriber {
    hub* h = nullptr;
    wire_format format() const override { return wire_format::raw; }
    void deliver(const broadcast&) override { h->unsubscribe("c", *this); }
};

#ifndef NDEBUG
TEST(hub_death, unsubscribing_from_inside_deliver_is_caught) {
    GTEST_FLAG_SET(death_test_style, "threadsafe");
    EXPECT_DEATH(
        {
            hub h;
            reentrant_subscriber s;
            s.h = &h;
            h.subscribe("c", s);
            h.publish_local(msg("c", "x"));
        },
        "from inside deliver");
}
#endif

} // namespace
} // namespace sockherd::worker
