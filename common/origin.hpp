#pragma once
// [websocket] allowed_origins: which browser Origins may open a WebSocket (against cross-site
// WebSocket hijacking: a page on another site making the visitor's browser connect with the
// visitor's cookies). Patterns:
//   "https://example.com"      exactly that origin (scheme, host and port; the default port of
//                              the scheme may be written or not)
//   "https://*.example.com"    any subdomain of example.com, at any depth, over https (not
//                              example.com itself: list it too if wanted)
//   "*"                        any origin
// Scheme and host compare case-insensitively. An empty list allows every origin; a handshake
// without an Origin header (not a browser) is always allowed: Origin protects browsers' users,
// and any other client can send whatever Origin it likes.

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace sockherd {

struct origin_pattern {
    std::string scheme;  // "http", "https"
    std::string host;    // lowercase; for a wildcard the part after "*." (the parent domain)
    std::string port;    // "" = the scheme's default
    bool wildcard = false; // "*.host"
    bool any = false;      // "*"
};

// One pattern as written in the config; nullopt when it is not one (the caller says why).
std::optional<origin_pattern> parse_origin_pattern(std::string_view text);

// Whether the Origin header value `origin` matches any pattern. "null" (sandboxed frames, file:
// pages) and malformed values match only "*".
bool origin_allowed(const std::vector<origin_pattern>& patterns, std::string_view origin);

} // namespace sockherd
