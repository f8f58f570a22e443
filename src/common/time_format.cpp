#include "common/time_format.hpp"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <string>

namespace iothub {

std::string formatTimestamp(SystemTime t) {
  // Digits written in place, not snprintf with gmtime_r: this runs for every twin
  // metadata entry and job row the hub writes (a job formats several per device), and the
  // calendar arithmetic of <chrono> is a few integer operations (docs/decisions.md §94).
  using namespace std::chrono;
  auto ticks = duration_cast<nanoseconds>(t.time_since_epoch()).count();
  auto secs = ticks / 1'000'000'000;
  auto nanos = ticks % 1'000'000'000;
  if (nanos < 0) {
    nanos += 1'000'000'000;
    secs -= 1;
  }
  // Whole days before the instant, and the seconds into its day (both floor divisions).
  std::int64_t day_count = secs / 86'400;
  std::int64_t second_of_day = secs % 86'400;
  if (second_of_day < 0) {
    second_of_day += 86'400;
    day_count -= 1;
  }
  const year_month_day date{sys_days{days{day_count}}};
  // SystemTime spans 1677–2262 (nanoseconds in 64 bits): the year has four digits.
  char text[] = "0000-00-00T00:00:00.0000000Z";
  auto put = [&text](std::size_t at, std::size_t width, std::int64_t value) {
    for (std::size_t i = width; i-- > 0; value /= 10)
      text[at + i] = static_cast<char>('0' + value % 10);
  };
  put(0, 4, static_cast<int>(date.year()));
  put(5, 2, static_cast<unsigned>(date.month()));
  put(8, 2, static_cast<unsigned>(date.day()));
  put(11, 2, second_of_day / 3600);
  put(14, 2, second_of_day / 60 % 60);
  put(17, 2, second_of_day % 60);
  put(20, 7, nanos / 100);
  return std::string(text, sizeof text - 1);
}

namespace {

constexpr std::int64_t kEarliestSeconds =
    std::chrono::duration_cast<std::chrono::seconds>(kEarliestTime.time_since_epoch()).count();
constexpr std::int64_t kLatestSeconds =
    std::chrono::duration_cast<std::chrono::seconds>(kLatestTime.time_since_epoch()).count();

bool readInt(std::string_view& s, std::size_t digits, int& out) {
  if (s.size() < digits) return false;
  int value = 0;
  for (std::size_t i = 0; i < digits; ++i) {
    if (s[i] < '0' || s[i] > '9') return false;
    value = value * 10 + (s[i] - '0');
  }
  out = value;
  s.remove_prefix(digits);
  return true;
}

bool expect(std::string_view& s, char c) {
  if (s.empty() || s.front() != c) return false;
  s.remove_prefix(1);
  return true;
}

// An instant as whole seconds since the epoch (UTC) plus nanoseconds 0..999999999. Every
// field is bounded (years 1..9999, offsets under a day), so the seconds stay within about
// ±2.6e11 and no arithmetic here can overflow.
struct Instant {
  std::int64_t seconds = 0;
  std::int64_t nanos = 0;
};

std::optional<Instant> parseInstant(std::string_view s) {
  using namespace std::chrono;
  int y, mo, d, h, mi, sec;
  if (!readInt(s, 4, y) || !expect(s, '-') || !readInt(s, 2, mo) || !expect(s, '-') ||
      !readInt(s, 2, d) || s.empty() || (s.front() != 'T' && s.front() != 't' && s.front() != ' '))
    return std::nullopt;
  s.remove_prefix(1);
  if (!readInt(s, 2, h) || !expect(s, ':') || !readInt(s, 2, mi) || !expect(s, ':') ||
      !readInt(s, 2, sec))
    return std::nullopt;
  year_month_day date{year{y}, month{static_cast<unsigned>(mo)}, day{static_cast<unsigned>(d)}};
  if (y < 1 || !date.ok() || h > 23 || mi > 59 || sec > 60) return std::nullopt;
  std::int64_t nanos = 0;
  if (!s.empty() && s.front() == '.') {
    s.remove_prefix(1);
    std::size_t digits = 0;
    std::int64_t scale = 100'000'000;
    while (!s.empty() && s.front() >= '0' && s.front() <= '9') {
      if (digits < 9) {
        nanos += (s.front() - '0') * scale;
        scale /= 10;
      }
      ++digits;
      s.remove_prefix(1);
    }
    if (digits == 0) return std::nullopt;
  }
  std::int64_t offset_minutes = 0;
  if (!s.empty() && (s.front() == 'Z' || s.front() == 'z')) {
    s.remove_prefix(1);
  } else if (!s.empty() && (s.front() == '+' || s.front() == '-')) {
    int sign = s.front() == '-' ? -1 : 1;
    s.remove_prefix(1);
    int oh, om;
    if (!readInt(s, 2, oh) || !expect(s, ':') || !readInt(s, 2, om) || oh > 23 || om > 59)
      return std::nullopt;
    offset_minutes = sign * (oh * 60 + om);
  }
  if (!s.empty()) return std::nullopt;
  std::int64_t days = sys_days(date).time_since_epoch().count();
  std::int64_t seconds =
      days * 86400 + h * 3600 + mi * 60 + sec - offset_minutes * 60;  // sec 60: next minute
  return Instant{seconds, nanos};
}

bool beforeEarliest(const Instant& i) { return i.seconds < kEarliestSeconds; }
bool afterLatest(const Instant& i) {
  return i.seconds > kLatestSeconds || (i.seconds == kLatestSeconds && i.nanos > 0);
}

SystemTime toSystemTime(const Instant& i) {
  using namespace std::chrono;
  return SystemTime{duration_cast<SystemTime::duration>(seconds{i.seconds}) +
                    duration_cast<SystemTime::duration>(nanoseconds{i.nanos})};
}

}  // namespace

std::optional<SystemTime> parseTimestamp(std::string_view text) {
  auto instant = parseInstant(text);
  if (!instant || beforeEarliest(*instant) || afterLatest(*instant)) return std::nullopt;
  return toSystemTime(*instant);
}

std::optional<ClampedTimestamp> parseTimestampClamped(std::string_view text) {
  auto instant = parseInstant(text);
  if (!instant) return std::nullopt;
  if (beforeEarliest(*instant)) return ClampedTimestamp{kEarliestTime, true};
  if (afterLatest(*instant)) return ClampedTimestamp{kLatestTime, true};
  return ClampedTimestamp{toSystemTime(*instant), false};
}

SystemTime addClamped(SystemTime t, std::chrono::seconds d) {
  using namespace std::chrono;
  t = std::clamp(t, kEarliestTime, kLatestTime);
  // Both differences fit easily: t is within the range, which spans about 1.8e10 seconds.
  std::int64_t whole = floor<seconds>(t.time_since_epoch()).count();
  if (d.count() >= kLatestSeconds - whole) return kLatestTime;
  if (d.count() < kEarliestSeconds - whole) return kEarliestTime;
  return t + duration_cast<SystemTime::duration>(d);
}

}  // namespace iothub
