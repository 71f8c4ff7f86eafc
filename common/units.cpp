// Durations and sizes as people write them: see common/units.hpp.

#include "common/units.hpp"

#include <algorithm>
#include <charconv>
#include <iterator>
#include <limits>
#include <utility>

#include <fmt/format.h>

namespace sockherd {
namespace {

using unit = std::pair<std::string_view, std::uint64_t>;

// Largest first: parse_duration requires this order and format_duration prints in it.
constexpr unit duration_units[] = {{"h", 3'600'000}, {"m", 60'000}, {"s", 1'000}, {"ms", 1}};

constexpr unit size_units[] = {{"", 1},           {"B", 1},           {"KiB", 1ull << 10},
                               {"MiB", 1ull << 20}, {"GiB", 1ull << 30}, {"kB", 1'000},
                               {"KB", 1'000},       {"MB", 1'000'000},  {"GB", 1'000'000'000}};

// Reads the leading decimal digits of `text` (at least one, no sign) and drops them from it.
bool take_number(std::string_view& text, std::uint64_t& out) {
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
    if (ec != std::errc{})
        return false;
    text.remove_prefix(static_cast<std::size_t>(end - text.data()));
    return true;
}

} // namespace

std::optional<duration> parse_duration(std::string_view text) {
    constexpr auto max_ms = static_cast<std::uint64_t>(std::numeric_limits<duration::rep>::max());
    if (text.empty())
        return std::nullopt;
    std::uint64_t total = 0;
    const auto* next = std::begin(duration_units);
    while (!text.empty()) {
        std::uint64_t n = 0;
        if (!take_number(text, n))
            return std::nullopt;
        const auto name = text.substr(0, text.find_first_of("0123456789"));
        text.remove_prefix(name.size());
        const auto* u = std::find_if(next, std::end(duration_units), [&](const unit& x) { return x.first == name; });
        if (u == std::end(duration_units))
            return std::nullopt;
        next = u + 1;
        if (__builtin_mul_overflow(n, u->second, &n) || __builtin_add_overflow(total, n, &total) || total > max_ms)
            return std::nullopt;
    }
    return duration{static_cast<duration::rep>(total)};
}

std::optional<std::uint64_t> parse_size(std::string_view text) {
    std::uint64_t n = 0;
    if (!take_number(text, n))
        return std::nullopt;
    for (const auto& [name, factor] : size_units)
        if (text == name)
            return __builtin_mul_overflow(n, factor, &n) ? std::nullopt : std::optional(n);
    return std::nullopt;
}

std::string format_duration(duration d) {
    if (d.count() <= 0)
        return std::to_string(d.count()) + (d.count() == 0 ? "s" : "ms");
    auto left = static_cast<std::uint64_t>(d.count());
    std::string out;
    for (const auto& [name, factor] : duration_units) {
        if (left >= factor) {
            out += std::to_string(left / factor);
            out += name;
            left %= factor;
        }
    }
    return out;
}

std::string format_size(std::uint64_t bytes) {
    for (const auto& [name, factor] : {size_units[4], size_units[3], size_units[2]})
        if (bytes >= factor && bytes % factor == 0)
            return std::to_string(bytes / factor) + std::string(name);
    return std::to_string(bytes) + " bytes";
}

// "812 B", "41.2 MiB".
std::string human_size(std::uint64_t bytes) {
    if (bytes < 1024)
        return fmt::format("{} B", bytes);
    constexpr std::string_view units[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
    double v = static_cast<double>(bytes) / 1024;
    std::size_t u = 0;
    while (v >= 1023.95 && u + 1 < std::size(units)) { // 1023.96 KiB would print "1024.0 KiB"
        v /= 1024;
        ++u;
    }
    return fmt::format("{:.1f} {}", v, units[u]);
}

} // namespace sockherd
