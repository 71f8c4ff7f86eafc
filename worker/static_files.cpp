#include "worker/static_files.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

#include "common/embedded.hpp"
#include "common/percent.hpp"

namespace sockherd::worker {

namespace fs = std::filesystem;

namespace {

// We hand Beast a descriptor opened by us (O_CLOEXEC | O_NOFOLLOW), which needs the POSIX file.
static_assert(std::is_same_v<beast::file, beast::file_posix>, "static_files needs beast::file_posix");

constexpr std::string_view index_name = "index.html";

// The part of a request target below the route prefix, decoded and checked: only plain segments,
// never "..", a backslash or a NUL. `directory` when the target names a directory ("", "/", "x/").
struct relative_path {
    std::vector<std::string> segments;
    bool directory = false;
};

// Maps a request target onto a path below `prefix`; nullopt for anything that must be a 404.
std::optional<relative_path> parse_target(std::string_view target, std::string_view prefix) {
    target = target.substr(0, target.find_first_of("?#"));
    if (target.empty() || target.front() != '/' || !target.starts_with(prefix))
        return std::nullopt;
    std::string_view rest = target.substr(prefix.size());
    // A prefix without a trailing slash ("/assets") must not match "/assetsfoo".
    if (!prefix.empty() && prefix.back() != '/' && !rest.empty() && rest.front() != '/')
        return std::nullopt;

    auto decoded = percent_decode(rest);
    if (!decoded || decoded->find('\\') != std::string::npos)
        return std::nullopt;

    relative_path out;
    out.directory = true; // until a plain segment ends the path
    std::string_view path = *decoded;
    while (true) {
        const auto slash = path.find('/');
        const std::string_view segment = path.substr(0, slash);
        if (segment == "..")
            return std::nullopt;
        if (segment.empty() || segment == ".") {
            out.directory = true;
        } else {
            out.segments.emplace_back(segment);
            out.directory = false;
        }
        if (slash == std::string_view::npos)
            break;
        path.remove_prefix(slash + 1);
    }
    return out;
}

// True when `p` is `root` or below it, compared component by component.
bool is_within(const fs::path& root, const fs::path& p) {
    return std::mismatch(root.begin(), root.end(), p.begin(), p.end()).first == root.end();
}

std::string to_hex(std::uint64_t v) {
    static constexpr char digits[] = "0123456789abcdef";
    std::string out;
    do {
        out.insert(out.begin(), digits[v & 0xf]);
        v >>= 4;
    } while (v != 0);
    return out;
}

std::uint64_t fnv1a_64(std::string_view data) {
    std::uint64_t h = 0xcbf29ce484222325ULL;
    for (const unsigned char c : data) {
        h ^= c;
        h *= 0x100000001b3ULL;
    }
    return h;
}

std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t'))
        s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t'))
        s.remove_suffix(1);
    return s;
}

// If-None-Match uses the weak comparison (RFC 9110 13.1.2): W/ prefixes are ignored.
bool etag_matches(std::string_view if_none_match, std::string_view etag) {
    while (true) {
        const auto comma = if_none_match.find(',');
        std::string_view tag = trim(if_none_match.substr(0, comma));
        if (tag == "*")
            return true;
        if (tag.starts_with("W/"))
            tag.remove_prefix(2);
        if (!tag.empty() && tag == etag)
            return true;
        if (comma == std::string_view::npos)
            return false;
        if_none_match.remove_prefix(comma + 1);
    }
}

template <class Body>
void set_file_headers(http::response<Body>& res, std::string_view content_type,
                      std::string_view etag) {
    res.set(http::field::content_type, content_type);
    res.set(http::field::etag, etag);
    res.set(http::field::cache_control, "no-cache");
    res.set("X-Content-Type-Options", "nosniff");
}

string_response text_response(const request& req, http::status status, std::string body) {
    auto res = make_response(req, status, std::move(body));
    res.set(http::field::cache_control, "no-cache");
    res.set("X-Content-Type-Options", "nosniff");
    return res;
}

string_response not_found(const request& req) {
    return text_response(req, http::status::not_found, "not found\n");
}

// The 304 or HEAD answer, which carry a file's headers and no body.
empty_response headers_only(const request& req, http::status status, std::string_view type,
                            std::string_view etag) {
    empty_response res{status, req.version()};
    res.keep_alive(req.keep_alive());
    set_file_headers(res, type, etag);
    return res;
}

bool is_not_found_errno(int e) {
    return e == ENOENT || e == ENOTDIR || e == EACCES || e == EPERM || e == ELOOP ||
           e == ENAMETOOLONG || e == ENXIO;
}

} // namespace

std::string_view mime_type(std::string_view path) {
    static constexpr std::array<std::pair<std::string_view, std::string_view>, 18> types{{
        {"html", "text/html; charset=utf-8"},
        {"htm", "text/html; charset=utf-8"},
        {"css", "text/css; charset=utf-8"},
        {"js", "text/javascript; charset=utf-8"},
        {"mjs", "text/javascript; charset=utf-8"},
        {"json", "application/json"},
        {"map", "application/json"},
        {"svg", "image/svg+xml"},
        {"png", "image/png"},
        {"jpg", "image/jpeg"},
        {"jpeg", "image/jpeg"},
        {"gif", "image/gif"},
        {"webp", "image/webp"},
        {"ico", "image/x-icon"},
        {"txt", "text/plain; charset=utf-8"},
        {"wasm", "application/wasm"},
        {"woff2", "font/woff2"},
        {"woff", "font/woff"},
    }};
    constexpr std::string_view fallback = "application/octet-stream";

    const auto slash = path.find_last_of('/');
    const std::string_view name = slash == std::string_view::npos ? path : path.substr(slash + 1);
    const auto dot = name.find_last_of('.');
    if (dot == std::string_view::npos || dot + 1 == name.size())
        return fallback;
    const std::string_view ext = name.substr(dot + 1);
    for (const auto& [known, type] : types) {
        if (known.size() == ext.size() &&
            std::equal(known.begin(), known.end(), ext.begin(), [](char a, char b) {
                return a == (b >= 'A' && b <= 'Z' ? static_cast<char>(b - 'A' + 'a') : b);
            }))
            return type;
    }
    return fallback;
}

static_files::static_files(std::string prefix, std::optional<fs::path> root)
    : prefix_(std::move(prefix)), root_(std::move(root)) {
    if (!root_)
        return;
    std::error_code ec;
    auto canonical = fs::canonical(*root_, ec);
    if (ec) {
        root_problem_ = ec.message(); // kept as given: every request is a 404
        return;
    }
    root_ = std::move(canonical);
    // A worker runs as [server] user: the root must be readable and searchable by it, not only by
    // whoever wrote the config. access() checks for our real uid, which is that user.
    if (!fs::is_directory(*root_, ec))
        root_problem_ = ec ? ec.message() : "not a directory";
    else if (::access(root_->c_str(), R_OK | X_OK) != 0)
        root_problem_ = std::strerror(errno);
}

response static_files::handle(const request& req) const {
    if (req.method() != http::verb::get && req.method() != http::verb::head) {
        auto res = text_response(req, http::status::method_not_allowed, "method not allowed\n");
        res.set(http::field::allow, "GET, HEAD");
        return res;
    }
    const bool head = req.method() == http::verb::head;

    auto rel = parse_target(req.target(), prefix_);
    if (!rel)
        return not_found(req);
    if (rel->directory)
        rel->segments.emplace_back(index_name);
    const auto inm = req.find(http::field::if_none_match);

    if (!root_) {
        // Embedded mode: the files under etc/www compiled into the binary.
        std::string key = "www";
        for (const auto& s : rel->segments)
            key.append("/").append(s);
        auto data = assets::find(key);
        if (!data && !rel->directory) {
            key.append("/").append(index_name);
            data = assets::find(key);
        }
        if (!data)
            return not_found(req);
        const std::string_view type = mime_type(key);
        const std::string etag = "\"" + to_hex(fnv1a_64(*data)) + "\"";
        if (inm != req.end() && etag_matches(inm->value(), etag))
            return headers_only(req, http::status::not_modified, type, etag);
        if (head) {
            auto res = headers_only(req, http::status::ok, type, etag);
            res.content_length(data->size());
            return res;
        }
        string_response res{http::status::ok, req.version()};
        res.keep_alive(req.keep_alive());
        set_file_headers(res, type, etag);
        res.body().assign(data->data(), data->size());
        res.prepare_payload();
        return res;
    }

    // Disk mode: resolve symlinks, then insist the result is still under the root.
    fs::path candidate = *root_;
    for (const auto& s : rel->segments)
        candidate /= s;
    std::error_code fec;
    fs::path file = fs::canonical(candidate, fec);
    if (fec || !is_within(*root_, file))
        return not_found(req);
    // The Content-Type follows the name asked for, not the target of a symlink.
    std::string_view name = rel->segments.back();
    if (fs::is_directory(file, fec)) {
        name = index_name;
        file = fs::canonical(file / index_name, fec);
        if (fec || !is_within(*root_, file))
            return not_found(req);
    }
    if (!fs::is_regular_file(file, fec))
        return not_found(req);

    // O_NONBLOCK: should the file have been swapped for a FIFO since the check, open must not hang.
    int fd = -1;
    do
        fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    while (fd < 0 && errno == EINTR);
    if (fd < 0) {
        if (is_not_found_errno(errno))
            return not_found(req);
        return text_response(req, http::status::internal_server_error, "internal server error\n");
    }
    beast::file f;
    f.native_handle(fd); // owned from here on

    struct stat st {};
    if (::fstat(fd, &st) != 0)
        return text_response(req, http::status::internal_server_error, "internal server error\n");
    if (!S_ISREG(st.st_mode))
        return not_found(req);
    const auto size = static_cast<std::uint64_t>(st.st_size);
    const auto mtime_ns = static_cast<std::uint64_t>(st.st_mtim.tv_sec) * 1'000'000'000ULL +
                          static_cast<std::uint64_t>(st.st_mtim.tv_nsec);
    const std::string etag = "\"" + to_hex(size) + "-" + to_hex(mtime_ns) + "\"";
    const std::string_view type = mime_type(name);

    if (inm != req.end() && etag_matches(inm->value(), etag))
        return headers_only(req, http::status::not_modified, type, etag);
    if (head) {
        auto res = headers_only(req, http::status::ok, type, etag);
        res.content_length(size);
        return res;
    }
    file_response res{http::status::ok, req.version()};
    res.keep_alive(req.keep_alive());
    set_file_headers(res, type, etag);
    error_code ec;
    res.body().reset(std::move(f), ec);
    if (ec)
        return text_response(req, http::status::internal_server_error, "internal server error\n");
    res.prepare_payload();
    return res;
}

} // namespace sockherd::worker
