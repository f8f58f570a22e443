#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace iothub::fleetsim {

// A log-linear histogram of latencies in microseconds: exact below 32 µs, then 32 buckets per
// power of two (at most ~3 % relative error), up to 2^40 µs. Recording is O(1) with no
// allocation, so it can sit on a hot path; one histogram per thread, merged at the end.
// Not thread-safe.
class LatencyHistogram {
 public:
  LatencyHistogram();

  void record(std::uint64_t micros);
  void merge(const LatencyHistogram& other);

  std::uint64_t count() const { return count_; }
  std::uint64_t min() const { return count_ == 0 ? 0 : min_; }
  std::uint64_t max() const { return max_; }
  double mean() const {
    return count_ == 0 ? 0.0 : static_cast<double>(sum_) / static_cast<double>(count_);
  }
  // The value below which a fraction `q` (0..1) of the samples lie: the upper edge of the
  // bucket holding that rank, clamped to [min(), max()]. 0 when empty.
  std::uint64_t percentile(double q) const;

  // Bucket arithmetic, exposed for tests.
  static std::size_t bucketOf(std::uint64_t micros);
  static std::uint64_t bucketUpperEdge(std::size_t bucket);

 private:
  std::vector<std::uint64_t> buckets_;
  std::uint64_t count_ = 0;
  std::uint64_t sum_ = 0;
  std::uint64_t min_ = 0;
  std::uint64_t max_ = 0;
};

}  // namespace iothub::fleetsim
