#pragma once
// RFC 6455 on the server side, without sockets: an incremental parser of client frames (payload
// unmasked in place), the encoder of server frames, an incremental UTF-8 validator, and the queue
// of frames one connection sends. Nothing here allocates but the queue's own vector. Each
// WebSocket session of a worker owns one parser and one queue.

#include <sys/uio.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

namespace sockherd::ws {

enum class opcode : std::uint8_t {
    continuation = 0x0,
    text = 0x1,
    binary = 0x2,
    close = 0x8,
    ping = 0x9,
    pong = 0xA,
};

constexpr bool is_control(opcode op) { return (static_cast<std::uint8_t>(op) & 0x8) != 0; }

// Close codes (RFC 6455 section 7.4.1) the server sends or reads.
namespace close_code {
inline constexpr std::uint16_t normal = 1000;
inline constexpr std::uint16_t going_away = 1001;
inline constexpr std::uint16_t protocol_error = 1002;
inline constexpr std::uint16_t none = 1005; // no code in the close frame (never sent)
inline constexpr std::uint16_t invalid_payload = 1007;
inline constexpr std::uint16_t policy_violation = 1008;
inline constexpr std::uint16_t too_big = 1009;
} // namespace close_code

// True for a code a close frame may carry: 1000-1003, 1007-1014 and 3000-4999.
bool valid_close_code(std::uint16_t code);

// UTF-8 checked as it arrives, a piece at a time: rejects overlong forms, surrogates and code
// points past U+10FFFF as soon as the byte that makes them so is seen.
class utf8_validator {
public:
    // False once the bytes so far cannot start valid UTF-8 (and from then on, until reset()).
    bool feed(const std::uint8_t* p, std::size_t n);
    // True when the bytes so far are valid UTF-8 ending on a whole code point.
    bool complete() const { return need_ == 0 && !bad_; }
    void reset() { *this = utf8_validator(); }

private:
    std::uint8_t need_ = 0;  // continuation bytes still to come
    std::uint8_t lo_ = 0x80; // the range of the next continuation byte
    std::uint8_t hi_ = 0xBF;
    bool bad_ = false;
};

bool is_utf8(std::string_view s);

inline constexpr std::size_t max_header_size = 10; // a server frame's header: never masked
inline constexpr std::size_t max_control_payload = 125;
inline constexpr std::size_t max_close_frame = 2 + max_control_payload;

// Writes the header of a server frame (FIN set unless `fin` is false, not masked; a 7, 16 or
// 64-bit length, the shortest that fits) into `out`, which has max_header_size bytes; returns its
// size: 2, 4 or 10.
std::size_t encode_header(std::uint8_t* out, opcode op, std::uint64_t length, bool fin = true);

// Writes a whole close frame with `code` and `reason` (cut to 123 bytes, never inside a
// character) into `out`, which has max_close_frame bytes; returns its size.
std::size_t encode_close(std::uint8_t* out, std::uint16_t code, std::string_view reason);

// Reads client frames as they arrive, in pieces of any size, and says what they mean one event at a
// time. Checks every rule a server must (masking, reserved bits and opcodes, control frames,
// fragmentation, lengths, max_message_size, UTF-8 of text and close reasons, close codes); on the
// first broken one it reports the close code to answer with and reads nothing more. After a close
// frame the rest of the input is ignored.
class frame_parser {
public:
    enum class event_kind : std::uint8_t {
        need_more,   // every byte given was consumed; feed more
        header,      // a frame header: op (continuation stays continuation), fin, length
        payload,     // payload bytes of the current frame, unmasked in place: data, size; op is the
                     // message's opcode (text, binary) or the control frame's
        message_end, // the last frame of a data message ended; op: text or binary
        control,     // a control frame ended (its payload came as payload events); op; for a close,
                     // code is the client's code (close_code::none when it sent none)
        error,       // code: the close code to send; reason: what was wrong (for a log line)
    };

    struct event {
        event_kind kind = event_kind::need_more;
        opcode op = opcode::continuation;
        bool fin = false;
        std::uint16_t code = 0;
        std::uint64_t length = 0;
        std::uint8_t* data = nullptr;
        std::size_t size = 0;
        const char* reason = "";
    };

    // `max_message_size`: the largest data message, summed over its fragments (0: no limit).
    explicit frame_parser(std::uint64_t max_message_size = 0) : max_message_(max_message_size) {}

    // The next event from `in` (n bytes, which payload events point into and which are unmasked in
    // place); `used` says how many bytes it consumed. Call again with the rest until need_more.
    event next(std::uint8_t* in, std::size_t n, std::size_t& used);

    bool failed() const { return state_ == state::failed; }
    bool closed() const { return state_ == state::closed; } // a close frame was read
    bool in_message() const { return in_message_; }          // a data message has begun, not ended

private:
    enum class state : std::uint8_t { header, payload, frame_end, closed, failed };

    event fail(std::uint16_t code, const char* reason);
    event on_header();
    event on_payload(std::uint8_t* in, std::size_t n, std::size_t& used);
    event on_frame_end();

    std::uint64_t max_message_;
    std::uint64_t message_size_ = 0; // data bytes of the current message, the current frame's included
    std::uint64_t remaining_ = 0;    // payload bytes of the current frame still to come
    std::array<std::uint8_t, 14> head_{};
    std::array<std::uint8_t, 4> mask_{};
    std::uint8_t head_size_ = 0;  // header bytes read so far
    std::uint8_t mask_pos_ = 0;   // where in the mask the next payload byte is
    std::uint8_t close_read_ = 0; // payload bytes of a close frame read so far (2 suffice)
    state state_ = state::header;
    opcode frame_op_ = opcode::continuation;
    opcode message_op_ = opcode::continuation;
    bool fin_ = false;
    bool in_message_ = false;
    std::uint16_t close_code_ = 0;
    std::uint16_t error_code_ = 0;
    const char* error_reason_ = "";
    utf8_validator text_utf8_;  // the current text message
    utf8_validator close_utf8_; // the current close frame's reason
};

// One frame to send: a header kept here (small frames need nothing else allocated) followed by
// `size` bytes at `data`, which `owner` keeps alive and may share with other queues (a broadcast).
// With head_size 0, `data` holds the whole frame.
struct out_frame {
    std::shared_ptr<const void> owner;
    const std::uint8_t* data = nullptr;
    std::size_t size = 0;
    std::size_t payload = 0; // what the counters and send_queue_limit count
    std::array<std::uint8_t, max_header_size> head{};
    std::uint8_t head_size = 0;
    bool message = true; // a data message (counted as one out), not a control frame nor handshake bytes

    std::size_t wire_size() const { return head_size + size; }
};

// The frames waiting to go out on one connection, oldest first. The front one may be partly
// written; the others have not started, so dropping them never cuts a frame.
class send_queue {
public:
    bool empty() const { return head_ == frames_.size(); }
    std::size_t size() const { return frames_.size() - head_; }
    std::size_t payload_bytes() const { return payload_; }
    bool front_started() const { return offset_ > 0; }
    const out_frame& front() const { return frames_[head_]; } // not when empty()

    void push(out_frame f);
    // Inserts `f` `index` frames behind the front, but never before a started frame.
    void insert(std::size_t index, out_frame f);
    // Fills up to `max` iovecs with the bytes not written yet, front first; returns how many.
    std::size_t gather(iovec* iov, std::size_t max) const;
    // `n` gathered bytes went out: frames now complete leave the queue, each passed to `done`.
    template <class Done>
    void consume(std::size_t n, Done&& done);
    // Drops every frame not started; returns how many.
    std::size_t drop_unstarted();
    // Frees the storage of an empty queue (an idle connection keeps none of a burst's memory).
    void trim();

private:
    std::vector<out_frame> frames_;
    std::size_t head_ = 0;   // index of the front frame in frames_
    std::size_t offset_ = 0; // bytes of the front frame already written
    std::size_t payload_ = 0;
};

template <class Done>
void send_queue::consume(std::size_t n, Done&& done) {
    while (n > 0 && !empty()) {
        auto& f = frames_[head_];
        const std::size_t left = f.wire_size() - offset_;
        if (n < left) {
            offset_ += n;
            return;
        }
        n -= left;
        offset_ = 0;
        payload_ -= f.payload;
        const out_frame finished = std::move(f);
        ++head_;
        done(finished);
    }
    if (empty()) {
        frames_.clear();
        head_ = 0;
        if (frames_.capacity() > 64)
            trim(); // a burst is over: give its storage back
    } else if (head_ > 32 && head_ * 2 > frames_.size()) {
        frames_.erase(frames_.begin(), frames_.begin() + static_cast<std::ptrdiff_t>(head_));
        head_ = 0;
    }
}

} // namespace sockherd::ws
