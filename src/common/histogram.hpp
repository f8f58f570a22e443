#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace iothub {

// A histogram the data path observes with a few relaxed atomic operations (no lock, no
// allocation), read as a snapshot by the metrics endpoint. `bounds` are the buckets' upper
// bounds, ascending; a last bucket (+Inf) takes the rest. Thread-safe.
class AtomicHistogram {
 public:
  explicit AtomicHistogram(std::vector<double> bounds)
      : bounds_(std::move(bounds)), counts_(bounds_.size() + 1) {}

  void observe(double value) {
    std::size_t i = 0;
    while (i < bounds_.size() && value > bounds_[i]) ++i;
    counts_[i].fetch_add(1, std::memory_order_relaxed);
    double sum = sum_.load(std::memory_order_relaxed);
    while (!sum_.compare_exchange_weak(sum, sum + value, std::memory_order_relaxed)) {
    }
  }
  void observe(std::chrono::nanoseconds elapsed) {
    observe(std::chrono::duration<double>(elapsed).count());
  }

  struct Snapshot {
    std::vector<std::uint64_t> counts;  // per bucket, not cumulative; the last is +Inf
    double sum = 0;
  };
  Snapshot snapshot() const {
    Snapshot s;
    s.counts.reserve(counts_.size());
    for (const auto& c : counts_) s.counts.push_back(c.load(std::memory_order_relaxed));
    s.sum = sum_.load(std::memory_order_relaxed);
    return s;
  }
  std::span<const double> bounds() const { return bounds_; }

  // Bucket bounds for latencies in seconds: 0.5 ms to 60 s.
  static std::vector<double> latencyBounds() {
    return {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
  }

 private:
  const std::vector<double> bounds_;
  std::vector<std::atomic<std::uint64_t>> counts_;
  std::atomic<double> sum_{0};
};

}  // namespace iothub
