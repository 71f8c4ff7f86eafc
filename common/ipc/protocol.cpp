#include "common/ipc/protocol.hpp"

#include <cstring>

namespace sockherd::ipc {
namespace {

class writer {
public:
    explicit writer(std::string& out) : out_(out) {}
    void u8(std::uint8_t v) { out_.push_back(static_cast<char>(v)); }
    void u16(std::uint16_t v) {
        for (int i = 0; i < 2; ++i)
            u8(static_cast<std::uint8_t>(v >> (8 * i)));
    }
    void u32(std::uint32_t v) {
        for (int i = 0; i < 4; ++i)
            u8(static_cast<std::uint8_t>(v >> (8 * i)));
    }
    void u64(std::uint64_t v) {
        for (int i = 0; i < 8; ++i)
            u8(static_cast<std::uint8_t>(v >> (8 * i)));
    }
    void bytes(const void* p, std::size_t n) { out_.append(static_cast<const char*>(p), n); }
    void str(std::string_view s) {
        u32(static_cast<std::uint32_t>(s.size()));
        bytes(s.data(), s.size());
    }

private:
    std::string& out_;
};

// Reads a payload; any read past the end sets `bad` and yields zeros, so decoders stay linear.
class reader {
public:
    explicit reader(std::span<const std::uint8_t> in) : in_(in) {}
    bool bad() const { return bad_; }
    bool at_end() const { return pos_ == in_.size(); }
    std::uint64_t uint(int width) {
        if (in_.size() - pos_ < static_cast<std::size_t>(width)) {
            bad_ = true;
            pos_ = in_.size();
            return 0;
        }
        std::uint64_t v = 0;
        for (int i = 0; i < width; ++i)
            v |= static_cast<std::uint64_t>(in_[pos_ + i]) << (8 * i);
        pos_ += width;
        return v;
    }
    std::uint8_t u8() { return static_cast<std::uint8_t>(uint(1)); }
    std::uint16_t u16() { return static_cast<std::uint16_t>(uint(2)); }
    std::uint32_t u32() { return static_cast<std::uint32_t>(uint(4)); }
    std::uint64_t u64() { return uint(8); }
    bool bytes(void* dst, std::size_t n) {
        if (in_.size() - pos_ < n) {
            bad_ = true;
            pos_ = in_.size();
            return false;
        }
        std::memcpy(dst, in_.data() + pos_, n);
        pos_ += n;
        return true;
    }
    std::string str() {
        const std::uint32_t n = u32();
        if (bad_ || in_.size() - pos_ < n) {
            bad_ = true;
            pos_ = in_.size();
            return {};
        }
        std::string s(reinterpret_cast<const char*>(in_.data() + pos_), n);
        pos_ += n;
        return s;
    }

private:
    std::span<const std::uint8_t> in_;
    std::size_t pos_ = 0;
    bool bad_ = false;
};

constexpr std::uint8_t family_v4 = 4;
constexpr std::uint8_t family_v6 = 6;

void put_endpoint(writer& w, const boost::asio::ip::tcp::endpoint& ep) {
    std::array<std::uint8_t, 16> raw{};
    if (ep.address().is_v6()) {
        w.u8(family_v6);
        raw = ep.address().to_v6().to_bytes();
    } else {
        w.u8(family_v4);
        const auto v4 = ep.address().to_v4().to_bytes();
        std::memcpy(raw.data(), v4.data(), v4.size());
    }
    w.u16(ep.port());
    w.bytes(raw.data(), raw.size());
}

bool get_endpoint(reader& r, boost::asio::ip::tcp::endpoint& ep) {
    const std::uint8_t family = r.u8();
    const std::uint16_t port = r.u16();
    std::array<std::uint8_t, 16> raw{};
    if (!r.bytes(raw.data(), raw.size()))
        return false;
    if (family == family_v4) {
        for (std::size_t i = 4; i < raw.size(); ++i)
            if (raw[i] != 0)
                return false; // one encoding per value: the padding of a v4 address is zero
        boost::asio::ip::address_v4::bytes_type b;
        std::memcpy(b.data(), raw.data(), b.size());
        ep = {boost::asio::ip::address_v4(b), port};
        return true;
    }
    if (family == family_v6) {
        ep = {boost::asio::ip::address_v6(raw), port};
        return true;
    }
    return false;
}

void encode_payload(writer& w, const config_msg& m) {
    w.u64(m.generation);
    w.str(m.toml);
    w.u32(static_cast<std::uint32_t>(m.tls.size()));
    for (const auto& e : m.tls) {
        w.u16(e.listener);
        w.str(e.cert_pem);
        w.str(e.key_pem);
    }
}
void encode_payload(writer& w, const handoff_msg& m) {
    w.u16(m.listener_id);
    w.u8(static_cast<std::uint8_t>(m.connections.size()));
    for (const auto& c : m.connections)
        put_endpoint(w, c.peer);
}
void encode_payload(writer& w, const listen_msg& m) {
    w.u8(static_cast<std::uint8_t>(m.sockets.size()));
    for (const auto& e : m.sockets)
        w.u16(e.listener_id);
}
void encode_payload(writer& w, const drain_msg& m) {
    w.u32(m.timeout_ms);
    w.u8(m.node_stopping ? 1 : 0);
}
void encode_payload(writer&, const stop_msg&) {}
void encode_payload(writer& w, const ready_msg& m) {
    w.u64(m.generation);
    w.u32(m.pid);
}
void encode_payload(writer& w, const load_msg& m) {
    w.u32(m.connections);
    w.u64(m.handoffs_received);
}
void encode_payload(writer& w, const heartbeat_msg& m) {
    w.u64(m.generation);
    w.u32(m.pid);
    heartbeat_msg::for_each_counter(m, [&](std::uint64_t v) { w.u64(v); });
}
void encode_payload(writer&, const drained_msg&) {}
void encode_payload(writer& w, const unknown_type_msg& m) { w.u16(m.type); }

void put_message(writer& w, const pubsub_message& m) {
    w.str(m.channel);
    w.u8(static_cast<std::uint8_t>(m.kind));
    w.str(m.payload);
}

bool get_message(reader& r, pubsub_message& m) {
    m.channel = r.str();
    const std::uint8_t kind = r.u8();
    m.payload = r.str();
    if (kind > static_cast<std::uint8_t>(payload_kind::json))
        return false;
    m.kind = static_cast<payload_kind>(kind);
    return valid_channel_name(m.channel);
}

void put_names(writer& w, const std::vector<std::string>& names) {
    w.u32(static_cast<std::uint32_t>(names.size()));
    for (const auto& n : names)
        w.str(n);
}

bool get_names(reader& r, std::vector<std::string>& names, std::size_t& budget) {
    const std::uint32_t n = r.u32();
    if (n > budget)
        return false;
    budget -= n;
    names.reserve(n);
    for (std::uint32_t i = 0; i < n && !r.bad(); ++i) {
        names.push_back(r.str());
        if (!valid_channel_name(names.back()))
            return false;
    }
    return true;
}

void encode_payload(writer& w, const publish_msg& m) {
    w.u32(m.request_id);
    w.u8(m.flags);
    put_message(w, *m.message);
}
void encode_payload(writer& w, const relay_msg& m) { put_message(w, *m.message); }
void encode_payload(writer& w, const publish_ack_msg& m) {
    w.u32(m.request_id);
    w.u32(m.workers);
}
void encode_payload(writer& w, const interest_msg& m) {
    w.u64(m.seq);
    put_names(w, m.added);
    put_names(w, m.removed);
}
void encode_payload(writer& w, const interest_ack_msg& m) { w.u64(m.seq); }

bool get_shared_message(reader& r, shared_message& out) {
    auto m = std::make_shared<pubsub_message>();
    if (!get_message(r, *m))
        return false;
    out = std::move(m);
    return true;
}
bool decode_payload(reader& r, publish_msg& m) {
    m.request_id = r.u32();
    m.flags = r.u8();
    if (m.flags & ~publish_msg::include_origin)
        return false;
    return get_shared_message(r, m.message);
}
bool decode_payload(reader& r, relay_msg& m) { return get_shared_message(r, m.message); }
bool decode_payload(reader& r, publish_ack_msg& m) {
    m.request_id = r.u32();
    m.workers = r.u32();
    return true;
}
bool decode_payload(reader& r, interest_msg& m) {
    m.seq = r.u64();
    std::size_t budget = max_interest_channels;
    return get_names(r, m.added, budget) && get_names(r, m.removed, budget);
}
bool decode_payload(reader& r, interest_ack_msg& m) {
    m.seq = r.u64();
    return true;
}

bool decode_payload(reader& r, config_msg& m) {
    m.generation = r.u64();
    m.toml = r.str();
    const auto n = r.u32();
    if (n > 65536)
        return false;
    for (std::uint32_t i = 0; i < n && !r.bad(); ++i) {
        config_msg::tls_entry e;
        e.listener = r.u16();
        e.cert_pem = r.str();
        e.key_pem = r.str();
        m.tls.push_back(std::move(e));
    }
    return true;
}
bool decode_payload(reader& r, handoff_msg& m) {
    m.listener_id = r.u16();
    const std::uint8_t n = r.u8();
    if (n == 0 || n > max_handoff_batch)
        return false;
    for (std::uint8_t i = 0; i < n && !r.bad(); ++i) {
        handoff_entry e;
        if (!get_endpoint(r, e.peer))
            return false;
        m.connections.push_back(std::move(e));
    }
    return true;
}
bool decode_payload(reader& r, listen_msg& m) {
    const std::uint8_t n = r.u8();
    if (n > max_listen_sockets)
        return false;
    for (std::uint8_t i = 0; i < n && !r.bad(); ++i)
        m.sockets.push_back({r.u16(), {}});
    return true;
}
bool decode_payload(reader& r, drain_msg& m) {
    m.timeout_ms = r.u32();
    const auto stopping = r.u8();
    m.node_stopping = stopping == 1;
    return stopping <= 1;
}
bool decode_payload(reader&, stop_msg&) { return true; }
bool decode_payload(reader& r, ready_msg& m) {
    m.generation = r.u64();
    m.pid = r.u32();
    return true;
}
bool decode_payload(reader& r, load_msg& m) {
    m.connections = r.u32();
    m.handoffs_received = r.u64();
    return true;
}
bool decode_payload(reader& r, heartbeat_msg& m) {
    m.generation = r.u64();
    m.pid = r.u32();
    heartbeat_msg::for_each_counter(m, [&](std::uint64_t& v) { v = r.u64(); });
    return true;
}
bool decode_payload(reader&, drained_msg&) { return true; }
bool decode_payload(reader& r, unknown_type_msg& m) {
    m.type = r.u16();
    return true;
}

template <class T>
bool decode_as(std::span<const std::uint8_t> payload, message& out) {
    reader r(payload);
    T m;
    if (!decode_payload(r, m) || r.bad() || !r.at_end())
        return false;
    out = std::move(m);
    return true;
}

} // namespace

message_type type_of(const message& m) {
    return std::visit(
        [](const auto& v) -> message_type {
            using T = std::decay_t<decltype(v)>;
            if constexpr (std::is_same_v<T, config_msg>) return message_type::config;
            else if constexpr (std::is_same_v<T, handoff_msg>) return message_type::handoff;
            else if constexpr (std::is_same_v<T, drain_msg>) return message_type::drain;
            else if constexpr (std::is_same_v<T, stop_msg>) return message_type::stop;
            else if constexpr (std::is_same_v<T, ready_msg>) return message_type::ready;
            else if constexpr (std::is_same_v<T, load_msg>) return message_type::load;
            else if constexpr (std::is_same_v<T, drained_msg>) return message_type::drained;
            else if constexpr (std::is_same_v<T, publish_msg>) return message_type::publish;
            else if constexpr (std::is_same_v<T, relay_msg>) return message_type::relay;
            else if constexpr (std::is_same_v<T, publish_ack_msg>) return message_type::publish_ack;
            else if constexpr (std::is_same_v<T, interest_msg>) return message_type::interest;
            else if constexpr (std::is_same_v<T, interest_ack_msg>) return message_type::interest_ack;
            else if constexpr (std::is_same_v<T, heartbeat_msg>) return message_type::heartbeat;
            else if constexpr (std::is_same_v<T, listen_msg>) return message_type::listen;
            else return message_type::unknown_type;
        },
        m);
}

std::string_view to_string(message_type t) {
    switch (t) {
    case message_type::config: return "config";
    case message_type::handoff: return "handoff";
    case message_type::drain: return "drain";
    case message_type::stop: return "stop";
    case message_type::ready: return "ready";
    case message_type::load: return "load";
    case message_type::drained: return "drained";
    case message_type::unknown_type: return "unknown_type";
    case message_type::publish: return "publish";
    case message_type::relay: return "relay";
    case message_type::publish_ack: return "publish_ack";
    case message_type::interest: return "interest";
    case message_type::interest_ack: return "interest_ack";
    case message_type::heartbeat: return "heartbeat";
    case message_type::listen: return "listen";
    }
    return "?";
}

void encode(const message& m, std::string& out) {
    const std::size_t start = out.size();
    writer w(out);
    w.u32(0); // payload length, patched below
    w.u16(protocol_version);
    w.u16(static_cast<std::uint16_t>(type_of(m)));
    std::visit([&](const auto& v) { encode_payload(w, v); }, m);
    const auto len = static_cast<std::uint32_t>(out.size() - start - header_size);
    for (int i = 0; i < 4; ++i)
        out[start + i] = static_cast<char>(static_cast<std::uint8_t>(len >> (8 * i)));
}

decode_result decode(std::span<const std::uint8_t> in) {
    decode_result res;
    if (in.size() < header_size)
        return res;
    reader h(in.first(header_size));
    const std::uint32_t len = h.u32();
    const std::uint16_t version = h.u16();
    res.type = h.u16();
    if (version != protocol_version) {
        res.status = decode_status::malformed;
        res.reason = "unsupported protocol version";
        return res;
    }
    if (len > max_payload) {
        res.status = decode_status::malformed;
        res.reason = "frame larger than the protocol allows";
        return res;
    }
    if (in.size() - header_size < len)
        return res; // need_more
    res.consumed = header_size + len;
    const auto payload = in.subspan(header_size, len);
    bool ok = false;
    switch (static_cast<message_type>(res.type)) {
    case message_type::config: ok = decode_as<config_msg>(payload, res.msg); break;
    case message_type::handoff: ok = decode_as<handoff_msg>(payload, res.msg); break;
    case message_type::drain: ok = decode_as<drain_msg>(payload, res.msg); break;
    case message_type::stop: ok = decode_as<stop_msg>(payload, res.msg); break;
    case message_type::ready: ok = decode_as<ready_msg>(payload, res.msg); break;
    case message_type::load: ok = decode_as<load_msg>(payload, res.msg); break;
    case message_type::drained: ok = decode_as<drained_msg>(payload, res.msg); break;
    case message_type::unknown_type: ok = decode_as<unknown_type_msg>(payload, res.msg); break;
    case message_type::publish: ok = decode_as<publish_msg>(payload, res.msg); break;
    case message_type::relay: ok = decode_as<relay_msg>(payload, res.msg); break;
    case message_type::publish_ack: ok = decode_as<publish_ack_msg>(payload, res.msg); break;
    case message_type::interest: ok = decode_as<interest_msg>(payload, res.msg); break;
    case message_type::interest_ack: ok = decode_as<interest_ack_msg>(payload, res.msg); break;
    case message_type::heartbeat: ok = decode_as<heartbeat_msg>(payload, res.msg); break;
    case message_type::listen: ok = decode_as<listen_msg>(payload, res.msg); break;
    default:
        res.status = decode_status::unknown_type;
        return res;
    }
    if (!ok) {
        res.status = decode_status::malformed;
        res.reason = "payload does not match its message type";
        res.consumed = 0;
        return res;
    }
    res.status = decode_status::ok;
    return res;
}

std::size_t descriptor_count(const message& m) {
    if (const auto* h = std::get_if<handoff_msg>(&m))
        return h->connections.size();
    if (const auto* l = std::get_if<listen_msg>(&m))
        return l->sockets.size();
    return 0;
}

} // namespace sockherd::ipc
