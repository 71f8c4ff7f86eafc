// The reload scenario: what clients see while the server under test reloads. The reloads are sent
// by the script (bench/reload.sh); this only measures. Two loads run side by side in the window:
//
// - probes: each of --concurrency loops opens a fresh WebSocket session on --path, sends one
//   --size byte message, reads its echo and closes with 1000, then starts again, paced so that all
//   loops together start reload_config().connect_rate sessions/s (0: back to back). A cycle that
//   fails at any step, or takes longer than --connect-timeout in all, is one failed connect;
//   error_kinds says where (connect:refused, handshake:upgrade_declined, probe_echo:reset, …).
// - sessions: --connections long-lived sessions, opened before the window, each sending a --size
//   byte message and waiting for its echo, in a loop. A session that ends is not reopened; it is
//   counted as closed clean (a close frame with 1000 or 1001), closed with another code, or closed
//   abnormally (no close frame: reset, eof, …), and its kind goes into error_kinds.
//
// Completed echoes, completed probe cycles and session closes are also counted per reload_slot of
// the window (run_result::slots "echo", "connect", "close"), so the report can show throughput
// around each reload. count, rate and the latency histogram are the sessions' echoes. The other
// counters travel as "reload.*" entries of run_result::errors; main reports them.

#include <algorithm>
#include <cstring>
#include <optional>
#include <utility>
#include <vector>

#include "bench/connection_opener.hpp"
#include "bench/payload.hpp"
#include "bench/scenario.hpp"

namespace sockherd::bench {
namespace {

// After a failed probe its loop waits this long, so a refusing server is no busy loop.
constexpr std::chrono::milliseconds error_backoff{10};
// A probe cycle slower than this is counted as slow (it still succeeded).
constexpr std::chrono::seconds slow_cycle{1};
// A session whose echo is outstanding this long when the window ends is counted as stalled.
constexpr std::chrono::seconds stall_after{1};

// The counters, created at zero so that every one appears in the output.
struct reload_counters {
    explicit reload_counters(run_result& r)
        : sessions(slot(r, "sessions")), closed_clean(slot(r, "sessions_closed_clean")),
          closed_other(slot(r, "sessions_closed_other")), closed_abnormal(slot(r, "sessions_closed_abnormal")),
          open_at_end(slot(r, "sessions_open_at_end")), stalled(slot(r, "sessions_stalled")),
          attempts(slot(r, "connect_attempts")), ok(slot(r, "connects_ok")), failed(slot(r, "connects_failed")),
          slow(slot(r, "connects_slow")) {}

    std::uint64_t& sessions;        // long-lived sessions open when the window started
    std::uint64_t& closed_clean;    // … closed by the server with 1000 or 1001
    std::uint64_t& closed_other;    // … closed by the server with another code
    std::uint64_t& closed_abnormal; // … ended without a close frame
    std::uint64_t& open_at_end;     // … still open when the window ended
    std::uint64_t& stalled;         // … of those, waiting for an echo for more than stall_after
    std::uint64_t& attempts;        // probe cycles started in the window
    std::uint64_t& ok;              // probe cycles completed (open, echo, close)
    std::uint64_t& failed;          // probe cycles that failed at some step
    std::uint64_t& slow;            // completed probe cycles that took more than slow_cycle

private:
    // std::map never moves its elements, so the references stay valid.
    static std::uint64_t& slot(run_result& r, std::string_view name) {
        return r.errors[std::string(reload_counter_prefix) + std::string(name)];
    }
};

// Counts one event at time t into the named slot series, if t is inside the window.
class slot_counter {
public:
    slot_counter(load_context& ctx, const char* name) : ctx_(ctx), name_(name) {}

    void count(clock::time_point t) {
        if (t < ctx_.window_start() || !ctx_.window_open(t))
            return;
        const auto i = static_cast<std::size_t>((t - ctx_.window_start()) / reload_slot);
        ctx_.result().add_to_slot(name_, i);
    }

private:
    load_context& ctx_;
    std::string name_;
};

struct reload_state {
    explicit reload_state(load_context& c)
        : ctx(c), counts(c.result()), echo_slots(c, "echo"), connect_slots(c, "connect"), close_slots(c, "close") {}

    load_context& ctx;
    reload_counters counts;
    slot_counter echo_slots;
    slot_counter connect_slots;
    slot_counter close_slots;
};

// One probe loop: open, one echo, close, again; paced by its own timer.
class probe_loop : public std::enable_shared_from_this<probe_loop> {
public:
    probe_loop(reload_state& st, clock::duration interval)
        : st_(st), ctx_(st.ctx), interval_(interval), timer_(ctx_.ioc()), deadline_(ctx_.ioc()) {}

    // The first cycle starts after `offset`, so paced loops do not start in step.
    void start(clock::duration offset) {
        due_ = clock::now() + offset;
        wait_for_due();
    }

    void stop() {
        stopping_ = true;
        timer_.cancel();
    }

    void abort() {
        stop();
        deadline_.cancel();
        if (ws_)
            beast::get_lowest_layer(*ws_).close();
    }

private:
    void wait_for_due() {
        if (stopping_ || !ctx_.window_open())
            return;
        if (due_ <= clock::now())
            return begin();
        timer_.expires_at(due_);
        timer_.async_wait([self = shared_from_this()](error_code ec) {
            if (!ec)
                self->begin();
        });
    }

    void begin() {
        if (stopping_ || !ctx_.window_open())
            return;
        began_ = clock::now();
        // At most one interval of catching up after a stall, then the rate again.
        due_ = std::max(due_, began_ - interval_) + interval_;
        ++st_.counts.attempts;
        in_cycle_ = true;
        timed_out_ = false;
        ws_.emplace(ctx_.ioc());
        deadline_.expires_at(began_ + ctx_.opt().connect_timeout());
        deadline_.async_wait([self = shared_from_this()](error_code ec) {
            if (ec || !self->in_cycle_ || !self->ws_)
                return;
            self->timed_out_ = true;
            beast::get_lowest_layer(*self->ws_).close(); // pending operations end with operation_aborted
        });
        auto self = shared_from_this();
        ctx_.async_open(*ws_, self, [self](bool ok) { self->on_open(ok); });
    }

    void on_open(bool ok) {
        if (!ok)
            return failed({}, {}); // async_open counted the error
        fill_payload(seq_, ctx_.opt().size, out_);
        ws_->async_write(net::buffer(out_), [self = shared_from_this()](error_code ec, std::size_t) {
            if (ec)
                return self->failed("probe_echo", ec);
            self->ws_->async_read(self->in_,
                                  [self](error_code e, std::size_t) { self->on_echo(e); });
        });
    }

    void on_echo(error_code ec) {
        if (ec)
            return failed("probe_echo", ec);
        const auto got = in_.cdata();
        const bool same = got.size() == out_.size() && std::memcmp(got.data(), out_.data(), out_.size()) == 0;
        in_.consume(in_.size());
        if (!same)
            return failed("probe_echo", {}, "mismatch");
        ws_->async_close(websocket::close_code::normal, [self = shared_from_this()](error_code e) { self->on_close(e); });
    }

    void on_close(error_code ec) {
        if (ec)
            return failed("probe_close", ec);
        const auto done = clock::now();
        if (ws_->reason().code != websocket::close_code::normal)
            ctx_.result().add_error("probe_close_code:" + std::to_string(ws_->reason().code));
        ++st_.counts.ok;
        if (done - began_ > slow_cycle)
            ++st_.counts.slow;
        st_.connect_slots.count(done);
        end_cycle(clock::duration::zero());
    }

    // Counts the failed cycle once: `where` empty when the error was counted already.
    void failed(std::string_view where, const error_code& ec, std::string_view what = {}) {
        ++st_.counts.failed;
        if (timed_out_) {
            ctx_.result().add_error("probe:timeout");
        } else if (!what.empty()) {
            ctx_.result().add_error(std::string(where) + ":" + std::string(what));
        } else if (!where.empty()) {
            if (ec == websocket::error::closed)
                ctx_.result().add_error(std::string(where) + ":closed_" + std::to_string(ws_->reason().code));
            else if (ec == net::error::operation_aborted)
                ctx_.result().add_error(std::string(where) + ":aborted");
            else
                ctx_.count_error(where, ec);
        }
        end_cycle(error_backoff);
    }

    // The stream is replaced from a posted handler, never inside one of its own handlers.
    void end_cycle(clock::duration pause) {
        in_cycle_ = false;
        deadline_.cancel();
        ++seq_;
        net::post(ctx_.ioc(), [self = shared_from_this(), pause] {
            self->ws_.reset();
            self->due_ = std::max(self->due_, clock::now() + pause);
            self->wait_for_due();
        });
    }

    reload_state& st_;
    load_context& ctx_;
    const clock::duration interval_; // zero: back to back
    net::steady_timer timer_;        // pacing and error backoff
    net::steady_timer deadline_;     // the whole cycle
    std::optional<websocket::stream<beast::tcp_stream>> ws_;
    beast::flat_buffer in_;
    std::string out_;
    std::uint64_t seq_ = 0;
    clock::time_point due_{};
    clock::time_point began_{};
    bool stopping_ = false;
    bool in_cycle_ = false;
    bool timed_out_ = false;
};

// One long-lived session: one message outstanding at a time; never reopened.
class echo_session : public std::enable_shared_from_this<echo_session> {
public:
    explicit echo_session(reload_state& st) : st_(st), ctx_(st.ctx), drain_timer_(ctx_.ioc()) {}

    void open(std::function<void(bool)> done) {
        auto self = shared_from_this();
        ctx_.async_open_fresh(ws_, self, [self, done = std::move(done)](bool ok) {
            self->open_ = ok;
            done(ok);
        });
    }

    void start() {
        if (!open_)
            return;
        running_ = true;
        do_read();
        do_write();
    }

    void stop() {
        running_ = false;
        if (!open_)
            return;
        ++st_.counts.open_at_end;
        if (outstanding_ && clock::now() - sent_at_ > stall_after)
            ++st_.counts.stalled;
        drain_timer_.expires_after(ctx_.opt().drain_timeout());
        drain_timer_.async_wait([self = shared_from_this()](error_code ec) {
            if (ec || !self->open_)
                return;
            self->ctx_.result().add_error("drain:timeout");
            self->abort();
        });
        maybe_close();
    }

    void abort() {
        running_ = false;
        open_ = false;
        drain_timer_.cancel();
        if (ws_)
            beast::get_lowest_layer(*ws_).close();
    }

private:
    void do_write() {
        if (!running_ || outstanding_ || writing_)
            return;
        fill_payload(seq_, ctx_.opt().size, out_);
        outstanding_ = true;
        writing_ = true;
        sent_at_ = clock::now();
        ws_->async_write(net::buffer(out_), [self = shared_from_this()](error_code ec, std::size_t) {
            self->writing_ = false;
            if (ec)
                return self->ended("session_write", ec);
            self->maybe_close();
        });
    }

    void do_read() {
        ws_->async_read(in_, [self = shared_from_this()](error_code ec, std::size_t) { self->on_read(ec); });
    }

    void on_read(error_code ec) {
        if (ec)
            return ended("session", ec);
        const auto now = clock::now();
        const auto got = in_.cdata();
        if (!outstanding_ || got.size() != out_.size() || std::memcmp(got.data(), out_.data(), out_.size()) != 0) {
            ctx_.result().add_error("session:mismatch");
        } else {
            ctx_.record(sent_at_, now);
            st_.echo_slots.count(now);
        }
        in_.consume(in_.size());
        outstanding_ = false;
        ++seq_;
        if (running_)
            do_write();
        else
            maybe_close();
        do_read();
    }

    // After stop(): close with 1000 once the echo is back and no write is in flight.
    void maybe_close() {
        if (running_ || closing_ || !open_ || writing_ || outstanding_)
            return;
        closing_ = true;
        ws_->async_close(websocket::close_code::normal, [self = shared_from_this()](error_code ec) {
            self->drain_timer_.cancel();
            self->open_ = false;
            if (ec)
                self->ctx_.count_error("session_close", ec);
        });
    }

    // The session ended on its own (not by our close): counted once, by kind.
    void ended(std::string_view where, const error_code& ec) {
        if (closing_ || !open_)
            return; // our own close, or already counted
        const auto now = clock::now();
        const bool in_window = running_;
        open_ = false;
        running_ = false;
        drain_timer_.cancel();
        if (!in_window) // the window is over: stop() counted it as open at the end
            --st_.counts.open_at_end;
        if (ec == websocket::error::closed) {
            const auto code = ws_->reason().code;
            if (code == websocket::close_code::normal || code == websocket::close_code::going_away)
                ++st_.counts.closed_clean;
            else
                ++st_.counts.closed_other;
            ctx_.result().add_error("session_closed:" + std::to_string(code));
        } else {
            ++st_.counts.closed_abnormal;
            ctx_.count_error(where, ec);
        }
        st_.close_slots.count(now);
        beast::get_lowest_layer(*ws_).close();
    }

    reload_state& st_;
    load_context& ctx_;
    std::optional<websocket::stream<beast::tcp_stream>> ws_;
    net::steady_timer drain_timer_;
    beast::flat_buffer in_;
    std::string out_;
    std::uint64_t seq_ = 0;
    clock::time_point sent_at_{};
    bool open_ = false;
    bool running_ = false;
    bool writing_ = false;
    bool outstanding_ = false;
    bool closing_ = false;
};

class reload_scenario final : public scenario {
public:
    explicit reload_scenario(load_context& ctx) : st_(ctx) {}

    void prepare(std::function<void()> ready) override {
        auto& ctx = st_.ctx;
        // Every loop of every process starts opt.concurrency / rate apart, so the processes'
        // loops together start `rate` sessions per second.
        const double rate = reload_config().connect_rate;
        const auto interval = rate > 0 ? options::seconds(ctx.opt().concurrency / rate) : clock::duration::zero();
        for (unsigned i = 0; i < ctx.part().concurrency; ++i)
            probes_.push_back(std::make_shared<probe_loop>(st_, interval));
        interval_ = interval;
        for (unsigned i = 0; i < ctx.part().connections; ++i)
            sessions_.push_back(std::make_shared<echo_session>(st_));
        opener_.open_all(
            ctx.ioc(), sessions_,
            [this](bool ok) {
                if (ok) {
                    ++st_.counts.sessions;
                    ++st_.ctx.result().connections;
                }
            },
            std::move(ready));
    }

    void start() override {
        for (auto& s : sessions_)
            s->start();
        const auto n = static_cast<long>(std::max<std::size_t>(probes_.size(), 1));
        for (std::size_t i = 0; i < probes_.size(); ++i)
            probes_[i]->start(interval_ * static_cast<long>(i) / n);
    }

    void stop() override {
        for (auto& p : probes_)
            p->stop();
        for (auto& s : sessions_)
            s->stop();
    }

    void abort() override {
        for (auto& p : probes_)
            p->abort();
        for (auto& s : sessions_)
            s->abort();
    }

private:
    reload_state st_;
    std::vector<std::shared_ptr<probe_loop>> probes_;
    std::vector<std::shared_ptr<echo_session>> sessions_;
    clock::duration interval_{};
    connection_opener opener_;
};

} // namespace

std::unique_ptr<scenario> make_reload_scenario(load_context& ctx) { return std::make_unique<reload_scenario>(ctx); }

} // namespace sockherd::bench
