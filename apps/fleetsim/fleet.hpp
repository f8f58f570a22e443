#pragma once

#include <atomic>
#include <cstddef>
#include <string>

#include "apps/fleetsim/fleet_options.hpp"
#include "common/json.hpp"
#include "common/status.hpp"

namespace iothub::fleetsim {

// Runs one scenario (see Scenario) with every device of `options` multiplexed over
// options.threads io_context threads, and returns the figures as one JSON object. Progress
// goes to stderr. Errors: ArgumentInvalid for a bad service connection string or CA file;
// Unavailable-style errors when devices cannot connect within options.timeout.
// Blocks until the scenario ends; `stop` (set from a signal handler) ends Serve and Idle
// early.
Result<json::object> runFleet(const FleetOptions& options, const std::atomic<bool>& stop);

// Registers devices `first` .. `first + count - 1` (ids deviceId(prefix, i)) with the
// shared symmetric key, 100 per bulk request, `parallel` requests in flight over the hub's
// REST endpoint ("http://127.0.0.1:PORT" or https with `ca_file`). Devices that already
// exist count as provisioned. Returns {"devices", "elapsed_s", "devices_per_s"}.
Result<json::object> provisionDevices(const std::string& service_connection_string,
                                      const std::string& endpoint, const std::string& ca_file,
                                      const std::string& prefix, std::size_t first,
                                      std::size_t count, const std::string& device_key,
                                      std::size_t parallel);

}  // namespace iothub::fleetsim
