#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.hpp"

namespace iothub::fleetsim {

// Who the simulated devices talk to. Hub: iothubd's device protocol (SAS CONNECT, $iothub
// topics) and its REST API for service calls. Mosquitto: the same request/reply pattern
// over plain MQTT topics of an anonymous broker (the peer of the benchmarks).
enum class Target { Hub, Mosquitto };

// What one `fleetsim run` measures (see docs/benchmarks.md for the scenario table).
enum class Scenario {
  Connect,   // B1: connect every device (CONNECT + 2 SUBSCRIBEs), report rate and CONNACK latency
  Idle,      // B7: connect, then hold the connections for --duration and watch the server
  Methods,   // B3: one call in flight for --latency-calls, then --concurrency calls for --duration
  Twin,      // B4: service desired PATCHes with --concurrency in flight for --duration
  Jobs,      // B5: method job vs direct calls over the connected devices, twin job vs direct
             //     PATCHes over --registered devices
  Serve,     // keep devices connected and answering until --duration ends or SIGINT/SIGTERM
  TwinJobs,  // B8: a twin job over --registered devices, then the same with --job-extensions
  MethodJobs,  // B9: a method job over the connected devices, then the same with --job-extensions
  C2d,        // C2D: devices subscribed to devices/{id}/messages/devicebound/# at QoS 1 PUBACK what
              //      arrives until --messages distinct messages came (or --duration passed)
  Telemetry,  // D2C: every device publishes QoS 1 to devices/{id}/messages/events/ at --rate
              //      (one message in flight) for --duration; publish → PUBACK per message
  Sweep,      // B5's peer (Mosquitto only): exactly one request/reply per device, in device
              //      order, --concurrency in flight; first request → last reply
};

// Devices that fail their first `calls` direct-method calls (then answer normally): a share
// `fraction` of the fleet, picked by a hash of the device index (flakyGroupOf), so every
// process and every run picks the same devices. Silent: the call is not answered (the hub
// reports GatewayTimeout after the method's response timeout); Error: answered with 500
// (DeviceMethodFailed in a job with failOnDeviceStatus).
enum class FlakyMode { Silent, Error };
struct FlakyGroup {
  double fraction = 0;
  std::uint32_t calls = 0;  // kAlwaysFails: every call
  FlakyMode mode = FlakyMode::Silent;
  bool operator==(const FlakyGroup&) const = default;
};
inline constexpr std::uint32_t kAlwaysFails = UINT32_MAX;

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
  // Answer each desired-property notification with a reported-properties PATCH holding the
  // same values (a device that applies what it is told; twin jobs with convergence wait
  // for it).
  bool report_desired = false;
  // --flaky FRACTION:CALLS[:MODE] (repeatable): groups take consecutive slices of [0, 1).
  std::vector<FlakyGroup> flaky;

  // Load.
  std::size_t concurrency = 32;      // calls in flight (Methods, Twin, Jobs direct paths)
  std::size_t latency_calls = 2000;  // Methods: calls with one in flight
  // Broker target (Methods, Sweep): MQTT connections of the service side; the calls in
  // flight are spread over them (several requests in flight on one connection, told apart
  // by their rid). 0 = one connection per call in flight (--concurrency of them).
  std::size_t requesters = 0;
  std::chrono::milliseconds duration{10000};
  std::string method_payload = R"({"lockTime":"10m"})";
  std::string method_response = R"({"ok":true})";
  // TwinJobs / MethodJobs: members added to the second job's body (a JSON object's text,
  // e.g. {"convergence":{"timeoutSeconds":30}}), the method jobs' response timeout, and how
  // often each job's statistics go into its timeline.
  std::string job_extensions;
  // Against the broker (Methods, Sweep), response_timeout is also how long a request waits
  // for its reply before it fails (checked once a second).
  std::chrono::seconds response_timeout{30};
  std::chrono::milliseconds sample_every{5000};
  // C2d: the messages the sender sends (numbered 0..messages-1, message k to addressed
  // device k mod count, see c2dPayload); the scenario ends when each has arrived.
  std::uint64_t messages = 0;
  // Telemetry: the messages per second this process offers in all (spread evenly over its
  // devices); 0 = as fast as PUBACKs come back (each device sends its next message when the
  // last one is acknowledged). One message per device is in flight either way, so a device
  // whose PUBACKs take longer than its interval falls behind (the offered rate is a ceiling).
  double rate = 0;
  // Telemetry: where to write one D2cRecord (d2c_log.hpp) per PUBACKed message; empty = none.
  std::string ack_log;

  // Observed server process (RSS and CPU sampled at phase boundaries); 0 = none.
  int server_pid = 0;
  std::chrono::seconds timeout{120};  // upper bound for every wait (connecting, draining)
};

// Checks ranges and combinations (e.g. hub target needs a device key, rates within [0, 1],
// devices within [1, 19 990] per process). Errors: ArgumentInvalid naming the option.
Status validate(const FleetOptions& options);

// The service side's MQTT connections to the broker (Methods and Sweep against Mosquitto;
// 0 otherwise): --requesters, at most --concurrency, or one per call in flight.
std::size_t requesterConnections(const FleetOptions& options);

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

// The status segment of a twin response topic "$iothub/twin/res/{status}/?$rid=..." (or
// "fleet/{id}/twin/res/{status}/..."), or -1.
int parseTwinResponseStatus(std::string_view topic);

// The body of the reported-properties PATCH that answers a desired-property notification
// `payload` (the patch and its "$version"): the same members without the "$" ones.
// Errors: IotHubFormatError for a payload that is not a JSON object.
Result<std::string> reportedFromDesired(std::string_view payload);

// The payload of C2D benchmark message `seq`, sent at `sent_ns` (steady clock, which is
// CLOCK_MONOTONIC and so comparable between processes of one machine): "c2d <seq> <sent_ns>".
std::string c2dPayload(std::uint64_t seq, std::int64_t sent_ns);
// Reads it back; false for anything else.
bool parseC2dPayload(std::string_view payload, std::uint64_t& seq, std::int64_t& sent_ns);
// Messages one C2d run may number (a byte each to find duplicates).
inline constexpr std::uint64_t kMaxC2dMessages = 100'000'000;

// "0.05:2", "0.01:always", "0.1:1:error" (FRACTION:CALLS[:silent|error]). Errors:
// ArgumentInvalid.
Result<FlakyGroup> parseFlakyGroup(std::string_view text);
// A number in [0, 1) that depends only on `index` (splitmix64).
double unitHash(std::size_t index);
// The group of `groups` device `index` belongs to: group g covers hashes from the sum of the
// fractions before it up to that sum plus its own. -1: none (the device always answers).
int flakyGroupOf(const std::vector<FlakyGroup>& groups, std::size_t index);

// How a method job ends for a device of `group` (nullptr: not flaky), given the job's retry
// policy: `max_attempts` (1 without retry), whether the device's failure is retried
// (`retried`) and whether it fails the device at all (`fails`: GatewayTimeout always does;
// a 500 only with failOnDeviceStatus). attempts = calls the device received.
struct ExpectedOutcome {
  bool succeeded = true;
  std::uint32_t attempts = 1;
};
ExpectedOutcome expectedOutcome(const FlakyGroup* group, std::uint32_t max_attempts, bool retried,
                                bool fails);

}  // namespace iothub::fleetsim
