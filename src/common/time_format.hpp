#pragma once

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

// Parses ISO-8601 date-times: "YYYY-MM-DDThh:mm:ss[.fraction](Z|±hh:mm)". A missing zone
// is taken as UTC. nullopt when the text is not such a date-time or out of range.
std::optional<SystemTime> parseTimestamp(std::string_view text);

}  // namespace iothub
