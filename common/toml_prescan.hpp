#pragma once
// A lexical pre-scan of TOML text, run before toml++ sees it. toml++ 3.3 (Debian's) reaches
// undefined behaviour (TOML_UNREACHABLE in is_non_ascii_horizontal_whitespace, marzer/tomlplusplus#295,
// fixed upstream after 3.3) whenever it asks "is this whitespace?" of a non-ASCII character. TOML 1.0
// allows non-ASCII only inside strings and comments, and toml++ asks that question only outside them,
// right after a backslash in a multi-line basic string, and over the whitespace a line-ending
// backslash trims; so rejecting non-ASCII there first keeps toml++ away from the bug.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace sockherd {

// Where and why the pre-scan refused the text. line and column are 1-based; the column counts
// UTF-8 code points (as toml++'s positions do), not bytes, and a leading byte-order mark is skipped.
struct toml_prescan_error {
    std::uint32_t line = 0;
    std::uint32_t column = 0;
    std::string message;
};

// Rejects, at the first offending byte:
//  - a non-ASCII byte outside every string and comment. A value that is not a string (a number,
//    a date, a boolean) runs, as toml++ reads it, up to whitespace, ']', '}', ',' or '#', so a
//    quote inside one ("a = 1\"x\"") starts no string;
//  - inside a multi-line basic string, a non-ASCII byte right after a backslash (after the spaces
//    and tabs that may follow it), or after a line-ending backslash before the next character that
//    is not a space, tab or newline. That last case is valid TOML; toml++ 3.3 cannot read it.
// Accepts everything else: it does not validate TOML (toml++ does), and never rejects valid TOML
// 1.0 outside that last case. Pure; linear in the size of the text.
std::optional<toml_prescan_error> prescan_toml(std::string_view text);

} // namespace sockherd
