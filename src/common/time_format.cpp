#include "common/time_format.hpp"

#include <charconv>
#include <cstdio>
#include <ctime>

namespace iothub {

std::string formatTimestamp(SystemTime t) {
  using namespace std::chrono;
  auto ticks = duration_cast<nanoseconds>(t.time_since_epoch()).count();
  auto secs = ticks / 1'000'000'000;
  auto nanos = ticks % 1'000'000'000;
  if (nanos < 0) {
    nanos += 1'000'000'000;
    secs -= 1;
  }
  std::time_t tt = static_cast<std::time_t>(secs);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%07lldZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<long long>(nanos / 100));
  return buf;
}

namespace {

bool readInt(std::string_view& s, std::size_t digits, int& out) {
  if (s.size() < digits) return false;
  for (std::size_t i = 0; i < digits; ++i) {
    if (s[i] < '0' || s[i] > '9') return false;
  }
  std::from_chars(s.data(), s.data() + digits, out);
  s.remove_prefix(digits);
  return true;
}

bool expect(std::string_view& s, char c) {
  if (s.empty() || s.front() != c) return false;
  s.remove_prefix(1);
  return true;
}

}  // namespace

std::optional<SystemTime> parseTimestamp(std::string_view s) {
  int year, month, day, hour, minute, second;
  if (!readInt(s, 4, year) || !expect(s, '-') || !readInt(s, 2, month) || !expect(s, '-') ||
      !readInt(s, 2, day) || s.empty() || (s.front() != 'T' && s.front() != 't' && s.front() != ' '))
    return std::nullopt;
  s.remove_prefix(1);
  if (!readInt(s, 2, hour) || !expect(s, ':') || !readInt(s, 2, minute) || !expect(s, ':') ||
      !readInt(s, 2, second))
    return std::nullopt;
  if (month < 1 || month > 12 || day < 1 || day > 31 || hour > 23 || minute > 59 || second > 60)
    return std::nullopt;
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
  int offset_minutes = 0;
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
  std::tm tm{};
  tm.tm_year = year - 1900;
  tm.tm_mon = month - 1;
  tm.tm_mday = day;
  tm.tm_hour = hour;
  tm.tm_min = minute;
  tm.tm_sec = second;
  std::time_t secs = timegm(&tm);
  secs -= offset_minutes * 60;
  using namespace std::chrono;
  return SystemTime{duration_cast<SystemTime::duration>(seconds{secs} + nanoseconds{nanos})};
}

}  // namespace iothub
