// Hostile input (issue 6), from outside: malformed and oversized HTTP requests, slowloris, bad
// WebSocket handshakes and RFC 6455-breaking frames written byte by byte. For every case the
// offender gets the right status or close code, the worker keeps serving well-behaved clients
// (same pids, no restart), the rejection is counted per reason in /status.json and logged once.
// Every test starts its own node; the soak runs all cases at once against steady normal load.

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <regex>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/integration/harness.hpp"
#include "tests/integration/status_json.hpp"

namespace sockherd::test {
namespace {

using namespace std::chrono_literals;
using json = nlohmann::json;

constexpr std::size_t kib = 1024;
constexpr std::size_t max_header_size = 16 * kib;
constexpr std::size_t max_body_size = 64 * kib;
constexpr std::size_t max_message_size = 64 * kib;
constexpr milliseconds header_timeout{2000};
const std::string publish_token = "tok-hostile";

// Two workers, heartbeats every 100 ms (counters reach /status.json quickly), small limits so
// that crossing them takes few bytes, a publish token so that POST /publish/<channel> is on.
config_text hostile_config(unsigned workers = 2) {
    config_text cfg{workers};
    cfg.extra = "[supervisor]\nheartbeat_interval = \"100ms\"\n\n"
                "[http]\nmax_header_size = \"16KiB\"\nmax_body_size = \"64KiB\"\nheader_timeout = \"2s\"\n\n"
                "[websocket]\nmax_message_size = \"64KiB\"\n\n"
                "[publish]\ntokens = [\"" +
        publish_token + "\"]\n";
    return cfg;
}

// ---- counting --------------------------------------------------------------------------------

// totals.rejections[reason]; -1 when it is missing.
std::int64_t total_rejections(const json& st, std::string_view reason) {
    const auto t = st.find("totals");
    if (t == st.end() || !t->is_object())
        return -1;
    const auto r = t->find("rejections");
    return r != t->end() && r->is_object() ? int_field(*r, reason) : -1;
}

// Every reason named in any row's "rejections" (plus `also`).
std::set<std::string> reasons_in(const json& a, const json& b, std::string_view also) {
    std::set<std::string> out{std::string(also)};
    for (const auto* st : {&a, &b})
        for (const auto& w : workers_of(*st))
            if (const auto it = w.find("rejections"); it != w.end() && it->is_object())
                for (const auto& [k, v] : it->items())
                    out.insert(k);
    return out;
}

std::string rejection_dump(const json& st) {
    std::string s;
    for (const auto& w : workers_of(st)) {
        const auto it = w.find("rejections");
        s += "worker " + std::to_string(int_field(w, "id")) + ": " +
            (it != w.end() ? it->dump() : std::string("(no \"rejections\")")) + "; ";
    }
    return s + "totals: " + (st.contains("totals") ? st["totals"].dump() : std::string("(none)"));
}

// Waits until `reason` went up by exactly `expected` over `before` (heartbeats every 100 ms), then
// three heartbeats more to see it does not go past; no other reason may move; totals agree.
void expect_counted(const node& n, const json& before, std::string_view reason, std::int64_t expected) {
    const auto base = rejections(before, reason);
    const auto reached =
        wait_status(n, [&](const json& st) { return rejections(st, reason) >= base + expected; }, 5s, 50ms);
    EXPECT_TRUE(reached.ok) << "rejections[\"" << reason << "\"] did not go up by " << expected << " (from " << base
                            << "): " << (reached.last ? rejection_dump(*reached.last) : std::string("no status"));
    const auto past =
        wait_status(n, [&](const json& st) { return rejections(st, reason) > base + expected; }, 350ms, 50ms);
    EXPECT_FALSE(past.ok) << "rejections[\"" << reason << "\"] went past " << base + expected << ": "
                          << rejection_dump(*past.last);
    const auto st = n.status_json();
    ASSERT_TRUE(st) << "no /status.json";
    EXPECT_EQ(rejections(*st, reason), base + expected) << rejection_dump(*st);
    EXPECT_EQ(total_rejections(*st, reason), rejections(*st, reason))
        << "totals.rejections[\"" << reason << "\"] is not the sum of the rows: " << rejection_dump(*st);
    for (const auto& other : reasons_in(before, *st, reason)) {
        if (other != reason) {
            EXPECT_EQ(rejections(*st, other), rejections(before, other))
                << "rejections[\"" << other << "\"] moved too (only \"" << reason << "\" should): "
                << rejection_dump(*st);
        }
    }
}

// A worker's log line at info level or above whose message matches `problem` (numbers in it
// are written \b431\b, so that a port or pid does not count).
std::regex logged_problem(const std::string& problem) {
    return std::regex(R"(\[worker \d+\] (info|warn|warning|error|critical): .*)" + problem, std::regex::icase);
}

// ---- a hostile TCP client ----------------------------------------------------------------------

// A loopback TCP client on plain POSIX calls (non-blocking, every wait a poll under a deadline):
// for byte-exact hostile clients that pace their writes or read frame by frame. One thread.
class tcp_client {
public:
    enum class read_status { data, closed, reset, timeout, error };

    tcp_client() = default;
    ~tcp_client() {
        if (fd_ >= 0)
            ::close(fd_);
    }
    tcp_client(const tcp_client&) = delete;
    tcp_client& operator=(const tcp_client&) = delete;

    // "" or why not.
    std::string connect(std::uint16_t port, milliseconds timeout = 3s) {
        fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd_ < 0)
            return std::string("socket: ") + std::strerror(errno);
        const int one = 1;
        ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        sockaddr_in addr{};
        addr.sin_family = AF_INET;
        addr.sin_port = htons(port);
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (::connect(fd_, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0)
            return {};
        if (errno != EINPROGRESS)
            return std::string("connect: ") + std::strerror(errno);
        if (!wait_for(POLLOUT, clock::now() + timeout))
            return "connect: timed out";
        int err = 0;
        socklen_t len = sizeof err;
        ::getsockopt(fd_, SOL_SOCKET, SO_ERROR, &err, &len);
        return err == 0 ? std::string() : std::string("connect: ") + std::strerror(err);
    }

    // Sends every byte before `deadline`; "" or why not.
    std::string send_all(std::string_view bytes, clock::time_point deadline) {
        std::size_t done = 0;
        for (int i = 0; i < 1'000'000 && done < bytes.size(); ++i) {
            const ssize_t n = ::send(fd_, bytes.data() + done, bytes.size() - done, MSG_NOSIGNAL);
            if (n > 0) {
                done += static_cast<std::size_t>(n);
                continue;
            }
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
                return "send after " + std::to_string(done) + " of " + std::to_string(bytes.size()) +
                    " bytes: " + std::strerror(errno);
            if (!wait_for(POLLOUT, deadline))
                return "send: timed out after " + std::to_string(done) + " of " + std::to_string(bytes.size()) +
                    " bytes";
        }
        return done == bytes.size() ? std::string() : std::string("send: loop limit");
    }
    std::string send_all(std::string_view bytes, milliseconds timeout = 5s) {
        return send_all(bytes, clock::now() + timeout);
    }

    // Appends what arrives to inbox(), waiting until `deadline` for at least one byte.
    read_status read_some(clock::time_point deadline) {
        for (int i = 0; i < 100'000; ++i) {
            char buf[16 * 1024];
            const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
            if (n > 0) {
                in_.append(buf, static_cast<std::size_t>(n));
                return read_status::data;
            }
            if (n == 0)
                return read_status::closed;
            if (errno == EINTR)
                continue;
            if (errno == ECONNRESET)
                return read_status::reset;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                return read_status::error;
            if (!wait_for(POLLIN, deadline))
                return read_status::timeout;
        }
        return read_status::error;
    }

    // Reads until the peer closes (FIN or reset) or `deadline`.
    read_status read_until_closed(clock::time_point deadline) {
        for (int i = 0; i < 100'000; ++i) {
            const auto s = read_some(deadline);
            if (s != read_status::data)
                return s;
        }
        return read_status::error;
    }

    std::string& inbox() { return in_; }
    int fd() const { return fd_; }

    // Waits for `events` on the socket until `deadline`; false on timeout.
    bool wait_for(short events, clock::time_point deadline) {
        for (int i = 0; i < 100'000; ++i) {
            const auto left = std::chrono::duration_cast<milliseconds>(deadline - clock::now()).count();
            if (left <= 0)
                return false;
            pollfd p{fd_, events, 0};
            const int r = ::poll(&p, 1, static_cast<int>(std::min<long long>(left, 1000)));
            if (r > 0)
                return true;
            if (r < 0 && errno != EINTR)
                return false;
        }
        return false;
    }

private:
    int fd_ = -1;
    std::string in_;
};

std::string_view to_string(tcp_client::read_status s) {
    switch (s) {
    case tcp_client::read_status::data: return "data";
    case tcp_client::read_status::closed: return "closed (FIN)";
    case tcp_client::read_status::reset: return "reset";
    case tcp_client::read_status::timeout: return "timed out";
    case tcp_client::read_status::error: return "error";
    }
    return "?";
}

bool is_closed(tcp_client::read_status s) {
    return s == tcp_client::read_status::closed || s == tcp_client::read_status::reset;
}

std::string printable(std::string_view s, std::size_t max = 200) {
    std::string out;
    for (char c : s.substr(0, max)) {
        const auto u = static_cast<unsigned char>(c);
        if (c == '\r')
            out += "\\r";
        else if (c == '\n')
            out += "\\n";
        else if (u < 0x20 || u >= 0x7f) {
            static constexpr char hex[] = "0123456789abcdef";
            out += "\\x";
            out += hex[u >> 4];
            out += hex[u & 15];
        } else
            out += c;
    }
    if (s.size() > max)
        out += "[... " + std::to_string(s.size() - max) + " more bytes]";
    return out;
}

// Parses one HTTP response from the front of the client's inbox (reading more until `deadline`);
// what follows it stays in the inbox. `ec` says why there is none.
http_reply read_http_response(tcp_client& c, clock::time_point deadline) {
    http::response_parser<http::string_body> parser;
    parser.eager(true);
    parser.header_limit(1024 * 1024);
    parser.body_limit(16 * 1024 * 1024);
    http_reply r;
    for (int i = 0; i < 100'000; ++i) {
        if (!c.inbox().empty()) {
            error_code ec;
            const auto used = parser.put(net::buffer(c.inbox()), ec);
            c.inbox().erase(0, used);
            if (ec && ec != http::error::need_more) {
                r.ec = ec;
                return r;
            }
            if (parser.is_done()) {
                auto msg = parser.release();
                r.status = msg.result_int();
                r.headers = static_cast<const http::fields&>(msg);
                r.body = std::move(msg.body());
                return r;
            }
        }
        const auto s = c.read_some(deadline);
        if (s == tcp_client::read_status::data)
            continue;
        if (is_closed(s) && parser.got_some()) {
            error_code ec;
            parser.put_eof(ec);
            if (!ec && parser.is_done()) {
                auto msg = parser.release();
                r.status = msg.result_int();
                r.headers = static_cast<const http::fields&>(msg);
                r.body = std::move(msg.body());
                return r;
            }
        }
        r.ec = s == tcp_client::read_status::timeout ? error_code(beast::error::timeout)
            : s == tcp_client::read_status::reset    ? error_code(net::error::connection_reset)
            : s == tcp_client::read_status::closed   ? error_code(net::error::eof)
                                                     : error_code(net::error::fault);
        return r;
    }
    r.ec = net::error::fault;
    return r;
}

// ---- a WebSocket frame encoder and decoder (RFC 6455 section 5.2) -----------------------------

namespace opcode {
constexpr std::uint8_t continuation = 0x0, text = 0x1, binary = 0x2, close = 0x8, ping = 0x9, pong = 0xA;
}

struct frame_spec {
    bool fin = true;
    std::uint8_t rsv = 0; // bit 2: RSV1, bit 1: RSV2, bit 0: RSV3
    std::uint8_t opcode = opcode::text;
    std::string payload;
    bool masked = true;
    std::array<std::uint8_t, 4> mask{0x5a, 0x13, 0xc7, 0x3e};
};

std::string encode(const frame_spec& f) {
    std::string out;
    out.push_back(static_cast<char>((f.fin ? 0x80 : 0) | ((f.rsv & 7) << 4) | (f.opcode & 0x0f)));
    const std::uint8_t mask_bit = f.masked ? 0x80 : 0;
    const std::uint64_t len = f.payload.size();
    if (len < 126) {
        out.push_back(static_cast<char>(mask_bit | len));
    } else if (len <= 0xffff) {
        out.push_back(static_cast<char>(mask_bit | 126));
        out.push_back(static_cast<char>(len >> 8));
        out.push_back(static_cast<char>(len & 0xff));
    } else {
        out.push_back(static_cast<char>(mask_bit | 127));
        for (int shift = 56; shift >= 0; shift -= 8)
            out.push_back(static_cast<char>((len >> shift) & 0xff));
    }
    if (!f.masked)
        return out + f.payload;
    for (auto b : f.mask)
        out.push_back(static_cast<char>(b));
    for (std::size_t i = 0; i < f.payload.size(); ++i)
        out.push_back(static_cast<char>(static_cast<std::uint8_t>(f.payload[i]) ^ f.mask[i % 4]));
    return out;
}

frame_spec text_frame(std::string payload, bool fin = true) {
    frame_spec f;
    f.payload = std::move(payload);
    f.fin = fin;
    return f;
}

frame_spec frame_of(std::uint8_t op, std::string payload, bool fin = true) {
    frame_spec f;
    f.opcode = op;
    f.payload = std::move(payload);
    f.fin = fin;
    return f;
}

std::string close_payload(std::uint16_t code, std::string_view reason = {}) {
    std::string p;
    p.push_back(static_cast<char>(code >> 8));
    p.push_back(static_cast<char>(code & 0xff));
    return p + std::string(reason);
}

struct ws_frame {
    bool fin = false;
    std::uint8_t rsv = 0;
    std::uint8_t opcode = 0;
    bool masked = false;
    std::string payload;
};

// Takes one whole frame off the front of `in`; nullopt while it is incomplete.
std::optional<ws_frame> take_frame(std::string& in) {
    if (in.size() < 2)
        return std::nullopt;
    const auto b0 = static_cast<std::uint8_t>(in[0]);
    const auto b1 = static_cast<std::uint8_t>(in[1]);
    std::size_t pos = 2;
    std::uint64_t len = b1 & 0x7f;
    if (len == 126 || len == 127) {
        const std::size_t n = len == 126 ? 2 : 8;
        if (in.size() < pos + n)
            return std::nullopt;
        len = 0;
        for (std::size_t i = 0; i < n; ++i)
            len = (len << 8) | static_cast<std::uint8_t>(in[pos + i]);
        pos += n;
    }
    const bool masked = (b1 & 0x80) != 0;
    std::array<std::uint8_t, 4> mask{};
    if (masked) {
        if (in.size() < pos + 4)
            return std::nullopt;
        for (std::size_t i = 0; i < 4; ++i)
            mask[i] = static_cast<std::uint8_t>(in[pos + i]);
        pos += 4;
    }
    if (in.size() - pos < len)
        return std::nullopt;
    ws_frame f;
    f.fin = (b0 & 0x80) != 0;
    f.rsv = static_cast<std::uint8_t>((b0 >> 4) & 7);
    f.opcode = static_cast<std::uint8_t>(b0 & 0x0f);
    f.masked = masked;
    f.payload = in.substr(pos, static_cast<std::size_t>(len));
    if (masked)
        for (std::size_t i = 0; i < f.payload.size(); ++i)
            f.payload[i] = static_cast<char>(static_cast<std::uint8_t>(f.payload[i]) ^ mask[i % 4]);
    in.erase(0, pos + static_cast<std::size_t>(len));
    return f;
}

// The next frame from the server before `deadline`; `why` says why there is none.
std::optional<ws_frame> read_frame(tcp_client& c, clock::time_point deadline, std::string& why) {
    for (int i = 0; i < 100'000; ++i) {
        if (auto f = take_frame(c.inbox()))
            return f;
        const auto s = c.read_some(deadline);
        if (s != tcp_client::read_status::data) {
            why = std::string(to_string(s)) + (c.inbox().empty() ? std::string()
                                                                 : ", " + std::to_string(c.inbox().size()) +
                                                     " bytes of an incomplete frame: " + printable(c.inbox(), 40));
            return std::nullopt;
        }
    }
    why = "loop limit";
    return std::nullopt;
}

// The example key of RFC 6455 section 1.3 and its accept value.
constexpr std::string_view sample_key = "dGhlIHNhbXBsZSBub25jZQ==";
constexpr std::string_view sample_accept = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

std::string upgrade_request(std::uint16_t port, std::string_view target, std::string_view key = sample_key,
                            std::string_view version = "13", bool with_upgrade = true) {
    std::string r = "GET " + std::string(target) + " HTTP/1.1\r\nHost: 127.0.0.1:" + std::to_string(port) + "\r\n";
    if (with_upgrade)
        r += "Upgrade: websocket\r\n";
    r += "Connection: Upgrade\r\nSec-WebSocket-Key: " + std::string(key) +
        "\r\nSec-WebSocket-Version: " + std::string(version) + "\r\n\r\n";
    return r;
}

// Completes a valid handshake on /echo over `c`, then proves the session (and our encoder) with
// one masked text message echoed back. "" or why not.
std::string open_raw_ws(tcp_client& c, std::uint16_t port) {
    if (auto why = c.connect(port); !why.empty())
        return why;
    if (auto why = c.send_all(upgrade_request(port, "/echo")); !why.empty())
        return "handshake: " + why;
    const auto r = read_http_response(c, clock::now() + 5s);
    if (!r.ok() || r.status != 101)
        return "handshake: " + describe(r);
    if (r.header("Sec-WebSocket-Accept") != sample_accept)
        return "handshake: Sec-WebSocket-Accept '" + r.header("Sec-WebSocket-Accept") + "'";
    if (auto why = c.send_all(encode(text_frame("hello before the hostile frame"))); !why.empty())
        return "first message: " + why;
    std::string why;
    const auto f = read_frame(c, clock::now() + 5s, why);
    if (!f)
        return "first echo: " + why;
    if (f->opcode != opcode::text || !f->fin || f->payload != "hello before the hostile frame")
        return "first echo: opcode " + std::to_string(f->opcode) + " payload '" + printable(f->payload) + "'";
    return {};
}

// ---- the cases, one function each, shared by the single tests and the soak ---------------------

using during_fn = std::function<void()>;

enum class after_reply { server_closes, any };

// Sends `bytes` on a fresh connection, calls `during` (the offender's bytes are at the server),
// expects one response with `status` (`check` looks at it further) and, with
// after_reply::server_closes, the server's close within 3 s. "" or what was wrong.
std::string http_rejected(std::uint16_t port, std::string_view bytes, unsigned status, after_reply after,
                          const during_fn& during = {},
                          const std::function<std::string(const http_reply&)>& check = {}) {
    tcp_client c;
    if (auto why = c.connect(port); !why.empty())
        return why;
    const auto sent = c.send_all(bytes);
    if (during)
        during();
    // A server that answers and closes before reading everything may reset the rest of our
    // write; its answer is still what counts.
    auto r = read_http_response(c, clock::now() + 5s);
    if (!r.ok())
        return "no response (" + r.ec.message() + ")" + (sent.empty() ? std::string() : "; " + sent);
    if (r.status != status)
        return "status " + std::to_string(r.status) + " (expected " + std::to_string(status) + "), body '" +
            printable(r.body, 120) + "'";
    if (check)
        if (auto why = check(r); !why.empty())
            return why;
    if (after == after_reply::server_closes) {
        const auto start = clock::now();
        const auto s = c.read_until_closed(start + 3s);
        if (!is_closed(s))
            return "status " + std::to_string(status) + " as expected, but the server did not close within 3 s (" +
                std::string(to_string(s)) + ")";
    }
    return {};
}

// A valid handshake on /echo, then `frames` as raw bytes, `during`, then the server's close frame
// must carry `code`, and the server must close the TCP connection within 3 s of it.
std::string ws_closed_with(std::uint16_t port, const std::vector<frame_spec>& frames, std::uint16_t code,
                           const during_fn& during = {}) {
    tcp_client c;
    if (auto why = open_raw_ws(c, port); !why.empty())
        return "valid part: " + why;
    std::string bytes;
    for (const auto& f : frames)
        bytes += encode(f);
    const auto sent = c.send_all(bytes);
    if (during)
        during();
    const auto deadline = clock::now() + 5s;
    for (int i = 0; i < 1000; ++i) {
        std::string why;
        const auto f = read_frame(c, deadline, why);
        if (!f)
            return "no close frame from the server (" + why + ")" + (sent.empty() ? std::string() : "; " + sent);
        if (f->opcode != opcode::close)
            continue; // e.g. a ping; nothing else is expected, but only the close is checked
        if (f->masked)
            return "the server's close frame is masked";
        if (f->payload.size() < 2)
            return "close frame without a code (payload " + std::to_string(f->payload.size()) + " bytes)";
        const auto got = static_cast<std::uint16_t>((static_cast<std::uint8_t>(f->payload[0]) << 8) |
                                                    static_cast<std::uint8_t>(f->payload[1]));
        if (got != code)
            return "close code " + std::to_string(got) + " (expected " + std::to_string(code) + "), reason '" +
                printable(f->payload.substr(2)) + "'";
        const auto closed_at = clock::now();
        const auto s = c.read_until_closed(closed_at + 3s);
        if (!is_closed(s))
            return "close " + std::to_string(code) + " as expected, but the TCP connection was not closed within 3 s (" +
                std::string(to_string(s)) + ")";
        return {};
    }
    return "no close frame in 1000 frames";
}

// ---- HTTP cases

const std::vector<std::string>& malformed_request_lines() {
    static const std::vector<std::string> lines = {
        "G@T / HTTP/1.1\r\nHost: a\r\n\r\n",            // not a method token
        "GET / HTTP/1.1 trailing\r\nHost: a\r\n\r\n",   // junk after the version
        "GET / HTTP/9.Z\r\nHost: a\r\n\r\n",            // not a version
        "GET /a\x7f" "b HTTP/1.1\r\nHost: a\r\n\r\n",   // control byte in the target
        "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", // a TLS ClientHello on the plain port
    };
    return lines;
}

std::string malformed_request_line(std::uint16_t port, std::size_t variant, const during_fn& during = {}) {
    const auto& l = malformed_request_lines()[variant % malformed_request_lines().size()];
    if (auto why = http_rejected(port, l, 400, after_reply::server_closes, during); !why.empty())
        return "'" + printable(l, 40) + "': " + why;
    return {};
}

std::string header_over_limit(std::uint16_t port, const during_fn& during = {}) {
    const std::string req = "GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + std::string(max_header_size + 4 * kib, 'h') +
        "\r\n\r\n";
    return http_rejected(port, req, 431, after_reply::server_closes, during);
}

std::string ten_thousand_headers(std::uint16_t port, const during_fn& during = {}) {
    std::string req = "GET / HTTP/1.1\r\nHost: a\r\n";
    for (int i = 0; i < 10'000; ++i)
        req += "X-H" + std::to_string(i) + ": v\r\n";
    req += "\r\n";
    return http_rejected(port, req, 431, after_reply::server_closes, during);
}

// Content-Length over the limit: the headers and a first part of the body, not the whole body
// (the server must answer from the headers alone).
std::string body_over_limit(std::uint16_t port, bool publish, const during_fn& during = {}) {
    const std::string target = publish ? "/publish/room" : "/";
    std::string req = "POST " + target + " HTTP/1.1\r\nHost: a\r\nContent-Type: text/plain\r\n";
    if (publish)
        req += "Authorization: Bearer " + publish_token + "\r\n";
    req += "Content-Length: " + std::to_string(max_body_size + 1) + "\r\n\r\n" + std::string(kib, 'b');
    if (auto why = http_rejected(port, req, 413, after_reply::server_closes, during); !why.empty())
        return "POST " + target + ": " + why;
    return {};
}

// Chunked: four 16 KiB chunks fill the limit exactly, then a chunk header announces one byte more.
std::string chunked_body_over_limit(std::uint16_t port, const during_fn& during = {}) {
    std::string req = "POST /publish/room HTTP/1.1\r\nHost: a\r\nContent-Type: text/plain\r\nAuthorization: Bearer " +
        publish_token + "\r\nTransfer-Encoding: chunked\r\n\r\n";
    for (int i = 0; i < 4; ++i)
        req += "4000\r\n" + std::string(16 * kib, 'c') + "\r\n";
    req += "1\r\n";
    return http_rejected(port, req, 413, after_reply::server_closes, during);
}

const std::vector<std::string>& chunked_garbage_bodies() {
    static const std::vector<std::string> bodies = {
        "zz\r\nhello\r\n0\r\n\r\n",        // the chunk size is not hex
        "5\r\nhelloXX\r\n0\r\n\r\n",       // more data than the chunk size, no CRLF after it
        "5;\x01\r\nhello\r\n0\r\n\r\n",    // a control byte in a chunk extension
    };
    return bodies;
}

std::string chunked_garbage(std::uint16_t port, std::size_t variant, const during_fn& during = {}) {
    const auto& body = chunked_garbage_bodies()[variant % chunked_garbage_bodies().size()];
    const std::string req = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + body;
    if (auto why = http_rejected(port, req, 400, after_reply::server_closes, during); !why.empty())
        return "chunked body '" + printable(body, 40) + "': " + why;
    return {};
}

// ---- WebSocket handshake cases

const std::vector<std::string>& bad_keys() {
    static const std::vector<std::string> keys = {
        "not base64 at all!",                             // not base64
        "dGhlIHNhbXBsZQ==",                               // base64 of 10 bytes, not 16
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==",   // base64 of 32 bytes
    };
    return keys;
}

std::string ws_bad_key(std::uint16_t port, std::size_t variant, const during_fn& during = {}) {
    const auto& key = bad_keys()[variant % bad_keys().size()];
    if (auto why = http_rejected(port, upgrade_request(port, "/echo", key), 400, after_reply::any, during);
        !why.empty())
        return "Sec-WebSocket-Key '" + key + "': " + why;
    return {};
}

std::string ws_wrong_version(std::uint16_t port, const during_fn& during = {}) {
    return http_rejected(port, upgrade_request(port, "/echo", sample_key, "12"), 426, after_reply::any, during,
                         [](const http_reply& r) {
                             return r.header("Sec-WebSocket-Version") == "13"
                                 ? std::string()
                                 : "426 without 'Sec-WebSocket-Version: 13' (got '" +
                                     r.header("Sec-WebSocket-Version") + "')";
                         });
}

std::string ws_missing_upgrade(std::uint16_t port, const during_fn& during = {}) {
    return http_rejected(port, upgrade_request(port, "/echo", sample_key, "13", /*with_upgrade=*/false), 426,
                         after_reply::any, during);
}

// ---- WebSocket frame cases

std::string ws_unmasked(std::uint16_t port, const during_fn& during = {}) {
    auto f = text_frame("unmasked");
    f.masked = false;
    return ws_closed_with(port, {f}, 1002, during);
}

std::string ws_reserved_bit(std::uint16_t port, std::size_t variant, const during_fn& during = {}) {
    auto f = text_frame("reserved bit");
    f.rsv = static_cast<std::uint8_t>(4 >> (variant % 3)); // RSV1, RSV2, RSV3
    if (auto why = ws_closed_with(port, {f}, 1002, during); !why.empty())
        return "RSV" + std::to_string(variant % 3 + 1) + ": " + why;
    return {};
}

std::string ws_reserved_opcode(std::uint16_t port, std::size_t variant, const during_fn& during = {}) {
    const std::uint8_t op = variant % 2 == 0 ? 0x3 : 0xB;
    if (auto why = ws_closed_with(port, {frame_of(op, "reserved opcode")}, 1002, during); !why.empty())
        return "opcode " + std::to_string(op) + ": " + why;
    return {};
}

std::string ws_fragmented_ping(std::uint16_t port, const during_fn& during = {}) {
    return ws_closed_with(port, {frame_of(opcode::ping, "frag", /*fin=*/false)}, 1002, during);
}

std::string ws_oversized_control(std::uint16_t port, const during_fn& during = {}) {
    return ws_closed_with(port, {frame_of(opcode::ping, std::string(126, 'p'))}, 1002, during);
}

std::string ws_invalid_utf8(std::uint16_t port, const during_fn& during = {}) {
    return ws_closed_with(port, {text_frame("caf\xc3\x28 au lait")}, 1007, during);
}

// The first fragment ends inside a two-byte sequence; the second does not continue it.
std::string ws_invalid_utf8_split(std::uint16_t port, const during_fn& during = {}) {
    return ws_closed_with(port, {text_frame("caf\xc3", false), frame_of(opcode::continuation, "\x28 au lait")}, 1007,
                          during);
}

std::string ws_too_big(std::uint16_t port, const during_fn& during = {}) {
    return ws_closed_with(port, {frame_of(opcode::binary, std::string(max_message_size + 1, 'm'))}, 1009, during);
}

std::string ws_too_big_fragmented(std::uint16_t port, const during_fn& during = {}) {
    const std::string part(max_message_size / 2, 'f');
    return ws_closed_with(port,
                          {frame_of(opcode::binary, part, false), frame_of(opcode::continuation, part, false),
                           frame_of(opcode::continuation, "x")},
                          1009, during);
}

constexpr std::array<std::uint16_t, 4> invalid_close_codes{999, 1005, 1006, 5000};

// Codes 5000 and above: Beast 1.74 would echo any code from 3000 up, so the server fails the
// connection by dropping it (RFC 6455 7.1.7 makes the 1002 close frame optional). Either answer
// passes; echoing the invalid code, or keeping the connection, does not.
std::string ws_dropped_or_closed_1002(std::uint16_t port, std::uint16_t code, const during_fn& during) {
    tcp_client c;
    if (auto why = open_raw_ws(c, port); !why.empty())
        return "valid part: " + why;
    const auto sent = c.send_all(encode(frame_of(opcode::close, close_payload(code, "bye"))));
    if (during)
        during();
    const auto deadline = clock::now() + 5s;
    for (int i = 0; i < 1000; ++i) {
        std::string why;
        const auto f = read_frame(c, deadline, why);
        if (!f) {
            const auto s = c.read_until_closed(deadline);
            return is_closed(s) ? std::string()
                                : "neither a close frame nor a closed connection (" + why + ")" +
                    (sent.empty() ? std::string() : "; " + sent);
        }
        if (f->opcode != opcode::close)
            continue;
        if (f->payload.size() < 2)
            return "close frame without a code";
        const auto got = static_cast<std::uint16_t>((static_cast<std::uint8_t>(f->payload[0]) << 8) |
                                                    static_cast<std::uint8_t>(f->payload[1]));
        if (got != 1002)
            return "close code " + std::to_string(got) + " (expected 1002 or a dropped connection)";
        return is_closed(c.read_until_closed(clock::now() + 3s)) ? std::string() : "not closed after 1002";
    }
    return "no close frame in 1000 frames";
}

std::string ws_close_invalid_code(std::uint16_t port, std::size_t variant, const during_fn& during = {}) {
    const auto code = invalid_close_codes[variant % invalid_close_codes.size()];
    auto why = code >= 5000
        ? ws_dropped_or_closed_1002(port, code, during)
        : ws_closed_with(port, {frame_of(opcode::close, close_payload(code, "bye"))}, 1002, during);
    if (!why.empty())
        return "close code " + std::to_string(code) + ": " + why;
    return {};
}

std::string ws_close_one_byte(std::uint16_t port, const during_fn& during = {}) {
    return ws_closed_with(port, {frame_of(opcode::close, std::string(1, '\x03'))}, 1002, during);
}

// ---- slowloris

struct slow_result {
    std::string data;           // everything the server sent
    tcp_client::read_status end = tcp_client::read_status::timeout;
    std::size_t bytes_sent = 0;
    milliseconds elapsed{0};    // from the first byte to the server's close (or the limit)
    std::string error;
};

// Sends `request` one byte per `gap`; the wait between bytes is a wait for the server's answer
// (poll) with the next byte's time as its deadline. Stops when the server closes, all bytes are
// sent, or `limit` passes; then reads until the server closes (within the limit). `tick` runs
// after every byte.
slow_result slowloris(std::uint16_t port, std::string_view request, milliseconds gap, milliseconds limit,
                      const during_fn& tick = {}) {
    slow_result out;
    tcp_client c;
    if (auto why = c.connect(port); !why.empty()) {
        out.error = why;
        return out;
    }
    const auto start = clock::now();
    const auto stop = start + limit;
    bool closed = false;
    for (std::size_t i = 0; i < request.size() && !closed && clock::now() < stop; ++i) {
        if (auto why = c.send_all(request.substr(i, 1), stop); !why.empty()) {
            // The server answered and closed while this byte was on its way (EPIPE, reset):
            // what it sent is still to be read below, and the caller judges that.
            break;
        }
        ++out.bytes_sent;
        if (tick)
            tick();
        const auto next = std::min(start + gap * static_cast<long>(i + 1), stop);
        for (int k = 0; k < 1000 && clock::now() < next; ++k) {
            const auto s = c.read_some(next);
            if (s == tcp_client::read_status::timeout)
                break;
            if (s != tcp_client::read_status::data) {
                out.end = s;
                closed = true;
                break;
            }
        }
    }
    if (!closed)
        out.end = c.read_until_closed(stop);
    out.elapsed = std::chrono::duration_cast<milliseconds>(clock::now() - start);
    out.data = c.inbox();
    return out;
}

// ---- the node side --------------------------------------------------------------------------

// Well-behaved clients on a node: an echo session on each worker, opened before the offender
// comes and checked "during" and "after" (an echo on each, a fresh GET /healthz and a fresh
// echo session). Failures are collected, not thrown; usable from one thread at a time.
class bystanders {
public:
    bystanders(const node& n, unsigned workers) : n_(n) {
        for (int i = 0; i < 16 && by_worker_.size() < workers; ++i) {
            auto c = std::make_unique<ws_client>();
            if (auto ec = c->connect(n.port(), "/echo", 5s)) {
                failures_.add("bystander connect: " + ec.message());
                continue;
            }
            const auto k = c->worker();
            if (!k) {
                failures_.add("bystander handshake without X-Sockherd-Worker");
                continue;
            }
            by_worker_.try_emplace(*k, std::move(c));
        }
        if (by_worker_.size() < workers)
            failures_.add("bystander sessions on " + std::to_string(by_worker_.size()) + " of " +
                          std::to_string(workers) + " workers only");
    }

    void check(std::string_view when) {
        ++round_;
        for (auto& [k, c] : by_worker_) {
            const std::string msg = "bystander on worker " + std::to_string(k) + ", " + std::string(when) + " #" +
                std::to_string(round_);
            if (auto why = c->echo(msg, true, 5s); !why.empty())
                failures_.add(msg + ": " + why);
        }
        const auto r = http_get(n_.port(), "/healthz", {}, 5s);
        const auto h = parse_health(r.body);
        if (r.status != 200 || !h || h->status != "ok")
            failures_.add("GET /healthz " + std::string(when) + ": " + describe(r));
        ws_client fresh;
        if (auto ec = fresh.connect(n_.port(), "/echo", 5s))
            failures_.add("fresh session " + std::string(when) + ": " + ec.message());
        else if (auto why = fresh.echo("fresh " + std::string(when), false, 5s); !why.empty())
            failures_.add("fresh session " + std::string(when) + ": " + why);
        else
            fresh.close(websocket::close_code::normal, 5s);
    }

    const failure_log& failures() const { return failures_; }

private:
    const node& n_;
    std::map<unsigned, std::unique_ptr<ws_client>> by_worker_;
    failure_log failures_;
    std::size_t round_ = 0;
};

// Under AddressSanitizer (the CI build), freed memory waits in a quarantine of up to 256 MiB per
// process before it is reused, so a worker's RSS climbs by that much under any churn and the
// soak's RSS bound would measure the quarantine, not a leak. A 16 MiB quarantine still catches
// use-after-free of recent frees. Without ASan the variable is ignored.
env_list small_asan_quarantine() {
    const char* current = std::getenv("ASAN_OPTIONS");
    std::string opts = current ? current : "";
    if (!opts.empty())
        opts += ':';
    opts += "quarantine_size_mb=16";
    return {{"ASAN_OPTIONS", opts}};
}

// Each test: a fresh node (hostile_config), a baseline status with every worker up, bystanders on
// every worker; finish() checks everything the issue asks for besides the offender's own answer.
class hostile : public ::testing::Test {
protected:
    static constexpr unsigned workers = 2;

    void SetUp() override {
        // free_port() can hand out one port twice (%%PORT%% and %%ADMIN_PORT%%), which the node
        // refuses at start; that is the harness's luck, not the server's: start again (bounded).
        const std::regex port_clash(R"(is also a \[\[listener\]\] address)");
        for (int attempt = 0; attempt < 3; ++attempt) {
            node_ = std::make_unique<node>(hostile_config(workers), small_asan_quarantine());
            if (node_->wait_ready(workers) || node_->count_log(port_clash) == 0)
                break;
        }
        ASSERT_TRUE(node_->wait_ready(workers, 1s)) << "node did not become ready";
        const auto up = wait_status(*node_, [](const json& st) { return all_up(st, workers); }, 10s);
        ASSERT_TRUE(up.ok) << "workers not all up with a heartbeat: " << rows(up.last);
        before_ = *up.last;
        pids_before_ = slot_pids(before_);
        children_before_ = node_->worker_pids();
        ASSERT_EQ(pids_before_.size(), workers);
        by_ = std::make_unique<bystanders>(*node_, workers);
    }

    std::uint16_t port() const { return node_->port(); }
    during_fn during() {
        return [this] { by_->check("during"); };
    }

    // The rest of the contract: others still served, no worker restarted, `count` rejections
    // counted as `reason`, one log line matching `problem` per rejection, no error lines.
    void finish(std::string_view reason, std::int64_t count, const std::string& problem) {
        by_->check("after");
        EXPECT_EQ(by_->failures().count(), 0u) << "well-behaved clients: " << by_->failures().str();

        const auto st = node_->status_json();
        ASSERT_TRUE(st) << "no /status.json";
        EXPECT_TRUE(all_up(*st, workers)) << rows(st);
        EXPECT_EQ(slot_pids(*st), pids_before_) << "a worker was replaced: " << rows(st);
        for (const auto& w : workers_of(*st))
            EXPECT_EQ(int_field(w, "restarts"), 0) << "worker " << int_field(w, "id") << " restarted";
        EXPECT_EQ(total(*st, "worker_restarts"), 0);
        EXPECT_EQ(node_->worker_pids(), children_before_) << "the supervisor's children changed";
        for (unsigned k = 0; k < workers; ++k)
            EXPECT_EQ(node_->ready_count(k), 1u) << "worker " << k << " became ready more than once";

        expect_counted(*node_, before_, reason, count);

        const auto re = logged_problem(problem);
        node_->wait_for_log(re, 3s, static_cast<std::size_t>(count));
        EXPECT_EQ(node_->count_log(re), static_cast<std::size_t>(count))
            << "expected one log line (info or above) matching /" << problem << "/ per rejection";
        node_->assert_no_unexpected_errors();
    }

    std::unique_ptr<node> node_;
    json before_;
    std::map<unsigned, pid_t> pids_before_;
    std::vector<pid_t> children_before_;
    std::unique_ptr<bystanders> by_;
};

// ---- HTTP -------------------------------------------------------------------------------------

TEST_F(hostile, malformed_request_line) {
    const auto n = malformed_request_lines().size();
    for (std::size_t i = 0; i < n; ++i)
        EXPECT_EQ(malformed_request_line(port(), i, during()), "");
    finish("malformed_request", static_cast<std::int64_t>(n), "(\\b400\\b|malformed|bad request)");
}

TEST_F(hostile, header_over_max_header_size) {
    EXPECT_EQ(header_over_limit(port(), during()), "");
    finish("header_too_large", 1, "(\\b431\\b|max_header_size)");
}

TEST_F(hostile, ten_thousand_headers) {
    EXPECT_EQ(ten_thousand_headers(port(), during()), "");
    finish("header_too_large", 1, "(\\b431\\b|max_header_size)");
}

// One byte a second with header_timeout = 2s: 408 and the server's close, within the timeout and
// a little slack (the timer runs from the first byte), while the bystanders are checked every second.
TEST_F(hostile, slowloris_header_timeout) {
    const std::string request = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: slowloris\r\nX-Slow: abcdefgh\r\n\r\n";
    const auto bound = header_timeout + 2000ms;
    auto tick = during();
    const auto r = slowloris(port(), request, 1000ms, 10s, tick);
    EXPECT_EQ(r.error, "");
    EXPECT_TRUE(r.data.rfind("HTTP/1.1 408", 0) == 0)
        << "expected a 408 response; after " << r.bytes_sent << " bytes over " << r.elapsed.count()
        << " ms got " << r.data.size() << " bytes '" << printable(r.data) << "', then " << to_string(r.end);
    EXPECT_TRUE(is_closed(r.end)) << "the server did not close the connection (" << to_string(r.end) << ")";
    EXPECT_LE(r.elapsed, bound) << "closed after " << r.elapsed.count() << " ms, " << r.bytes_sent << " bytes";
    EXPECT_LT(r.bytes_sent, request.size()) << "the whole request went through: no timeout applied";
    finish("header_timeout", 1, "(\\b408\\b|header_timeout)");
}

TEST_F(hostile, body_over_max_body_size) {
    EXPECT_EQ(body_over_limit(port(), /*publish=*/true, during()), "");
    EXPECT_EQ(body_over_limit(port(), /*publish=*/false, during()), "");
    finish("body_too_large", 2, "(\\b413\\b|max_body_size)");
}

TEST_F(hostile, chunked_body_over_max_body_size) {
    EXPECT_EQ(chunked_body_over_limit(port(), during()), "");
    finish("body_too_large", 1, "(\\b413\\b|max_body_size)");
}

TEST_F(hostile, chunked_encoding_garbage) {
    const auto n = chunked_garbage_bodies().size();
    for (std::size_t i = 0; i < n; ++i)
        EXPECT_EQ(chunked_garbage(port(), i, during()), "");
    finish("malformed_request", static_cast<std::int64_t>(n), "(\\b400\\b|malformed|bad request|chunk)");
}

// ---- WebSocket handshake ----------------------------------------------------------------------

TEST_F(hostile, ws_bad_sec_websocket_key) {
    const auto n = bad_keys().size();
    for (std::size_t i = 0; i < n; ++i)
        EXPECT_EQ(ws_bad_key(port(), i, during()), "");
    finish("ws_bad_handshake", static_cast<std::int64_t>(n), "(Sec-WebSocket-Key|handshake)");
}

TEST_F(hostile, ws_wrong_sec_websocket_version) {
    EXPECT_EQ(ws_wrong_version(port(), during()), "");
    finish("ws_bad_handshake", 1, "(Sec-WebSocket-Version|version|handshake)");
}

TEST_F(hostile, ws_missing_upgrade_header) {
    EXPECT_EQ(ws_missing_upgrade(port(), during()), "");
    finish("ws_bad_handshake", 1, "(Upgrade|\\b426\\b)");
}

// ---- WebSocket frames -------------------------------------------------------------------------

const std::string protocol_error_log = "(\\b1002\\b|protocol)";

TEST_F(hostile, ws_unmasked_client_frame) {
    EXPECT_EQ(ws_unmasked(port(), during()), "");
    finish("ws_protocol_error", 1, protocol_error_log);
}

TEST_F(hostile, ws_reserved_bits) {
    for (std::size_t i = 0; i < 3; ++i)
        EXPECT_EQ(ws_reserved_bit(port(), i, during()), "");
    finish("ws_protocol_error", 3, protocol_error_log);
}

TEST_F(hostile, ws_reserved_opcode) {
    for (std::size_t i = 0; i < 2; ++i)
        EXPECT_EQ(ws_reserved_opcode(port(), i, during()), "");
    finish("ws_protocol_error", 2, protocol_error_log);
}

TEST_F(hostile, ws_fragmented_control_frame) {
    EXPECT_EQ(ws_fragmented_ping(port(), during()), "");
    finish("ws_protocol_error", 1, protocol_error_log);
}

TEST_F(hostile, ws_control_frame_over_125_bytes) {
    EXPECT_EQ(ws_oversized_control(port(), during()), "");
    finish("ws_protocol_error", 1, protocol_error_log);
}

TEST_F(hostile, ws_invalid_utf8_text) {
    EXPECT_EQ(ws_invalid_utf8(port(), during()), "");
    finish("ws_invalid_utf8", 1, "(\\b1007\\b|UTF-8)");
}

TEST_F(hostile, ws_invalid_utf8_split_over_fragments) {
    EXPECT_EQ(ws_invalid_utf8_split(port(), during()), "");
    finish("ws_invalid_utf8", 1, "(\\b1007\\b|UTF-8)");
}

TEST_F(hostile, ws_message_over_max_message_size) {
    EXPECT_EQ(ws_too_big(port(), during()), "");
    finish("ws_message_too_big", 1, "(\\b1009\\b|max_message_size)");
}

TEST_F(hostile, ws_fragmented_message_over_max_message_size) {
    EXPECT_EQ(ws_too_big_fragmented(port(), during()), "");
    finish("ws_message_too_big", 1, "(\\b1009\\b|max_message_size)");
}

TEST_F(hostile, ws_close_frame_with_invalid_code) {
    for (std::size_t i = 0; i < invalid_close_codes.size(); ++i)
        EXPECT_EQ(ws_close_invalid_code(port(), i, during()), "");
    finish("ws_protocol_error", static_cast<std::int64_t>(invalid_close_codes.size()), protocol_error_log);
}

TEST_F(hostile, ws_close_frame_with_one_byte_payload) {
    EXPECT_EQ(ws_close_one_byte(port(), during()), "");
    finish("ws_protocol_error", 1, protocol_error_log);
}

// Not hostile, but the other half of keepalive: a client's ping gets a pong with its payload, and
// the session goes on (an echo after it). Nothing is counted.
TEST_F(hostile, ws_client_ping_is_answered_with_a_pong) {
    tcp_client c;
    ASSERT_EQ(open_raw_ws(c, port()), "");
    ASSERT_EQ(c.send_all(encode(frame_of(opcode::ping, "are you there?")) + encode(frame_of(opcode::text, "after"))),
              "");
    const auto deadline = clock::now() + 5s;
    std::string why;
    const auto pong = read_frame(c, deadline, why);
    ASSERT_TRUE(pong) << why;
    EXPECT_EQ(pong->opcode, opcode::pong);
    EXPECT_EQ(pong->payload, "are you there?");
    EXPECT_FALSE(pong->masked);
    const auto echo = read_frame(c, deadline, why);
    ASSERT_TRUE(echo) << why;
    EXPECT_EQ(echo->opcode, opcode::text);
    EXPECT_EQ(echo->payload, "after");
    const auto st = node_->status_json();
    ASSERT_TRUE(st);
    EXPECT_EQ(rejections(*st, "ws_protocol_error"), 0);
}

// Not hostile either: a client that sends its last message and closes its side at once. The
// message and the FIN reach the worker together (one readiness event, nothing after it); the
// session must still see the end of the stream and close now, not at the next ping or at
// idle_timeout. Several rounds, since whether both arrive before the worker reads is timing.
TEST_F(hostile, ws_last_message_and_fin_together_close_the_session_at_once) {
    for (int round = 0; round < 12; ++round) {
        tcp_client c;
        ASSERT_EQ(open_raw_ws(c, port()), "") << "round " << round;
        ASSERT_EQ(c.send_all(encode(frame_of(opcode::text, "last words"))), "") << "round " << round;
        ASSERT_EQ(::shutdown(c.fd(), SHUT_WR), 0) << "round " << round;
        const auto started = clock::now();
        const auto status = c.read_until_closed(started + 3s);
        EXPECT_TRUE(status == tcp_client::read_status::closed || status == tcp_client::read_status::reset)
            << "round " << round << ": the session was still open 3 s after the client's FIN";
        const auto echo = take_frame(c.inbox());
        ASSERT_TRUE(echo) << "round " << round << ": no echo before the close";
        EXPECT_EQ(echo->payload, "last words") << "round " << round;
    }
}

// ---- soak ---------------------------------------------------------------------------------------

struct soak_case {
    std::string name;
    std::string reason;
    std::function<std::string(std::uint16_t port, std::size_t round)> run;
};

// Every fast case (all but slowloris, which has a thread of its own); `round` picks the variant.
std::vector<soak_case> soak_cases() {
    using r = std::size_t;
    return {
        {"malformed_request_line", "malformed_request", [](auto p, r i) { return malformed_request_line(p, i); }},
        {"header_over_max_header_size", "header_too_large", [](auto p, r) { return header_over_limit(p); }},
        {"ten_thousand_headers", "header_too_large", [](auto p, r) { return ten_thousand_headers(p); }},
        {"body_over_max_body_size", "body_too_large", [](auto p, r i) { return body_over_limit(p, i % 2 == 0); }},
        {"chunked_body_over_max_body_size", "body_too_large", [](auto p, r) { return chunked_body_over_limit(p); }},
        {"chunked_encoding_garbage", "malformed_request", [](auto p, r i) { return chunked_garbage(p, i); }},
        {"ws_bad_sec_websocket_key", "ws_bad_handshake", [](auto p, r i) { return ws_bad_key(p, i); }},
        {"ws_wrong_sec_websocket_version", "ws_bad_handshake", [](auto p, r) { return ws_wrong_version(p); }},
        {"ws_missing_upgrade_header", "ws_bad_handshake", [](auto p, r) { return ws_missing_upgrade(p); }},
        {"ws_unmasked_client_frame", "ws_protocol_error", [](auto p, r) { return ws_unmasked(p); }},
        {"ws_reserved_bits", "ws_protocol_error", [](auto p, r i) { return ws_reserved_bit(p, i); }},
        {"ws_reserved_opcode", "ws_protocol_error", [](auto p, r i) { return ws_reserved_opcode(p, i); }},
        {"ws_fragmented_control_frame", "ws_protocol_error", [](auto p, r) { return ws_fragmented_ping(p); }},
        {"ws_control_frame_over_125_bytes", "ws_protocol_error", [](auto p, r) { return ws_oversized_control(p); }},
        {"ws_invalid_utf8_text", "ws_invalid_utf8", [](auto p, r) { return ws_invalid_utf8(p); }},
        {"ws_invalid_utf8_split", "ws_invalid_utf8", [](auto p, r) { return ws_invalid_utf8_split(p); }},
        {"ws_message_over_max_message_size", "ws_message_too_big", [](auto p, r) { return ws_too_big(p); }},
        {"ws_fragmented_message_over_max", "ws_message_too_big", [](auto p, r) { return ws_too_big_fragmented(p); }},
        {"ws_close_frame_with_invalid_code", "ws_protocol_error", [](auto p, r i) { return ws_close_invalid_code(p, i); }},
        {"ws_close_frame_with_one_byte_payload", "ws_protocol_error", [](auto p, r) { return ws_close_one_byte(p); }},
    };
}

// Offenders that did not get their expected answer, per case: how often, and the first few whys.
class case_tally {
public:
    void add(const std::string& name, std::string why) {
        std::lock_guard lock(mutex_);
        auto& e = cases_[name];
        ++e.first;
        if (e.second.size() < 3 && std::find(e.second.begin(), e.second.end(), why) == e.second.end())
            e.second.push_back(std::move(why));
    }
    std::size_t count() const {
        std::lock_guard lock(mutex_);
        std::size_t n = 0;
        for (const auto& [name, e] : cases_)
            n += e.first;
        return n;
    }
    std::string str() const {
        std::lock_guard lock(mutex_);
        std::string s;
        for (const auto& [name, e] : cases_) {
            s += "\n  " + name + ": " + std::to_string(e.first) + " time(s)";
            for (const auto& why : e.second)
                s += "\n    " + why;
        }
        return s;
    }

private:
    mutable std::mutex mutex_;
    std::map<std::string, std::pair<std::size_t, std::vector<std::string>>> cases_;
};

// VmRSS of `pid` in bytes from /proc/<pid>/status; -1 when unreadable.
std::int64_t vm_rss(pid_t pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/status");
    std::string line;
    for (int i = 0; i < 200 && std::getline(in, line); ++i)
        if (line.rfind("VmRSS:", 0) == 0)
            return std::stoll(line.substr(6)) * 1024; // "VmRSS:    1234 kB"
    return -1;
}

milliseconds soak_duration() {
    const char* env = std::getenv("SOCKHERD_SOAK_SECONDS");
    long seconds = 60;
    if (env && *env) {
        char* end = nullptr;
        const long v = std::strtol(env, &end, 10);
        if (end && *end == '\0' && v > 0 && v <= 24 * 3600)
            seconds = v;
    }
    return milliseconds(seconds * 1000);
}

// A message that says who sent it and which one it is; every third one binary with every byte value.
std::string soak_payload(std::size_t client, std::size_t seq) {
    std::string s = "soak client " + std::to_string(client) + " message " + std::to_string(seq) + " ";
    if (seq % 3 == 2) {
        for (std::size_t j = 0; j < (client * 131 + seq * 17) % 3000 + 1; ++j)
            s.push_back(static_cast<char>((client + seq + j) % 256));
    } else {
        s.append((client * 37 + seq * 11) % 2000, static_cast<char>('a' + (client + seq) % 26));
    }
    return s;
}

// Two workers for SOCKHERD_SOAK_SECONDS (default 60): normal clients (WebSocket echo request/reply
// and HTTP keep-alive GETs) in a loop while hostile clients cycle through every case and a third
// keeps a slowloris going. Afterwards: every normal request got its exact reply, no worker was
// replaced, every hostile connection was counted, and RSS did not grow past the bound below.
TEST_F(hostile, soak_mixed_load) {
    const auto duration = soak_duration();
    const auto warm_up = std::min<milliseconds>(10s, duration / 6);
    constexpr std::size_t ws_clients = 4;
    constexpr std::size_t http_clients = 2;
    constexpr std::size_t hostile_threads = 2;
    const auto cases = soak_cases();

    std::atomic<bool> stop{false};
    failure_log normal_failures;
    case_tally offender_failures;
    std::atomic<std::size_t> ws_ok{0}, http_ok{0}, http_reconnects{0}, slow_runs{0};
    std::vector<std::map<std::string, std::size_t>> hostile_counts(hostile_threads + 1);
    std::vector<std::thread> pool;

    // The exact answer of GET /healthz from worker K.
    std::map<unsigned, std::string> health_body;
    for (const auto& [k, pid] : pids_before_)
        health_body[k] = R"({"status":"ok","worker":)" + std::to_string(k) + R"(,"pid":)" + std::to_string(pid) + "}\n";

    for (std::size_t i = 0; i < ws_clients; ++i)
        pool.emplace_back([&, i] {
            auto c = std::make_unique<ws_client>();
            bool open = !c->connect(port(), "/echo", 5s);
            if (!open)
                normal_failures.add("ws client " + std::to_string(i) + ": connect failed");
            for (std::size_t seq = 0; open && !stop && seq < 10'000'000; ++seq) {
                const bool text = seq % 3 != 2;
                if (auto why = c->echo(soak_payload(i, seq), text, 5s); !why.empty()) {
                    normal_failures.add("ws client " + std::to_string(i) + " message " + std::to_string(seq) + ": " + why);
                    c = std::make_unique<ws_client>(); // carry on with a new session
                    open = !c->connect(port(), "/echo", 5s);
                    continue;
                }
                ++ws_ok;
            }
            if (open)
                c->close(websocket::close_code::normal, 5s);
        });

    for (std::size_t i = 0; i < http_clients; ++i)
        pool.emplace_back([&, i] {
            auto c = std::make_unique<raw_connection>();
            bool open = !c->connect(port(), 5s);
            const std::string get = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: soak-" +
                std::to_string(i) + "\r\n\r\n";
            for (std::size_t seq = 0; open && !stop && seq < 10'000'000; ++seq) {
                std::string why;
                if (auto ec = c->send(get, 5s)) {
                    why = "send: " + ec.message();
                } else {
                    const auto r = c->read_response(5s);
                    const auto k = r.worker();
                    const auto expected = k ? health_body.find(*k) : health_body.end();
                    if (!r.ok() || r.status != 200 || expected == health_body.end() || r.body != expected->second)
                        why = describe(r);
                    else if (http::token_list(r.header("Connection")).exists("close")) {
                        // The server ends a keep-alive connection (max_requests_per_connection):
                        // an exact reply all the same; go on with a new connection.
                        ++http_ok;
                        ++http_reconnects;
                        c = std::make_unique<raw_connection>();
                        open = !c->connect(port(), 5s);
                        if (!open)
                            normal_failures.add("http client " + std::to_string(i) + ": reconnect failed");
                        continue;
                    }
                }
                if (!why.empty()) {
                    normal_failures.add("http client " + std::to_string(i) + " request " + std::to_string(seq) +
                                        ": " + why);
                    c = std::make_unique<raw_connection>(); // carry on with a new connection
                    open = !c->connect(port(), 5s);
                    continue;
                }
                ++http_ok;
            }
        });

    for (std::size_t t = 0; t < hostile_threads; ++t)
        pool.emplace_back([&, t] {
            for (std::size_t round = 0; !stop && round < 1'000'000; ++round)
                for (std::size_t i = t; i < cases.size() && !stop; i += hostile_threads) {
                    const auto& c = cases[i];
                    if (auto why = c.run(port(), round); !why.empty())
                        offender_failures.add(c.name, why);
                    ++hostile_counts[t][c.reason];
                }
        });

    pool.emplace_back([&] {
        const std::string request = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: abcdefgh\r\n\r\n";
        for (std::size_t round = 0; !stop && round < 100'000; ++round) {
            const auto r = slowloris(port(), request, 1000ms, 10s);
            if (!r.error.empty() || r.data.rfind("HTTP/1.1 408", 0) != 0 || !is_closed(r.end) ||
                r.elapsed > header_timeout + 2000ms)
                offender_failures.add("slowloris_header_timeout", (r.error.empty() ? std::string() : r.error + "; ") +
                                      std::to_string(r.bytes_sent) + " bytes, " + std::to_string(r.elapsed.count()) +
                                      " ms, got '" + printable(r.data, 60) + "', then " + std::string(to_string(r.end)));
            ++hostile_counts[hostile_threads]["header_timeout"];
            ++slow_runs;
        }
    });

    // The main thread watches for a dead or replaced worker while the soak runs (and ends it
    // early), checks the bystanders about once a second (which also keeps their sessions from
    // going idle), and takes the RSS after the warm-up.
    const auto replaced = [&] {
        return node_->proc().exited() || node_->worker_pids() != children_before_;
    };
    const auto started = clock::now();
    std::map<pid_t, std::int64_t> rss_warm;
    bool died = false;
    for (int i = 0; i < 100'000 && !died && clock::now() < started + duration; ++i) {
        const auto left = std::chrono::duration_cast<milliseconds>(started + duration - clock::now());
        died = wait_until(replaced, std::clamp(left, 0ms, 1000ms), 100ms);
        if (rss_warm.empty() && clock::now() >= started + warm_up)
            for (const auto& [k, pid] : pids_before_)
                rss_warm[pid] = vm_rss(pid);
        by_->check("during the soak");
    }
    EXPECT_FALSE(died) << "a worker died or was replaced during the soak";
    EXPECT_EQ(rss_warm.size(), pids_before_.size()) << "no RSS taken after the warm-up";
    stop = true;
    for (auto& th : pool)
        th.join();

    // The bound: +32 MiB per worker over its RSS after the warm-up. What a worker legitimately
    // holds at once here is small (about 8 connections at a time, each with at most one 64 KiB
    // message or body and a 16 KiB header buffer: under 2 MiB), and the allocator's arenas and
    // caches settle during the warm-up; a leak of a few KiB per hostile connection, over the
    // tens of thousands this soak makes, would pass 32 MiB.
    constexpr std::int64_t rss_growth_bound = 32 * 1024 * 1024;
    for (const auto& [pid, warm] : rss_warm) {
        const auto now = vm_rss(pid);
        ASSERT_GT(warm, 0) << "no VmRSS for worker pid " << pid;
        ASSERT_GT(now, 0) << "no VmRSS for worker pid " << pid << " after the soak";
        EXPECT_LE(now - warm, rss_growth_bound)
            << "worker pid " << pid << ": RSS " << warm / 1024 << " KiB after the warm-up, " << now / 1024
            << " KiB after the soak";
        std::cout << "[ soak     ] worker pid " << pid << ": RSS " << warm / 1024 << " KiB after warm-up, "
                  << now / 1024 << " KiB after the soak\n";
    }

    std::map<std::string, std::int64_t> expected;
    std::size_t hostile_total = 0;
    for (const auto& m : hostile_counts)
        for (const auto& [reason, count] : m) {
            expected[reason] += static_cast<std::int64_t>(count);
            hostile_total += count;
        }
    std::cout << "[ soak     ] " << duration.count() / 1000 << " s: " << ws_ok << " echoes, " << http_ok
              << " keep-alive GETs (" << http_reconnects
              << " connections ended by the server), " << hostile_total << " hostile connections (" << slow_runs << " slowloris)\n";

    EXPECT_EQ(normal_failures.count(), 0u) << "normal clients: " << normal_failures.str();
    EXPECT_GT(ws_ok.load(), 0u);
    EXPECT_GT(http_ok.load(), 0u);
    EXPECT_EQ(offender_failures.count(), 0u) << "offenders that did not get the expected answer: "
                                             << offender_failures.str();

    const auto st = node_->status_json();
    ASSERT_TRUE(st);
    EXPECT_EQ(slot_pids(*st), pids_before_) << rows(st);
    for (const auto& w : workers_of(*st))
        EXPECT_EQ(int_field(w, "restarts"), 0) << "worker " << int_field(w, "id") << " restarted";
    EXPECT_EQ(total(*st, "worker_restarts"), 0);
    EXPECT_EQ(node_->worker_pids(), children_before_);

    const auto counted = wait_status(
        *node_,
        [&](const json& s) {
            return std::all_of(expected.begin(), expected.end(),
                               [&](const auto& e) { return rejections(s, e.first) >= e.second; });
        },
        5s);
    ASSERT_TRUE(counted.last);
    for (const auto& [reason, count] : expected)
        EXPECT_EQ(rejections(*counted.last, reason), count) << "rejections[\"" << reason << "\"]";
    by_->check("after the soak");
    EXPECT_EQ(by_->failures().count(), 0u) << by_->failures().str();
    node_->assert_no_unexpected_errors();
}

} // namespace
} // namespace sockherd::test
