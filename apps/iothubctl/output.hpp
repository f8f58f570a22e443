#pragma once

// Human-readable renderings of SDK values for iothubctl. Pure functions, no I/O.

#include <string>
#include <vector>

#include "iothub/service/device.hpp"
#include "iothub/service/registry_client.hpp"

namespace iothub::ctl {

// "key: value" lines, values aligned, one per device field.
std::string formatDevice(const service::Device& device);
// An aligned table with a header row, one line per device.
std::string formatDeviceTable(const std::vector<service::Device>& devices);
std::string formatStatistics(const service::RegistryStatistics& stats);

}  // namespace iothub::ctl
