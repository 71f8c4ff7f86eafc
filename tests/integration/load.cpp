#include "tests/integration/load.hpp"

#include <chrono>

namespace sockherd::test {

using namespace std::chrono_literals;

prober::prober(std::uint16_t port, mode m) : port_(port), mode_(m) {
    thread_ = std::thread([this] { loop(); });
}

void prober::stop() {
    stop_ = true;
    if (thread_.joinable())
        thread_.join();
}

std::string prober::summary() const {
    return std::to_string(attempts_) + " attempts, " + std::to_string(ok_) + " ok; refused: " + refused_.str() +
        "; other failures: " + failed_.str();
}

void prober::loop() {
    for (std::size_t i = 0; !stop_ && i < 1'000'000; ++i) {
        ++attempts_;
        const bool ws = mode_ == mode::websocket || (mode_ == mode::both && i % 2 == 1);
        if (ws ? try_websocket(i) : try_http(i))
            ++ok_;
        std::this_thread::sleep_for(5ms); // pacing, not synchronization
    }
}

bool prober::try_http(std::size_t i) {
    const auto r = http_get(port_, "/healthz", {}, 3s);
    if (r.ec == net::error::connection_refused) {
        refused_.add("GET " + std::to_string(i) + ": " + describe(r));
        return false;
    }
    if (!r.ok() || r.status != 200 || !parse_health(r.body)) {
        failed_.add("GET /healthz " + std::to_string(i) + ": " + describe(r));
        return false;
    }
    return true;
}

bool prober::try_websocket(std::size_t i) {
    ws_client c;
    if (auto ec = c.connect(port_, "/echo", 3s)) {
        (ec == net::error::connection_refused ? refused_ : failed_)
            .add("WebSocket " + std::to_string(i) + " connect: " + ec.message());
        return false;
    }
    if (auto why = c.echo("probe " + std::to_string(i), true, 3s); !why.empty()) {
        failed_.add("WebSocket " + std::to_string(i) + " on worker " + std::to_string(c.worker().value_or(99)) +
                    ": " + why);
        return false;
    }
    if (auto ec = c.close(websocket::close_code::normal, 3s)) {
        failed_.add("WebSocket " + std::to_string(i) + " close: " + ec.message());
        return false;
    }
    return true;
}

} // namespace sockherd::test
