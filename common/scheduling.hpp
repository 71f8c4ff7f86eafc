#pragma once
// [server] worker_scheduling and supervisor_scheduling: the calling thread's Linux scheduling
// policy, SCHED_BATCH or SCHED_OTHER. SCHED_BATCH: a thread woken up does not preempt the task
// running on its CPU, so on a busy CPU it finds several events ready instead of waking once per
// event; on an idle CPU it changes nothing.

namespace sockherd {

struct scheduling_result {
    enum class outcome { unchanged, switched, kept, failed } what = outcome::unchanged;
    int found = 0; // kept: the policy the thread was started with
    int error = 0; // failed: errno of sched_setscheduler
};

// Switches the calling thread to SCHED_BATCH (batch) or SCHED_OTHER, keeping SCHED_RESET_ON_FORK.
// A thread started under another policy on purpose (chrt, systemd's CPUSchedulingPolicy=) keeps it.
scheduling_result set_thread_scheduling(bool batch);

} // namespace sockherd
