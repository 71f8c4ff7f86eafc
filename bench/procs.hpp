#pragma once
// --procs N: forks N load generator processes, each running one shard on its own single-threaded
// io_context, holds them at a barrier until all are prepared, and merges what each sends back
// through its pipe (counts add up, histograms merge exactly).

#include <vector>

#include "bench/options.hpp"
#include "bench/results.hpp"

namespace sockherd::bench {

// Splits --concurrency and --connections over the processes as evenly as possible.
std::vector<shard> make_shards(const options& opt);

// Runs every shard in a child process and returns the merged result. A child that fails or
// overruns is counted in the result's errors ("child:…") and described on stderr; the children
// are always reaped before this returns.
run_result run_forked(const options& opt);

} // namespace sockherd::bench
