#include "worker/json_ops.hpp"

#include <array>
#include <cstdint>
#include <vector>

#include <nlohmann/json.hpp>

namespace sockherd::worker::json_ops {

namespace {

using json = nlohmann::json;

constexpr std::string_view channel_rule = "must be 1-200 bytes of A-Z a-z 0-9 - _ . : @";
constexpr std::size_t max_echo = 64;    // longest client text quoted back in an error message
constexpr std::size_t max_reason = 160; // longest parser diagnostic quoted back

// s cut to at most n bytes on a UTF-8 character boundary, with "..." when cut.
std::string truncated(std::string_view s, std::size_t n) {
    if (s.size() <= n)
        return std::string(s);
    while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80)
        --n;
    std::string out(s.substr(0, n));
    out += "...";
    return out;
}

constexpr std::array<std::string_view, 3> op_names = {"subscribe", "unsubscribe", "publish"}; // by op_kind

std::string_view op_name(op_kind k) { return op_names[static_cast<std::size_t>(k)]; }

// Sets kind to the op named s; false when s names none.
bool op_from_name(std::string_view s, op_kind& kind) {
    for (std::size_t i = 0; i < op_names.size(); ++i) {
        if (op_names[i] == s) {
            kind = static_cast<op_kind>(i);
            return true;
        }
    }
    return false;
}

// The useful part of a nlohmann diagnostic: "[json.exception.parse_error.101] parse error at line
// 1, column 2: syntax error while parsing value - invalid literal; last read: 'x'" becomes
// "syntax error while parsing value - invalid literal" (the last-read token may be the whole frame).
std::string parser_reason(std::string_view what) {
    if (auto p = what.find("] "); p != std::string_view::npos)
        what.remove_prefix(p + 2);
    if (what.starts_with("parse error"))
        if (auto p = what.find(": "); p != std::string_view::npos)
            what.remove_prefix(p + 2);
    if (auto p = what.find("; last read"); p != std::string_view::npos)
        what = what.substr(0, p);
    return truncated(what, max_reason);
}

// The top-level keys of an op object; ignore takes the value of an unknown or repeated key.
enum class slot : std::uint8_t { op, channel, data, encoding, ignore };

struct field {
    bool present = false;
    bool is_string = false;
    std::string text; // the value, when is_string
};

// A nlohmann SAX handler that reads one op frame in a single pass. It keeps the values of the
// top-level keys, builds a DOM only for a non-string "data", and aborts at max_depth, so neither
// the parse nor anything done later with the result can recurse deeper than that.
class op_reader {
public:
    bool null() { return value(json(nullptr)); }
    bool boolean(bool v) { return value(json(v)); }
    bool number_integer(json::number_integer_t v) { return value(json(v)); }
    bool number_unsigned(json::number_unsigned_t v) { return value(json(v)); }
    bool number_float(json::number_float_t v, const json::string_t&) { return value(json(v)); }
    bool binary(json::binary_t&) { return value(json(nullptr)); } // never produced by JSON text

    bool string(json::string_t& v) {
        if (at_top_level()) {
            if (current_ != slot::ignore) {
                field& f = field_of(current_);
                f.is_string = true;
                f.text = std::move(v);
            }
            return true;
        }
        return value(json(std::move(v)));
    }

    bool start_object(std::size_t) { return open(json::value_t::object); }
    bool start_array(std::size_t) { return open(json::value_t::array); }
    bool end_object() { return close(); }
    bool end_array() { return close(); }

    bool key(json::string_t& k) {
        if (at_top_level()) {
            current_ = classify(k);
            if (current_ == slot::ignore) {
                if (!unknown_key_)
                    unknown_key_ = truncated(k, max_echo);
                return true;
            }
            field& f = field_of(current_);
            if (f.present) { // keep the first value, report the repeat
                if (!duplicate_key_)
                    duplicate_key_ = std::move(k);
                current_ = slot::ignore;
            }
            f.present = true;
        } else if (building_) {
            pending_ = &(*dom_.back())[std::move(k)];
        }
        return true;
    }

    bool parse_error(std::size_t position, const std::string&, const json::exception& ex) {
        syntax_error_ = "invalid JSON at byte " + std::to_string(position) + ": " + parser_reason(ex.what());
        return false;
    }

    std::variant<op, op_error> result() &&;

private:
    bool at_top_level() const { return depth_ == 1 && root_is_object_; }

    static slot classify(std::string_view k) {
        if (k == "op")
            return slot::op;
        if (k == "channel")
            return slot::channel;
        if (k == "data")
            return slot::data;
        if (k == "encoding")
            return slot::encoding;
        return slot::ignore;
    }

    // A scalar: a top-level value, part of "data", or ignored (a root that is not an object).
    bool value(json&& v) {
        if (at_top_level()) {
            if (current_ == slot::data)
                data_dom_ = std::move(v);
        } else if (building_)
            add(std::move(v));
        return true;
    }

    bool open(json::value_t type) {
        if (depth_ >= max_depth) {
            too_deep_ = true;
            return false;
        }
        if (depth_ == 0) {
            root_is_object_ = type == json::value_t::object;
        } else if (at_top_level()) {
            if (current_ == slot::data) {
                data_dom_ = json(type);
                dom_.push_back(&data_dom_);
                building_ = true;
            }
        } else if (building_) {
            dom_.push_back(add(json(type)));
        }
        ++depth_;
        return true;
    }

    bool close() {
        --depth_;
        if (building_) {
            dom_.pop_back();
            building_ = !dom_.empty();
        }
        return true;
    }

    // Adds v to the innermost open container of "data"; the result stays valid while that
    // container is open (parents are not modified until their children close).
    json* add(json&& v) {
        json* top = dom_.back();
        if (top->is_array()) {
            top->push_back(std::move(v));
            return &top->back();
        }
        *pending_ = std::move(v);
        return pending_;
    }

    field& field_of(slot s) { return fields_[static_cast<std::size_t>(s)]; }

    std::size_t depth_ = 0;
    bool root_is_object_ = false;
    bool too_deep_ = false;
    std::optional<std::string> syntax_error_;
    slot current_ = slot::ignore;
    std::array<field, 4> fields_; // indexed by slot, ignore excluded
    std::optional<std::string> unknown_key_;
    std::optional<std::string> duplicate_key_;
    json data_dom_;          // "data" when it is not a string
    std::vector<json*> dom_; // open containers of data_dom_, innermost last
    json* pending_ = nullptr; // where the value after an object key goes
    bool building_ = false;
};

std::variant<op, op_error> op_reader::result() && {
    op_error err;
    auto fail = [&err](std::string message) {
        err.message = std::move(message);
        return std::move(err);
    };
    if (too_deep_)
        return fail("JSON nested deeper than " + std::to_string(max_depth) + " levels");
    if (syntax_error_)
        return fail(std::move(*syntax_error_));
    if (!root_is_object_)
        return fail("frame must be a JSON object");

    field& op_f = field_of(slot::op);
    field& channel_f = field_of(slot::channel);
    field& data_f = field_of(slot::data);
    field& encoding_f = field_of(slot::encoding);
    op_kind kind = op_kind::subscribe;
    const bool known_op = op_f.is_string && op_from_name(op_f.text, kind);
    if (known_op)
        err.op = op_name(kind);
    const bool channel_ok = channel_f.is_string && valid_channel_name(channel_f.text);
    if (channel_ok)
        err.channel = channel_f.text;

    if (duplicate_key_)
        return fail("duplicate key '" + *duplicate_key_ + "'");
    if (!op_f.present)
        return fail("missing \"op\"");
    if (!op_f.is_string)
        return fail("\"op\" must be a string");
    if (!known_op)
        return fail("unknown op '" + truncated(op_f.text, max_echo) + "' (expected subscribe, unsubscribe or publish)");
    if (!channel_f.present)
        return fail("missing \"channel\"");
    if (!channel_f.is_string)
        return fail("\"channel\" must be a string");
    if (!channel_ok)
        return fail("invalid \"channel\": " + std::string(channel_rule));
    if (unknown_key_)
        return fail("unknown key '" + *unknown_key_ + "'");

    op result;
    result.kind = kind;
    result.channel = std::move(channel_f.text);
    if (kind != op_kind::publish) {
        if (data_f.present)
            return fail(std::string(op_name(kind)) + " does not take \"data\"");
        if (encoding_f.present)
            return fail(std::string(op_name(kind)) + " does not take \"encoding\"");
        return result;
    }
    if (!data_f.present)
        return fail("publish requires \"data\"");
    if (encoding_f.present) {
        if (!encoding_f.is_string || encoding_f.text != "base64")
            return fail("\"encoding\" must be \"base64\"");
        if (!data_f.is_string)
            return fail("\"encoding\":\"base64\" requires \"data\" to be a string");
        auto bytes = base64_decode(data_f.text);
        if (!bytes)
            return fail("\"data\" is not valid base64 (RFC 4648, standard alphabet, padded)");
        result.data_kind = payload_kind::binary;
        result.data = std::move(*bytes);
    } else if (data_f.is_string) {
        result.data_kind = payload_kind::text;
        result.data = std::move(data_f.text);
    } else {
        result.data_kind = payload_kind::json;
        result.data = data_dom_.dump(-1, ' ', false, json::error_handler_t::replace);
    }
    return result;
}

// The length of the UTF-8 sequence at p (n > 0 bytes left) and whether it is well-formed; when
// it is not, length is its maximal ill-formed subpart (Unicode 15 §3.9, one U+FFFD each).
struct utf8_step {
    std::size_t length;
    bool valid;
};

utf8_step utf8_sequence(const unsigned char* p, std::size_t n) {
    const unsigned char c = p[0];
    std::size_t trail = 0;
    unsigned char lo = 0x80;
    unsigned char hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
        trail = 1;
    } else if (c >= 0xE0 && c <= 0xEF) {
        trail = 2;
        if (c == 0xE0)
            lo = 0xA0; // no overlong forms
        else if (c == 0xED)
            hi = 0x9F; // no surrogates
    } else if (c >= 0xF0 && c <= 0xF4) {
        trail = 3;
        if (c == 0xF0)
            lo = 0x90; // no overlong forms
        else if (c == 0xF4)
            hi = 0x8F; // nothing above U+10FFFF
    } else {
        return {1, false};
    }
    for (std::size_t i = 1; i <= trail; ++i) {
        if (i >= n || p[i] < lo || p[i] > hi)
            return {i, false};
        lo = 0x80;
        hi = 0xBF;
    }
    return {trail + 1, true};
}

} // namespace

bool valid_utf8(std::string_view s) {
    const auto* p = reinterpret_cast<const unsigned char*>(s.data());
    const std::size_t n = s.size();
    for (std::size_t i = 0; i < n;) {
        if (p[i] < 0x80) {
            ++i;
            continue;
        }
        const auto step = utf8_sequence(p + i, n - i);
        if (!step.valid)
            return false;
        i += step.length;
    }
    return true;
}

namespace {

void append_escape(std::string& out, unsigned char c) {
    static constexpr std::string_view short_forms = "\"\"\\\\\bb\ff\nn\rr\tt"; // pairs: byte, letter
    static constexpr char hex[] = "0123456789abcdef";
    for (std::size_t k = 0; k < short_forms.size(); k += 2) {
        if (static_cast<unsigned char>(short_forms[k]) == c) {
            out += '\\';
            out += short_forms[k + 1];
            return;
        }
    }
    out += "\\u00";
    out += hex[c >> 4];
    out += hex[c & 0xF];
}

constexpr std::string_view base64_alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

constexpr std::array<std::int8_t, 256> base64_values = [] {
    std::array<std::int8_t, 256> t{};
    t.fill(-1);
    for (std::size_t i = 0; i < base64_alphabet.size(); ++i)
        t[static_cast<unsigned char>(base64_alphabet[i])] = static_cast<std::int8_t>(i);
    return t;
}();

void append_base64(std::string& out, std::string_view bytes) {
    const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
    const std::size_t n = bytes.size();
    std::size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        const std::uint32_t v = (std::uint32_t{p[i]} << 16) | (std::uint32_t{p[i + 1]} << 8) | p[i + 2];
        out += base64_alphabet[v >> 18];
        out += base64_alphabet[(v >> 12) & 0x3F];
        out += base64_alphabet[(v >> 6) & 0x3F];
        out += base64_alphabet[v & 0x3F];
    }
    if (n - i == 1) {
        const std::uint32_t v = std::uint32_t{p[i]} << 16;
        out += base64_alphabet[v >> 18];
        out += base64_alphabet[(v >> 12) & 0x3F];
        out += "==";
    } else if (n - i == 2) {
        const std::uint32_t v = (std::uint32_t{p[i]} << 16) | (std::uint32_t{p[i + 1]} << 8);
        out += base64_alphabet[v >> 18];
        out += base64_alphabet[(v >> 12) & 0x3F];
        out += base64_alphabet[(v >> 6) & 0x3F];
        out += '=';
    }
}


constexpr std::string_view replacement_character = "\xEF\xBF\xBD"; // U+FFFD

} // namespace

std::variant<op, op_error> parse(std::string_view frame) {
    op_reader reader;
    json::sax_parse(frame, &reader);
    return std::move(reader).result();
}

void append_json_string(std::string& out, std::string_view s) {
    const auto* p = reinterpret_cast<const unsigned char*>(s.data());
    const std::size_t n = s.size();
    std::size_t run = 0; // start of the bytes not yet copied to out
    std::size_t i = 0;
    out += '"';
    while (i < n) {
        const unsigned char c = p[i];
        if (c >= 0x80) {
            const auto step = utf8_sequence(p + i, n - i);
            if (!step.valid) {
                out.append(s.data() + run, i - run);
                out += replacement_character;
                run = i + step.length;
            }
            i += step.length;
        } else if (c < 0x20 || c == '"' || c == '\\') {
            out.append(s.data() + run, i - run);
            append_escape(out, c);
            run = ++i;
        } else {
            ++i;
        }
    }
    out.append(s.data() + run, n - run);
    out += '"';
}

std::string encode_delivery(const pubsub_message& m) {
    constexpr std::string_view head = "{\"channel\":";
    constexpr std::string_view data_key = ",\"data\":";
    constexpr std::string_view base64_tail = ",\"encoding\":\"base64\"}";
    std::size_t data_size = m.payload.size() + 2; // exact unless the text needs escapes
    if (m.kind == payload_kind::binary)
        data_size = (m.payload.size() + 2) / 3 * 4 + 2;
    std::string out;
    out.reserve(head.size() + m.channel.size() + 2 + data_key.size() + data_size + base64_tail.size());
    out += head;
    append_json_string(out, m.channel);
    out += data_key;
    switch (m.kind) {
    case payload_kind::text:
        append_json_string(out, m.payload);
        out += '}';
        break;
    case payload_kind::binary:
        out += '"';
        append_base64(out, m.payload);
        out += '"';
        out += base64_tail;
        break;
    case payload_kind::json:
        out += m.payload.empty() ? std::string_view("null") : std::string_view(m.payload);
        out += '}';
        break;
    }
    return out;
}

std::string encode_event(std::string_view event, std::string_view channel) {
    std::string out;
    out.reserve(24 + event.size() + channel.size());
    out += "{\"event\":";
    append_json_string(out, event);
    out += ",\"channel\":";
    append_json_string(out, channel);
    out += '}';
    return out;
}

std::string encode_error(const op_error& e) {
    std::string out;
    out.reserve(48 + e.message.size() + e.op.size() + e.channel.size());
    out += "{\"event\":\"error\",\"error\":";
    append_json_string(out, e.message);
    if (!e.op.empty()) {
        out += ",\"op\":";
        append_json_string(out, e.op);
    }
    if (!e.channel.empty()) {
        out += ",\"channel\":";
        append_json_string(out, e.channel);
    }
    out += '}';
    return out;
}

std::string base64_encode(std::string_view bytes) {
    std::string out;
    out.reserve((bytes.size() + 2) / 3 * 4);
    append_base64(out, bytes);
    return out;
}

std::optional<std::string> base64_decode(std::string_view text) {
    if (text.size() % 4 != 0)
        return std::nullopt;
    std::string out;
    out.reserve(text.size() / 4 * 3);
    for (std::size_t i = 0; i < text.size(); i += 4) {
        const bool last = i + 4 == text.size();
        std::uint32_t v = 0;
        std::size_t pad = 0;
        for (std::size_t j = 0; j < 4; ++j) {
            const char c = text[i + j];
            std::uint32_t sextet = 0;
            if (c == '=') {
                if (!last || j < 2)
                    return std::nullopt; // padding only at the end, at most two
                ++pad;
            } else {
                const auto d = base64_values[static_cast<unsigned char>(c)];
                if (d < 0 || pad > 0)
                    return std::nullopt; // not in the alphabet, or data after padding
                sextet = static_cast<std::uint32_t>(d);
            }
            v = (v << 6) | sextet;
        }
        if ((pad == 1 && (v & 0xFF) != 0) || (pad == 2 && (v & 0xFFFF) != 0))
            return std::nullopt; // non-canonical: unused bits set
        out += static_cast<char>(v >> 16);
        if (pad < 2)
            out += static_cast<char>((v >> 8) & 0xFF);
        if (pad < 1)
            out += static_cast<char>(v & 0xFF);
    }
    return out;
}

} // namespace sockherd::worker::json_ops
