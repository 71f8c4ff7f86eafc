// One Redis connection on the supervisor's io_context: see supervisor/redis_connection.hpp.

#include "supervisor/redis_connection.hpp"

#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include <strings.h>

#include <algorithm>
#include <cstring>
#include <utility>
#include <vector>

#include <spdlog/spdlog.h>

#include "common/units.hpp"

namespace sockherd::supervisor {

namespace {

// A reply's text for a log line or last_error: cut, control characters replaced.
std::string printable(const char* text, std::size_t len, std::size_t max = 200) {
    std::string out;
    for (std::size_t i = 0; i < len && i < max; ++i)
        out += (text[i] >= ' ' && text[i] < 0x7f) ? text[i] : '?';
    if (len > max)
        out += "...";
    return out;
}

bool is_power_of_two(unsigned n) { return n != 0 && (n & (n - 1)) == 0; }

} // namespace

// The link between one redisAsyncContext and the io_context: hiredis's event hooks, its reply
// callback and its cleanup all arrive here (ev.data and every command's privdata point at it).
// It watches the context's descriptor through a stream_descriptor that never owns it (released,
// never closed: the descriptor is hiredis's). It keeps itself alive while its context lives and
// for one more turn after hiredis's cleanup, so no hiredis callback or queued wait can outlive it.
class redis_connection::driver : public std::enable_shared_from_this<driver> {
public:
    driver(net::io_context& ioc, redisAsyncContext* ac, redis_connection* owner)
        : ioc_(ioc), ac_(ac), owner_(owner), descriptor_(ioc) {}

    // Takes over `ac`'s events. False (and `ac` untouched) if its descriptor cannot be watched.
    static std::shared_ptr<driver> attach(net::io_context& ioc, redisAsyncContext* ac, redis_connection* owner,
                                          error_code& ec) {
        auto d = std::make_shared<driver>(ioc, ac, owner);
        d->descriptor_.assign(ac->c.fd, ec);
        if (ec)
            return nullptr;
        d->self_ = d;
        ac->ev.data = d.get();
        ac->ev.addRead = [](void* p) { static_cast<driver*>(p)->want(direction::read); };
        ac->ev.delRead = [](void* p) { static_cast<driver*>(p)->wanted_[direction::read] = false; };
        ac->ev.addWrite = [](void* p) { static_cast<driver*>(p)->want(direction::write); };
        ac->ev.delWrite = [](void* p) { static_cast<driver*>(p)->wanted_[direction::write] = false; };
        ac->ev.cleanup = [](void* p) { static_cast<driver*>(p)->on_cleanup(); };
        return d;
    }

    redisAsyncContext* context() const { return close_requested_ ? nullptr : ac_; }

    // The owner is done with this context: no more calls to it. Frees the context now, or, from
    // inside a hiredis call, as soon as that call has returned (hiredis may not be freed under
    // its own feet: onConnect in 0.14 runs outside its in-callback guard).
    void close() {
        owner_ = nullptr;
        if (ac_ == nullptr)
            return;
        close_requested_ = true;
        if (depth_ == 0)
            redisAsyncFree(ac_); // -> on_cleanup
    }

    // Every command's reply callback; privdata is the driver.
    static void on_reply_callback(redisAsyncContext* ac, void* reply, void* privdata) {
        auto* d = static_cast<driver*>(privdata);
        // nullptr: the context is being freed; the owner fails its pending replies itself.
        if (reply == nullptr || d->owner_ == nullptr || d->ac_ != ac || d->close_requested_)
            return;
        d->owner_->on_reply(*static_cast<const redisReply*>(reply));
    }

private:
    enum direction { read = 0, write = 1 };

    void want(direction dir) {
        wanted_[dir] = true;
        if (waiting_[dir] || ac_ == nullptr)
            return;
        waiting_[dir] = true;
        descriptor_.async_wait(dir == read ? net::posix::stream_descriptor::wait_read
                                           : net::posix::stream_descriptor::wait_write,
                               [self = shared_from_this(), dir](error_code ec) { self->on_event(dir, ec); });
    }

    void on_event(direction dir, error_code ec) {
        waiting_[dir] = false;
        if (ec || ac_ == nullptr || close_requested_ || !wanted_[dir])
            return; // cancelled (cleanup), closed, or no longer of interest
        ++depth_;
        if (dir == read)
            redisAsyncHandleRead(ac_); // may free the context: then on_cleanup has run
        else
            redisAsyncHandleWrite(ac_);
        --depth_;
        if (close_requested_ && ac_ != nullptr && depth_ == 0)
            redisAsyncFree(ac_);
    }

    // hiredis frees the context (after an error, EOF, or redisAsyncFree): stop watching the
    // descriptor before hiredis closes it, and tell the owner unless it asked for this.
    void on_cleanup() {
        if (ac_ == nullptr)
            return;
        auto* ac = std::exchange(ac_, nullptr);
        wanted_[read] = wanted_[write] = false;
        descriptor_.release(); // deregisters and cancels the waits; the descriptor stays open
        // Alive until the next turn: the caller up the stack may be this driver's own handler.
        net::post(ioc_, [keep = std::move(self_)] {});
        if (auto* owner = std::exchange(owner_, nullptr))
            owner->on_context_gone(ac->c.err != 0 ? printable(ac->c.errstr, std::strlen(ac->c.errstr))
                                                  : std::string("connection closed"));
    }

    net::io_context& ioc_;
    redisAsyncContext* ac_;
    redis_connection* owner_;
    net::posix::stream_descriptor descriptor_;
    std::shared_ptr<driver> self_;
    bool wanted_[2] = {false, false};
    bool waiting_[2] = {false, false};
    int depth_ = 0; // hiredis calls in progress on this context
    bool close_requested_ = false;
};

redis_connection::redis_connection(net::io_context& ioc, settings s, events e)
    : ioc_(ioc), settings_(std::move(s)), events_(std::move(e)),
      backoff_(settings_.backoff_min, settings_.backoff_max, stable_after), connect_timer_(ioc),
      command_timer_(ioc), retry_timer_(ioc), resolver_(ioc) {}

redis_connection::~redis_connection() {
    alive_.reset();
    if (auto d = std::move(driver_))
        d->close();
}

void redis_connection::start() {
    if (state_ != state::idle)
        return;
    connect_now();
}

void redis_connection::stop() {
    if (state_ == state::idle)
        return;
    ++attempt_;
    state_ = state::idle;
    failing_ = false;
    connect_timer_.cancel();
    command_timer_.cancel();
    retry_timer_.cancel();
    resolver_.cancel();
    if (auto d = std::move(driver_))
        d->close();
    spdlog::info("redis: {}: closed", settings_.name);
    fail_pending();
}

void redis_connection::connect_now() {
    state_ = state::connecting;
    const auto attempt = ++attempt_;
    ++counters_.attempts;
    connect_timer_.expires_after(settings_.connect_timeout);
    connect_timer_.async_wait([this, alive = std::weak_ptr<char>(alive_), attempt](error_code ec) {
        if (alive.expired() || ec || attempt != attempt_ || state_ != state::connecting)
            return;
        fail("no answer within connect_timeout (" + format_duration(settings_.connect_timeout) + ")",
             failure::timeout);
    });

    const auto& url = settings_.url;
    if (url.kind == redis_url::transport::unix_socket || url.host_is_address())
        return open_context(url.host);
    // Asio resolves on its own thread; hiredis 0.14 would block this one in getaddrinfo.
    resolver_.async_resolve(url.host, std::to_string(url.port),
                            [this, alive = std::weak_ptr<char>(alive_), attempt](error_code ec,
                                                                                 tcp::resolver::results_type r) {
                                if (alive.expired() || attempt != attempt_ || state_ != state::connecting)
                                    return;
                                if (ec)
                                    return fail("cannot resolve " + settings_.url.host + ": " + ec.message(),
                                                failure::error);
                                // IPv4 first, as hiredis itself would; each failed attempt
                                // moves on to the next address ("localhost": ::1, then 127.0.0.1).
                                std::vector<net::ip::address> addresses;
                                for (const auto& e : r)
                                    addresses.push_back(e.endpoint().address());
                                if (addresses.empty())
                                    return fail("no address for " + settings_.url.host, failure::error);
                                std::stable_partition(addresses.begin(), addresses.end(),
                                                      [](const auto& a) { return a.is_v4(); });
                                open_context(addresses[address_index_ % addresses.size()].to_string());
                            });
}

void redis_connection::open_context(const std::string& host) {
    const auto& url = settings_.url;
    redisAsyncContext* ac = url.kind == redis_url::transport::unix_socket
                                ? redisAsyncConnectUnix(url.path.c_str())
                                : redisAsyncConnect(host.c_str(), url.port);
    if (ac == nullptr)
        return fail("cannot allocate a hiredis context", failure::error);
    if (ac->err != 0) { // refused at once (on loopback), no such socket file, ...
        std::string why = printable(ac->errstr, std::strlen(ac->errstr));
        redisAsyncFree(ac);
        return fail(std::move(why), failure::error);
    }
    error_code ec;
    driver_ = driver::attach(ioc_, ac, this, ec);
    if (!driver_) {
        redisAsyncFree(ac);
        return fail("cannot watch the socket: " + ec.message(), failure::error);
    }
    if (url.kind == redis_url::transport::tcp_socket)
        redisEnableKeepAlive(&ac->c); // a peer gone without a FIN shows within about 30 s

    // Queued now, written once the socket connects. The password is never logged.
    if (!url.password.empty()) {
        std::vector<std::string_view> args{"AUTH"};
        if (!url.username.empty())
            args.emplace_back(url.username);
        args.emplace_back(url.password);
        send_command(args, 1, [this](const redisReply* r) { on_auth(r); });
    }
    const std::string_view ping[] = {"PING"};
    send_command(ping, 1, [this](const redisReply* r) { on_pong(r); });
}

void redis_connection::on_auth(const redisReply* reply) {
    if (reply == nullptr || reply->type != REDIS_REPLY_ERROR)
        return; // OK; PING follows (or the connection went down)
    fail("AUTH refused: " + printable(reply->str, reply->len), failure::error);
}

void redis_connection::on_pong(const redisReply* reply) {
    if (reply == nullptr || state_ != state::connecting)
        return;
    if (reply->type != REDIS_REPLY_STATUS || strcasecmp(reply->str, "PONG") != 0)
        return fail("unexpected answer to PING: " + printable(reply->str != nullptr ? reply->str : "", reply->len),
                    failure::error);
    connect_timer_.cancel();
    state_ = state::ready;
    ++counters_.connects;
    ready_since_ = clock::now();
    const bool again = failing_;
    failing_ = false;
    same_error_count_ = 0;
    spdlog::info("redis: {}: connected to {}{}", settings_.name, settings_.url.address(),
                 again ? " (again)" : "");
    if (events_.on_ready)
        events_.on_ready();
}

bool redis_connection::send(std::span<const std::string_view> args, std::size_t replies,
                            const reply_handler& on_reply) {
    if (state_ != state::ready)
        return false;
    if (!send_command(args, replies, on_reply))
        return false;
    arm_command_timer();
    return true;
}

bool redis_connection::send_command(std::span<const std::string_view> args, std::size_t replies,
                                    const reply_handler& on_reply) {
    auto* ac = driver_ ? driver_->context() : nullptr;
    if (ac == nullptr || args.empty() || replies == 0)
        return false;
    std::vector<const char*> argv;
    std::vector<std::size_t> lengths;
    argv.reserve(args.size());
    lengths.reserve(args.size());
    for (auto a : args) {
        argv.push_back(a.data());
        lengths.push_back(a.size());
    }
    if (redisAsyncCommandArgv(ac, &driver::on_reply_callback, driver_.get(), static_cast<int>(argv.size()),
                              argv.data(), lengths.data()) != REDIS_OK)
        return false;
    const auto now = clock::now();
    for (std::size_t i = 0; i < replies; ++i)
        pending_.push_back({now, on_reply});
    return true;
}

void redis_connection::arm_command_timer() {
    if (command_timer_armed_ || state_ != state::ready || pending_.empty())
        return;
    command_timer_armed_ = true;
    command_timer_.expires_at(pending_.front().sent + settings_.command_timeout);
    command_timer_.async_wait([this, alive = std::weak_ptr<char>(alive_)](error_code ec) {
        if (alive.expired())
            return;
        command_timer_armed_ = false;
        if (!ec && state_ == state::ready && !pending_.empty() &&
            clock::now() >= pending_.front().sent + settings_.command_timeout)
            return fail("no reply within command_timeout (" + format_duration(settings_.command_timeout) + ")",
                        failure::timeout);
        arm_command_timer(); // for the reply now oldest (or after a cancel, for a new connection)
    });
}

void redis_connection::on_reply(const redisReply& reply) {
    // Pub/sub messages are pushed, not answers: ["message", channel, payload] or
    // ["pmessage", pattern, channel, payload].
    if (reply.type == REDIS_REPLY_ARRAY && reply.elements >= 3 && reply.element[0]->type == REDIS_REPLY_STRING &&
        (strcasecmp(reply.element[0]->str, "message") == 0 || strcasecmp(reply.element[0]->str, "pmessage") == 0)) {
        if (events_.on_push)
            events_.on_push(reply);
        return;
    }
    if (pending_.empty()) {
        spdlog::warn("redis: {}: a reply nobody waits for (type {}); reconnecting", settings_.name, reply.type);
        return fail("protocol error: unexpected reply", failure::error);
    }
    auto p = std::move(pending_.front());
    pending_.pop_front();
    if (p.on_reply)
        p.on_reply(&reply);
}

void redis_connection::on_context_gone(std::string reason) {
    driver_.reset(); // the driver keeps itself alive for the rest of this turn
    went_down(std::move(reason), failure::error);
}

void redis_connection::fail(std::string reason, failure kind) {
    if (state_ != state::connecting && state_ != state::ready)
        return;
    if (auto d = std::move(driver_))
        d->close();
    went_down(std::move(reason), kind);
}

void redis_connection::went_down(std::string reason, failure kind) {
    if (state_ != state::connecting && state_ != state::ready)
        return;
    const bool was_ready = state_ == state::ready;
    ++attempt_;
    state_ = state::waiting;
    failing_ = true;
    connect_timer_.cancel();
    command_timer_.cancel();
    resolver_.cancel();
    was_ready ? ++counters_.losses : ++counters_.failures;
    address_index_ = was_ready ? 0 : address_index_ + 1;
    if (kind == failure::timeout)
        ++counters_.timeouts;
    same_error_count_ = (reason == last_error_ && !was_ready) ? same_error_count_ + 1 : 1;
    last_error_ = std::move(reason);

    const auto uptime = was_ready ? std::chrono::duration_cast<duration>(clock::now() - ready_since_) : duration{0};
    const auto delay = backoff_.next(uptime);
    if (was_ready)
        spdlog::warn("redis: {}: lost the connection to {}: {}; reconnecting in {}", settings_.name,
                     settings_.url.address(), last_error_, format_duration(delay));
    else if (is_power_of_two(same_error_count_)) // 1, 2, 4, 8, ...: a long outage stays readable
        spdlog::warn("redis: {}: cannot connect to {}: {}{}; next attempt in {}", settings_.name,
                     settings_.url.address(), last_error_,
                     same_error_count_ > 1 ? " (" + std::to_string(same_error_count_) + " attempts in a row)" : "",
                     format_duration(delay));
    else
        spdlog::debug("redis: {}: cannot connect to {}: {}; next attempt in {}", settings_.name,
                      settings_.url.address(), last_error_, format_duration(delay));

    retry_timer_.expires_after(delay);
    retry_timer_.async_wait([this, alive = std::weak_ptr<char>(alive_)](error_code ec) {
        if (alive.expired() || ec || state_ != state::waiting)
            return;
        connect_now();
    });

    fail_pending();
    if (events_.on_down)
        events_.on_down();
}

void redis_connection::fail_pending() {
    auto pending = std::move(pending_);
    pending_.clear();
    for (auto& p : pending)
        if (p.on_reply)
            p.on_reply(nullptr);
}

std::string_view to_string(redis_connection::state s) {
    switch (s) {
    case redis_connection::state::idle: return "idle";
    case redis_connection::state::connecting: return "connecting";
    case redis_connection::state::ready: return "ready";
    case redis_connection::state::waiting: return "waiting";
    }
    return "?";
}

} // namespace sockherd::supervisor
