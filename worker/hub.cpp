#include "worker/hub.hpp"

#include <algorithm>
#include <cassert>

#include "common/ws_frame.hpp"
#include "worker/json_ops.hpp"

namespace sockherd::worker {
namespace {

std::shared_ptr<const std::string> make_frame(ws::opcode op, std::string_view payload) {
    std::uint8_t head[ws::max_header_size];
    const std::size_t n = ws::encode_header(head, op, payload.size());
    auto frame = std::make_shared<std::string>();
    frame->reserve(n + payload.size());
    frame->append(reinterpret_cast<const char*>(head), n);
    frame->append(payload);
    return frame;
}

} // namespace

const std::shared_ptr<const std::string>& broadcast::json_form() const {
    if (!json_)
        json_ = std::make_shared<const std::string>(json_ops::encode_delivery(*message_));
    return json_;
}

const std::shared_ptr<const std::string>& broadcast::frame(wire_format f) const {
    if (f == wire_format::json) {
        if (!json_frame_)
            json_frame_ = make_frame(ws::opcode::text, *json_form());
        return json_frame_;
    }
    if (!raw_frame_)
        raw_frame_ = make_frame(message_->kind == payload_kind::binary ? ws::opcode::binary : ws::opcode::text,
                                message_->payload);
    return raw_frame_;
}

bool hub::subscribe(const std::string& channel, subscriber& s) {
    assert(!delivering_ && "subscribe() from inside deliver()");
    auto& entry = channels_[channel];
    if (std::find(entry.subscribers.begin(), entry.subscribers.end(), &s) != entry.subscribers.end())
        return false;
    entry.subscribers.push_back(&s);
    if (entry.subscribers.size() == 1)
        note(channel, pending_change::added);
    return true;
}

bool hub::unsubscribe(const std::string& channel, subscriber& s) {
    assert(!delivering_ && "unsubscribe() from inside deliver()");
    const auto it = channels_.find(channel);
    if (it == channels_.end())
        return false;
    auto& subs = it->second.subscribers;
    const auto pos = std::find(subs.begin(), subs.end(), &s);
    if (pos == subs.end())
        return false;
    // Order among subscribers does not matter: swap-and-pop keeps this O(1) after the find.
    *pos = subs.back();
    subs.pop_back();
    if (subs.empty()) {
        channels_.erase(it);
        note(channel, pending_change::removed);
    }
    return true;
}

std::size_t hub::publish_local(const shared_message& m) {
    const auto it = channels_.find(m->channel);
    if (it == channels_.end())
        return 0;
    const broadcast b(m);
    delivering_ = true;
    const auto& subs = it->second.subscribers;
    for (subscriber* s : subs)
        s->deliver(b);
    delivering_ = false;
    return subs.size();
}

std::size_t hub::subscriber_count(const std::string& channel) const {
    const auto it = channels_.find(channel);
    return it == channels_.end() ? 0 : it->second.subscribers.size();
}

void hub::note(const std::string& channel, pending_change change) {
    const auto it = pending_.find(channel);
    if (it == pending_.end()) {
        pending_.emplace(channel, change);
        return;
    }
    // added then removed (or removed then added) within one round: nothing to announce.
    if (it->second != change)
        pending_.erase(it);
}

hub::interest_change hub::take_interest() {
    interest_change c;
    for (auto& [channel, change] : pending_)
        (change == pending_change::added ? c.added : c.removed).push_back(channel);
    pending_.clear();
    return c;
}

} // namespace sockherd::worker
