// The fan-out scenario: --connections subscriber WebSocket connections to --path (a pub/sub
// channel, e.g. /ws/bench), spread over the --procs processes, are opened before the window; the
// first process also opens one publisher connection on the same path. With several --target
// (nodes sharing channels, e.g. through Redis) subscriber i of all (counted across the processes)
// connects to target i mod T and the publisher to the first target. In the window the publisher
// sends binary messages of --size (>= 16) bytes: an 8-byte sequence number and the 8-byte
// CLOCK_MONOTONIC send time in ns (comparable across the processes), then padding. Either paced at
// fanout_config().rate messages/s, or (rate 0) closed loop with at most --inflight messages
// outstanding, where a message is done when the publisher receives it back itself.
//
// Every subscriber records publish-to-receive time for every delivery (window and grace) into the
// histogram, counts deliveries and checks the order: a sequence number equal to the last one seen
// is a duplicate (not counted as delivered), a lower one is out of order (counted as delivered),
// a gap is loss. After the window the subscribers keep reading for fanout_config().grace_s, then
// close. The counters travel as "fanout.*" entries of run_result::errors ("fanout.t<i>.*" per
// target) and each target's latency as run_result::target_latency_us; main reports them.

#include <time.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <utility>
#include <vector>

#include "bench/connection_opener.hpp"
#include "bench/scenario.hpp"

namespace sockherd::bench {
namespace {

constexpr std::size_t header_size = 16;

std::uint64_t monotonic_ns() {
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000u + static_cast<std::uint64_t>(ts.tv_nsec);
}

struct fanout_counts {
    std::uint64_t sent = 0;         // messages the publisher wrote (first process only)
    std::uint64_t self = 0;         // messages the publisher received back
    std::uint64_t dup = 0;          // deliveries repeating the last sequence number seen
    std::uint64_t ooo = 0;          // deliveries with a sequence number below the last one seen
    std::uint64_t malformed = 0;    // deliveries shorter than the header
    std::uint64_t subscribers = 0;  // subscribers open when the window started
    std::vector<std::uint64_t> subscribers_at; // the same per target
    std::vector<std::uint64_t> delivered_at;   // deliveries counted (as run_result::count) per target
    clock::time_point last_delivery{};
};

class fanout_scenario;

// One WebSocket connection: a subscriber, or the publisher (which also receives its messages).
class fanout_connection : public std::enable_shared_from_this<fanout_connection> {
public:
    // target: index into --target; target_latency: where this subscriber's deliveries are timed
    // besides the overall histogram (the publisher has none).
    fanout_connection(load_context& ctx, fanout_counts& counts, bool publisher, std::size_t target,
                      histogram* target_latency)
        : ctx_(ctx), counts_(counts), publisher_(publisher), target_(target), target_latency_(target_latency),
          pace_timer_(ctx.ioc()) {}

    void open(std::function<void(bool)> done) {
        auto self = shared_from_this();
        ctx_.async_open_fresh(
            ws_, self,
            [self, done = std::move(done)](bool ok) {
                self->open_ = ok;
                done(ok);
            },
            target_);
    }

    bool is_open() const { return open_; }
    std::size_t target() const { return target_; }

    // Subscribers and the publisher read from the start of the window on.
    void start_reading() {
        if (open_)
            do_read();
    }

    // Publisher only: begins sending.
    void start_publishing() {
        if (!open_)
            return;
        sending_ = true;
        const double rate = fanout_config().rate;
        if (rate > 0) {
            interval_ = std::chrono::duration_cast<clock::duration>(std::chrono::duration<double>(1.0 / rate));
            next_due_ = clock::now();
            pace();
        } else {
            credit_ = ctx_.opt().inflight;
            do_write();
        }
    }

    void stop_publishing() {
        sending_ = false;
        pace_timer_.cancel();
    }

    // Ends the connection at once (after the grace period or on abort).
    void close() {
        sending_ = false;
        open_ = false;
        pace_timer_.cancel();
        if (ws_) {
            error_code ec;
            beast::get_lowest_layer(*ws_).socket().shutdown(tcp::socket::shutdown_both, ec);
            beast::get_lowest_layer(*ws_).close();
        }
    }

private:
    // Paced mode: a timer per message; messages that fall due while a write is in flight are
    // sent right after it (backlog), each stamped with its actual send time.
    void pace() {
        if (!sending_)
            return;
        const auto now = clock::now();
        while (next_due_ <= now && ctx_.window_open(now)) {
            ++due_;
            next_due_ += interval_;
        }
        do_write();
        if (!ctx_.window_open(now))
            return;
        pace_timer_.expires_at(next_due_);
        pace_timer_.async_wait([self = shared_from_this()](error_code ec) {
            if (!ec)
                self->pace();
        });
    }

    bool may_write() const {
        if (!sending_ || writing_ || !open_ || !ctx_.window_open())
            return false;
        return fanout_config().rate > 0 ? due_ > 0 : credit_ > 0;
    }

    void do_write() {
        if (!may_write())
            return;
        if (fanout_config().rate > 0)
            --due_;
        else
            --credit_;
        const std::size_t size = std::max(ctx_.opt().size, header_size);
        out_.assign(size, 'x');
        const std::uint64_t seq = seq_++;
        const std::uint64_t ts = monotonic_ns();
        std::memcpy(out_.data(), &seq, 8);
        std::memcpy(out_.data() + 8, &ts, 8);
        writing_ = true;
        ++counts_.sent;
        ws_->async_write(net::buffer(out_), [self = shared_from_this()](error_code ec, std::size_t) {
            self->writing_ = false;
            if (ec) {
                if (self->open_)
                    self->ctx_.count_error("publish", ec);
                self->sending_ = false;
                return;
            }
            self->do_write();
        });
    }

    void do_read() {
        ws_->async_read(in_, [self = shared_from_this()](error_code ec, std::size_t) { self->on_read(ec); });
    }

    void on_read(error_code ec) {
        if (ec) {
            if (open_) {
                if (ec == websocket::error::closed)
                    ctx_.result().add_error("unexpected_close:" + std::to_string(ws_->reason().code));
                else
                    ctx_.count_error(publisher_ ? "publisher_read" : "read", ec);
                open_ = false;
                sending_ = false;
                pace_timer_.cancel();
            }
            return;
        }
        const auto now_ns = monotonic_ns();
        const auto data = in_.cdata();
        if (data.size() < header_size) {
            ++counts_.malformed;
        } else {
            std::uint64_t seq = 0;
            std::uint64_t ts = 0;
            std::memcpy(&seq, data.data(), 8);
            std::memcpy(&ts, static_cast<const char*>(data.data()) + 8, 8);
            if (publisher_) {
                ++counts_.self;
                if (fanout_config().rate <= 0 && sending_) {
                    ++credit_;
                    do_write();
                }
            } else if (have_last_ && seq == last_seq_) {
                ++counts_.dup;
            } else {
                if (have_last_ && seq < last_seq_)
                    ++counts_.ooo;
                else
                    last_seq_ = seq;
                have_last_ = true;
                ++ctx_.result().count;
                const std::uint64_t us = now_ns > ts ? (now_ns - ts) / 1000u : 0;
                ctx_.result().latency_us.record(us);
                if (target_latency_)
                    target_latency_->record(us);
                ++counts_.delivered_at[target_];
                counts_.last_delivery = clock::now();
            }
        }
        in_.consume(in_.size());
        do_read();
    }

    load_context& ctx_;
    fanout_counts& counts_;
    const bool publisher_;
    const std::size_t target_;
    histogram* const target_latency_;
    std::optional<websocket::stream<beast::tcp_stream>> ws_;
    net::steady_timer pace_timer_;
    beast::flat_buffer in_;
    std::string out_;
    std::uint64_t seq_ = 0;
    std::uint64_t last_seq_ = 0;
    bool have_last_ = false;
    bool open_ = false;
    bool sending_ = false;
    bool writing_ = false;
    unsigned credit_ = 0;      // closed loop: messages that may be sent now
    std::uint64_t due_ = 0;    // paced: messages due but not yet sent
    clock::duration interval_{};
    clock::time_point next_due_{};
};

class fanout_scenario final : public scenario {
public:
    explicit fanout_scenario(load_context& ctx) : ctx_(ctx), grace_timer_(ctx.ioc()) {}

    void prepare(std::function<void()> ready) override {
        ready_ = std::move(ready);
        const unsigned n = ctx_.part().connections;
        const std::size_t targets = std::max<std::size_t>(1, ctx_.opt().targets.size());
        counts_.subscribers_at.assign(targets, 0);
        counts_.delivered_at.assign(targets, 0);
        for (unsigned t = 0; t < targets; ++t)
            ctx_.result().target_latency_us[t]; // every target reported, even one without deliveries
        for (unsigned i = 0; i < n; ++i) {
            const auto t = static_cast<unsigned>((ctx_.part().first_connection + i) % targets);
            subs_.push_back(std::make_shared<fanout_connection>(ctx_, counts_, false, t,
                                                                &ctx_.result().target_latency_us[t]));
        }
        if (ctx_.part().index == 0)
            publisher_ = std::make_shared<fanout_connection>(ctx_, counts_, true, 0, nullptr);
        // Per target: counted once every connection has finished opening, by its own target.
        opener_.open_all(
            ctx_.ioc(), subs_,
            [this](bool ok) {
                if (ok)
                    ++counts_.subscribers;
            },
            [this] {
                for (const auto& s : subs_) {
                    if (s->is_open())
                        ++counts_.subscribers_at[s->target()];
                }
                open_publisher();
            });
    }

    void start() override {
        started_ = clock::now();
        for (auto& s : subs_)
            s->start_reading();
        if (publisher_) {
            publisher_->start_reading();
            publisher_->start_publishing();
        }
    }

    void stop() override {
        if (publisher_)
            publisher_->stop_publishing();
        grace_timer_.expires_after(options::seconds(fanout_config().grace_s));
        grace_timer_.async_wait([this](error_code) { finish(); });
    }

    void abort() override {
        grace_timer_.cancel();
        finish();
    }

private:
    // After every subscriber of this process: the publisher (first process only), then ready.
    void open_publisher() {
        if (!publisher_)
            return net::post(ctx_.ioc(), [this] { signal_ready(); });
        publisher_->open([this](bool ok) {
            if (!ok)
                ctx_.result().add_error("publisher:not_open");
            signal_ready();
        });
    }

    void signal_ready() {
        if (auto ready = std::exchange(ready_, nullptr))
            ready();
    }

    void close_all() {
        for (auto& s : subs_)
            s->close();
        if (publisher_)
            publisher_->close();
    }

    void finish() {
        if (finished_run_)
            return;
        finished_run_ = true;
        close_all();
        auto& r = ctx_.result();
        r.connections = counts_.subscribers;
        // deliveries/s over the time from the window start to this process's last delivery (at
        // least the send window): the driver divides count by window_s.
        double span = ctx_.opt().duration_s;
        if (counts_.last_delivery > started_)
            span = std::max(span, std::chrono::duration<double>(counts_.last_delivery - started_).count());
        r.window_s = span;
        const std::string p(fanout_counter_prefix);
        r.add_error(p + "sent", counts_.sent);
        r.add_error(p + "self", counts_.self);
        r.add_error(p + "dup", counts_.dup);
        r.add_error(p + "out_of_order", counts_.ooo);
        r.add_error(p + "malformed", counts_.malformed);
        r.add_error(p + "subscribers", counts_.subscribers);
        for (std::size_t t = 0; t < counts_.subscribers_at.size(); ++t) {
            const std::string pt = p + "t" + std::to_string(t) + ".";
            r.add_error(pt + "subscribers", counts_.subscribers_at[t]);
            r.add_error(pt + "delivered", counts_.delivered_at[t]);
        }
    }

    load_context& ctx_;
    fanout_counts counts_;
    std::vector<std::shared_ptr<fanout_connection>> subs_;
    std::shared_ptr<fanout_connection> publisher_;
    net::steady_timer grace_timer_;
    std::function<void()> ready_;
    clock::time_point started_{};
    connection_opener opener_;
    bool finished_run_ = false;
};

} // namespace

std::unique_ptr<scenario> make_fanout_scenario(load_context& ctx) { return std::make_unique<fanout_scenario>(ctx); }

} // namespace sockherd::bench
