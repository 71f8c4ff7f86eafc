#include "common/scheduling.hpp"

#include <sched.h>

#include <cerrno>
#include <cstring>

#include <spdlog/spdlog.h>

namespace sockherd {

bool apply_thread_scheduling(bool batch, std::string_view process, std::string_view key, bool& told) {
    const int policy = batch ? SCHED_BATCH : SCHED_OTHER;
    const char* name = batch ? "SCHED_BATCH" : "SCHED_OTHER";
    const int now = ::sched_getscheduler(0);
    const int current = now < 0 ? now : now & ~SCHED_RESET_ON_FORK;
    if (current != SCHED_OTHER && current != SCHED_BATCH) {
        if (!told)
            spdlog::info("keeping the scheduling policy the {} was started with ({}); [server] {} applies to "
                         "SCHED_OTHER and SCHED_BATCH only",
                         process, current, key);
        told = true;
        return false;
    }
    if (current == policy)
        return true;
    const sched_param param{}; // priority 0, the only one these two policies have
    if (::sched_setscheduler(0, policy | (now & SCHED_RESET_ON_FORK), &param) != 0) {
        if (!told)
            spdlog::warn("cannot switch to {} ([server] {} = \"{}\"): {}", name, key, batch ? "batch" : "normal",
                         std::strerror(errno));
        told = true;
        return false;
    }
    spdlog::debug("{} scheduling policy {}", process, name);
    return true;
}

} // namespace sockherd
