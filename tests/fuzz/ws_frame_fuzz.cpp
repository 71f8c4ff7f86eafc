// libFuzzer target: the WebSocket frame parser must never crash or over-read, and must say the same
// thing however the bytes are split: the input, fed at once, one byte at a time and in pieces whose
// sizes the input's first byte picks, gives one transcript. What it reports must keep the rules it
// enforces: payload adds up to the header's length, messages stay within max_message_size, text
// and close reasons are UTF-8, close codes are valid, control payloads are at most 125 bytes, and
// nothing follows an error or a close.

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "common/ws_frame.hpp"

using namespace sockherd::ws;

namespace {

using kind = frame_parser::event_kind;

constexpr std::uint64_t max_message = 4096;

struct checker {
    std::string transcript;
    std::string message;
    std::string control;
    std::uint64_t frame_left = 0; // payload still owed by the current frame
    opcode frame_op = opcode::continuation;
    bool done = false;            // error or close seen
    bool failed = false;          // error seen

    void on(const frame_parser::event& e) {
        if (done)
            std::abort(); // nothing after an error or a close
        switch (e.kind) {
        case kind::need_more: break;
        case kind::header:
            if (frame_left != 0)
                std::abort();
            if (is_control(e.op) && (e.length > max_control_payload || !e.fin))
                std::abort();
            frame_left = e.length;
            frame_op = e.op;
            transcript += "H" + std::to_string(static_cast<int>(e.op)) + (e.fin ? "f" : "m") + std::to_string(e.length);
            break;
        case kind::payload:
            if (e.size == 0 || e.size > frame_left || e.data == nullptr)
                std::abort();
            frame_left -= e.size;
            (is_control(e.op) ? control : message).append(reinterpret_cast<const char*>(e.data), e.size);
            if (message.size() > max_message)
                std::abort();
            break;
        case kind::message_end:
            if (frame_left != 0 || is_control(e.op))
                std::abort();
            if (e.op == opcode::text && !is_utf8(message))
                std::abort();
            transcript += "M" + std::to_string(static_cast<int>(e.op)) + message;
            message.clear();
            break;
        case kind::control:
            if (frame_left != 0 || !is_control(e.op) || control.size() > max_control_payload)
                std::abort();
            if (e.op == opcode::close) {
                if (control.size() == 1)
                    std::abort();
                if (control.empty() ? e.code != close_code::none : !valid_close_code(e.code))
                    std::abort();
                if (control.size() >= 2 && !is_utf8(std::string_view(control).substr(2)))
                    std::abort();
                done = true;
            }
            transcript += "C" + std::to_string(static_cast<int>(e.op)) + control + std::to_string(e.code);
            control.clear();
            break;
        case kind::error:
            if (e.code != close_code::protocol_error && e.code != close_code::invalid_payload &&
                e.code != close_code::too_big)
                std::abort();
            transcript += "E" + std::to_string(e.code);
            done = true;
            failed = true;
            break;
        }
    }
};

// Feeds `in` in pieces of the sizes `piece` gives; returns the transcript.
template <class Piece>
std::string run(const std::uint8_t* data, std::size_t size, Piece piece) {
    std::vector<std::uint8_t> buf(data, data + size);
    frame_parser p(max_message);
    checker c;
    std::size_t pos = 0;
    while (pos < buf.size() && !c.done) {
        const std::size_t n = std::min(piece(), buf.size() - pos);
        std::uint8_t* in = buf.data() + pos;
        std::size_t left = n;
        for (int guard = 0;; ++guard) {
            if (guard > 1000000)
                std::abort(); // no progress
            std::size_t used = 0;
            const auto e = p.next(in, left, used);
            if (used > left)
                std::abort();
            in += used;
            left -= used;
            if (e.kind == kind::need_more) {
                if (left != 0)
                    std::abort();
                break;
            }
            c.on(e);
            if (c.done)
                break;
        }
        pos += n;
    }
    // The parser's own view agrees with what it reported.
    if (p.failed() != c.failed || (p.closed() && c.failed))
        std::abort();
    return c.transcript;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size == 0)
        return 0;
    const std::uint8_t seed = data[0];
    const std::uint8_t* body = data + 1;
    const std::size_t n = size - 1;
    const auto whole = run(body, n, [&] { return n; });
    const auto bytes = run(body, n, [] { return std::size_t{1}; });
    if (whole != bytes)
        std::abort();
    std::uint32_t state = seed * 2654435761u + 1;
    const auto pieces = run(body, n, [&] {
        state = state * 1103515245u + 12345u;
        return std::size_t{(state >> 16) % 23 + 1};
    });
    if (whole != pieces)
        std::abort();

    // The encoder's header for any length parses back (masked) to that length.
    std::uint64_t length = 0;
    for (std::size_t i = 0; i < std::min<std::size_t>(n, 8); ++i)
        length = (length << 8) | body[i];
    length &= 0x7fffffffffffffffULL;
    std::uint8_t frame[max_header_size + 4] = {};
    const std::size_t hn = encode_header(frame, opcode::binary, length);
    frame[1] |= 0x80;
    frame_parser p;
    std::size_t used = 0;
    const auto e = p.next(frame, hn + 4, used);
    if (e.kind != kind::header || e.length != length || used != hn + 4)
        std::abort();
    return 0;
}
