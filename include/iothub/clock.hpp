#pragma once

#include <atomic>
#include <chrono>

namespace iothub {

using SystemTime = std::chrono::system_clock::time_point;

// The one seam through which iothub reads wall-clock time (SAS expiry, twin metadata,
// job schedules). Tests inject FakeClock and advance it instead of sleeping.
// Implementations are thread-safe.
class Clock {
 public:
  virtual ~Clock() = default;
  virtual SystemTime now() const = 0;
};

class SystemClock final : public Clock {
 public:
  SystemTime now() const override { return std::chrono::system_clock::now(); }
};

class FakeClock final : public Clock {
 public:
  explicit FakeClock(SystemTime start = SystemTime{std::chrono::seconds{1700000000}})
      : now_(start.time_since_epoch().count()) {}
  SystemTime now() const override {
    return SystemTime{SystemTime::duration{now_.load(std::memory_order_relaxed)}};
  }
  void advance(std::chrono::nanoseconds by) {
    now_.fetch_add(std::chrono::duration_cast<SystemTime::duration>(by).count());
  }
  void set(SystemTime t) { now_.store(t.time_since_epoch().count()); }

 private:
  std::atomic<SystemTime::rep> now_;
};

// Seconds since the Unix epoch.
inline std::int64_t unixSeconds(SystemTime t) {
  return std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count();
}

}  // namespace iothub
