#include "common/toml_prescan.hpp"

#include <algorithm>
#include <limits>
#include <utility>
#include <vector>

namespace sockherd {
namespace {

constexpr std::string_view byte_order_mark = "\xEF\xBB\xBF";
constexpr std::size_t stop = std::string_view::npos;

constexpr std::string_view outside_message =
    "non-ASCII character outside a string or comment (TOML allows them only there)";
constexpr std::string_view quote_in_value_hint = "; a quote inside a number, date or other bare value starts no string";
constexpr std::string_view after_backslash_message =
    "non-ASCII character after a backslash in a multi-line string (TOML allows only an escape there, or spaces "
    "and tabs up to the end of the line)";
constexpr std::string_view after_line_ending_backslash_message =
    "non-ASCII character right after the whitespace a line-ending backslash trims in a multi-line string: the "
    "TOML parser cannot read it there; put an ASCII character before it or write it as a \\uXXXX escape";

bool is_ascii(char c) {
    return static_cast<unsigned char>(c) < 0x80;
}

bool is_space_or_tab(char c) {
    return c == ' ' || c == '\t';
}

// ASCII whitespace as toml++ sees it: space, tab and '\n' through '\r'.
bool is_whitespace(char c) {
    return is_space_or_tab(c) || (c >= '\n' && c <= '\r');
}

// What a line-ending backslash trims.
bool is_trimmed(char c) {
    return is_space_or_tab(c) || c == '\n' || c == '\r';
}

// What toml++ takes as the end of a value that is not a string.
bool ends_bare_value(char c) {
    return is_whitespace(c) || c == ']' || c == '}' || c == ',' || c == '#';
}

bool is_utf8_continuation(char c) {
    return (static_cast<unsigned char>(c) & 0xC0) == 0x80;
}

// What comes next outside strings and comments: a key (at the start of a line, in a table header,
// after '{' or ',' in an inline table) or a value (after '=', in an array).
enum class expecting { key, value };
enum class container : unsigned char { array, inline_table };

// One pass over one text. Each reader takes the offset to start at and returns the offset to go on
// from, or `stop` (past every offset) once fail() has recorded the first problem.
class scanner {
public:
    explicit scanner(std::string_view text) : text_(text) {}

    std::optional<toml_prescan_error> run();

private:
    std::size_t bare_value(std::size_t i);
    std::size_t basic_string(std::size_t i) const;
    std::size_t literal_string(std::size_t i) const;
    std::size_t multi_line_basic_string(std::size_t i);
    std::size_t multi_line_literal_string(std::size_t i) const;
    std::size_t quote_run(std::size_t i) const;
    std::size_t skip(std::size_t i, bool (*skippable)(char)) const;
    std::size_t fail(std::size_t at, std::string message);

    std::string_view text_;
    std::size_t start_ = 0; // past the byte-order mark, if any
    std::optional<toml_prescan_error> failure_;
};

std::optional<toml_prescan_error> scanner::run() {
    std::size_t i = text_.starts_with(byte_order_mark) ? byte_order_mark.size() : 0;
    start_ = i;
    expecting next = expecting::key;
    std::vector<container> open; // the arrays and inline tables around the scan, innermost last
    const auto innermost_is = [&](container c) { return !open.empty() && open.back() == c; };
    const auto close = [&](container c) {
        if (innermost_is(c))
            open.pop_back();
    };
    while (i < text_.size()) {
        const char c = text_[i];
        if (c == '#') {
            i = text_.find('\n', i);
            continue;
        }
        if (c == '"') {
            i = text_.substr(i, 3) == R"(""")" ? multi_line_basic_string(i + 3) : basic_string(i + 1);
            continue;
        }
        if (c == '\'') {
            i = text_.substr(i, 3) == "'''" ? multi_line_literal_string(i + 3) : literal_string(i + 1);
            continue;
        }
        if (!is_ascii(c)) {
            i = fail(i, std::string(outside_message));
            continue;
        }
        if (c == '\n' && open.empty()) {
            next = expecting::key;
        } else if (is_whitespace(c)) {
            // nothing to track
        } else if (next == expecting::key) {
            // '[' and ']' here are a table header's, not an array's
            if (c == '=') {
                next = expecting::value;
            } else if (c == '}' && innermost_is(container::inline_table)) {
                open.pop_back(); // "{}"
                next = expecting::value;
            }
        } else {
            switch (c) {
            case '[': open.push_back(container::array); break;
            case '{':
                open.push_back(container::inline_table);
                next = expecting::key;
                break;
            case ']': close(container::array); break;
            case '}': close(container::inline_table); break;
            case ',':
                if (innermost_is(container::inline_table))
                    next = expecting::key;
                break;
            default: i = bare_value(i); continue;
            }
        }
        ++i;
    }
    return std::move(failure_);
}

// A number, date, time, boolean (or a mistake) up to the byte that ends it, as toml++ reads it:
// a quote in there is part of it, and the rest of the value is outside any string.
std::size_t scanner::bare_value(std::size_t i) {
    bool quoted = false;
    for (; i < text_.size() && !ends_bare_value(text_[i]); ++i) {
        if (!is_ascii(text_[i]))
            return fail(i, std::string(outside_message) + (quoted ? std::string(quote_in_value_hint) : ""));
        quoted = quoted || text_[i] == '"' || text_[i] == '\'';
    }
    return i;
}

// "..." from the byte after the opening quote. An unterminated one ends at the newline, where
// toml++ stops with an error: scanning goes on from there.
std::size_t scanner::basic_string(std::size_t i) const {
    for (; i < text_.size(); ++i) {
        if (text_[i] == '"')
            return i + 1;
        if (text_[i] == '\n')
            return i;
        if (text_[i] == '\\' && i + 1 < text_.size() && text_[i + 1] != '\n')
            ++i; // the escaped byte, so \" does not close
    }
    return i;
}

// '...' from the byte after the opening quote; no escapes.
std::size_t scanner::literal_string(std::size_t i) const {
    i = text_.find_first_of("'\n", i);
    return i != stop && text_[i] == '\'' ? i + 1 : i;
}

// """...""" from the byte after the opening quotes. toml++ asks "is this whitespace?" of the byte
// after a backslash and of the spaces and tabs that follow it, then, after a line-ending
// backslash, of everything up to the first byte that is not a space, tab or newline.
std::size_t scanner::multi_line_basic_string(std::size_t i) {
    while (i < text_.size()) {
        if (text_[i] == '"') {
            const std::size_t run = quote_run(i);
            i += run;
            if (run >= 3)
                return i;
            continue;
        }
        if (text_[i] != '\\') {
            ++i;
            continue;
        }
        const std::size_t after = skip(i + 1, is_space_or_tab);
        if (after == text_.size())
            return after;
        if (!is_ascii(text_[after]))
            return fail(after, std::string(after_backslash_message));
        if (text_[after] == '\n' || text_[after] == '\r') {
            i = skip(after, is_trimmed);
            if (i < text_.size() && !is_ascii(text_[i]))
                return fail(i, std::string(after_line_ending_backslash_message));
        } else {
            // an escape (\" and \\ included) when no space or tab came first; else an error for toml++
            i = after == i + 1 ? after + 1 : after;
        }
    }
    return i;
}

// '''...''' from the byte after the opening quotes; no escapes.
std::size_t scanner::multi_line_literal_string(std::size_t i) const {
    while (i < text_.size()) {
        if (text_[i] == '\'') {
            const std::size_t run = quote_run(i);
            i += run;
            if (run >= 3)
                return i;
        } else {
            ++i;
        }
    }
    return i;
}

// How many of the quote at i repeat from i, up to 5: inside a multi-line string one or two are
// content, and three to five close it (the first one or two of those being content).
std::size_t scanner::quote_run(std::size_t i) const {
    std::size_t n = 1;
    while (n < 5 && i + n < text_.size() && text_[i + n] == text_[i])
        ++n;
    return n;
}

std::size_t scanner::skip(std::size_t i, bool (*skippable)(char)) const {
    while (i < text_.size() && skippable(text_[i]))
        ++i;
    return i;
}

std::size_t scanner::fail(std::size_t at, std::string message) {
    const std::string_view before = text_.substr(start_, at - start_);
    const std::size_t line_begin = before.rfind('\n') + 1; // 0 on the first line (npos + 1)
    const std::size_t line = 1 + static_cast<std::size_t>(std::count(before.begin(), before.end(), '\n'));
    const std::size_t column =
        1 + static_cast<std::size_t>(std::count_if(before.begin() + static_cast<std::ptrdiff_t>(line_begin),
                                                   before.end(), [](char c) { return !is_utf8_continuation(c); }));
    constexpr std::size_t most = std::numeric_limits<std::uint32_t>::max();
    failure_ = toml_prescan_error{static_cast<std::uint32_t>(std::min(line, most)),
                                  static_cast<std::uint32_t>(std::min(column, most)), std::move(message)};
    return stop;
}

} // namespace

std::optional<toml_prescan_error> prescan_toml(std::string_view text) {
    return scanner(text).run();
}

} // namespace sockherd
