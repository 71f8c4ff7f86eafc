#include "worker/response.hpp"

#include <string>
#include <utility>

namespace sockherd::worker {

string_response make_response(const request& req, http::status status, std::string body,
                              std::string_view content_type) {
    string_response res{status, req.version()};
    res.keep_alive(req.keep_alive());
    res.set(http::field::content_type, content_type);
    res.body() = std::move(body);
    res.prepare_payload();
    return res;
}

} // namespace sockherd::worker
