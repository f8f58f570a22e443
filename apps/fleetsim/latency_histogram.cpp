#include "apps/fleetsim/latency_histogram.hpp"

#include <algorithm>
#include <bit>
#include <cmath>

namespace iothub::fleetsim {

namespace {
constexpr unsigned kSubBits = 5;
constexpr std::uint64_t kSub = std::uint64_t{1} << kSubBits;  // 32
constexpr unsigned kMaxExponent = 40;
constexpr std::size_t kBucketCount = kSub + (kMaxExponent - kSubBits + 1) * kSub;
constexpr std::uint64_t kMaxValue = (std::uint64_t{1} << (kMaxExponent + 1)) - 1;
}  // namespace

LatencyHistogram::LatencyHistogram() : buckets_(kBucketCount, 0) {}

std::size_t LatencyHistogram::bucketOf(std::uint64_t micros) {
  micros = std::min(micros, kMaxValue);
  if (micros < kSub) return static_cast<std::size_t>(micros);
  const unsigned exponent = static_cast<unsigned>(std::bit_width(micros)) - 1;  // >= kSubBits
  const unsigned shift = exponent - kSubBits;
  return static_cast<std::size_t>(kSub + std::uint64_t{shift} * kSub + ((micros >> shift) - kSub));
}

std::uint64_t LatencyHistogram::bucketUpperEdge(std::size_t bucket) {
  if (bucket < kSub) return bucket;
  const std::uint64_t shift = (bucket - kSub) / kSub;
  const std::uint64_t mantissa = kSub + (bucket - kSub) % kSub;
  return ((mantissa + 1) << shift) - 1;
}

void LatencyHistogram::record(std::uint64_t micros) {
  ++buckets_[bucketOf(micros)];
  if (count_ == 0 || micros < min_) min_ = micros;
  max_ = std::max(max_, micros);
  ++count_;
  sum_ += micros;
}

void LatencyHistogram::merge(const LatencyHistogram& other) {
  if (other.count_ == 0) return;
  for (std::size_t i = 0; i < buckets_.size(); ++i) buckets_[i] += other.buckets_[i];
  min_ = count_ == 0 ? other.min_ : std::min(min_, other.min_);
  max_ = std::max(max_, other.max_);
  count_ += other.count_;
  sum_ += other.sum_;
}

std::uint64_t LatencyHistogram::percentile(double q) const {
  if (count_ == 0) return 0;
  q = std::clamp(q, 0.0, 1.0);
  // The rank (1-based) of the sample we want: ceil(q * count), at least 1.
  auto rank = static_cast<std::uint64_t>(std::ceil(q * static_cast<double>(count_)));
  rank = std::max<std::uint64_t>(rank, 1);
  std::uint64_t seen = 0;
  for (std::size_t i = 0; i < buckets_.size(); ++i) {
    seen += buckets_[i];
    if (seen >= rank) return std::clamp(bucketUpperEdge(i), min_, max_);
  }
  return max_;
}

}  // namespace iothub::fleetsim
