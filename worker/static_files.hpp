#pragma once
// Serves files for one `static` route: either a directory on disk or, when the route has no
// root, the demo files compiled into the binary (etc/www). Owned by a worker's route table;
// immutable after construction, so one instance serves every session of that worker.

#include <filesystem>
#include <optional>
#include <string>

#include "worker/response.hpp"

namespace sockherd::worker {

class static_files {
public:
    // `prefix` is the route path (e.g. "/" or "/assets/"); the rest of the request path is looked
    // up under `root`, or among the embedded www/ files when `root` is nullopt.
    static_files(std::string prefix, std::optional<std::filesystem::path> root);

    // GET and HEAD: 200 with Content-Type, Content-Length and ETag; 304 on a matching
    // If-None-Match; a directory serves its index.html. Any other method: 405 with Allow.
    // A path that is malformed, escapes the root (.., %2e%2e, symlinks out) or does not exist: 404.
    response handle(const request& req) const;

private:
    std::string prefix_;
    std::optional<std::filesystem::path> root_; // canonical
};

// The Content-Type for a file name, by extension; "application/octet-stream" when unknown.
std::string_view mime_type(std::string_view path);

} // namespace sockherd::worker
