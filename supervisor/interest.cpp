#include "supervisor/interest.hpp"

#include <algorithm>

namespace sockherd::supervisor {

namespace {

// Takes `slot` off `channel`'s list, and the channel off the map once nobody wants it (true then).
bool drop(std::unordered_map<std::string, std::vector<interest_registry::slot_id>>& by_channel,
          interest_registry::slot_id slot, const std::string& channel) {
    const auto c = by_channel.find(channel);
    if (c == by_channel.end())
        return false;
    auto& slots = c->second;
    slots.erase(std::remove(slots.begin(), slots.end(), slot), slots.end());
    if (!slots.empty())
        return false;
    by_channel.erase(c);
    return true;
}

} // namespace

bool interest_registry::add(slot_id slot, const std::string& channel) {
    if (!by_slot_[slot].insert(channel).second)
        return false;
    auto& slots = by_channel_[channel];
    slots.push_back(slot);
    return slots.size() == 1;
}

bool interest_registry::remove(slot_id slot, const std::string& channel) {
    const auto s = by_slot_.find(slot);
    if (s == by_slot_.end() || s->second.erase(channel) == 0)
        return false;
    return drop(by_channel_, slot, channel);
}

std::vector<std::string> interest_registry::forget(slot_id slot) {
    std::vector<std::string> unwanted;
    const auto s = by_slot_.find(slot);
    if (s == by_slot_.end())
        return unwanted;
    for (const auto& channel : s->second)
        if (drop(by_channel_, slot, channel))
            unwanted.push_back(channel);
    by_slot_.erase(s);
    return unwanted;
}

std::vector<std::string> interest_registry::channels() const {
    std::vector<std::string> out;
    out.reserve(by_channel_.size());
    for (const auto& [channel, slots] : by_channel_)
        out.push_back(channel);
    return out;
}

const std::vector<interest_registry::slot_id>& interest_registry::slots_for(const std::string& channel) const {
    static const std::vector<slot_id> none;
    const auto c = by_channel_.find(channel);
    return c == by_channel_.end() ? none : c->second;
}

std::size_t interest_registry::channels_of(slot_id slot) const {
    const auto s = by_slot_.find(slot);
    return s == by_slot_.end() ? 0 : s->second.size();
}

} // namespace sockherd::supervisor
