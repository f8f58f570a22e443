#include "iothub/device/retry_policy.hpp"

#include <algorithm>
#include <cmath>

namespace iothub::device {

Status validateRetryPolicy(const RetryPolicy& policy) {
  auto invalid = [](std::string why) {
    return Status(ErrorCode::ArgumentInvalid, "Invalid retry policy: " + std::move(why));
  };
  if (policy.initial_delay.count() < 0 || policy.max_delay.count() < 0) {
    return invalid("delays must not be negative");
  }
  if (policy.initial_delay > policy.max_delay) {
    return invalid("initial_delay must not exceed max_delay");
  }
  if (!std::isfinite(policy.multiplier) || policy.multiplier < 1.0) {
    return invalid("multiplier must be at least 1");
  }
  if (!(policy.jitter >= 0.0 && policy.jitter <= 1.0)) {
    return invalid("jitter must be a fraction in [0, 1]");
  }
  if (policy.max_attempts && *policy.max_attempts < 1) {
    return invalid("max_attempts must be at least 1");
  }
  return Status::ok();
}

std::chrono::milliseconds backoffDelay(const RetryPolicy& policy, int retry, Random& random) {
  const double max_ms = static_cast<double>(policy.max_delay.count());
  // pow() overflows to +inf for large retries, which min() turns into max_delay.
  double base = static_cast<double>(policy.initial_delay.count()) *
                std::pow(policy.multiplier, static_cast<double>(std::max(retry, 0)));
  base = std::min(base, max_ms);
  // 53 random bits give a uniform double in [0, 1).
  double u = static_cast<double>(random.u64() >> 11) * 0x1.0p-53;
  double delay = base * (1.0 - policy.jitter * u);
  return std::chrono::milliseconds(static_cast<std::int64_t>(std::clamp(delay, 0.0, max_ms)));
}

}  // namespace iothub::device
