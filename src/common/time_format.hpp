#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

#include "common/clock.hpp"

namespace iothub {

// ISO-8601 UTC with seven fractional digits, as Azure writes timestamps:
// "2023-01-02T21:42:14.7050295Z".
std::string formatTimestamp(SystemTime t);

// Azure's "never" value for unset timestamps.
inline constexpr std::string_view kNeverTimestamp = "0001-01-01T00:00:00Z";

// The range of instants iothub handles: what SystemTime (std::chrono::system_clock,
// nanoseconds in an int64) can hold, in whole seconds: 1677-09-21T00:12:44Z to
// 2262-04-11T23:47:16Z.
inline constexpr SystemTime kEarliestTime{
    std::chrono::ceil<std::chrono::seconds>(SystemTime::min().time_since_epoch())};
inline constexpr SystemTime kLatestTime{
    std::chrono::floor<std::chrono::seconds>(SystemTime::max().time_since_epoch())};

// Parses ISO-8601 date-times: "YYYY-MM-DDThh:mm:ss[.fraction](Z|±hh:mm)" ('t' or a space
// may stand for 'T', 'z' for 'Z'). A missing zone is taken as UTC. Years are 0001 to 9999
// (the years Azure's DateTime holds); the day must exist in its month (no February 30);
// second 60 (a leap second) is read as the first second of the next minute; the fraction
// may have any number of digits, those beyond nanoseconds are ignored; offsets are at most
// ±23:59. nullopt when the text is not such a date-time or the instant it names (offset
// applied) lies outside [kEarliestTime, kLatestTime]. Never overflows.
std::optional<SystemTime> parseTimestamp(std::string_view text);

// A date-time parsed by parseTimestampClamped.
struct ClampedTimestamp {
  SystemTime time;       // within [kEarliestTime, kLatestTime]
  bool clamped = false;  // the text names an instant outside that range
};

// Like parseTimestamp, but a valid date-time outside [kEarliestTime, kLatestTime] (such as
// "9999-12-31T00:00:00Z") is clamped to the nearer end of the range instead of refused.
// For schedules, where such a time means "not while this hub runs" (or "long ago").
// nullopt only when the text is not a date-time by parseTimestamp's rules.
std::optional<ClampedTimestamp> parseTimestampClamped(std::string_view text);

// t + d, clamped to [kEarliestTime, kLatestTime] instead of overflowing (signed overflow
// in chrono arithmetic is undefined behaviour).
SystemTime addClamped(SystemTime t, std::chrono::seconds d);

}  // namespace iothub
