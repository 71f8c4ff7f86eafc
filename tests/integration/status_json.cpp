#include "tests/integration/status_json.hpp"

#include <algorithm>
#include <utility>

namespace sockherd::test {

using json = nlohmann::json;

std::string str_field(const json& j, std::string_view key) {
    const auto it = j.find(key);
    return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

std::int64_t int_field(const json& j, std::string_view key) {
    const auto it = j.find(key);
    if (it == j.end() || !it->is_number())
        return -1;
    return it->is_number_float() ? static_cast<std::int64_t>(it->get<double>()) : it->get<std::int64_t>();
}

std::optional<pid_t> pid_field(const json& row) {
    const auto p = int_field(row, "pid");
    return p > 0 ? std::optional<pid_t>(static_cast<pid_t>(p)) : std::nullopt;
}

const json& workers_of(const json& st) {
    static const json empty = json::array();
    const auto it = st.find("workers");
    return it != st.end() && it->is_array() ? *it : empty;
}

const json& last_reload(const json& st) {
    static const json empty = json::object();
    const auto it = st.find("last_reload");
    return it != st.end() && it->is_object() ? *it : empty;
}

const json* slot_row(const json& st, unsigned id) {
    for (const auto& w : workers_of(st))
        if (int_field(w, "id") == static_cast<std::int64_t>(id))
            return &w;
    return nullptr;
}

const json* row_with_pid(const json& st, pid_t pid) {
    for (const auto& w : workers_of(st))
        if (pid_field(w) == pid)
            return &w;
    return nullptr;
}

unsigned rows_in_state(const json& st, std::string_view state) {
    unsigned n = 0;
    for (const auto& w : workers_of(st))
        n += str_field(w, "state") == state ? 1 : 0;
    return n;
}

std::int64_t sum_field(const json& st, std::string_view key) {
    std::int64_t s = 0;
    for (const auto& w : workers_of(st))
        s += std::max<std::int64_t>(int_field(w, key), 0);
    return s;
}

std::int64_t rejections(const json& st, std::string_view reason) {
    std::int64_t sum = 0;
    for (const auto& w : workers_of(st)) {
        const auto it = w.find("rejections");
        if (it == w.end() || !it->is_object())
            continue;
        const auto r = it->find(reason);
        if (r != it->end() && r->is_number_integer())
            sum += r->get<std::int64_t>();
    }
    return sum;
}

std::int64_t total(const json& st, std::string_view key) {
    const auto it = st.find("totals");
    return it != st.end() && it->is_object() ? int_field(*it, key) : -1;
}

std::map<unsigned, pid_t> slot_pids(const json& st) {
    std::map<unsigned, pid_t> out;
    for (const auto& w : workers_of(st)) {
        const auto id = int_field(w, "id");
        const auto pid = pid_field(w);
        if (id >= 0 && pid && str_field(w, "state") != "draining" && !out.count(static_cast<unsigned>(id)))
            out[static_cast<unsigned>(id)] = *pid;
    }
    return out;
}

std::set<std::string> listener_addresses(const json& st) {
    std::set<std::string> out;
    const auto it = st.find("listeners");
    if (it == st.end() || !it->is_array())
        return out;
    for (const auto& l : *it)
        out.insert(str_field(l, "address"));
    return out;
}

bool all_up(const json& st, unsigned n) {
    if (workers_of(st).size() != n || int_field(st, "workers_up") != n)
        return false;
    for (unsigned k = 0; k < n; ++k) {
        const auto* r = slot_row(st, k);
        if (r == nullptr || str_field(*r, "state") != "up" || !pid_field(*r) || !r->contains("heartbeat_age_seconds") ||
            !(*r)["heartbeat_age_seconds"].is_number())
            return false;
    }
    return true;
}

bool slots_up(const json& st, unsigned n) {
    if (int_field(st, "workers_configured") != n)
        return false;
    for (unsigned k = 0; k < n; ++k) {
        const auto* r = slot_row(st, k);
        if (r == nullptr || str_field(*r, "state") != "up" || !pid_field(*r))
            return false;
    }
    for (const auto& w : workers_of(st)) {
        const auto id = int_field(w, "id");
        if ((id < 0 || id >= static_cast<std::int64_t>(n)) && str_field(w, "state") != "draining")
            return false;
    }
    return true;
}

std::string rows(const std::optional<json>& st) {
    if (!st)
        return "(no status.json)";
    std::string s;
    for (const auto& w : workers_of(*st)) {
        if (!s.empty())
            s += ", ";
        s += std::to_string(int_field(w, "id")) + "/" + std::to_string(int_field(w, "pid")) + "/" +
            str_field(w, "state") + "/g" + std::to_string(int_field(w, "generation"));
    }
    return "generation " + std::to_string(int_field(*st, "generation")) + " [" + s + "] last_reload " +
        last_reload(*st).dump();
}

status_wait wait_status(const node& n, const std::function<bool(const json&)>& pred, milliseconds timeout,
                        milliseconds poll, const header_list& headers) {
    status_wait out;
    out.ok = wait_until(
        [&] {
            auto st = n.status_json(headers, std::chrono::seconds(2));
            if (!st)
                return false;
            out.last = std::move(st);
            return pred(*out.last);
        },
        timeout, poll);
    return out;
}

std::string expect_rejections(const node& n, std::string_view reason, std::int64_t expected) {
    const auto w = wait_status(n, [&](const json& st) { return rejections(st, reason) == expected; },
                               milliseconds(5000));
    if (w.ok)
        return {};
    return std::string(reason) + ": expected " + std::to_string(expected) + ", status says " +
        (w.last ? std::to_string(rejections(*w.last, reason)) : std::string("nothing"));
}

} // namespace sockherd::test
