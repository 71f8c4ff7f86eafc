#include "bench/driver.hpp"

#include <cstdio>
#include <string>

#include "bench/load_context.hpp"
#include "bench/scenario.hpp"

namespace sockherd::bench {
namespace {

constexpr std::chrono::milliseconds poll_step{100};
// After abort(): how long pending operations get to complete with operation_aborted.
constexpr std::chrono::seconds abort_grace{2};
// Beyond the drain timeout, for the scenario's own drain timers to fire on a loaded machine.
constexpr std::chrono::seconds drain_margin{1};

// Runs handlers until done() or the deadline; false if the deadline came first.
template <class Done>
bool run_until(net::io_context& ioc, clock::time_point deadline, Done done) {
    while (!done()) {
        if (clock::now() >= deadline)
            return false;
        if (ioc.stopped())
            ioc.restart();
        if (ioc.run_one_for(poll_step) == 0 && ioc.stopped())
            return done(); // no work left that could make done() true
    }
    return true;
}

// --ready-file: tells a script that every process is prepared and the window has begun (the
// idle scenario's memory samples), with the wall clock time. Written to a temporary name and
// renamed, so the file never appears half written. A failure is counted, never fatal.
void write_ready_file(const std::string& path, run_result& r) {
    const std::string tmp = path + ".tmp";
    std::FILE* f = std::fopen(tmp.c_str(), "w");
    bool ok = f != nullptr;
    if (f != nullptr) {
        ok = std::fprintf(f, "window_start_unix %.3f\n", r.window_start_unix) > 0;
        ok = std::fclose(f) == 0 && ok;
    }
    if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0)
        r.add_error("ready_file:write");
}

} // namespace

run_result run_shard(const options& opt, const shard& part, const std::function<void()>& barrier) {
    net::io_context ioc(1);
    load_context ctx(ioc, opt, part);
    const auto* info = find_scenario(opt.scenario);
    if (info == nullptr) {
        ctx.result().add_error("unknown_scenario");
        return ctx.result();
    }
    auto sc = info->make(ctx);

    bool ready = false;
    sc->prepare([&ready] { ready = true; });
    if (!run_until(ioc, clock::now() + opt.setup_timeout(), [&] { return ready; }))
        ctx.result().add_error("setup:timeout");

    if (barrier)
        barrier();

    ctx.open_window(clock::now());
    if (part.index == 0 && !opt.ready_file.empty())
        write_ready_file(opt.ready_file, ctx.result());
    sc->start();
    net::steady_timer window_timer(ioc);
    window_timer.expires_at(ctx.window_end());
    bool window_over = false;
    window_timer.async_wait([&](error_code) {
        window_over = true;
        sc->stop();
    });
    // The window, then the drain: the io_context runs out of work when the scenario is done.
    const auto drain_deadline = ctx.window_end() + opt.drain_timeout() + drain_margin;
    if (ioc.stopped())
        ioc.restart();
    ioc.run_until(drain_deadline);
    if (!ioc.stopped()) {
        if (!window_over) { // the timer never ran: the process was starved for the whole drain time
            window_timer.cancel();
            sc->stop();
        }
        ctx.result().add_error("drain:overrun");
        sc->abort();
        ioc.run_for(abort_grace);
    }
    auto& r = ctx.result();
    r.rate = r.window_s > 0 ? static_cast<double>(r.count) / r.window_s : 0;
    return r;
}

} // namespace sockherd::bench
