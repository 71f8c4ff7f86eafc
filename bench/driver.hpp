#pragma once
// Runs one shard of a scenario in the calling process: prepare, wait at the barrier, measure for
// --duration, stop, drain. Every phase has a deadline, so it always returns.

#include <functional>

#include "bench/options.hpp"
#include "bench/results.hpp"

namespace sockherd::bench {

// barrier is called once between prepare and the window (with --procs N: wait until every
// process is ready); it may be empty.
run_result run_shard(const options& opt, const shard& part, const std::function<void()>& barrier);

} // namespace sockherd::bench
