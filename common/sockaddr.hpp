#pragma once
// The peer address accept4() filled in, as an Asio endpoint (both the supervisor's and the
// workers' accept loops call accept4 directly).

#include <netinet/in.h>
#include <sys/socket.h>

#include <cstring>

#include "common/net.hpp"

namespace sockherd {

inline tcp::endpoint endpoint_from(const sockaddr_storage& ss) {
    tcp::endpoint ep;
    if (ss.ss_family == AF_INET || ss.ss_family == AF_INET6)
        std::memcpy(ep.data(), &ss, ss.ss_family == AF_INET ? sizeof(sockaddr_in) : sizeof(sockaddr_in6));
    return ep;
}

} // namespace sockherd
