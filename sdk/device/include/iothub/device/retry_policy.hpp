#pragma once

#include <chrono>
#include <optional>

#include "iothub/random.hpp"
#include "iothub/status.hpp"

namespace iothub::device {

// How DeviceClient waits between connection attempts: exponential back-off with jitter, like
// the Azure SDKs' ExponentialBackOffWithJitter. Used after a failed connection attempt and
// after a dropped connection; never after a planned reconnect (SAS token renewal).
struct RetryPolicy {
  // Wait before the first retry.
  std::chrono::milliseconds initial_delay{1000};
  // No wait is longer than this.
  std::chrono::milliseconds max_delay{60'000};
  // Growth factor from one retry to the next; at least 1.
  double multiplier = 2.0;
  // Fraction in [0, 1]: each wait is shortened at random by up to this fraction of itself,
  // so that devices dropped together do not reconnect in lockstep.
  double jitter = 0.2;
  // Consecutive failed connection attempts after which the client gives up (status
  // Disconnected / RetryExpired); nullopt retries forever. Counts attempts, not retries: 1
  // means "try once". Reset by every successful connection.
  std::optional<int> max_attempts;
};

// Ok, or ArgumentInvalid naming the field: negative delays, initial_delay > max_delay,
// multiplier < 1 (or not finite), jitter outside [0, 1], max_attempts < 1.
Status validateRetryPolicy(const RetryPolicy& policy);

// The wait before retry number `retry` (0 = the first retry after a failure or a drop):
// base = min(max_delay, initial_delay * multiplier^retry), then base * (1 - jitter * u) with
// u uniform in [0, 1) drawn from `random`. Never negative, never above max_delay.
// `policy` must be valid (see validateRetryPolicy); a negative `retry` counts as 0.
std::chrono::milliseconds backoffDelay(const RetryPolicy& policy, int retry, Random& random);

}  // namespace iothub::device
