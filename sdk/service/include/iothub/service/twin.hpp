#pragma once

#include <cstdint>
#include <string>

#include "iothub/json.hpp"
#include "iothub/status.hpp"

namespace iothub::service {

// A device twin as the service REST API returns it (docs/protocol.md §6.1). The property sections
// are kept exactly as the hub sends them, "$version" and "$metadata" included, so they can
// be shown or compared without loss. `raw` is the whole twin document (identity fields such
// as status, connectionState or modelId live there only).
struct Twin {
  std::string device_id;
  std::string etag;          // send back as If-Match for a conditional update/replace
  std::int64_t version = 0;  // bumps on every twin change (tags, desired or reported)
  json::object tags;
  json::object desired;   // properties.desired
  json::object reported;  // properties.reported
  json::object raw;

  // Errors: IotHubFormatError when `value` is not an object, lacks a string deviceId, or
  // etag, version, tags, properties, desired or reported has the wrong type. Absent (or
  // null) sections are empty objects.
  static Result<Twin> fromJson(const json::value& value);
};

}  // namespace iothub::service
