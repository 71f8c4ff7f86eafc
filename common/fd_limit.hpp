#pragma once
// Each process may hold as many descriptors as its hard limit allows: connections are spread over
// the workers, and each has its own limit. The supervisor raises its soft limit at start; a worker
// does the same (one started by hand, or whose limits were changed in between with prlimit).

#include <sys/resource.h>

namespace sockherd {

inline void raise_fd_limit() {
    rlimit rl{};
    if (::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        ::setrlimit(RLIMIT_NOFILE, &rl);
    }
}

} // namespace sockherd
