#include "common/scheduling.hpp"

#include <cerrno>
#include <sched.h>

namespace sockherd {

scheduling_result set_thread_scheduling(bool batch) {
    const int policy = batch ? SCHED_BATCH : SCHED_OTHER;
    const int now = ::sched_getscheduler(0);
    const int current = now < 0 ? now : now & ~SCHED_RESET_ON_FORK;
    if (current != SCHED_OTHER && current != SCHED_BATCH)
        return {scheduling_result::outcome::kept, current, 0};
    if (current == policy)
        return {};
    const sched_param param{}; // priority 0, the only one these two policies have
    if (::sched_setscheduler(0, policy | (now & SCHED_RESET_ON_FORK), &param) != 0)
        return {scheduling_result::outcome::failed, current, errno};
    return {scheduling_result::outcome::switched, current, 0};
}

} // namespace sockherd
