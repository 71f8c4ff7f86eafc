#include "worker/static_files.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <system_error>
#include <variant>
#include <vector>

#include <gtest/gtest.h>

namespace sw = sockherd::worker;
namespace fs = std::filesystem;
namespace http = sockherd::http;

namespace {

sw::request make_request(http::verb method, std::string_view target, unsigned version = 11) {
    sw::request req{method, target, version};
    req.set(http::field::host, "example.test");
    req.keep_alive(version == 11);
    return req;
}

void write_file(const fs::path& p, std::string_view content) {
    std::ofstream out(p, std::ios::binary);
    out << content;
}

// The body a response would send, whichever kind it is (empty for headers-only responses).
std::string body_of(sw::response& res) {
    if (auto* s = std::get_if<sw::string_response>(&res))
        return s->body();
    if (auto* f = std::get_if<sw::file_response>(&res)) {
        std::string out(f->body().size(), '\0');
        sockherd::error_code ec;
        const auto n = f->body().file().read(out.data(), out.size(), ec);
        EXPECT_FALSE(ec) << ec.message();
        out.resize(n);
        return out;
    }
    return {};
}

std::string body_of(sw::response&& res) { return body_of(res); }

const http::fields& headers_of(const sw::response& res) {
    return std::visit([](const auto& r) -> const http::fields& { return r; }, res);
}

http::status status_of(const sw::response& res) {
    return std::visit([](const auto& r) { return r.result(); }, res);
}

std::string header(const sw::response& res, http::field f) {
    return std::string(headers_of(res)[f]);
}

std::string header(const sw::response& res, std::string_view name) {
    return std::string(headers_of(res)[name]);
}

// A temporary tree:
//   base/www/            the root: hello.txt, a.css, index.html, sub/index.html, empty/,
//                        with space.txt, inside.txt -> hello.txt, escape.txt -> ../outside.txt,
//                        sibling.txt -> ../www2/secret.txt, outdir -> .. , fifo
//   base/outside.txt     must never be served
//   base/www2/secret.txt a sibling whose name has the root as a string prefix
class StaticFilesTest : public ::testing::Test {
protected:
    void SetUp() override {
        char tmpl[] = "/tmp/sockherd_static_XXXXXX";
        ASSERT_NE(::mkdtemp(tmpl), nullptr);
        base_ = tmpl;
        root_ = base_ / "www";
        fs::create_directories(root_ / "sub");
        fs::create_directories(root_ / "empty");
        fs::create_directories(base_ / "www2");
        write_file(root_ / "hello.txt", "hello world\n");
        write_file(root_ / "a.css", "body{color:red}");
        write_file(root_ / "index.html", "<h1>root index</h1>");
        write_file(root_ / "sub" / "index.html", "<h1>sub index</h1>");
        write_file(root_ / "with space.txt", "spaced");
        write_file(base_ / "outside.txt", "SECRET OUTSIDE");
        write_file(base_ / "www2" / "secret.txt", "SECRET SIBLING");
        fs::create_symlink("hello.txt", root_ / "inside.txt");
        fs::create_symlink("../outside.txt", root_ / "escape.txt");
        fs::create_symlink("../www2/secret.txt", root_ / "sibling.txt");
        fs::create_directory_symlink("..", root_ / "outdir");
        ASSERT_EQ(::mkfifo((root_ / "fifo").c_str(), 0600), 0);
    }

    void TearDown() override {
        std::error_code ec;
        fs::remove_all(base_, ec);
    }

    sw::response get(std::string_view target, const std::string& prefix = "/") {
        return sw::static_files(prefix, root_).handle(make_request(http::verb::get, target));
    }

    fs::path base_;
    fs::path root_;
};

TEST_F(StaticFilesTest, ServesFileWithHeaders) {
    auto res = get("/hello.txt");
    ASSERT_TRUE(std::holds_alternative<sw::file_response>(res));
    EXPECT_EQ(status_of(res), http::status::ok);
    EXPECT_EQ(body_of(res), "hello world\n");
    EXPECT_EQ(header(res, http::field::content_type), "text/plain; charset=utf-8");
    EXPECT_EQ(header(res, http::field::content_length), "12");
    EXPECT_EQ(header(res, http::field::cache_control), "no-cache");
    EXPECT_EQ(header(res, "X-Content-Type-Options"), "nosniff");
    EXPECT_EQ(header(res, http::field::server), "");
    const auto etag = header(res, http::field::etag);
    EXPECT_EQ(etag.front(), '"');
    EXPECT_EQ(etag.back(), '"');
    EXPECT_TRUE(etag.starts_with("\"c-")) << etag; // 12 bytes = 0xc, then the mtime
    const auto& r = std::get<sw::file_response>(res);
    EXPECT_EQ(r.version(), 11u);
    EXPECT_TRUE(r.keep_alive());
}

TEST_F(StaticFilesTest, CopiesVersionAndKeepAliveFromRequest) {
    auto res = sw::static_files("/", root_).handle(make_request(http::verb::get, "/a.css", 10));
    ASSERT_TRUE(std::holds_alternative<sw::file_response>(res));
    const auto& r = std::get<sw::file_response>(res);
    EXPECT_EQ(r.version(), 10u);
    EXPECT_FALSE(r.keep_alive());
    EXPECT_EQ(header(res, http::field::content_type), "text/css; charset=utf-8");
    EXPECT_EQ(body_of(res), "body{color:red}");

    auto missing = sw::static_files("/", root_).handle(make_request(http::verb::get, "/nope", 10));
    EXPECT_EQ(std::get<sw::string_response>(missing).version(), 10u);
    EXPECT_FALSE(std::get<sw::string_response>(missing).keep_alive());
}

TEST_F(StaticFilesTest, DirectoriesServeTheirIndex) {
    auto root = get("/");
    EXPECT_EQ(status_of(root), http::status::ok);
    EXPECT_EQ(body_of(root), "<h1>root index</h1>");
    EXPECT_EQ(header(root, http::field::content_type), "text/html; charset=utf-8");

    auto sub = get("/sub/");
    EXPECT_EQ(status_of(sub), http::status::ok);
    EXPECT_EQ(body_of(sub), "<h1>sub index</h1>");

    auto sub_no_slash = get("/sub");
    EXPECT_EQ(status_of(sub_no_slash), http::status::ok);
    EXPECT_EQ(body_of(sub_no_slash), "<h1>sub index</h1>");
    EXPECT_EQ(header(sub_no_slash, http::field::content_type), "text/html; charset=utf-8");

    EXPECT_EQ(status_of(get("/empty/")), http::status::not_found); // no index.html in it
}

TEST_F(StaticFilesTest, IgnoresQueryAndFragmentAndDecodesOnce) {
    auto res = get("/a.css?v=3#top");
    EXPECT_EQ(status_of(res), http::status::ok);
    EXPECT_EQ(body_of(res), "body{color:red}");
    EXPECT_EQ(body_of(get("/?x=1")), "<h1>root index</h1>");
    EXPECT_EQ(body_of(get("/with%20space.txt")), "spaced");
    EXPECT_EQ(body_of(get("/%68ello.txt")), "hello world\n");
    EXPECT_EQ(body_of(get("//sub//./index.html")), "<h1>sub index</h1>");
    // Decoded once: %252e%252e is the literal name "%2e%2e", which does not exist.
    EXPECT_EQ(status_of(get("/%252e%252e/outside.txt")), http::status::not_found);
}

TEST_F(StaticFilesTest, MissingFileIs404) {
    auto res = get("/missing.txt");
    ASSERT_TRUE(std::holds_alternative<sw::string_response>(res));
    EXPECT_EQ(status_of(res), http::status::not_found);
    EXPECT_EQ(body_of(res), "not found\n");
    EXPECT_EQ(header(res, http::field::content_type), "text/plain; charset=utf-8");
    EXPECT_EQ(header(res, http::field::content_length), "10");
    EXPECT_EQ(status_of(get("/sub/missing.html")), http::status::not_found);
    EXPECT_EQ(status_of(get("/hello.txt/x")), http::status::not_found);
}

TEST_F(StaticFilesTest, RejectsTraversalAndMalformedPaths) {
    for (const char* target : {
             "/../outside.txt",
             "/%2e%2e/outside.txt",
             "/%2E%2E/outside.txt",
             "/.%2e/outside.txt",
             "/sub/..%2f..%2foutside.txt",
             "/sub/%2e%2e/%2e%2e/etc/passwd",
             "/sub/../hello.txt", // even when it would stay inside
             "/..",
             "/sub\\..\\hello.txt",
             "/hello%5ctxt",
             "/%zz",
             "/hello.txt%",
             "/hello.txt%4",
             "/%00",
             "/hello.txt%00.html",
             "hello.txt",                  // not origin-form
             "http://example.test/hello.txt", // absolute-form is not ours to map
         }) {
        auto res = get(target);
        EXPECT_EQ(status_of(res), http::status::not_found) << target;
        EXPECT_EQ(body_of(res), "not found\n") << target;
    }
}

TEST_F(StaticFilesTest, SymlinksMustStayInsideRoot) {
    EXPECT_EQ(status_of(get("/escape.txt")), http::status::not_found);
    EXPECT_EQ(status_of(get("/sibling.txt")), http::status::not_found); // "/…/www2" is not in "/…/www"
    EXPECT_EQ(status_of(get("/outdir/outside.txt")), http::status::not_found);
    EXPECT_EQ(status_of(get("/outdir/www/hello.txt")), http::status::ok); // resolves back inside

    auto inside = get("/inside.txt");
    EXPECT_EQ(status_of(inside), http::status::ok);
    EXPECT_EQ(body_of(inside), "hello world\n");
}

TEST_F(StaticFilesTest, OnlyRegularFilesAreServed) {
    EXPECT_EQ(status_of(get("/fifo")), http::status::not_found);
}

TEST_F(StaticFilesTest, RootWithSymlinkIsCanonicalized) {
    fs::create_directory_symlink(root_, base_ / "alias");
    auto res = sw::static_files("/", base_ / "alias").handle(make_request(http::verb::get, "/hello.txt"));
    EXPECT_EQ(status_of(res), http::status::ok);
    EXPECT_EQ(body_of(res), "hello world\n");
}

TEST_F(StaticFilesTest, MissingRootServesNothing) {
    sw::static_files files("/", base_ / "does-not-exist");
    EXPECT_EQ(status_of(files.handle(make_request(http::verb::get, "/"))), http::status::not_found);
    EXPECT_EQ(status_of(files.handle(make_request(http::verb::get, "/hello.txt"))),
              http::status::not_found);
}

TEST_F(StaticFilesTest, PrefixRouteMapsBelowRoot) {
    auto res = get("/assets/a.css", "/assets/");
    EXPECT_EQ(status_of(res), http::status::ok);
    EXPECT_EQ(body_of(res), "body{color:red}");
    EXPECT_EQ(body_of(get("/assets/", "/assets/")), "<h1>root index</h1>");
    EXPECT_EQ(body_of(get("/assets/sub/", "/assets/")), "<h1>sub index</h1>");
    EXPECT_EQ(status_of(get("/a.css", "/assets/")), http::status::not_found);
    EXPECT_EQ(status_of(get("/assets", "/assets/")), http::status::not_found);
    EXPECT_EQ(status_of(get("/assets/../a.css", "/assets/")), http::status::not_found);

    // A prefix without a trailing slash matches whole segments only.
    EXPECT_EQ(body_of(get("/assets/a.css", "/assets")), "body{color:red}");
    EXPECT_EQ(status_of(get("/assetsa.css", "/assets")), http::status::not_found);
}

TEST_F(StaticFilesTest, HeadHasHeadersAndNoBody) {
    sw::static_files files("/", root_);
    auto got = files.handle(make_request(http::verb::get, "/hello.txt"));
    auto res = files.handle(make_request(http::verb::head, "/hello.txt"));
    ASSERT_TRUE(std::holds_alternative<sw::empty_response>(res));
    EXPECT_EQ(status_of(res), http::status::ok);
    EXPECT_EQ(header(res, http::field::content_length), "12");
    EXPECT_EQ(header(res, http::field::content_type), "text/plain; charset=utf-8");
    EXPECT_EQ(header(res, http::field::etag), header(got, http::field::etag));
    EXPECT_EQ(header(res, http::field::cache_control), "no-cache");
    EXPECT_EQ(header(res, "X-Content-Type-Options"), "nosniff");
}

TEST_F(StaticFilesTest, IfNoneMatchRevalidates) {
    sw::static_files files("/", root_);
    const auto etag = header(files.handle(make_request(http::verb::get, "/hello.txt")), http::field::etag);
    ASSERT_FALSE(etag.empty());

    const std::vector<std::string> matching{etag, "\"other\", " + etag, "W/" + etag, "*",
                                            "\"a\" ,\t" + etag + " , \"b\""};
    for (const auto& inm : matching) {
        auto req = make_request(http::verb::get, "/hello.txt");
        req.set(http::field::if_none_match, inm);
        auto res = files.handle(req);
        ASSERT_TRUE(std::holds_alternative<sw::empty_response>(res)) << inm;
        EXPECT_EQ(status_of(res), http::status::not_modified) << inm;
        EXPECT_EQ(header(res, http::field::etag), etag);
        EXPECT_EQ(header(res, http::field::content_length), "");
    }
    const std::vector<std::string> different{"\"other\"", "", "\"a\", \"b\"", etag + "x"};
    for (const auto& inm : different) {
        auto req = make_request(http::verb::get, "/hello.txt");
        req.set(http::field::if_none_match, inm);
        auto res = files.handle(req);
        EXPECT_EQ(status_of(res), http::status::ok) << inm;
        EXPECT_EQ(body_of(res), "hello world\n");
    }
}

TEST_F(StaticFilesTest, EtagChangesWithContent) {
    sw::static_files files("/", root_);
    const auto before = header(files.handle(make_request(http::verb::get, "/a.css")), http::field::etag);
    write_file(root_ / "a.css", "body{color:blue}");
    const auto after = header(files.handle(make_request(http::verb::get, "/a.css")), http::field::etag);
    EXPECT_NE(before, after);
    EXPECT_TRUE(after.starts_with("\"10-")) << after; // 16 bytes
}

TEST_F(StaticFilesTest, OtherMethodsAre405) {
    sw::static_files files("/", root_);
    for (auto method : {http::verb::post, http::verb::put, http::verb::delete_, http::verb::options}) {
        auto res = files.handle(make_request(method, "/hello.txt"));
        ASSERT_TRUE(std::holds_alternative<sw::string_response>(res));
        EXPECT_EQ(status_of(res), http::status::method_not_allowed);
        EXPECT_EQ(header(res, http::field::allow), "GET, HEAD");
    }
}

// A root this process cannot serve from says why (the worker logs it), and every request is a 404.
// (Permissions are not tried here: the tests may run as root, which reads anything.)
TEST_F(StaticFilesTest, RootProblemSaysWhyTheRootCannotBeServed) {
    EXPECT_EQ(sw::static_files("/", root_).root_problem(), "");
    EXPECT_EQ(sw::static_files("/", std::nullopt).root_problem(), "");

    const sw::static_files missing("/", base_ / "nope");
    EXPECT_EQ(missing.root_problem(), std::error_code(ENOENT, std::generic_category()).message());
    EXPECT_EQ(status_of(missing.handle(make_request(http::verb::get, "/"))), http::status::not_found);

    const sw::static_files file_root("/", root_ / "hello.txt");
    EXPECT_EQ(file_root.root_problem(), "not a directory");
    EXPECT_EQ(status_of(file_root.handle(make_request(http::verb::get, "/"))), http::status::not_found);
}

TEST(StaticFilesEmbedded, ServesDemoPage) {
    sw::static_files files("/", std::nullopt);
    auto res = files.handle(make_request(http::verb::get, "/"));
    ASSERT_TRUE(std::holds_alternative<sw::string_response>(res));
    EXPECT_EQ(status_of(res), http::status::ok);
    const auto body = body_of(res);
    EXPECT_NE(body.find("<title>sockherd chat</title>"), std::string::npos);
    EXPECT_EQ(header(res, http::field::content_type), "text/html; charset=utf-8");
    EXPECT_EQ(header(res, http::field::content_length), std::to_string(body.size()));
    EXPECT_EQ(header(res, "X-Content-Type-Options"), "nosniff");
    const auto etag = header(res, http::field::etag);
    EXPECT_GE(etag.size(), 3u);
    EXPECT_EQ(etag.front(), '"');

    EXPECT_EQ(body_of(files.handle(make_request(http::verb::get, "/index.html?x"))), body);

    auto head = files.handle(make_request(http::verb::head, "/"));
    ASSERT_TRUE(std::holds_alternative<sw::empty_response>(head));
    EXPECT_EQ(header(head, http::field::content_length), std::to_string(body.size()));
    EXPECT_EQ(header(head, http::field::etag), etag);

    auto req = make_request(http::verb::get, "/index.html");
    req.set(http::field::if_none_match, etag);
    EXPECT_EQ(status_of(files.handle(req)), http::status::not_modified);
}

TEST(StaticFilesEmbedded, OnlyWwwIsReachable) {
    sw::static_files files("/", std::nullopt);
    for (const char* target : {"/missing.html", "/default.toml", "/../default.toml", "/%2e%2e/default.toml",
                               "/www/index.html"}) {
        EXPECT_EQ(status_of(files.handle(make_request(http::verb::get, target))), http::status::not_found)
            << target;
    }
    EXPECT_EQ(status_of(files.handle(make_request(http::verb::post, "/"))),
              http::status::method_not_allowed);
}

TEST(MimeType, KnownExtensions) {
    EXPECT_EQ(sw::mime_type("index.html"), "text/html; charset=utf-8");
    EXPECT_EQ(sw::mime_type("/a/b/style.css"), "text/css; charset=utf-8");
    EXPECT_EQ(sw::mime_type("app.js"), "text/javascript; charset=utf-8");
    EXPECT_EQ(sw::mime_type("data.json"), "application/json");
    EXPECT_EQ(sw::mime_type("app.js.map"), "application/json");
    EXPECT_EQ(sw::mime_type("logo.svg"), "image/svg+xml");
    EXPECT_EQ(sw::mime_type("a.png"), "image/png");
    EXPECT_EQ(sw::mime_type("a.jpg"), "image/jpeg");
    EXPECT_EQ(sw::mime_type("a.jpeg"), "image/jpeg");
    EXPECT_EQ(sw::mime_type("a.gif"), "image/gif");
    EXPECT_EQ(sw::mime_type("a.webp"), "image/webp");
    EXPECT_EQ(sw::mime_type("favicon.ico"), "image/x-icon");
    EXPECT_EQ(sw::mime_type("notes.txt"), "text/plain; charset=utf-8");
    EXPECT_EQ(sw::mime_type("mod.wasm"), "application/wasm");
    EXPECT_EQ(sw::mime_type("font.woff2"), "font/woff2");
}

TEST(MimeType, CaseInsensitiveAndFallback) {
    EXPECT_EQ(sw::mime_type("PHOTO.JPG"), "image/jpeg");
    EXPECT_EQ(sw::mime_type("Index.HtMl"), "text/html; charset=utf-8");
    EXPECT_EQ(sw::mime_type("archive.tar.gz"), "application/octet-stream");
    EXPECT_EQ(sw::mime_type("README"), "application/octet-stream");
    EXPECT_EQ(sw::mime_type("trailing."), "application/octet-stream");
    EXPECT_EQ(sw::mime_type("dir.css/file"), "application/octet-stream");
    EXPECT_EQ(sw::mime_type(".css"), "text/css; charset=utf-8");
    EXPECT_EQ(sw::mime_type(""), "application/octet-stream");
}

} // namespace
