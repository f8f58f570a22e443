#pragma once

#include <cstddef>
#include <string_view>

namespace iothub::telemetry {

// The most consumer groups a hub may have, "$Default" included (docs/telemetry.md §9;
// decisions §78). Azure documents 20 per hub; iothub has no tiers or units to sell.
inline constexpr std::size_t kMaxConsumerGroups = 100;

// Whether `name` may name a consumer group of the Event Hubs-compatible endpoint (Event Hubs'
// documented rule): 1 to 50 characters of ASCII letters, digits, '.', '-' and '_', beginning
// and ending with a letter or a digit. "$Default" in any case is valid too (the group every
// hub has; the Event Hubs SDKs spell it "$default").
bool validConsumerGroupName(std::string_view name);

}  // namespace iothub::telemetry
