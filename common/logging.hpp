#pragma once
// Process-wide logging: every line names the process that wrote it ("supervisor", "worker 3").
// All processes write to stderr, which the supervisor's workers inherit (journald in a service).

#include <string>

#include "common/config.hpp"

namespace sockherd {

// Installs the default spdlog logger for this process. Safe to call again to change the format.
void init_logging(const std::string& process_name, log_format format = log_format::text);

// Applies [log] level and format from a config.
void apply_log_config(const std::string& process_name, const config& cfg);

} // namespace sockherd
