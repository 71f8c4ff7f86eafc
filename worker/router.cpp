#include "worker/router.hpp"

#include <algorithm>

namespace sockherd::worker {

router::router(const config& cfg) {
    for (const auto& rc : cfg.routes) {
        route r{rc, nullptr};
        if (rc.kind == route_kind::static_files) {
            std::optional<std::filesystem::path> root;
            if (rc.root)
                root = *rc.root;
            r.files = std::make_unique<static_files>(rc.path, root);
        }
        routes_.push_back(std::move(r));
    }
    std::stable_sort(routes_.begin(), routes_.end(),
                     [](const route& a, const route& b) { return a.config.path.size() > b.config.path.size(); });
}

const route* router::match(std::string_view path) const {
    for (const auto& r : routes_) {
        const std::string_view p = r.config.path;
        if (path.size() < p.size() || path.compare(0, p.size(), p) != 0)
            continue;
        if (path.size() == p.size() || p.back() == '/' || path[p.size()] == '/')
            return &r;
    }
    return nullptr;
}

std::vector<std::string> router::problems() const {
    std::vector<std::string> out;
    for (const auto& r : routes_)
        if (r.files && !r.files->root_problem().empty())
            out.push_back("static route \"" + r.config.path + "\": root " + r.config.root.value_or("") + ": " +
                          r.files->root_problem());
    return out;
}

std::string_view target_path(std::string_view target) {
    const auto end = target.find_first_of("?#");
    return end == std::string_view::npos ? target : target.substr(0, end);
}

} // namespace sockherd::worker
