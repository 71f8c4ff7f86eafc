// The PROXY protocol header parser: see common/proxy_protocol.hpp.

#include "common/proxy_protocol.hpp"

#include <arpa/inet.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>

namespace sockherd::proxy_protocol {
namespace {

using boost::asio::ip::address_v4;
using boost::asio::ip::address_v6;
using boost::asio::ip::tcp;

constexpr std::string_view v1_prefix = "PROXY ";
constexpr std::string_view v2_signature("\r\n\r\n\0\r\nQUIT\n", 12);

result need_more() { return {}; }

result invalid(std::string why) {
    result r;
    r.st = status::invalid;
    r.error = std::move(why);
    return r;
}

result done(header h) {
    result r;
    r.st = status::done;
    r.h = std::move(h);
    return r;
}

// ---- version 1: one text line ----------------------------------------------------------------
//
// "PROXY" SP ( "TCP4" | "TCP6" ) SP src-addr SP dst-addr SP src-port SP dst-port CRLF
// "PROXY" SP "UNKNOWN" [ SP anything-but-LF ] CRLF
// At most 107 bytes with the CRLF. Single spaces, addresses as inet_pton reads them for the
// family, ports decimal 0..65535 without sign or leading zeros. A lone LF never ends the line.

enum class v1_family { tcp4, tcp6, unknown };

// Longest text of an address: "255.255.255.255", "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255".
constexpr std::size_t max_v4_text = 15;
constexpr std::size_t max_v6_text = 45;

bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_hex(char c) { return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

// One space-separated field of the line. `closed`: a space or the end of the line follows, so the
// field is whole; otherwise it is the last bytes received and more may follow. `last`: no space
// follows.
struct v1_field {
    std::string_view text;
    bool closed = false;
    bool last = false;
};

// Walks the fields of a (possibly partial) line.
class v1_fields {
public:
    v1_fields(std::string_view rest, bool line_closed) : rest_(rest), line_closed_(line_closed) {}

    std::optional<v1_field> next() {
        if (exhausted_)
            return std::nullopt;
        const auto space = rest_.find(' ');
        if (space == std::string_view::npos) {
            exhausted_ = true;
            return v1_field{rest_, line_closed_, true};
        }
        v1_field f{rest_.substr(0, space), true, false};
        rest_.remove_prefix(space + 1);
        return f;
    }

private:
    std::string_view rest_;
    bool line_closed_;
    bool exhausted_ = false;
};

// A whole field is a valid address; a partial one could still become one.
bool v1_address_ok(const v1_field& f, v1_family family, address_v4::bytes_type& v4,
                   address_v6::bytes_type& v6) {
    const bool is4 = family == v1_family::tcp4;
    const std::size_t max = is4 ? max_v4_text : max_v6_text;
    if (f.text.size() > max)
        return false;
    const bool charset = std::all_of(f.text.begin(), f.text.end(), [is4](char c) {
        return is4 ? is_digit(c) || c == '.' : is_hex(c) || c == ':' || c == '.';
    });
    if (!charset || !f.closed)
        return charset;
    char text[max_v6_text + 1] = {};
    std::memcpy(text, f.text.data(), f.text.size());
    return is4 ? ::inet_pton(AF_INET, text, v4.data()) == 1 : ::inet_pton(AF_INET6, text, v6.data()) == 1;
}

bool v1_port_ok(const v1_field& f, std::uint16_t& port) {
    const auto t = f.text;
    if (t.size() > 5 || (t.size() > 1 && t.front() == '0') || !std::all_of(t.begin(), t.end(), is_digit))
        return false;
    unsigned value = 0;
    for (char c : t)
        value = value * 10 + static_cast<unsigned>(c - '0');
    if (value > 65535)
        return false;
    port = static_cast<std::uint16_t>(value);
    return !f.closed || !t.empty();
}

result parse_v1(std::string_view in) {
    const auto window = in.substr(0, v1_max_length);
    const auto lf = window.find('\n');
    const bool complete = lf != std::string_view::npos;
    auto line = complete ? window.substr(0, lf) : window;
    bool line_closed = complete;
    // A byte that breaks the line (a lone LF, a CR without LF) is only the reason when the bytes
    // before it were fine: a verdict never changes as more bytes arrive.
    const auto broken_at = [&](std::size_t end, const char* why) {
        auto before = parse_v1(in.substr(0, end));
        return before.st == status::invalid ? before : invalid(why);
    };
    if (complete) {
        if (line.back() != '\r')
            return broken_at(lf, "v1: line ends in LF without CR");
        line.remove_suffix(1);
    } else if (line.back() == '\r') {
        line.remove_suffix(1); // its LF may be the next byte
        line_closed = true;
    }
    // A CR before the end can only be one without its LF, except in the text after UNKNOWN,
    // which is ignored whatever it holds.
    if (const auto cr = line.find('\r'); cr != std::string_view::npos && !line.starts_with("PROXY UNKNOWN "))
        return broken_at(cr + 1, "v1: CR not followed by LF");
    const auto no_crlf = [&] {
        return window.size() == v1_max_length ? invalid("v1: no CRLF within 107 bytes") : need_more();
    };

    v1_fields fields(line.substr(v1_prefix.size()), line_closed);
    const auto family_field = fields.next();
    const auto& ft = family_field->text; // there is always a first field, maybe empty
    if (ft.empty() && family_field->closed)
        return invalid(family_field->last ? "v1: missing protocol" : "v1: double space before the protocol");
    v1_family family;
    if (family_field->closed) {
        if (ft == "TCP4")
            family = v1_family::tcp4;
        else if (ft == "TCP6")
            family = v1_family::tcp6;
        else if (ft == "UNKNOWN")
            family = v1_family::unknown;
        else
            return invalid("v1: protocol is not TCP4, TCP6 or UNKNOWN");
    } else {
        if (!std::string_view("TCP4").starts_with(ft) && !std::string_view("TCP6").starts_with(ft) &&
            !std::string_view("UNKNOWN").starts_with(ft))
            return invalid("v1: protocol is not TCP4, TCP6 or UNKNOWN");
        return no_crlf();
    }

    header h;
    h.version = 1;
    if (family == v1_family::unknown) {
        // Whatever follows UNKNOWN up to the CRLF is ignored, as the specification requires.
        if (!complete)
            return no_crlf();
        h.length = lf + 1;
        return done(std::move(h));
    }

    const char* family_name = family == v1_family::tcp4 ? "TCP4" : "TCP6";
    address_v4::bytes_type v4[2] = {};
    address_v6::bytes_type v6[2] = {};
    std::uint16_t ports[2] = {};
    static constexpr const char* names[] = {"source address", "destination address", "source port",
                                            "destination port"};
    for (int i = 0; i < 4; ++i) {
        const auto f = fields.next();
        if (!f)
            return line_closed ? invalid(std::string("v1: missing ") + names[i]) : no_crlf();
        if (f->text.empty() && f->closed)
            return invalid((f->last ? "v1: missing " : "v1: double space before the ") + std::string(names[i]));
        const bool ok = i < 2 ? v1_address_ok(*f, family, v4[i], v6[i]) : v1_port_ok(*f, ports[i - 2]);
        if (!ok)
            return invalid(std::string("v1: bad ") + names[i] + (i < 2 ? std::string(" for ") + family_name : ""));
    }
    if (fields.next())
        return invalid("v1: text after the destination port");
    if (!complete)
        return no_crlf();

    const auto address = [&](int i) -> boost::asio::ip::address {
        if (family == v1_family::tcp4)
            return address_v4(v4[i]);
        return address_v6(v6[i]);
    };
    h.source = tcp::endpoint(address(0), ports[0]);
    h.destination = tcp::endpoint(address(1), ports[1]);
    h.length = lf + 1;
    return done(std::move(h));
}

// ---- version 2: binary -----------------------------------------------------------------------
//
// 12-byte signature; version (high nibble, 2) and command (low nibble: 0 LOCAL, 1 PROXY);
// family (high nibble: 0 UNSPEC, 1 INET, 2 INET6, 3 UNIX) and transport (low: 0 UNSPEC,
// 1 STREAM, 2 DGRAM); u16 big-endian length of what follows: the addresses for the family, then
// TLVs. Numbers are in network byte order.

constexpr unsigned family_unspec = 0, family_inet = 1, family_inet6 = 2, family_unix = 3;
constexpr unsigned transport_stream = 1, transport_dgram = 2;

// Bytes of the address block for a family: both addresses, then both ports for INET/INET6.
constexpr std::size_t address_block(unsigned family) {
    switch (family) {
    case family_inet: return 4 + 4 + 2 + 2;
    case family_inet6: return 16 + 16 + 2 + 2;
    case family_unix: return 108 + 108;
    default: return 0;
    }
}

constexpr const char* family_label(unsigned family) {
    switch (family) {
    case family_inet: return "IPv4";
    case family_inet6: return "IPv6";
    default: return "UNIX";
    }
}

unsigned byte_at(std::string_view in, std::size_t i) { return static_cast<unsigned char>(in[i]); }

std::uint16_t u16_at(std::string_view in, std::size_t i) {
    return static_cast<std::uint16_t>((byte_at(in, i) << 8) | byte_at(in, i + 1));
}

// TLV framing is checked lightly: each TLV's 3-byte head and its value must fit, and together
// they must fill the header exactly. Their contents (CRC32C, ALPN, SSL, ...) are not read.
bool tlvs_well_framed(std::string_view tlvs) {
    while (!tlvs.empty()) {
        if (tlvs.size() < 3)
            return false;
        const std::size_t length = u16_at(tlvs, 1);
        if (tlvs.size() - 3 < length)
            return false;
        tlvs.remove_prefix(3 + length);
    }
    return true;
}

result parse_v2(std::string_view in, std::size_t max_v2_length) {
    if (in.size() <= 12)
        return need_more();
    const unsigned version = byte_at(in, 12) >> 4;
    const unsigned cmd = byte_at(in, 12) & 0x0f;
    if (version != 2)
        return invalid("v2: version " + std::to_string(version) + ", expected 2");
    if (cmd > 1)
        return invalid("v2: command " + std::to_string(cmd) + " is neither LOCAL (0) nor PROXY (1)");
    const bool local = cmd == 0;

    if (in.size() <= 13)
        return need_more();
    const unsigned family = byte_at(in, 13) >> 4;
    const unsigned transport = byte_at(in, 13) & 0x0f;
    // LOCAL ignores the family byte altogether; with PROXY an undefined value is refused.
    if (!local && (family > family_unix || transport > transport_dgram))
        return invalid("v2: undefined address family or transport (family " + std::to_string(family) +
                       ", transport " + std::to_string(transport) + ")");

    if (in.size() < v2_fixed_length)
        return need_more();
    const std::size_t length = u16_at(in, 14);
    if (length > max_v2_length)
        return invalid("v2: length " + std::to_string(length) + " over the " + std::to_string(max_v2_length) +
                       "-byte limit");
    const std::size_t addresses = local ? 0 : address_block(family);
    if (length < addresses)
        return invalid("v2: length " + std::to_string(length) + " too short for " + family_label(family) +
                       " addresses (" + std::to_string(addresses) + ")");
    if (in.size() < v2_fixed_length + length)
        return need_more();

    header h;
    h.version = 2;
    h.cmd = local ? command::local : command::proxy;
    h.length = v2_fixed_length + length;
    if (local || family == family_unspec)
        return done(std::move(h)); // no address block whose end we know: what follows is skipped

    const auto block = in.substr(v2_fixed_length, length);
    if (!tlvs_well_framed(block.substr(addresses)))
        return invalid("v2: TLVs do not fill the header exactly");
    if (transport != transport_stream || family == family_unix)
        return done(std::move(h)); // UDP or a UNIX socket: the caller keeps the socket's peer

    const auto* raw = reinterpret_cast<const unsigned char*>(block.data());
    if (family == family_inet) {
        address_v4::bytes_type src, dst;
        std::memcpy(src.data(), raw, 4);
        std::memcpy(dst.data(), raw + 4, 4);
        h.source = tcp::endpoint(address_v4(src), u16_at(block, 8));
        h.destination = tcp::endpoint(address_v4(dst), u16_at(block, 10));
    } else {
        address_v6::bytes_type src, dst;
        std::memcpy(src.data(), raw, 16);
        std::memcpy(dst.data(), raw + 16, 16);
        h.source = tcp::endpoint(address_v6(src), u16_at(block, 32));
        h.destination = tcp::endpoint(address_v6(dst), u16_at(block, 34));
    }
    return done(std::move(h));
}

// Whether the bytes so far agree with `expected`, which they must start with.
bool agrees(std::string_view in, std::string_view expected) {
    const auto n = std::min(in.size(), expected.size());
    return in.substr(0, n) == expected.substr(0, n);
}

} // namespace

result parse(std::string_view received, std::size_t max_v2_length) {
    if (received.empty())
        return need_more();
    if (received.front() == v1_prefix.front()) {
        if (!agrees(received, v1_prefix))
            return invalid("not a PROXY header");
        return received.size() <= v1_prefix.size() ? need_more() : parse_v1(received);
    }
    if (!agrees(received, v2_signature))
        return invalid("not a PROXY header");
    return received.size() < v2_signature.size() ? need_more() : parse_v2(received, max_v2_length);
}

} // namespace sockherd::proxy_protocol
