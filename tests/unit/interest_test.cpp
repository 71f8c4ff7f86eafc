#include "supervisor/interest.hpp"

#include <algorithm>

#include <gtest/gtest.h>

namespace sockherd::supervisor {
namespace {

std::vector<interest_registry::slot_id> sorted(std::vector<interest_registry::slot_id> v) {
    std::sort(v.begin(), v.end());
    return v;
}

TEST(interest, add_lists_each_slot_once) {
    interest_registry r;
    r.add(0, "chat");
    r.add(2, "chat");
    r.add(2, "chat");
    r.add(1, "news");
    EXPECT_EQ(sorted(r.slots_for("chat")), (std::vector<interest_registry::slot_id>{0, 2}));
    EXPECT_EQ(r.slots_for("news"), (std::vector<interest_registry::slot_id>{1}));
    EXPECT_TRUE(r.slots_for("nobody").empty());
    EXPECT_EQ(r.channel_count(), 2u);
}

TEST(interest, remove_drops_the_slot_and_empty_channels) {
    interest_registry r;
    r.add(0, "chat");
    r.add(1, "chat");
    r.remove(0, "chat");
    EXPECT_EQ(r.slots_for("chat"), (std::vector<interest_registry::slot_id>{1}));
    r.remove(1, "chat");
    EXPECT_TRUE(r.slots_for("chat").empty());
    EXPECT_EQ(r.channel_count(), 0u);
    r.remove(1, "chat"); // unknown: harmless
    r.remove(7, "never");
    EXPECT_EQ(r.channel_count(), 0u);
}

TEST(interest, forget_removes_everything_a_dead_worker_asked_for) {
    interest_registry r;
    for (int i = 0; i < 50; ++i)
        r.add(3, "c" + std::to_string(i));
    r.add(1, "c7");
    EXPECT_EQ(r.channels_of(3), 50u);
    r.forget(3);
    EXPECT_EQ(r.channels_of(3), 0u);
    EXPECT_EQ(r.channel_count(), 1u);
    EXPECT_EQ(r.slots_for("c7"), (std::vector<interest_registry::slot_id>{1}));
    r.add(3, "c1"); // a replacement worker starts clean
    EXPECT_EQ(r.slots_for("c1"), (std::vector<interest_registry::slot_id>{3}));
}

TEST(interest, reports_when_a_channel_becomes_wanted_and_unwanted) {
    interest_registry r;
    EXPECT_TRUE(r.add(0, "chat"));  // the first slot: the node wants it now
    EXPECT_FALSE(r.add(1, "chat")); // already wanted
    EXPECT_FALSE(r.add(1, "chat"));
    EXPECT_TRUE(r.add(1, "news"));
    EXPECT_FALSE(r.remove(0, "chat")); // slot 1 still wants it
    EXPECT_FALSE(r.remove(0, "chat")); // not slot 0's any more
    EXPECT_TRUE(r.remove(1, "chat"));  // the last one
    EXPECT_FALSE(r.remove(1, "chat"));
    EXPECT_TRUE(r.add(2, "chat"));

    r.add(2, "news");
    r.add(2, "solo");
    auto channels = r.channels();
    std::sort(channels.begin(), channels.end());
    EXPECT_EQ(channels, (std::vector<std::string>{"chat", "news", "solo"}));
    auto unwanted = r.forget(2); // news stays with slot 1
    std::sort(unwanted.begin(), unwanted.end());
    EXPECT_EQ(unwanted, (std::vector<std::string>{"chat", "solo"}));
    EXPECT_EQ(r.channels(), (std::vector<std::string>{"news"}));
    EXPECT_TRUE(r.forget(9).empty());
}

} // namespace
} // namespace sockherd::supervisor
