#pragma once
// Percent-decoding (RFC 3986 %XX), for request paths and the credentials of a Redis URL.

#include <optional>
#include <string>
#include <string_view>

namespace sockherd {

// Decodes every %XX once. nullopt for a broken escape ("%4", "%zz") or a decoded NUL, which no
// path or credential may hold.
std::optional<std::string> percent_decode(std::string_view text);

} // namespace sockherd
