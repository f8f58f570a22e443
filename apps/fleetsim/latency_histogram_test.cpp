#include "apps/fleetsim/latency_histogram.hpp"

#include <gtest/gtest.h>

namespace iothub::fleetsim {
namespace {

TEST(LatencyHistogramTest, EmptyReportsZero) {
  LatencyHistogram h;
  EXPECT_EQ(h.count(), 0u);
  EXPECT_EQ(h.percentile(0.5), 0u);
  EXPECT_EQ(h.min(), 0u);
  EXPECT_EQ(h.mean(), 0.0);
}

TEST(LatencyHistogramTest, SmallValuesAreExact) {
  LatencyHistogram h;
  for (std::uint64_t v = 1; v <= 10; ++v) h.record(v);
  EXPECT_EQ(h.percentile(0.5), 5u);
  EXPECT_EQ(h.percentile(0.9), 9u);
  EXPECT_EQ(h.percentile(1.0), 10u);
  EXPECT_EQ(h.min(), 1u);
  EXPECT_EQ(h.max(), 10u);
  EXPECT_DOUBLE_EQ(h.mean(), 5.5);
}

TEST(LatencyHistogramTest, LargeValuesWithinThreePercent) {
  LatencyHistogram h;
  for (std::uint64_t v = 1; v <= 100'000; ++v) h.record(v);
  for (double q : {0.5, 0.9, 0.99, 0.999}) {
    const double expected = q * 100'000;
    const double got = static_cast<double>(h.percentile(q));
    EXPECT_GE(got, expected) << q;  // upper edge: never under-reports
    EXPECT_LE(got, expected * 1.035) << q;
  }
}

TEST(LatencyHistogramTest, BucketEdgesAreMonotonicAndContainTheirValues) {
  std::uint64_t previous = 0;
  for (std::size_t b = 1; b < 600; ++b) {
    const auto edge = LatencyHistogram::bucketUpperEdge(b);
    EXPECT_GT(edge, previous) << b;
    EXPECT_EQ(LatencyHistogram::bucketOf(edge), b) << b;
    EXPECT_EQ(LatencyHistogram::bucketOf(edge + 1), b + 1) << b;
    previous = edge;
  }
}

TEST(LatencyHistogramTest, HugeValuesAreClampedNotLost) {
  LatencyHistogram h;
  h.record(UINT64_MAX / 2);
  EXPECT_EQ(h.count(), 1u);
  EXPECT_EQ(h.percentile(0.5), UINT64_MAX / 2);  // clamped to max()
}

TEST(LatencyHistogramTest, MergeAddsCountsAndExtremes) {
  LatencyHistogram a;
  LatencyHistogram b;
  a.record(10);
  a.record(20);
  b.record(5);
  b.record(1000);
  a.merge(b);
  EXPECT_EQ(a.count(), 4u);
  EXPECT_EQ(a.min(), 5u);
  EXPECT_EQ(a.max(), 1000u);
  EXPECT_EQ(a.percentile(0.5), 10u);
  LatencyHistogram empty;
  empty.merge(a);
  EXPECT_EQ(empty.min(), 5u);
}

}  // namespace
}  // namespace iothub::fleetsim
