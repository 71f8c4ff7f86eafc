#pragma once
// Durations and sizes as people write them in the config ("250ms", "1m30s", "16KiB"): parsing
// and printing. parse_duration and parse_size are also declared in common/config.hpp.

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace sockherd {

using duration = std::chrono::milliseconds;

// "250ms", "30s", "1m30s", "2h" -> milliseconds: <integer><unit> pairs with units h, m, s, ms,
// largest unit first, each at most once, no spaces, signs or fractions. nullopt for anything else,
// including totals that do not fit.
std::optional<duration> parse_duration(std::string_view text);

// "512", "512B", "16KiB", "1MiB", "2GiB" (powers of 1024), "10kB"/"10KB", "1MB", "1GB" (powers of
// 1000) -> bytes. nullopt for anything else, including totals that do not fit in 64 bits.
std::optional<std::uint64_t> parse_size(std::string_view text);

// The inverse of parse_duration: "0s", "250ms", "1m30s", "2h".
std::string format_duration(duration d);

// "16KiB", "1MiB", "2GiB" when the size is a whole number of those, else "1500 bytes".
std::string format_size(std::uint64_t bytes);

// For people, rounded to one decimal: "812 B", "41.2 MiB", "1.5 GiB".
std::string human_size(std::uint64_t bytes);

} // namespace sockherd
