#pragma once
// Files compiled into the binary from etc/ (the demo page under www/ and default.toml).

#include <optional>
#include <span>
#include <string_view>

namespace sockherd::assets {

struct embedded_file {
    std::string_view path; // relative to etc/, e.g. "www/index.html"
    std::string_view data;
};

// Every embedded file; generated at build time by common/embed_generate.cmake.
std::span<const embedded_file> files();

// The embedded file at `path` (relative to etc/), if there is one.
inline std::optional<std::string_view> find(std::string_view path) {
    for (const auto& f : files())
        if (f.path == path)
            return f.data;
    return std::nullopt;
}

} // namespace sockherd::assets
