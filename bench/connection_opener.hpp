#pragma once
// Opens a scenario's long-lived connections before the window, a bounded number at a time: the
// prepare step the echo, fanout and reload scenarios share. Owned by the scenario; runs on its
// process's io_context.

#include <algorithm>
#include <cstddef>
#include <functional>
#include <memory>
#include <utility>
#include <vector>

#include "bench/net.hpp"

namespace sockherd::bench {

class connection_opener {
public:
    // Connections opened at the same time; the rest wait for a free place.
    static constexpr std::size_t parallelism = 64;

    // Calls conns[i]->open(done) for every connection, at most `parallelism` outstanding, then
    // opened(ok) as each one finishes and all_done() once every one has (always from a handler,
    // posted when there are none). `conns` and the opener must outlive that; run at most once.
    template <class Connection>
    void open_all(net::io_context& ioc, const std::vector<std::shared_ptr<Connection>>& conns,
                  std::function<void(bool)> opened, std::function<void()> all_done) {
        open_one_ = [&conns](std::size_t i, std::function<void(bool)> done) { conns[i]->open(std::move(done)); };
        count_ = conns.size();
        opened_ = std::move(opened);
        all_done_ = std::move(all_done);
        if (count_ == 0)
            return net::post(ioc, std::exchange(all_done_, nullptr));
        for (std::size_t i = 0; i < std::min(count_, parallelism); ++i)
            open_next();
    }

private:
    void open_next() {
        if (next_ >= count_)
            return;
        open_one_(next_++, [this](bool ok) {
            opened_(ok);
            if (++finished_ == count_) {
                if (auto done = std::exchange(all_done_, nullptr))
                    done();
                return;
            }
            open_next();
        });
    }

    std::function<void(std::size_t, std::function<void(bool)>)> open_one_;
    std::function<void(bool)> opened_;
    std::function<void()> all_done_;
    std::size_t count_ = 0;
    std::size_t next_ = 0;
    std::size_t finished_ = 0;
};

} // namespace sockherd::bench
