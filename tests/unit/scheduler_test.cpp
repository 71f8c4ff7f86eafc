#include "supervisor/scheduler.hpp"

#include <algorithm>
#include <map>
#include <vector>

#include <gtest/gtest.h>

namespace sockherd::supervisor {
namespace {

TEST(scheduler, least_conn_picks_the_lowest_load) {
    scheduler s(schedule_policy::least_conn);
    std::vector<worker_load> w{{true, 5}, {true, 2}, {true, 9}};
    EXPECT_EQ(s.pick(w), 1u);
}

TEST(scheduler, skips_ineligible_workers) {
    scheduler s(schedule_policy::least_conn);
    std::vector<worker_load> w{{true, 5}, {false, 0}, {true, 9}};
    EXPECT_EQ(s.pick(w), 0u);
    scheduler rr(schedule_policy::round_robin);
    std::vector<worker_load> r{{false, 0}, {true, 0}, {false, 0}};
    for (int i = 0; i < 3; ++i)
        EXPECT_EQ(rr.pick(r), 1u);
}

TEST(scheduler, none_eligible_is_nullopt) {
    scheduler s(schedule_policy::least_conn);
    std::vector<worker_load> w{{false, 0}, {false, 0}};
    EXPECT_FALSE(s.pick(w));
    EXPECT_FALSE(s.pick(std::span<const worker_load>{}));
}

TEST(scheduler, least_conn_ties_rotate) {
    scheduler s(schedule_policy::least_conn);
    std::vector<worker_load> w(4, {true, 3});
    std::map<std::size_t, int> seen;
    for (int i = 0; i < 8; ++i)
        ++seen[*s.pick(w)];
    EXPECT_EQ(seen.size(), 4u);
    for (auto& [idx, n] : seen)
        EXPECT_EQ(n, 2) << idx;
}

TEST(scheduler, least_conn_with_load_feedback_balances) {
    scheduler s(schedule_policy::least_conn);
    std::vector<worker_load> w{{true, 10}, {true, 0}, {true, 4}, {true, 0}};
    for (int i = 0; i < 30; ++i)
        ++w[*s.pick(w)].load;
    // 44 connections over 4 workers: least-conn evens them out.
    for (auto& x : w)
        EXPECT_EQ(x.load, 11u);
}

TEST(scheduler, round_robin_cycles_in_order) {
    scheduler s(schedule_policy::round_robin);
    std::vector<worker_load> w{{true, 100}, {true, 0}, {true, 50}};
    EXPECT_EQ(s.pick(w), 0u);
    EXPECT_EQ(s.pick(w), 1u);
    EXPECT_EQ(s.pick(w), 2u);
    EXPECT_EQ(s.pick(w), 0u);
}

// The batch API chooses as pick() does: round-robin the same sequence; least-conn always a least
// loaded eligible worker (ties may rotate in another order), so the loads end up the same.
TEST(scheduler, batch_choices_match_one_pick_per_connection) {
    for (const auto policy : {schedule_policy::least_conn, schedule_policy::round_robin}) {
        SCOPED_TRACE(policy == schedule_policy::least_conn ? "least-conn" : "round-robin");
        scheduler one(policy), batched(policy);
        std::vector<worker_load> a{{true, 7}, {false, 0}, {true, 3}, {true, 3}, {true, 12}, {true, 0}};
        auto b = a;
        for (int round = 0; round < 5; ++round) {
            batched.begin_batch(b);
            for (int k = 0; k < 17; ++k) {
                const auto x = one.pick(a);
                const auto y = batched.next([&](std::size_t i) { return b[i].eligible; });
                ASSERT_TRUE(x && y);
                if (policy == schedule_policy::round_robin) {
                    ASSERT_EQ(x, y) << "round " << round << " pick " << k;
                } else {
                    for (const auto& w : b) {
                        if (w.eligible) {
                            ASSERT_LE(b[*y].load, w.load) << "round " << round << " pick " << k;
                        }
                    }
                }
                ++a[*x].load;
                ++b[*y].load;
            }
            batched.end_batch();
            auto la = a, lb = b;
            const auto by_load = [](const worker_load& p, const worker_load& q) { return p.load < q.load; };
            std::sort(la.begin(), la.end(), by_load);
            std::sort(lb.begin(), lb.end(), by_load);
            for (std::size_t i = 0; i < la.size(); ++i)
                EXPECT_EQ(la[i].load, lb[i].load) << "round " << round;
        }
    }
}

TEST(scheduler, batch_skips_a_worker_that_stops_being_eligible) {
    scheduler s(schedule_policy::least_conn);
    std::vector<worker_load> w{{true, 0}, {true, 5}};
    s.begin_batch(w);
    bool first_full = false;
    EXPECT_EQ(s.next([&](std::size_t i) { return i != 0 || !first_full; }), 0u);
    first_full = true; // e.g. its channel filled up
    for (int k = 0; k < 3; ++k)
        EXPECT_EQ(s.next([&](std::size_t i) { return i != 0 || !first_full; }), 1u);
    EXPECT_FALSE(s.next([](std::size_t) { return false; }));
    s.end_batch();
    EXPECT_FALSE(s.in_batch());
}

} // namespace
} // namespace sockherd::supervisor
