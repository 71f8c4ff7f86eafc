#pragma once
// common/net.hpp for the load generator. With optimisation, GCC 12 reports false positives inside
// Boost 1.74 wherever its code gets inlined: a "potential null pointer dereference" in Asio's
// scheduler (scheduler.ipp, compensating_work_started) and, with the sanitizers, "may be used
// uninitialized" in Beast's HTTP parser (basic_parser.hpp, content_length_unchecked). They are
// silenced for Boost's code only; ours keeps every warning.

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wnull-dereference"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include "common/net.hpp"
#pragma GCC diagnostic pop
