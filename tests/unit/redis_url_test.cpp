// Tests for common/redis_url.cpp: [redis] url parsing and password masking.

#include "common/redis_url.hpp"

#include <string>

#include <gtest/gtest.h>

namespace sockherd {
namespace {

redis_url parse_ok(std::string_view text) {
    auto result = parse_redis_url(text);
    if (const auto* why = std::get_if<std::string>(&result)) {
        ADD_FAILURE() << text << ": " << *why;
        return {};
    }
    return std::get<redis_url>(std::move(result));
}

std::string parse_fails(std::string_view text) {
    auto result = parse_redis_url(text);
    if (std::holds_alternative<redis_url>(result)) {
        ADD_FAILURE() << "parsed, but should not have: " << text;
        return {};
    }
    return std::get<std::string>(std::move(result));
}

TEST(redis_url, tcp_forms) {
    auto u = parse_ok("redis://127.0.0.1");
    EXPECT_EQ(u.kind, redis_url::transport::tcp_socket);
    EXPECT_EQ(u.host, "127.0.0.1");
    EXPECT_EQ(u.port, 6379);
    EXPECT_EQ(u.db, 0u);
    EXPECT_TRUE(u.password.empty());
    EXPECT_TRUE(u.host_is_address());
    EXPECT_EQ(u.masked(), "redis://127.0.0.1:6379/0");
    EXPECT_EQ(u.address(), "127.0.0.1:6379");

    u = parse_ok("redis://:s3cret@10.0.0.5:6380/3");
    EXPECT_EQ(u.host, "10.0.0.5");
    EXPECT_EQ(u.port, 6380);
    EXPECT_EQ(u.db, 3u);
    EXPECT_EQ(u.username, "");
    EXPECT_EQ(u.password, "s3cret");
    EXPECT_EQ(u.masked(), "redis://:***@10.0.0.5:6380/3");

    u = parse_ok("redis://app:p%40ss%3Aw%2Ford@[::1]:7000/15");
    EXPECT_EQ(u.host, "::1");
    EXPECT_EQ(u.port, 7000);
    EXPECT_EQ(u.db, 15u);
    EXPECT_EQ(u.username, "app");
    EXPECT_EQ(u.password, "p@ss:w/ord");
    EXPECT_TRUE(u.host_is_address());
    EXPECT_EQ(u.masked(), "redis://app:***@[::1]:7000/15");
    EXPECT_EQ(u.address(), "[::1]:7000");

    u = parse_ok("redis://redis-1.internal.example:6379/");
    EXPECT_EQ(u.host, "redis-1.internal.example");
    EXPECT_FALSE(u.host_is_address());
    EXPECT_EQ(u.db, 0u);
    EXPECT_EQ(parse_ok("redis://localhost").host, "localhost");
    EXPECT_EQ(parse_ok("redis://[2001:db8::7]").port, 6379);
    EXPECT_EQ(parse_ok("redis://h:1").port, 1);
    EXPECT_EQ(parse_ok("redis://h:65535").port, 65535);
    // '@' in a password that was not escaped: the last '@' ends the user info.
    EXPECT_EQ(parse_ok("redis://:a@b@host").password, "a@b");
}

TEST(redis_url, unix_forms) {
    auto u = parse_ok("unix:///run/redis/redis.sock");
    EXPECT_EQ(u.kind, redis_url::transport::unix_socket);
    EXPECT_EQ(u.path, "/run/redis/redis.sock");
    EXPECT_EQ(u.masked(), "unix:///run/redis/redis.sock");
    EXPECT_EQ(u.address(), "/run/redis/redis.sock");

    u = parse_ok("unix://:pw@/tmp/r.sock");
    EXPECT_EQ(u.path, "/tmp/r.sock");
    EXPECT_EQ(u.password, "pw");
    EXPECT_EQ(u.masked(), "unix://:***@/tmp/r.sock");
}

TEST(redis_url, rejected) {
    const char* bad[] = {
        "",
        "127.0.0.1:6379",
        "http://host",
        "rediss://host",
        "redis://",
        "redis://:6379",
        "redis://host:0",
        "redis://host:65536",
        "redis://host:",
        "redis://host:port",
        "redis://host/16",
        "redis://host/-1",
        "redis://host/db0",
        "redis://host/1/2",
        "redis://::1:6379",
        "redis://[::1",
        "redis://[::1]x",
        "redis://[1.2.3.4]",
        "redis://[fe80::1%eth0]",
        "redis://host name",
        "redis://host\n",
        "redis://-host",
        "redis://host-.example",
        "redis://a..b",
        "redis://host.",
        "redis://1.2.3.999",
        "redis://under_score",
        "redis://host?db=1",
        "redis://host#x",
        "redis://secret@host",
        "redis://:@host",
        "redis://:%zz@host",
        "redis://:%4@host",
        "redis://us%0Aer:pw@host",
        "unix://",
        "unix://relative/path",
        "unix:///",
        "unix://:pw@relative",
    };
    for (const char* text : bad)
        EXPECT_FALSE(parse_fails(text).empty()) << text;
    const std::string long_path = "unix:///" + std::string(120, 'a');
    EXPECT_NE(parse_fails(long_path).find("at most 107 bytes"), std::string::npos);
    EXPECT_EQ(parse_fails("rediss://h"), "TLS (rediss://) is not supported");
    EXPECT_EQ(parse_fails("redis://h:99999"), "invalid port \"99999\" (1 to 65535)");
    EXPECT_EQ(parse_fails("redis://h/16"), "invalid database \"16\" (0 to 15)");
}

TEST(redis_url, reasons_never_repeat_the_password) {
    const char* bad[] = {"redis://:hunter2@host:0",   "redis://:hunter2@ho st",   "redis://:hunter2@[::1",
                         "redis://:hunter2",          "redis://u:hunter2@host/99", "redis://:hunter2%zz@host",
                         "unix://:hunter2@relative"};
    for (const char* text : bad) {
        const auto why = parse_fails(text);
        EXPECT_EQ(why.find("hunter2"), std::string::npos) << why;
        EXPECT_EQ(mask_redis_url(text).find("hunter2"), std::string::npos) << mask_redis_url(text);
    }
}

TEST(redis_url, mask_any_text) {
    EXPECT_EQ(mask_redis_url("redis://:pw@host:1"), "redis://:***@host:1");
    EXPECT_EQ(mask_redis_url("redis://user:pw@host"), "redis://user:***@host");
    EXPECT_EQ(mask_redis_url("redis://pw@host"), "redis://***@host");
    EXPECT_EQ(mask_redis_url("redis://:p@w/x@host/2"), "redis://:***@host/2");
    EXPECT_EQ(mask_redis_url("unix://:pw@/run/r.sock"), "unix://:***@/run/r.sock");
    EXPECT_EQ(mask_redis_url("redis://host:1/0"), "redis://host:1/0");
    EXPECT_EQ(mask_redis_url("junk:pw@host"), "junk:***@host");
    EXPECT_EQ(mask_redis_url(""), "");
    EXPECT_EQ(mask_redis_url("redis://:secret"), "redis://:***"); // "@host" forgotten
    EXPECT_EQ(mask_redis_url("redis://:secret/0"), "redis://:***");
}

} // namespace
} // namespace sockherd
