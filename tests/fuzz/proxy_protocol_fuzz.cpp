// libFuzzer target: the PROXY header parser must never crash or over-read, and its answers must
// be consistent: the same header however the bytes are split, `done` exactly when the header's
// last byte arrives, `invalid` for good once decided, and headers only as the contract allows.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string_view>

#include "common/proxy_protocol.hpp"

using namespace sockherd::proxy_protocol;

namespace {

// The first bytes of every input, up to this many, are also fed in one at a time.
constexpr std::size_t incremental_limit = 256;

bool same(const result& a, const result& b) {
    return a.st == b.st && a.error == b.error && a.h.version == b.h.version && a.h.cmd == b.h.cmd &&
           a.h.length == b.h.length && a.h.source == b.h.source && a.h.destination == b.h.destination;
}

void check(std::string_view in, std::size_t max_v2, const result& r) {
    const bool printable = std::all_of(r.error.begin(), r.error.end(), [](char c) { return c >= ' ' && c < 0x7f; });
    if (!printable || r.error.empty() != (r.st != status::invalid))
        std::abort(); // an error exactly when invalid, and one that is safe to log
    switch (r.st) {
    case status::done: {
        const auto& h = r.h;
        if (h.length == 0 || h.length > in.size())
            std::abort();
        if (h.source.has_value() != h.destination.has_value())
            std::abort();
        if (h.cmd == command::local && (h.source || h.destination))
            std::abort();
        if (h.version == 1 && (h.cmd != command::proxy || h.length > v1_max_length || in.substr(0, 6) != "PROXY " ||
                               in.substr(h.length - 2, 2) != "\r\n"))
            std::abort();
        if (h.version == 2 && (h.length < v2_fixed_length || h.length > v2_fixed_length + max_v2))
            std::abort();
        if (h.version != 1 && h.version != 2)
            std::abort();
        if (h.source && h.source->address().is_v4() != h.destination->address().is_v4())
            std::abort(); // one family for both ends
        // The header alone parses to the same result: the bytes after it do not matter.
        if (!same(parse(in.substr(0, h.length), max_v2), r))
            std::abort();
        break;
    }
    case status::need_more:
        // Never waiting past the longest header possible.
        if (in.size() >= std::max(v1_max_length, v2_fixed_length + max_v2))
            std::abort();
        if (r.h.length != 0 || r.h.source || r.h.destination)
            std::abort();
        break;
    case status::invalid:
        break;
    }
}

void run(std::string_view in, std::size_t max_v2) {
    const auto whole = parse(in, max_v2);
    check(in, max_v2, whole);
    // Byte by byte, as a slow peer would send it: need_more, then at most one change of state,
    // to done (at exactly the header's length) or invalid, and after that the same answer.
    // Past the point where it settled, a few more bytes are checked one by one, then the whole.
    constexpr std::size_t checked_after_settling = 32;
    std::optional<result> settled;
    std::size_t settled_at = 0;
    const std::size_t last = std::min(in.size(), incremental_limit);
    for (std::size_t k = 0; k <= last; ++k) {
        if (settled && k > settled_at + checked_after_settling)
            break;
        const auto part = in.substr(0, k);
        auto r = parse(part, max_v2);
        check(part, max_v2, r);
        if (settled) {
            if (!same(r, *settled))
                std::abort();
        } else if (r.st != status::need_more) {
            if (r.st == status::done && r.h.length != k)
                std::abort(); // done only once the last byte of the header is there
            settled = std::move(r);
            settled_at = k;
        }
    }
    if (settled ? !same(*settled, whole) : (last == in.size() && whole.st != status::need_more))
        std::abort();
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view in(reinterpret_cast<const char*>(data), size);
    run(in, default_max_v2_length);
    // A small cap too, so that the cap's edge is reached with short inputs.
    run(in, 40);
    return 0;
}
