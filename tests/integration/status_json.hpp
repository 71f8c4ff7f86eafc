#pragma once
// Reading a node's GET /status.json in integration tests: lenient field readers (a missing or
// mistyped field reads as "" or -1, so a test fails on its own check instead of on an exception),
// predicates on the worker table, a one-line dump for failure messages, and a deadline-bound poll.
// Free functions on a parsed document; no state.

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "tests/integration/harness.hpp"

namespace sockherd::test {

// ---- fields ----------------------------------------------------------------------------------

// A string field; "" when it is missing or not a string.
std::string str_field(const nlohmann::json& j, std::string_view key);
// An integer field; -1 when it is missing, null or not a number (a float is truncated).
std::int64_t int_field(const nlohmann::json& j, std::string_view key);
// A row's "pid" when it is a positive number.
std::optional<pid_t> pid_field(const nlohmann::json& row);

// ---- the document ----------------------------------------------------------------------------

// The "workers" array (an empty one when it is missing or not an array).
const nlohmann::json& workers_of(const nlohmann::json& st);
// The "last_reload" object (an empty one when it is missing or not an object).
const nlohmann::json& last_reload(const nlohmann::json& st);
// The slot's own row: the first with that id (draining leftovers come after the slots); null if none.
const nlohmann::json* slot_row(const nlohmann::json& st, unsigned id);
// The row of the worker with that pid; null if none.
const nlohmann::json* row_with_pid(const nlohmann::json& st, pid_t pid);
// How many rows are in `state` ("up", "draining", ...).
unsigned rows_in_state(const nlohmann::json& st, std::string_view state);
// The sum of a per-worker counter over every row (a missing one counts 0).
std::int64_t sum_field(const nlohmann::json& st, std::string_view key);
// rejections.<reason> (common/rejections.hpp) summed over the worker rows; a missing one counts 0.
std::int64_t rejections(const nlohmann::json& st, std::string_view reason);
// A field of "totals"; -1 when it is missing.
std::int64_t total(const nlohmann::json& st, std::string_view key);
// slot -> pid of the slots' own rows (draining rows left out).
std::map<unsigned, pid_t> slot_pids(const nlohmann::json& st);
// The "address" of every entry in "listeners".
std::set<std::string> listener_addresses(const nlohmann::json& st);

// Two notions of "the node is up", kept apart on purpose: a steady node and one between reloads
// are not held to the same table.
// all_up: slots 0..n-1 each up with a pid and a first heartbeat in, workers_up == n, and nothing
// else in the table (no draining leftovers). For a node that has not been reloaded.
bool all_up(const nlohmann::json& st, unsigned n);
// slots_up: workers_configured == n and slots 0..n-1 up with a pid; any other row must be a
// draining leftover (heartbeats not required). For a node around a reload.
bool slots_up(const nlohmann::json& st, unsigned n);

// For failure messages: "generation G [id/pid/state/gG, ...] last_reload {...}".
std::string rows(const std::optional<nlohmann::json>& st);

// ---- waiting ---------------------------------------------------------------------------------

struct status_wait {
    bool ok = false;
    std::optional<nlohmann::json> last; // the last document read (the one that matched, when ok)
};

// Waits (5 s) until rejections(st, reason) == expected; empty on success, else what status said.
std::string expect_rejections(const node& n, std::string_view reason, std::int64_t expected);

// Polls GET /status.json (each read under 2 s) until `pred` holds or `timeout` passes.
status_wait wait_status(const node& n, const std::function<bool(const nlohmann::json&)>& pred,
                        milliseconds timeout, milliseconds poll = milliseconds(50), const header_list& headers = {});

} // namespace sockherd::test
