#pragma once
// Restart delays for one worker slot, owned by that slot in the supervisor: exponential from
// `min` to `max`, back to `min` once a worker has stayed up for `healthy_after`.

#include <algorithm>
#include <chrono>

namespace sockherd::supervisor {

class restart_backoff {
public:
    using duration = std::chrono::milliseconds;

    restart_backoff(duration min, duration max, duration healthy_after)
        : min_(min), max_(std::max(min, max)), healthy_after_(healthy_after) {}

    // The delay before restarting a worker that just exited after running for `uptime`.
    duration next(duration uptime) {
        if (uptime >= healthy_after_)
            failures_ = 0;
        duration delay = min_;
        for (unsigned i = 0; i < failures_ && delay < max_; ++i)
            delay *= 2;
        ++failures_;
        return std::min(delay, max_);
    }

    // The current worker has now run for `uptime`: once that is a healthy stretch, start over.
    void note_running(duration uptime) {
        if (uptime >= healthy_after_)
            failures_ = 0;
    }

    // Consecutive exits without a healthy stretch between them.
    unsigned consecutive_failures() const { return failures_; }

private:
    duration min_;
    duration max_;
    duration healthy_after_;
    unsigned failures_ = 0;
};

} // namespace sockherd::supervisor
