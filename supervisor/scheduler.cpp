#include "supervisor/scheduler.hpp"

namespace sockherd::supervisor {

std::optional<std::size_t> scheduler::pick(std::span<const worker_load> workers) {
    const std::size_t n = workers.size();
    if (n == 0)
        return std::nullopt;
    std::optional<std::size_t> best;
    for (std::size_t k = 0; k < n; ++k) {
        const std::size_t i = (cursor_ + k) % n;
        if (!workers[i].eligible)
            continue;
        if (policy_ == schedule_policy::round_robin) {
            best = i;
            break;
        }
        if (!best || workers[i].load < workers[*best].load)
            best = i;
    }
    if (best)
        cursor_ = (*best + 1) % n;
    return best;
}

} // namespace sockherd::supervisor
