#pragma once
// Chooses the worker that receives the next accepted connection. Owned by the supervisor.

#include <cstdint>
#include <optional>
#include <span>

#include "common/config.hpp"

namespace sockherd::supervisor {

struct worker_load {
    bool eligible = false;   // ready and its channel has room
    std::uint32_t load = 0;  // live connections + hand-offs not yet acknowledged
};

class scheduler {
public:
    explicit scheduler(schedule_policy policy) : policy_(policy) {}

    void set_policy(schedule_policy policy) { policy_ = policy; }
    schedule_policy policy() const { return policy_; }

    // The index of the worker to use, or nullopt when none is eligible.
    // least-conn: the eligible worker with the lowest load; ties go round-robin.
    // round-robin: the next eligible worker after the previous choice.
    std::optional<std::size_t> pick(std::span<const worker_load> workers);

private:
    schedule_policy policy_;
    std::size_t cursor_ = 0;
};

} // namespace sockherd::supervisor
