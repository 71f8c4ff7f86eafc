#pragma once
// Chooses the worker that receives the next accepted connection. Owned by the supervisor.

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

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

    // The same choices for a whole accept batch, without reading every worker per connection:
    // begin_batch() reads the loads once (O(N)); each next() is O(log N) for least-conn (a heap
    // ordered by load, ties by rotation from the last choice) and O(1) amortized for round-robin.
    // A chosen worker counts one more connection for the rest of the batch. `still_eligible(i)`
    // says whether worker i can still take one (its channel may have filled during the batch).
    void begin_batch(std::span<const worker_load> workers);
    template <class F>
    std::optional<std::size_t> next(F&& still_eligible) {
        while (!heap_.empty()) {
            const auto top = pop();
            if (!still_eligible(top.index))
                continue; // out for the rest of the batch
            cursor_ = (top.index + 1) % batch_size_;
            if (policy_ == schedule_policy::least_conn)
                push({top.load + 1, top.rotation, top.index});
            else
                push({top.load, top.rotation + batch_size_, top.index}); // to the back of the line
            return top.index;
        }
        return std::nullopt;
    }
    void end_batch();
    bool in_batch() const { return in_batch_; }

private:
    struct entry {
        std::uint64_t load;
        std::uint64_t rotation; // distance from the cursor at batch start (round-robin: grows)
        std::size_t index;
    };
    entry pop();
    void push(entry e);

    schedule_policy policy_;
    std::size_t cursor_ = 0;
    bool in_batch_ = false;
    std::size_t batch_size_ = 1;
    std::vector<entry> heap_; // a min-heap; its storage is reused from batch to batch
};

} // namespace sockherd::supervisor
