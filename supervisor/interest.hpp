#pragma once
// Which worker slots have local subscribers for which channel, as the workers have told the
// supervisor. Owned by the supervisor; relays go only to the slots listed here.

#include <cstdint>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace sockherd::supervisor {

class interest_registry {
public:
    using slot_id = std::uint16_t;

    // True when `channel` had no slot before: the node now wants it (the Redis bridge subscribes).
    bool add(slot_id slot, const std::string& channel);
    // True when that was `channel`'s last slot: the node no longer wants it.
    bool remove(slot_id slot, const std::string& channel);
    // The slot's worker is gone: forget everything it asked for. Returns the channels that lost
    // their last slot.
    std::vector<std::string> forget(slot_id slot);
    // Every channel some slot wants (for a Redis bridge started or restarted later).
    std::vector<std::string> channels() const;

    // Slots interested in `channel` (empty when none). Valid until the next change.
    const std::vector<slot_id>& slots_for(const std::string& channel) const;

    std::size_t channel_count() const { return by_channel_.size(); }
    std::size_t channels_of(slot_id slot) const;

private:
    std::unordered_map<std::string, std::vector<slot_id>> by_channel_;
    std::unordered_map<slot_id, std::unordered_set<std::string>> by_slot_;
};

} // namespace sockherd::supervisor
