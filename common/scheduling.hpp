#pragma once
// [server] worker_scheduling and supervisor_scheduling: the calling thread's Linux scheduling
// policy, SCHED_BATCH or SCHED_OTHER. SCHED_BATCH: a thread woken up does not preempt the task
// running on its CPU, so on a busy CPU it finds several events ready instead of waking once per
// event; on an idle CPU it changes nothing.

#include <string_view>

namespace sockherd {

// Switches the calling thread to SCHED_BATCH (batch) or SCHED_OTHER, keeping SCHED_RESET_ON_FORK.
// A thread started under another policy on purpose (chrt, systemd's CPUSchedulingPolicy=) keeps
// it. What cannot be applied is logged once per `told` flag, naming `process` ("worker",
// "supervisor") and the setting `key`. True when the thread runs under the policy asked for.
bool apply_thread_scheduling(bool batch, std::string_view process, std::string_view key, bool& told);

} // namespace sockherd
