#include "common/ws_frame.hpp"

#include <algorithm>
#include <cstring>

namespace sockherd::ws {
namespace {

// XORs `n` bytes at `p` with the masking key, starting `pos` bytes into it; advances `pos`.
void unmask(std::uint8_t* p, std::size_t n, const std::array<std::uint8_t, 4>& key, std::uint8_t& pos) {
    std::uint8_t k[8];
    for (std::size_t j = 0; j < 8; ++j)
        k[j] = key[(pos + j) & 3];
    std::uint64_t k64;
    std::memcpy(&k64, k, 8);
    std::size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        std::uint64_t v;
        std::memcpy(&v, p + i, 8);
        v ^= k64;
        std::memcpy(p + i, &v, 8);
    }
    for (; i < n; ++i)
        p[i] ^= k[i & 7];
    pos = static_cast<std::uint8_t>((pos + n) & 3);
}

bool known_opcode(std::uint8_t op) {
    switch (op) {
    case 0x0:
    case 0x1:
    case 0x2:
    case 0x8:
    case 0x9:
    case 0xA: return true;
    default: return false;
    }
}

} // namespace

bool valid_close_code(std::uint16_t code) {
    if (code >= 3000 && code <= 4999)
        return true; // registered (3000-3999) and private (4000-4999)
    if (code < 1000 || code > 1014)
        return false; // below 1000 unused; 1015 is TLS failure; 1016-2999 unassigned; 5000+ no code
    return code != 1004 && code != 1005 && code != 1006; // reserved, never on the wire
}

bool utf8_validator::feed(const std::uint8_t* p, std::size_t n) {
    if (bad_)
        return false;
    std::size_t i = 0;
    while (i < n) {
        if (need_ == 0) {
            while (i + 8 <= n) { // ASCII, eight bytes at a time
                std::uint64_t v;
                std::memcpy(&v, p + i, 8);
                if (v & 0x8080808080808080ULL)
                    break;
                i += 8;
            }
            if (i == n)
                break;
            const std::uint8_t b = p[i++];
            if (b < 0x80)
                continue;
            if (b < 0xC2) { // a continuation byte, or C0/C1 (always overlong)
                bad_ = true;
            } else if (b < 0xE0) {
                need_ = 1;
            } else if (b < 0xF0) {
                need_ = 2;
                lo_ = b == 0xE0 ? 0xA0 : 0x80; // E0 80..9F: overlong
                hi_ = b == 0xED ? 0x9F : 0xBF; // ED A0..BF: surrogates
            } else if (b < 0xF5) {
                need_ = 3;
                lo_ = b == 0xF0 ? 0x90 : 0x80; // F0 80..8F: overlong
                hi_ = b == 0xF4 ? 0x8F : 0xBF; // F4 90..: past U+10FFFF
            } else {
                bad_ = true; // F5..FF: past U+10FFFF
            }
        } else {
            const std::uint8_t b = p[i++];
            if (b < lo_ || b > hi_) {
                bad_ = true;
            } else {
                lo_ = 0x80;
                hi_ = 0xBF;
                --need_;
            }
        }
        if (bad_)
            return false;
    }
    return true;
}

bool is_utf8(std::string_view s) {
    utf8_validator v;
    return v.feed(reinterpret_cast<const std::uint8_t*>(s.data()), s.size()) && v.complete();
}

std::size_t encode_header(std::uint8_t* out, opcode op, std::uint64_t length, bool fin) {
    out[0] = static_cast<std::uint8_t>((fin ? 0x80 : 0) | static_cast<std::uint8_t>(op));
    if (length < 126) {
        out[1] = static_cast<std::uint8_t>(length);
        return 2;
    }
    if (length <= 0xFFFF) {
        out[1] = 126;
        out[2] = static_cast<std::uint8_t>(length >> 8);
        out[3] = static_cast<std::uint8_t>(length);
        return 4;
    }
    out[1] = 127;
    for (int i = 0; i < 8; ++i)
        out[2 + i] = static_cast<std::uint8_t>(length >> (56 - 8 * i));
    return 10;
}

std::size_t encode_close(std::uint8_t* out, std::uint16_t code, std::string_view reason) {
    std::size_t n = std::min(reason.size(), max_control_payload - 2);
    while (n < reason.size() && n > 0 && (static_cast<std::uint8_t>(reason[n]) & 0xC0) == 0x80)
        --n; // never cut a character in two
    const std::size_t head = encode_header(out, opcode::close, 2 + n);
    out[head] = static_cast<std::uint8_t>(code >> 8);
    out[head + 1] = static_cast<std::uint8_t>(code);
    if (n > 0) // an empty reason may have no storage at all (memcpy from null is undefined)
        std::memcpy(out + head + 2, reason.data(), n);
    return head + 2 + n;
}

// ---- frame_parser -------------------------------------------------------------------------------

frame_parser::event frame_parser::fail(std::uint16_t code, const char* reason) {
    state_ = state::failed;
    error_code_ = code;
    error_reason_ = reason;
    event e;
    e.kind = event_kind::error;
    e.code = code;
    e.reason = reason;
    return e;
}

frame_parser::event frame_parser::next(std::uint8_t* in, std::size_t n, std::size_t& used) {
    used = 0;
    switch (state_) {
    case state::failed: return fail(error_code_, error_reason_);
    case state::closed: used = n; return {};
    case state::payload: return n == 0 ? event{} : on_payload(in, n, used);
    case state::frame_end:
        if (is_control(frame_op_) || fin_)
            return on_frame_end();
        state_ = state::header; // a fragment ended: the next frame continues the message
        break;
    case state::header: break;
    }
    while (used < n) {
        head_[head_size_++] = in[used++];
        if (head_size_ == 2) {
            const std::uint8_t b0 = head_[0];
            const std::uint8_t b1 = head_[1];
            const auto op = static_cast<std::uint8_t>(b0 & 0x0F);
            const std::uint8_t len7 = b1 & 0x7F;
            if (!known_opcode(op))
                return fail(close_code::protocol_error, "reserved opcode");
            if (b0 & 0x70)
                return fail(close_code::protocol_error, "reserved bits set; no extension was negotiated");
            if (!(b1 & 0x80))
                return fail(close_code::protocol_error, "unmasked frame from the client");
            frame_op_ = static_cast<opcode>(op);
            fin_ = (b0 & 0x80) != 0;
            if (is_control(frame_op_)) {
                if (!fin_)
                    return fail(close_code::protocol_error, "fragmented control frame");
                if (len7 > max_control_payload)
                    return fail(close_code::protocol_error, "control frame over 125 bytes");
                if (frame_op_ == opcode::close && len7 == 1)
                    return fail(close_code::protocol_error, "close frame with a 1-byte payload");
            } else if (frame_op_ == opcode::continuation) {
                if (!in_message_)
                    return fail(close_code::protocol_error, "continuation frame without a message to continue");
            } else if (in_message_) {
                return fail(close_code::protocol_error, "new data frame inside a fragmented message");
            }
        }
        if (head_size_ >= 2) {
            const std::uint8_t len7 = head_[1] & 0x7F;
            const std::size_t size = 2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0) + 4;
            if (head_size_ == size)
                return on_header();
        }
    }
    return {};
}

frame_parser::event frame_parser::on_header() {
    const std::uint8_t len7 = head_[1] & 0x7F;
    std::uint64_t length = len7;
    std::size_t pos = 2;
    if (len7 == 126) {
        length = (std::uint64_t{head_[2]} << 8) | head_[3];
        pos = 4;
        if (length < 126)
            return fail(close_code::protocol_error, "16-bit length for a frame under 126 bytes");
    } else if (len7 == 127) {
        length = 0;
        for (std::size_t i = 0; i < 8; ++i)
            length = (length << 8) | head_[2 + i];
        pos = 10;
        if (length >> 63)
            return fail(close_code::protocol_error, "64-bit length with the top bit set");
        if (length <= 0xFFFF)
            return fail(close_code::protocol_error, "64-bit length for a frame under 64 KiB");
    }
    std::memcpy(mask_.data(), head_.data() + pos, 4);
    head_size_ = 0;
    mask_pos_ = 0;

    if (is_control(frame_op_)) {
        close_read_ = 0;
        close_code_ = 0;
        close_utf8_.reset();
    } else {
        if (frame_op_ != opcode::continuation) {
            message_op_ = frame_op_;
            message_size_ = 0;
            text_utf8_.reset();
            in_message_ = true;
        }
        // Decided from the header alone: nothing of an oversized message is read.
        if (max_message_ != 0 ? length > max_message_ - message_size_ : length > ~message_size_)
            return fail(close_code::too_big, "message over max_message_size");
        message_size_ += length;
    }
    remaining_ = length;
    state_ = length > 0 ? state::payload : state::frame_end;
    event e;
    e.kind = event_kind::header;
    e.op = frame_op_;
    e.fin = fin_;
    e.length = length;
    return e;
}

frame_parser::event frame_parser::on_payload(std::uint8_t* in, std::size_t n, std::size_t& used) {
    const std::size_t take = static_cast<std::size_t>(std::min<std::uint64_t>(n, remaining_));
    unmask(in, take, mask_, mask_pos_);
    used = take;
    if (!is_control(frame_op_)) {
        if (message_op_ == opcode::text && !text_utf8_.feed(in, take))
            return fail(close_code::invalid_payload, "text that is not UTF-8");
    } else if (frame_op_ == opcode::close) {
        std::size_t i = 0;
        for (; i < take && close_read_ < 2; ++i, ++close_read_)
            close_code_ = static_cast<std::uint16_t>((close_code_ << 8) | in[i]);
        if (close_read_ == 2 && i > 0 && !valid_close_code(close_code_))
            return fail(close_code::protocol_error, "close frame with an invalid code");
        if (!close_utf8_.feed(in + i, take - i))
            return fail(close_code::invalid_payload, "close reason that is not UTF-8");
    }
    remaining_ -= take;
    if (remaining_ == 0)
        state_ = state::frame_end;
    event e;
    e.kind = event_kind::payload;
    e.op = is_control(frame_op_) ? frame_op_ : message_op_;
    e.data = in;
    e.size = take;
    return e;
}

frame_parser::event frame_parser::on_frame_end() {
    event e;
    e.op = frame_op_;
    state_ = state::header;
    if (!is_control(frame_op_)) { // the last frame of a message
        if (message_op_ == opcode::text && !text_utf8_.complete())
            return fail(close_code::invalid_payload, "text that is not UTF-8 (it ends inside a character)");
        in_message_ = false;
        e.kind = event_kind::message_end;
        e.op = message_op_;
        return e;
    }
    e.kind = event_kind::control;
    if (frame_op_ == opcode::close) {
        if (!close_utf8_.complete())
            return fail(close_code::invalid_payload, "close reason that is not UTF-8");
        e.code = close_read_ == 0 ? close_code::none : close_code_;
        state_ = state::closed;
    }
    return e;
}

// ---- send_queue ---------------------------------------------------------------------------------

void send_queue::push(out_frame f) {
    payload_ += f.payload;
    frames_.push_back(std::move(f));
}

void send_queue::insert(std::size_t index, out_frame f) {
    if (index == 0 && offset_ > 0)
        index = 1;
    payload_ += f.payload;
    const std::size_t at = std::min(head_ + index, frames_.size());
    frames_.insert(frames_.begin() + static_cast<std::ptrdiff_t>(at), std::move(f));
}

std::size_t send_queue::gather(iovec* iov, std::size_t max) const {
    std::size_t k = 0;
    for (std::size_t i = head_; i < frames_.size() && k < max; ++i) {
        const auto& f = frames_[i];
        std::size_t skip = i == head_ ? offset_ : 0;
        if (skip < f.head_size) {
            iov[k++] = {const_cast<std::uint8_t*>(f.head.data() + skip), f.head_size - skip};
            skip = 0;
        } else {
            skip -= f.head_size;
        }
        if (f.size > skip && k < max)
            iov[k++] = {const_cast<std::uint8_t*>(f.data + skip), f.size - skip};
    }
    return k;
}

std::size_t send_queue::drop_unstarted() {
    const std::size_t keep = offset_ > 0 ? 1 : 0;
    const std::size_t first = std::min(head_ + keep, frames_.size());
    for (std::size_t i = first; i < frames_.size(); ++i)
        payload_ -= frames_[i].payload;
    const std::size_t dropped = frames_.size() - first;
    frames_.erase(frames_.begin() + static_cast<std::ptrdiff_t>(first), frames_.end());
    if (empty()) {
        frames_.clear();
        head_ = 0;
    }
    return dropped;
}

void send_queue::trim() {
    if (empty() && frames_.capacity() > 0) {
        std::vector<out_frame>().swap(frames_);
        head_ = 0;
    }
}

} // namespace sockherd::ws
