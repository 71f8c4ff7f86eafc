#include "supervisor/scheduler.hpp"

#include <algorithm>

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

namespace {

// std::*_heap build a max-heap; "greater" puts the least loaded (then the nearest in rotation) on top.
struct later {
    template <class E>
    bool operator()(const E& a, const E& b) const {
        return a.load != b.load ? a.load > b.load : a.rotation > b.rotation;
    }
};

} // namespace

void scheduler::begin_batch(std::span<const worker_load> workers) {
    heap_.clear();
    in_batch_ = true;
    batch_size_ = std::max<std::size_t>(workers.size(), 1);
    if (cursor_ >= batch_size_)
        cursor_ = 0;
    for (std::size_t i = 0; i < workers.size(); ++i) {
        if (!workers[i].eligible)
            continue;
        const std::uint64_t rotation = (i + batch_size_ - cursor_) % batch_size_;
        // Round-robin ignores the load: every entry weighs the same, rotation decides.
        heap_.push_back({policy_ == schedule_policy::least_conn ? workers[i].load : 0, rotation, i});
    }
    std::make_heap(heap_.begin(), heap_.end(), later{});
}

void scheduler::end_batch() {
    in_batch_ = false;
    heap_.clear();
}

scheduler::entry scheduler::pop() {
    std::pop_heap(heap_.begin(), heap_.end(), later{});
    const auto e = heap_.back();
    heap_.pop_back();
    return e;
}

void scheduler::push(entry e) {
    heap_.push_back(e);
    std::push_heap(heap_.begin(), heap_.end(), later{});
}

} // namespace sockherd::supervisor
