#pragma once
// The payload of echo message `seq`, shared by the scenarios that check their echoes: its
// sequence number, then a pattern that depends on it, so a reordered, truncated or corrupted echo
// does not compare equal.

#include <cstddef>
#include <cstdint>
#include <string>

namespace sockherd::bench {

inline void fill_payload(std::uint64_t seq, std::size_t size, std::string& out) {
    out.resize(size);
    for (std::size_t i = 0; i < size; ++i)
        out[i] = static_cast<char>((seq >> ((i & 7u) * 8)) + i * 131u);
}

} // namespace sockherd::bench
