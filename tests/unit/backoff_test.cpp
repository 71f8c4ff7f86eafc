#include "supervisor/backoff.hpp"

#include <gtest/gtest.h>

namespace sockherd::supervisor {
namespace {

using ms = std::chrono::milliseconds;

TEST(backoff, doubles_from_min_to_max) {
    restart_backoff b(ms(100), ms(1000), ms(10'000));
    EXPECT_EQ(b.next(ms(0)), ms(100));
    EXPECT_EQ(b.next(ms(5)), ms(200));
    EXPECT_EQ(b.next(ms(5)), ms(400));
    EXPECT_EQ(b.next(ms(5)), ms(800));
    EXPECT_EQ(b.next(ms(5)), ms(1000));
    EXPECT_EQ(b.next(ms(5)), ms(1000));
    EXPECT_EQ(b.consecutive_failures(), 6u);
}

TEST(backoff, resets_after_a_healthy_stretch) {
    restart_backoff b(ms(100), ms(10'000), ms(10'000));
    b.next(ms(0));
    b.next(ms(0));
    b.next(ms(0));
    EXPECT_EQ(b.next(ms(10'000)), ms(100));
    EXPECT_EQ(b.consecutive_failures(), 1u);
    EXPECT_EQ(b.next(ms(1)), ms(200));
}

TEST(backoff, never_overflows_however_many_failures) {
    restart_backoff b(ms(100), ms(10'000), ms(10'000));
    for (int i = 0; i < 1000; ++i)
        EXPECT_LE(b.next(ms(0)), ms(10'000));
}

TEST(backoff, max_below_min_is_clamped_to_min) {
    restart_backoff b(ms(500), ms(100), ms(10'000));
    EXPECT_EQ(b.next(ms(0)), ms(500));
    EXPECT_EQ(b.next(ms(0)), ms(500));
}

} // namespace
} // namespace sockherd::supervisor
