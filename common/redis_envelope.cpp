// The Redis pub/sub envelope: see common/redis_envelope.hpp.

#include "common/redis_envelope.hpp"

#include <sys/random.h>

#include <cerrno>
#include <cstring>
#include <random>

namespace sockherd {
namespace {

constexpr std::uint8_t kind_mask = 0x03;

} // namespace

void encode(const redis_envelope& e, std::string& out) {
    out.reserve(out.size() + envelope_header_size + e.payload.size());
    out.append(envelope_magic);
    out += static_cast<char>(envelope_version);
    out.append(reinterpret_cast<const char*>(e.origin.data()), e.origin.size());
    for (int shift = 56; shift >= 0; shift -= 8)
        out += static_cast<char>((e.seq >> shift) & 0xff);
    out += static_cast<char>(static_cast<std::uint8_t>(e.kind) & kind_mask);
    out.append(e.payload);
}

envelope_status decode(std::string_view bytes, redis_envelope& out) {
    if (bytes.size() < envelope_header_size)
        return bytes.substr(0, envelope_magic.size()) == envelope_magic.substr(0, bytes.size())
                   ? envelope_status::too_short
                   : envelope_status::bad_magic;
    if (bytes.substr(0, envelope_magic.size()) != envelope_magic)
        return envelope_status::bad_magic;
    const auto* p = reinterpret_cast<const unsigned char*>(bytes.data()) + envelope_magic.size();
    if (*p++ != envelope_version)
        return envelope_status::unsupported_version;
    std::memcpy(out.origin.data(), p, out.origin.size());
    p += out.origin.size();
    out.seq = 0;
    for (int i = 0; i < 8; ++i)
        out.seq = (out.seq << 8) | *p++;
    const std::uint8_t flags = *p;
    const std::uint8_t kind = flags & kind_mask;
    if ((flags & ~kind_mask) != 0 || kind > static_cast<std::uint8_t>(payload_kind::json))
        return envelope_status::bad_flags;
    out.kind = static_cast<payload_kind>(kind);
    out.payload = bytes.substr(envelope_header_size);
    if (out.kind != payload_kind::binary && !valid_utf8(out.payload))
        return envelope_status::invalid_utf8;
    return envelope_status::ok;
}

std::string_view to_string(envelope_status s) {
    switch (s) {
    case envelope_status::ok: return "ok";
    case envelope_status::too_short: return "shorter than an envelope header";
    case envelope_status::bad_magic: return "not a sockherd envelope";
    case envelope_status::unsupported_version: return "unsupported envelope version";
    case envelope_status::bad_flags: return "unknown payload kind or flags";
    case envelope_status::invalid_utf8: return "text payload is not valid UTF-8";
    }
    return "?";
}

node_id random_node_id() {
    node_id id{};
    std::size_t got = 0;
    while (got < id.size()) {
        const ssize_t n = ::getrandom(id.data() + got, id.size() - got, 0);
        if (n > 0)
            got += static_cast<std::size_t>(n);
        else if (n < 0 && errno != EINTR)
            break;
    }
    if (got < id.size()) { // no getrandom (an old kernel, a seccomp filter): the library's source
        std::random_device rd;
        for (auto& b : id)
            b = static_cast<std::uint8_t>(rd());
    }
    return id;
}

std::string to_hex(const node_id& id) {
    static constexpr char digits[] = "0123456789abcdef";
    std::string out;
    out.reserve(id.size() * 2);
    for (auto b : id) {
        out += digits[b >> 4];
        out += digits[b & 0x0f];
    }
    return out;
}

bool valid_utf8(std::string_view text) {
    const auto* p = reinterpret_cast<const unsigned char*>(text.data());
    const std::size_t n = text.size();
    std::size_t i = 0;
    while (i < n) {
        // ASCII runs, eight bytes at a time.
        if (i + 8 <= n) {
            std::uint64_t word;
            std::memcpy(&word, p + i, sizeof word);
            if ((word & 0x8080808080808080ull) == 0) {
                i += 8;
                continue;
            }
        }
        const unsigned char c = p[i];
        if (c < 0x80) {
            ++i;
            continue;
        }
        std::size_t len = 0;
        std::uint32_t cp = 0;
        std::uint32_t min = 0;
        if ((c & 0xe0) == 0xc0) {
            len = 2, cp = c & 0x1fu, min = 0x80;
        } else if ((c & 0xf0) == 0xe0) {
            len = 3, cp = c & 0x0fu, min = 0x800;
        } else if ((c & 0xf8) == 0xf0) {
            len = 4, cp = c & 0x07u, min = 0x10000;
        } else {
            return false; // a continuation byte first, or 0xf8..0xff
        }
        if (n - i < len)
            return false;
        for (std::size_t k = 1; k < len; ++k) {
            if ((p[i + k] & 0xc0) != 0x80)
                return false;
            cp = (cp << 6) | (p[i + k] & 0x3fu);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += len;
    }
    return true;
}

} // namespace sockherd
