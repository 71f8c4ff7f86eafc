#include "supervisor/scheduler.hpp"

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

} // namespace
} // namespace sockherd::supervisor
