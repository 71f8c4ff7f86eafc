#pragma once
// A worker's route table, built from one config generation and immutable afterwards: sessions
// hold a shared_ptr to the table they started with.

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/config.hpp"
#include "worker/static_files.hpp"

namespace sockherd::worker {

struct route {
    route_config config;
    std::unique_ptr<static_files> files; // kind static only
};

class router {
public:
    explicit router(const config& cfg);

    // The route for a request path: the longest route path that is the whole path, or a prefix
    // of it ending at '/' (route "/echo" matches "/echo" and "/echo/x", not "/echoes").
    const route* match(std::string_view path) const;

    // One line per static route whose root this process cannot serve from (see static_files).
    std::vector<std::string> problems() const;

private:
    std::vector<route> routes_; // longest path first
};

// The path part of a request target (no query, no fragment).
std::string_view target_path(std::string_view target);

} // namespace sockherd::worker
