#pragma once
// A log-linear latency histogram (the HdrHistogram idea, written from scratch): one per load
// generator process, merged exactly across processes by adding bucket counts.
//
// Values are unsigned integers (the load generator records microseconds). Below 2^precision_bits
// every value has its own bucket; above that, each power of two [2^h, 2^(h+1)) is split into
// 2^precision_bits equal buckets, so a reported value is within 2^-precision_bits (0.1 %) of the
// recorded one. Values above max_value are clamped into the last bucket; the exact maximum and
// minimum are kept beside the buckets.

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <vector>

namespace sockherd::bench {

class histogram {
public:
    static constexpr unsigned precision_bits = 10;
    static constexpr std::uint64_t linear_limit = std::uint64_t{1} << precision_bits; // exact below this
    static constexpr std::uint64_t max_value = (std::uint64_t{1} << 36) - 1; // ~19 hours in microseconds
    static constexpr std::size_t bucket_count =
        static_cast<std::size_t>((36 - precision_bits) * linear_limit + linear_limit);

    histogram() : counts_(bucket_count, 0) {}

    void record(std::uint64_t value, std::uint64_t times = 1) {
        if (times == 0)
            return;
        counts_[index_of(std::min(value, max_value))] += times;
        total_ += times;
        min_ = std::min(min_, value);
        max_ = std::max(max_, value);
    }

    // Adds every count of other; merging the histograms of N processes equals recording all of
    // their values into one.
    void merge(const histogram& other) {
        for (std::size_t i = 0; i < bucket_count; ++i)
            counts_[i] += other.counts_[i];
        total_ += other.total_;
        min_ = std::min(min_, other.min_);
        max_ = std::max(max_, other.max_);
    }

    // Adds count to one bucket by index; how a decoded histogram is rebuilt. Returns false for an
    // index out of range.
    bool add_bucket(std::size_t index, std::uint64_t count) {
        if (index >= bucket_count)
            return false;
        counts_[index] += count;
        total_ += count;
        return true;
    }
    void set_extremes(std::uint64_t min_value, std::uint64_t max_value_seen) {
        min_ = min_value;
        max_ = max_value_seen;
    }

    std::uint64_t total() const { return total_; }
    std::uint64_t min() const { return total_ == 0 ? 0 : min_; }
    std::uint64_t max() const { return max_; }
    std::uint64_t bucket(std::size_t index) const { return counts_[index]; }

    // The smallest bucket value v such that at least fraction q (0..1) of the recorded values are
    // <= v (reported as the bucket's highest value, capped by the exact maximum). 0 when empty.
    std::uint64_t percentile(double q) const {
        if (total_ == 0)
            return 0;
        q = std::clamp(q, 0.0, 1.0);
        const auto rank = std::max<std::uint64_t>(1, static_cast<std::uint64_t>(std::ceil(q * static_cast<double>(total_))));
        std::uint64_t seen = 0;
        for (std::size_t i = 0; i < bucket_count; ++i) {
            seen += counts_[i];
            if (seen >= rank)
                return std::min(highest_in(i), max_);
        }
        return max_;
    }

    static std::size_t index_of(std::uint64_t v) {
        if (v < linear_limit)
            return static_cast<std::size_t>(v);
        const unsigned top = static_cast<unsigned>(std::bit_width(v)) - 1; // >= precision_bits
        const unsigned shift = top - precision_bits;
        const std::uint64_t mantissa = v >> shift; // in [linear_limit, 2 * linear_limit)
        return static_cast<std::size_t>(shift * linear_limit + mantissa);
    }

    static std::uint64_t lowest_in(std::size_t index) {
        if (index < 2 * linear_limit)
            return index;
        const std::uint64_t shift = index / linear_limit - 1;
        const std::uint64_t mantissa = index - shift * linear_limit;
        return mantissa << shift;
    }

    static std::uint64_t highest_in(std::size_t index) {
        if (index < 2 * linear_limit)
            return index;
        const std::uint64_t shift = index / linear_limit - 1;
        return lowest_in(index) + (std::uint64_t{1} << shift) - 1;
    }

private:
    std::vector<std::uint64_t> counts_;
    std::uint64_t total_ = 0;
    std::uint64_t min_ = std::numeric_limits<std::uint64_t>::max();
    std::uint64_t max_ = 0;
};

} // namespace sockherd::bench
