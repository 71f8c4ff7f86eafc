// Tests for common/toml_prescan.cpp (and its call at the start of parse_config).

#include "common/toml_prescan.hpp"

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "common/config.hpp"
#include "common/embedded.hpp"

namespace sockherd {
namespace {

constexpr std::string_view outside = "non-ASCII character outside a string or comment (TOML allows them only there)";

struct rejected {
    std::string_view name;
    std::string_view text;
    std::uint32_t line;
    std::uint32_t column;
    std::string_view message; // a prefix of the message
};

const rejected rejected_texts[] = {
    // The four the config fuzzer found (tests/fuzz/corpus/config/toml-unreachable-*).
    {"lone_combining_mark", "\xcc\xaa", 1, 1, outside},
    {"in_a_bare_key", "a\xc2\xa1 = 1\n", 1, 2, outside},
    {"after_a_value", "a = 1 \xc2\xa1\n", 1, 7, outside},
    {"after_a_line_ending_backslash", "s = \"\"\"\\\n\xc2\xa7\"\"\"\n", 2, 1,
     "non-ASCII character right after the whitespace a line-ending backslash trims"},
    // Outside strings and comments.
    {"no_break_space_before_equals", "a\xc2\xa0= 1\n", 1, 2, outside},
    {"in_a_table_header", "[a]\n[b.\xc3\xa9]\n", 2, 4, outside},
    {"after_a_string", "a = \"\" \xc2\xa1\n", 1, 8, outside},
    {"after_an_empty_literal_string", "a = ''\xc2\xa1\n", 1, 7, outside},
    {"after_a_quoted_key", "\"a\"\xc2\xa1 = 1\n", 1, 4, outside},
    {"after_a_multi_line_string", "a = '''x\ny'''\xc2\xa1\n", 2, 5, outside},
    {"in_an_array", "a = [1, \xc2\xa1]\n", 1, 9, outside},
    {"after_a_date", "a = 1979-05-27 \xc2\xa1\n", 1, 16, outside},
    {"after_a_byte_order_mark", "\xEF\xBB\xBF" "a\xc2\xa1 = 1\n", 1, 2, outside},
    {"stray_continuation_byte", "a = 1\x80\n", 1, 6, outside},
    {"column_counts_code_points", "a = \"\xc3\xa9\xc3\xa9\" \xc2\xa1\n", 1, 10, outside},
    {"on_a_later_line", "# \xc3\xa9\nb = \"\xc3\xa9\"\n\nc = 1\xc2\xa1\n", 4, 6, outside},
    // A quote inside a number, date or other bare value starts no string: toml++ reads on to the
    // end of the value.
    {"quote_after_a_number", "a = 1\"\xc2\xa7\"\n", 1, 7, outside},
    {"quote_after_a_dot", "a = 1.\"\xc2\xa7\"\n", 1, 8, outside},
    {"apostrophe_after_a_number", "a = 1'\xc2\xa7'\n", 1, 7, outside},
    {"quote_after_a_signed_number", "a = +1\"\xc2\xa7\"\n", 1, 8, outside},
    {"quote_after_inf", "a = -inf\"\xc2\xa7\"\n", 1, 10, outside},
    {"quote_after_a_date", "a = 1979-05-27\"\xc2\xa7\"\n", 1, 16, outside},
    {"quote_after_a_time_after_a_date", "a = 1979-05-27 0\"\xc2\xa7\"\n", 1, 18, outside},
    {"quote_in_an_array", "a = [1\"\xc2\xa7\"]\n", 1, 8, outside},
    {"quote_in_an_inline_table", "a = {b = 1\"\xc2\xa7\"}\n", 1, 12, outside},
    {"bracket_and_quote_after_a_number", "a = 1=[\"\xc2\xa7\"]\n", 1, 9, outside},
    // After a backslash in a multi-line basic string.
    {"right_after_a_backslash", "s = \"\"\"\\\xc2\xa7\"\"\"\n", 1, 9,
     "non-ASCII character after a backslash in a multi-line string"},
    {"after_a_backslash_and_spaces", "s = \"\"\"\\ \t\xc2\xa7\"\"\"\n", 1, 11,
     "non-ASCII character after a backslash in a multi-line string"},
    {"after_blank_lines_trimmed", "s = \"\"\"a\\  \n  \n \xc2\xa7\"\"\"\n", 3, 2,
     "non-ASCII character right after the whitespace a line-ending backslash trims"},
    {"after_crlf_trimmed", "s = \"\"\"a\\\r\n\t\xc2\xa7\"\"\"\r\n", 2, 2,
     "non-ASCII character right after the whitespace a line-ending backslash trims"},
    {"after_a_second_line_ending_backslash", "s = \"\"\"a\\\nb\\\n\xc2\xa7\"\"\"\n", 3, 1,
     "non-ASCII character right after the whitespace a line-ending backslash trims"},
    {"after_a_backslash_in_an_array", "a = [\"\"\"\\\n\xc2\xa7\"\"\"]\n", 2, 1,
     "non-ASCII character right after the whitespace a line-ending backslash trims"},
};

class toml_prescan_rejects : public testing::TestWithParam<rejected> {};

TEST_P(toml_prescan_rejects, at_the_offending_character) {
    const rejected& bad = GetParam();
    const auto err = prescan_toml(bad.text);
    ASSERT_TRUE(err.has_value());
    EXPECT_EQ(err->line, bad.line);
    EXPECT_EQ(err->column, bad.column);
    EXPECT_TRUE(err->message.starts_with(bad.message)) << err->message;
}

INSTANTIATE_TEST_SUITE_P(toml_prescan, toml_prescan_rejects, testing::ValuesIn(rejected_texts),
                         [](const auto& p) { return std::string(p.param.name); });

TEST(toml_prescan, a_quote_in_a_bare_value_is_explained) {
    const auto err = prescan_toml("a = 1\"\xc2\xa7\"\n");
    ASSERT_TRUE(err.has_value());
    EXPECT_EQ(err->message,
              std::string(outside) + "; a quote inside a number, date or other bare value starts no string");
    EXPECT_EQ(prescan_toml("a = 1\xc2\xa7\n")->message, outside);
}

// Valid TOML 1.0 that toml++ 3.3 reads correctly: strings and comments hold any non-ASCII.
const std::string_view accepted_texts[] = {
    "",
    "\n\n",
    "\xEF\xBB\xBF" "a = \"\xc3\xa9\"\n",
    "# \xc3\xa9\xe2\x80\xa6\xf0\x9f\x98\x80 comment \xc2\xa0\xe3\x80\x80\na = 1 # \xc2\xa1\xc2\xa7\n",
    "a = 1#\xc3\xa9\nb = true#\xc3\xa9\nc = 1979-05-27T07:32:00Z#\xc3\xa9\nd = [1]#\xc3\xa9\ne = {}#\xc3\xa9\n",
    "a = \"\xc3\xa9 \\\" \xc3\xa9 \\\\\" # \xc3\xa9\n",
    "a = '\xc3\xa9 \\ \xc3\xa9'\nb = ''\nc = \"\"\n",
    "a = \"\"\"\n\xc3\xa9 \"\xc3\xa9\" \"\"\xc3\xa9\"\" \\\"\"\" \xc3\xa9\n\"\"\"\n",
    "a = \"\"\"\"\xc3\xa9\"\"\"\"\nb = \"\"\"\xc3\xa9\"\"\"\"\"\nc = \"\"\"\"\"\xc3\xa9\"\"\"\n",
    "a = '''\n\xc3\xa9 '\xc3\xa9' ''\xc3\xa9'' \\\n\xc3\xa9\n'''\nb = ''''\xc3\xa9'''''\n",
    "a = \"\"\"\\\n   x \xc3\xa9\"\"\"\nb = \"\"\"x\\\n\n\t\"\xc3\xa9\"\"\"\n",
    "a = \"\"\"a\\\\\n\xc3\xa9\"\"\"\n",                   // an escaped backslash ends no line
    "a = \"\"\"\\u00e9\\\n  \\u00e9 \xc3\xa9\"\"\"\n", // escapes around a line-ending backslash
    "\"\xc3\xa9\" = 1\n'\xc3\xbc' = 2\na.\"\xc3\xa9\".'\xc3\xbc' = 3\nb . \"\xc3\xa9\" = 4\n",
    "1.\"\xc3\xa9\" = 1\n-2.'\xc3\xa9' = 2\n",
    "[\"\xc3\xa9\"]\nx = 1\n[[a.\"\xc3\xa9\".'\xc3\xbc']]\n[ b . \"\xc3\xa9\" ]\n",
    "a = { \"\xc3\xa9\" = \"\xc3\xbc\", b.'\xc3\xa9' = '\xc3\xbc', c = { \"\xc3\xa9\" = 1 } }\n",
    "a = [ \"\xc3\xa9\", '\xc3\xbc', \"\"\"\xc3\xa9\"\"\", '''\xc3\xbc''', [\"\xc3\xa9\"], { \"\xc3\xa9\" = 1 } ]\n",
    "a = [ # \xc3\xa9\n  1, # \xc3\xbc\n  [\"\xc3\xa9\", 2], # \xc3\xa9\n  { \"\xc3\xa9\" = 1 },\n"
    "  \"\xc3\xa9\",\n] # \xc3\xa9\n"
    "\"\xc3\xa9\" = 1\n",
    "a = [\n[\"\xc3\xa9\"],\n]\nb.\"\xc3\xa9\" = 1\n",
    "a = 1\r\nb = \"\xc3\xa9\"\r\n# \xc3\xa9\r\nc = \"\"\"\\\r\n  x\xc3\xa9\"\"\"\r\n",
    "i = +1_000\nf = -3.1415e-2\nh = 0xdead_beef\nn = -nan\ninf = +inf\nd = 1979-05-27 07:32:00.999-07:00\n"
    "t = 07:32:00\nb = false\ns = \"\xc3\xa9\"\n",
};

TEST(toml_prescan, accepts_non_ascii_in_strings_and_comments) {
    for (const auto text : accepted_texts) {
        const auto err = prescan_toml(text);
        EXPECT_FALSE(err.has_value()) << text << "\n" << err->line << ":" << err->column << ": " << err->message;
    }
}

std::filesystem::path repository_root() {
    return std::filesystem::path(__FILE__).parent_path().parent_path().parent_path();
}

std::string read_file(const std::filesystem::path& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

TEST(toml_prescan, accepts_every_toml_file_in_the_repository) {
    const auto root = repository_root();
    std::vector<std::filesystem::path> files = {root / "etc/default.toml", root / "packaging/sockherd.toml"};
    for (const auto& entry : std::filesystem::directory_iterator(root / "tests/fuzz/corpus/config"))
        if (entry.path().extension() == ".toml")
            files.push_back(entry.path());
    ASSERT_GE(files.size(), 4u);
    for (const auto& path : files) {
        ASSERT_TRUE(std::filesystem::is_regular_file(path)) << path;
        const std::string text = read_file(path);
        ASSERT_FALSE(text.empty()) << path;
        const auto err = prescan_toml(text);
        EXPECT_FALSE(err.has_value()) << path << ":" << err->line << ":" << err->column << ": " << err->message;
    }
    const auto embedded = assets::find("default.toml");
    ASSERT_TRUE(embedded.has_value());
    EXPECT_FALSE(prescan_toml(*embedded).has_value());
}

TEST(toml_prescan, parse_config_reports_it_like_any_other_error) {
    const auto result = parse_config("[log]\nlevel\xc2\xa1 = \"info\"\n", "test.toml");
    ASSERT_TRUE(std::holds_alternative<config_error>(result));
    const auto& err = std::get<config_error>(result);
    EXPECT_EQ(err.source_name, "test.toml");
    EXPECT_EQ(err.line, 2u);
    EXPECT_EQ(err.column, 6u);
    EXPECT_EQ(err.message, outside);
    EXPECT_EQ(err.to_string(), "test.toml:2:6: " + std::string(outside));

    const auto ok = parse_config("# r\xc3\xa9sum\xc3\xa9\n[log]\nlevel = \"info\" # \xc2\xa1\n", "test.toml");
    EXPECT_TRUE(std::holds_alternative<config>(ok)) << std::get<config_error>(ok).to_string();
}

} // namespace
} // namespace sockherd
