#include "common/cidr.hpp"

#include <array>
#include <charconv>
#include <string>

namespace sockherd {
namespace {

using boost::asio::ip::address;
using boost::asio::ip::address_v4;
using boost::asio::ip::address_v6;

// Network-order bytes of either family.
template <std::size_t N>
bool prefix_equal(const std::array<unsigned char, N>& a, const std::array<unsigned char, N>& b, unsigned prefix) {
    const unsigned full = prefix / 8;
    for (unsigned i = 0; i < full; ++i)
        if (a[i] != b[i])
            return false;
    const unsigned rest = prefix % 8;
    if (rest == 0)
        return true;
    const auto mask = static_cast<unsigned char>(0xFF << (8 - rest));
    return (a[full] & mask) == (b[full] & mask);
}

template <std::size_t N>
bool host_bits_clear(const std::array<unsigned char, N>& a, unsigned prefix) {
    for (std::size_t bit = prefix; bit < N * 8; ++bit)
        if (a[bit / 8] & (0x80 >> (bit % 8)))
            return false;
    return true;
}

} // namespace

address unmapped(const address& a) {
    if (a.is_v6() && a.to_v6().is_v4_mapped())
        return boost::asio::ip::make_address_v4(boost::asio::ip::v4_mapped, a.to_v6());
    return a;
}

bool cidr::contains(const address& raw) const {
    const address a = unmapped(raw);
    if (a.is_v4() != network.is_v4())
        return false;
    if (a.is_v4())
        return prefix_equal(a.to_v4().to_bytes(), network.to_v4().to_bytes(), prefix);
    return prefix_equal(a.to_v6().to_bytes(), network.to_v6().to_bytes(), prefix);
}

std::optional<cidr> parse_cidr(std::string_view text) {
    const auto slash = text.find('/');
    const std::string addr_text(text.substr(0, slash));
    boost::system::error_code ec;
    auto a = boost::asio::ip::make_address(addr_text, ec);
    if (ec || addr_text.find('%') != std::string::npos) // no scope ids
        return std::nullopt;
    a = unmapped(a);
    const unsigned max = a.is_v4() ? 32 : 128;
    unsigned prefix = max;
    if (slash != std::string_view::npos) {
        const auto digits = text.substr(slash + 1);
        if (digits.empty() || digits.size() > 3 || (digits.size() > 1 && digits[0] == '0'))
            return std::nullopt;
        const auto [end, err] = std::from_chars(digits.data(), digits.data() + digits.size(), prefix);
        if (err != std::errc() || end != digits.data() + digits.size() || prefix > max)
            return std::nullopt;
    }
    const bool clear = a.is_v4() ? host_bits_clear(a.to_v4().to_bytes(), prefix)
                                 : host_bits_clear(a.to_v6().to_bytes(), prefix);
    if (!clear)
        return std::nullopt;
    return cidr{a, prefix};
}

bool any_contains(const std::vector<cidr>& ranges, const address& a) {
    for (const auto& r : ranges)
        if (r.contains(a))
            return true;
    return false;
}

} // namespace sockherd
