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

    // Why the root cannot be served from, as seen by this process ("Permission denied", "not a
    // directory"); empty when it can (or there is no root). Every request is then a 404.
    const std::string& root_problem() const { return root_problem_; }

private:
    std::string prefix_;
    std::optional<std::filesystem::path> root_; // canonical
    std::string root_problem_;
};

// The Content-Type for a file name, by extension; "application/octet-stream" when unknown.
std::string_view mime_type(std::string_view path);

} // namespace sockherd::worker
