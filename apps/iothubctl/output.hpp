#pragma once

// Human-readable renderings of SDK values for iothubctl. Pure functions, no I/O.

#include <string>
#include <vector>

#include "common/json.hpp"
#include "iothub/service/device.hpp"
#include "iothub/service/method_client.hpp"
#include "iothub/service/registry_client.hpp"

namespace iothub::ctl {

// "key: value" lines, values aligned, one per device field.
std::string formatDevice(const service::Device& device);
// An aligned table with a header row, one line per device.
std::string formatDeviceTable(const std::vector<service::Device>& devices);
std::string formatStatistics(const service::RegistryStatistics& stats);
// Indented JSON (two spaces per level, members in document order), newline-terminated.
std::string formatJsonPretty(const json::value& value);
// "status: <n>" and then the payload as indented JSON.
std::string formatMethodResponse(const service::MethodResponse& response);

}  // namespace iothub::ctl
