// Tests for common/percent.cpp.

#include "common/percent.hpp"

#include <gtest/gtest.h>

namespace sockherd {
namespace {

TEST(percent_decode, decodes_every_escape_once) {
    EXPECT_EQ(percent_decode("plain"), "plain");
    EXPECT_EQ(percent_decode(""), "");
    EXPECT_EQ(percent_decode("a%20b"), "a b");
    EXPECT_EQ(percent_decode("%2Fx%2f"), "/x/");
    EXPECT_EQ(percent_decode("p%40ss%3Aword"), "p@ss:word");
    EXPECT_EQ(percent_decode("%2541"), "%41"); // once, not twice
    EXPECT_EQ(percent_decode("%C3%A9"), "\xC3\xA9");
}

TEST(percent_decode, broken_escapes_and_nul_are_refused) {
    for (const char* bad : {"%", "%4", "a%", "%zz", "%4g", "%g4", "%00", "x%00y"})
        EXPECT_FALSE(percent_decode(bad)) << bad;
}

} // namespace
} // namespace sockherd
