#pragma once

#include <string>
#include <vector>

#include "common/json.hpp"

namespace iothub::query {

// A property path compiled once at parse time: the member names to follow from the row
// object, already split and with identity fields in their canonical case ("DeviceId" is
// stored as "deviceId"; tag and property names keep the case they were written in).
// For FROM devices.jobs the "devices.jobs." prefix is removed: `devices.jobs.status` is
// {"status"}, the member of the device-job row.
struct Path {
  std::vector<std::string> keys;

  // The value at this path in `row`, or nullptr when it is undefined (a member is missing
  // or an intermediate value is not an object). The pointer refers into `row`.
  const json::value* resolve(const json::object& row) const;

  // The last key: the name a projection of this path gets by default.
  const std::string& leaf() const { return keys.back(); }

  // Dotted form of the keys, e.g. "tags.location.region" (for messages and tests).
  std::string toString() const;

  bool operator==(const Path&) const = default;
};

}  // namespace iothub::query
