#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/status.hpp"

namespace iothub::fleetsim {

// Who the simulated devices talk to. Hub: iothubd's device protocol (SAS CONNECT, $iothub
// topics) and its REST API for service calls. Mosquitto: the same request/reply pattern
// over plain MQTT topics of an anonymous broker (the peer of the benchmarks).
enum class Target { Hub, Mosquitto };

// What one `fleetsim run` measures (see docs/benchmarks.md for the scenario table).
enum class Scenario {
  Connect,  // B1: connect every device (CONNECT + 2 SUBSCRIBEs), report rate and CONNACK latency
  Idle,     // B7: connect, then hold the connections for --duration and watch the server
  Methods,  // B3: one call in flight for --latency-calls, then --concurrency calls for --duration
  Twin,     // B4: service desired PATCHes with --concurrency in flight for --duration
  Jobs,     // B5: method job vs direct calls over the connected devices, twin job vs direct
            //     PATCHes over --registered devices
  Serve,    // keep devices connected and answering until --duration ends or SIGINT/SIGTERM
};

struct FleetOptions {
  Target target = Target::Hub;
  Scenario scenario = Scenario::Connect;

  // Where the server listens (plain TCP unless tls is set).
  std::string server_address = "127.0.0.1";
  std::uint16_t mqtt_port = 0;
  std::uint16_t http_port = 0;  // hub REST over plain HTTP (service calls)
  bool tls = false;
  std::string ca_file;  // with tls: the CA that signs the server certificate

  // Hub credentials: the hub's host name (SAS resource and MQTT user name), the key every
  // provisioned device shares, and the service connection string for REST calls.
  std::string host_name = "localhost";
  std::string device_key;
  std::string service_connection_string;

  std::string device_prefix = "fleet-";
  std::size_t devices = 100;   // devices this process connects
  std::size_t registered = 0;  // devices registered in the hub (twin job / direct); 0 = devices
  // Which devices this process connects: first_device, first_device + device_stride, ...
  // (`devices` of them), so that several processes can share one fleet, e.g. one per cluster
  // node with device i on node i mod 3 (--first 1 --stride 3 for node 2).
  std::size_t first_device = 0;
  std::size_t device_stride = 1;
  // Devices the service side addresses (direct calls, jobs): 0..fleet_devices-1 when set,
  // including those other processes connect; 0 = only this process's own devices.
  std::size_t fleet_devices = 0;
  std::size_t source_addresses = 64;
  std::size_t connect_window = 500;  // connects in progress at once
  std::uint16_t keep_alive_seconds = 60;
  bool clean_session = true;
  unsigned threads = 1;  // io_context threads; devices are spread over them

  // Device behaviour.
  std::chrono::milliseconds method_delay{0};
  double method_failure_rate = 0.0;      // fraction of calls answered with status 500
  std::chrono::seconds report_every{0};  // reported-property PATCH per device (0 = never)
  std::chrono::seconds storm_every{0};   // drop and reconnect a fraction of the devices
  double storm_fraction = 0.1;

  // Load.
  std::size_t concurrency = 32;      // calls in flight (Methods, Twin, Jobs direct paths)
  std::size_t latency_calls = 2000;  // Methods: calls with one in flight
  std::chrono::milliseconds duration{10000};
  std::string method_payload = R"({"lockTime":"10m"})";
  std::string method_response = R"({"ok":true})";

  // Observed server process (RSS and CPU sampled at phase boundaries); 0 = none.
  int server_pid = 0;
  std::chrono::seconds timeout{120};  // upper bound for every wait (connecting, draining)
};

// Checks ranges and combinations (e.g. hub target needs a device key, rates within [0, 1],
// devices within [1, 19 990] per process). Errors: ArgumentInvalid naming the option.
Status validate(const FleetOptions& options);

// The global index of this process's `local`-th device: first_device + local * device_stride.
std::size_t deviceIndex(const FleetOptions& options, std::size_t local);
// Whether device `index` is one this process connects; if so, `local` is its position.
bool ownDevice(const FleetOptions& options, std::size_t index, std::size_t& local);

// The devices service calls and jobs address: device_first + k * device_stride for k in
// [0, count). With fleet_devices set, 0..fleet_devices-1; otherwise this process's own.
struct AddressedDevices {
  std::size_t first = 0;
  std::size_t stride = 1;
  std::size_t count = 0;
};
AddressedDevices addressedDevices(const FleetOptions& options);

// "fleet-000042": the prefix and the index zero-padded to 6 digits, so ids sort like indices.
std::string deviceId(std::string_view prefix, std::size_t index);

// Parses "250ms", "3s", "2m", "1h" or a bare number of seconds. Errors: ArgumentInvalid.
Result<std::chrono::milliseconds> parseDuration(std::string_view text);

Result<Target> parseTarget(std::string_view text);
Result<Scenario> parseScenario(std::string_view text);
std::string_view toString(Target target);
std::string_view toString(Scenario scenario);

// Splits a method-request topic "$iothub/methods/POST/{name}/?$rid={rid}" (hub) or
// "fleet/{deviceId}/methods/POST/{name}/?$rid={rid}" (broker) into name and rid; false when
// the topic has another shape.
bool parseMethodTopic(std::string_view topic, std::string_view& name, std::string_view& rid);

// The `$version` query parameter of a desired-property notification topic, or -1.
std::int64_t parseVersionParameter(std::string_view topic);

}  // namespace iothub::fleetsim
