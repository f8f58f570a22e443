#include "iothub/device/retry_policy.hpp"

#include <gtest/gtest.h>

#include <cstring>

namespace iothub::device {
namespace {

using std::chrono::milliseconds;

// Returns the same 64 random bits every time.
class FixedRandom final : public Random {
 public:
  explicit FixedRandom(std::uint64_t value) : value_(value) {}
  void fill(void* out, std::size_t size) override {
    std::memcpy(out, &value_, std::min(size, sizeof value_));
  }

 private:
  std::uint64_t value_;
};

TEST(RetryPolicyTest, GrowsExponentiallyUpToTheMaximum) {
  RetryPolicy policy{milliseconds(100), milliseconds(1000), 2.0, 0.0, std::nullopt};
  SeededRandom random(1);
  EXPECT_EQ(backoffDelay(policy, 0, random), milliseconds(100));
  EXPECT_EQ(backoffDelay(policy, 1, random), milliseconds(200));
  EXPECT_EQ(backoffDelay(policy, 2, random), milliseconds(400));
  EXPECT_EQ(backoffDelay(policy, 3, random), milliseconds(800));
  EXPECT_EQ(backoffDelay(policy, 4, random), milliseconds(1000));
  EXPECT_EQ(backoffDelay(policy, 5000, random), milliseconds(1000));
  EXPECT_EQ(backoffDelay(policy, -3, random), milliseconds(100));
}

TEST(RetryPolicyTest, JitterShortensByAtMostTheFraction) {
  RetryPolicy policy{milliseconds(1000), milliseconds(60'000), 2.0, 0.5, std::nullopt};
  FixedRandom zero(0);
  EXPECT_EQ(backoffDelay(policy, 0, zero), milliseconds(1000));
  FixedRandom almost_one(~std::uint64_t{0});
  EXPECT_EQ(backoffDelay(policy, 0, almost_one), milliseconds(500));
  FixedRandom half(std::uint64_t{1} << 63);
  EXPECT_EQ(backoffDelay(policy, 1, half), milliseconds(1500));

  SeededRandom random(42);
  bool varied = false;
  milliseconds first = backoffDelay(policy, 3, random);
  for (int i = 0; i < 200; ++i) {
    milliseconds delay = backoffDelay(policy, 3, random);
    EXPECT_GE(delay, milliseconds(4000));
    EXPECT_LE(delay, milliseconds(8000));
    varied = varied || delay != first;
  }
  EXPECT_TRUE(varied);
}

TEST(RetryPolicyTest, RejectsInvalidPolicies) {
  EXPECT_TRUE(validateRetryPolicy(RetryPolicy{}).isOk());
  RetryPolicy policy;
  policy.initial_delay = milliseconds(-1);
  EXPECT_EQ(validateRetryPolicy(policy).code(), ErrorCode::ArgumentInvalid);
  policy = RetryPolicy{};
  policy.initial_delay = milliseconds(2000);
  policy.max_delay = milliseconds(1000);
  EXPECT_EQ(validateRetryPolicy(policy).code(), ErrorCode::ArgumentInvalid);
  policy = RetryPolicy{};
  policy.multiplier = 0.5;
  EXPECT_EQ(validateRetryPolicy(policy).code(), ErrorCode::ArgumentInvalid);
  policy = RetryPolicy{};
  policy.jitter = 1.5;
  EXPECT_EQ(validateRetryPolicy(policy).code(), ErrorCode::ArgumentInvalid);
  policy = RetryPolicy{};
  policy.max_attempts = 0;
  EXPECT_EQ(validateRetryPolicy(policy).code(), ErrorCode::ArgumentInvalid);
}

}  // namespace
}  // namespace iothub::device
