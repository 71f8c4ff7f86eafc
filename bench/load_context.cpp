#include "bench/load_context.hpp"

#include <netinet/in.h>
#include <sys/socket.h>

#include <cerrno>

namespace sockherd::bench {

load_context::load_context(net::io_context& ioc, const options& opt, const shard& part)
    : ioc_(ioc), opt_(opt), part_(part), next_source_(part.index) {}

void load_context::open_window(clock::time_point start) {
    opened_ = true;
    window_start_ = start;
    window_end_ = start + opt_.duration();
    result_.window_s = opt_.duration_s;
    // The wall clock at the same moment, so a script can place its own events (a reload) on the
    // window's time slots.
    const auto wall = std::chrono::system_clock::now() - (clock::now() - start);
    result_.window_start_unix = std::chrono::duration<double>(wall.time_since_epoch()).count();
}

void load_context::record(clock::time_point begin, clock::time_point done) {
    if (!opened_ || done < window_start_ || done >= window_end_)
        return;
    ++result_.count;
    const auto us = std::chrono::duration_cast<std::chrono::microseconds>(done - begin).count();
    result_.latency_us.record(us > 0 ? static_cast<std::uint64_t>(us) : 0);
}

error_code load_context::open_socket(tcp::socket& socket, std::size_t t) {
    error_code ec;
    socket.open(target(t).protocol(), ec);
    if (ec)
        return ec;
    socket.set_option(tcp::no_delay(true), ec);
    if (ec)
        return ec;
    if (opt_.sources == 0)
        return ec;
    // 127.0.0.1 + i for i in 0..K-1; with one source per shard offset so processes spread out.
    const auto i = static_cast<std::uint32_t>(next_source_++ % opt_.sources);
    const net::ip::address_v4 source(net::ip::address_v4(0x7f000001u + i));
    const int one = 1;
    if (::setsockopt(socket.native_handle(), IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one) != 0)
        return error_code(errno, boost::system::system_category());
    socket.bind(tcp::endpoint(source, 0), ec);
    return ec;
}

void load_context::count_error(std::string_view where, const error_code& ec) {
    if (ec == net::error::operation_aborted)
        return;
    std::string kind(where);
    kind += ':';
    kind += error_kind(ec);
    result_.add_error(kind);
}

void load_context::count_failed_connect(const error_code& ec) {
    if (ec == net::error::operation_aborted)
        return;
    ++result_.failed_connects;
    count_error("connect", ec);
}

std::string error_kind(const error_code& ec) {
    if (ec == net::error::connection_refused)
        return "refused";
    if (ec == net::error::connection_reset)
        return "reset";
    if (ec == net::error::broken_pipe)
        return "broken_pipe";
    if (ec == beast::error::timeout || ec == net::error::timed_out)
        return "timeout";
    if (ec == net::error::not_connected)
        return "not_connected";
    if (ec == net::error::eof)
        return "eof";
    if (ec == websocket::error::closed)
        return "closed";
    if (ec == boost::system::errc::address_not_available)
        return "addr_not_available";
    if (ec == boost::system::errc::address_in_use)
        return "addr_in_use";
    if (ec == net::error::no_descriptors)
        return "no_descriptors";
    if (ec == websocket::error::upgrade_declined)
        return "upgrade_declined";
    return std::string(ec.category().name()) + "." + std::to_string(ec.value());
}

} // namespace sockherd::bench
