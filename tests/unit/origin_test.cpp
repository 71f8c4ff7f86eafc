#include <gtest/gtest.h>

#include "common/origin.hpp"

namespace sockherd {
namespace {

std::vector<origin_pattern> patterns(std::initializer_list<const char*> texts) {
    std::vector<origin_pattern> out;
    for (const char* t : texts) {
        auto p = parse_origin_pattern(t);
        EXPECT_TRUE(p) << t;
        if (p)
            out.push_back(*p);
    }
    return out;
}

TEST(origin, empty_list_allows_everything) {
    EXPECT_TRUE(origin_allowed({}, "https://evil.example"));
    EXPECT_TRUE(origin_allowed({}, "null"));
}

TEST(origin, exact_origins_compare_scheme_host_and_port) {
    const auto p = patterns({"https://app.example.com", "http://localhost:8080"});
    EXPECT_TRUE(origin_allowed(p, "https://app.example.com"));
    EXPECT_TRUE(origin_allowed(p, "HTTPS://App.Example.COM")) << "scheme and host are case-insensitive";
    EXPECT_TRUE(origin_allowed(p, "https://app.example.com:443")) << "the default port may be written";
    EXPECT_TRUE(origin_allowed(p, "http://localhost:8080"));
    EXPECT_FALSE(origin_allowed(p, "http://app.example.com")) << "another scheme";
    EXPECT_FALSE(origin_allowed(p, "https://app.example.com:8443")) << "another port";
    EXPECT_FALSE(origin_allowed(p, "http://localhost")) << "another port";
    EXPECT_FALSE(origin_allowed(p, "https://app.example.com.evil.net"));
    EXPECT_FALSE(origin_allowed(p, "https://evilapp.example.com"));
    EXPECT_FALSE(origin_allowed(p, "null"));
    EXPECT_FALSE(origin_allowed(p, ""));
    EXPECT_FALSE(origin_allowed(p, "https://app.example.com/path")) << "an Origin has no path";
}

TEST(origin, wildcards_match_subdomains_only) {
    const auto p = patterns({"https://*.example.com"});
    EXPECT_TRUE(origin_allowed(p, "https://a.example.com"));
    EXPECT_TRUE(origin_allowed(p, "https://a.b.example.com"));
    EXPECT_FALSE(origin_allowed(p, "https://example.com")) << "the parent itself is not a subdomain";
    EXPECT_FALSE(origin_allowed(p, "https://badexample.com"));
    EXPECT_FALSE(origin_allowed(p, "https://a.example.com.evil.net"));
    EXPECT_FALSE(origin_allowed(p, "http://a.example.com"));
    EXPECT_FALSE(origin_allowed(p, "https://.example.com"));
}

TEST(origin, star_allows_any_origin_even_null) {
    const auto p = patterns({"https://x.example", "*"});
    EXPECT_TRUE(origin_allowed(p, "null"));
    EXPECT_TRUE(origin_allowed(p, "https://anything.test"));
}

TEST(origin, ipv6_hosts) {
    const auto p = patterns({"http://[::1]:8080"});
    EXPECT_TRUE(origin_allowed(p, "http://[::1]:8080"));
    EXPECT_FALSE(origin_allowed(p, "http://[::2]:8080"));
}

TEST(origin, bad_patterns_are_rejected) {
    for (const char* bad : {"", "example.com", "https://", "https://*.com", "https://a.*.example.com",
                            "https://exa mple.com", "https://example.com/", "https://example.com:99999",
                            "https://example.com:", "*.example.com", "https://*.[::1]", "https://[::1",
                            "https://example.com:80x"})
        EXPECT_FALSE(parse_origin_pattern(bad)) << bad;
}

} // namespace
} // namespace sockherd
