// fleetsim: the load generator of the benchmarks (docs/benchmarks.md). One process simulates
// up to 19 990 devices, each with its own MQTT connection, against iothubd or, as the
// baseline, an anonymous Mosquitto broker playing the same request/reply pattern.
//
//   fleetsim provision --connection-string CS --endpoint http://127.0.0.1:P --count N --device-key
//   K fleetsim run --target hub|mosquitto --scenario connect|idle|methods|twin|jobs|serve|
//   twin-jobs|method-jobs|c2d|telemetry|sweep ...
//   fleetsim combine --scenario B1 --hub hub.json --peer peer.json --ratio name=path ...
//   fleetsim d2c-join --acks ACKS --reads READS  (telemetry: PUBACK log joined with a reader's)
//   fleetsim free-port
//
// `run` prints one JSON object with the figures on stdout and exits 1 when the scenario
// did not complete (devices missing, calls failed).

#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>

#include "apps/fleetsim/d2c_log.hpp"
#include "apps/fleetsim/fleet.hpp"
#include "apps/fleetsim/report.hpp"

namespace fs = iothub::fleetsim;

namespace {

std::atomic<bool> g_stop{false};

extern "C" void onSignal(int) { g_stop.store(true); }

// Durations and rates as text so that "250ms" and "2m" work.
struct TextOptions {
  std::string target = "hub";
  std::string scenario = "connect";
  std::string method_delay = "0ms";
  std::string report_every = "0s";
  std::string storm_every = "0s";
  std::string duration = "10s";
  std::string timeout = "120s";
  std::string response_timeout = "30s";
  std::string sample_every = "5s";
  std::vector<std::string> flaky;
};

int freePort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  socklen_t length = sizeof address;
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    std::perror("free-port");
    return 1;
  }
  std::printf("%d\n", ntohs(address.sin_port));
  ::close(fd);
  return 0;
}

iothub::Result<iothub::json::value> readJsonFile(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream text;
  text << in.rdbuf();
  if (!in) return iothub::Status(iothub::ErrorCode::ArgumentInvalid, "cannot read " + path);
  return iothub::parseJson(text.str());
}

template <class T>
bool assign(iothub::Result<T> parsed, T& into, const char* what) {
  if (!parsed) {
    std::fprintf(stderr, "fleetsim: %s: %s\n", what, parsed.status().message().c_str());
    return false;
  }
  into = std::move(*parsed);
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"fleetsim: simulated device fleets for the iothub benchmarks"};
  app.require_subcommand(1);

  fs::FleetOptions options;
  TextOptions text;
  auto* run =
      app.add_subcommand("run", "Connect a fleet and run one scenario; prints JSON figures");
  run->add_option("--target", text.target, "hub or mosquitto")->capture_default_str();
  run->add_option("--scenario", text.scenario,
                  "connect, idle, methods, twin, jobs, serve, twin-jobs, method-jobs, c2d, "
                  "telemetry, sweep (mosquitto only: one request/reply per device)")
      ->capture_default_str();
  run->add_option("--server", options.server_address, "Server address")->capture_default_str();
  run->add_option("--mqtt-port", options.mqtt_port, "MQTT port (plain, or TLS with --tls)");
  run->add_option("--http-port", options.http_port, "Hub REST port (plain HTTP)");
  run->add_flag("--tls", options.tls, "MQTT over TLS");
  run->add_option("--ca", options.ca_file, "CA file for --tls");
  run->add_option("--hostname", options.host_name, "Hub host name (SAS resource, user name)")
      ->capture_default_str();
  run->add_option("--device-key", options.device_key,
                  "Symmetric key shared by the fleet's devices");
  run->add_option("--connection-string", options.service_connection_string,
                  "Service connection string");
  run->add_option("--prefix", options.device_prefix, "Device id prefix")->capture_default_str();
  run->add_option("--devices", options.devices, "Devices connected by this process")
      ->capture_default_str();
  run->add_option("--registered", options.registered,
                  "Devices registered in the hub (jobs scenario)");
  run->add_option("--first", options.first_device,
                  "Global index of this process's first device (several processes, one fleet)")
      ->capture_default_str();
  run->add_option("--stride", options.device_stride,
                  "Connect devices --first, --first + S, --first + 2S, ...")
      ->capture_default_str();
  run->add_option("--fleet-devices", options.fleet_devices,
                  "Service calls and jobs address devices 0..N-1 (default: this process's own)");
  run->add_option("--source-addresses", options.source_addresses, "Source addresses in 127.0.0.0/8")
      ->capture_default_str();
  run->add_option("--connect-window", options.connect_window, "Connects in progress at once")
      ->capture_default_str();
  run->add_option("--keep-alive", options.keep_alive_seconds, "MQTT keep-alive (s)")
      ->capture_default_str();
  run->add_flag("!--persistent-session", options.clean_session, "CONNECT with CleanSession=0");
  run->add_option("--threads", options.threads, "io_context threads")->capture_default_str();
  run->add_option("--method-delay", text.method_delay, "Devices answer methods after this delay")
      ->capture_default_str();
  run->add_option("--method-failure-rate", options.method_failure_rate,
                  "Fraction of calls answered 500")
      ->capture_default_str();
  run->add_option("--report-every", text.report_every,
                  "Reported-property PATCH per device every ...")
      ->capture_default_str();
  run->add_option("--storm-every", text.storm_every, "Drop and reconnect devices every ...")
      ->capture_default_str();
  run->add_option("--storm-fraction", options.storm_fraction, "Fraction of devices a storm drops")
      ->capture_default_str();
  run->add_flag("--report-desired", options.report_desired,
                "Answer each desired-property patch with a reported PATCH of the same values");
  run->add_option("--flaky", text.flaky,
                  "FRACTION:CALLS[:silent|error]: that share of the devices fails its first CALLS "
                  "method calls of each job (always = every call); repeatable");
  run->add_option("--job-extensions", options.job_extensions,
                  "twin-jobs/method-jobs: JSON object of members added to the second job")
      ->capture_default_str();
  run->add_option("--response-timeout", text.response_timeout,
                  "method-jobs: the method's responseTimeoutInSeconds; against mosquitto "
                  "(methods, sweep): how long a request waits for its reply")
      ->capture_default_str();
  run->add_option("--sample-every", text.sample_every, "Job timeline interval")
      ->capture_default_str();
  run->add_option("--messages", options.messages,
                  "c2d: messages to wait for (c2d_sender's --messages); the run ends when each "
                  "arrived or --duration passed");
  run->add_option("--rate", options.rate,
                  "telemetry: messages/s offered by all devices together (0 = each device sends "
                  "its next message as soon as the last is PUBACKed)")
      ->capture_default_str();
  run->add_option("--ack-log", options.ack_log,
                  "telemetry: write one 24-byte record (id, publish ns, PUBACK ns) per message");
  run->add_option("--concurrency", options.concurrency, "Service calls in flight")
      ->capture_default_str();
  run->add_option("--requesters", options.requesters,
                  "mosquitto methods/sweep: service-side MQTT connections the calls in flight "
                  "share (0 = one per call in flight)")
      ->capture_default_str();
  run->add_option("--latency-calls", options.latency_calls, "Calls with one in flight (methods)")
      ->capture_default_str();
  run->add_option("--duration", text.duration, "Length of the measured phase")
      ->capture_default_str();
  run->add_option("--payload", options.method_payload, "Method request payload (JSON)")
      ->capture_default_str();
  run->add_option("--server-pid", options.server_pid, "Sample RSS and CPU of this process");
  run->add_option("--timeout", text.timeout, "Upper bound of every wait")->capture_default_str();

  std::string cs;
  std::string endpoint;
  std::string ca;
  std::string prefix = "fleet-";
  std::string key;
  std::size_t first = 0;
  std::size_t count = 0;
  std::size_t parallel = 4;
  auto* provision = app.add_subcommand("provision", "Register devices in bulk (100 per request)");
  provision->add_option("--connection-string", cs, "Service connection string")->required();
  provision->add_option("--endpoint", endpoint, "http://127.0.0.1:PORT or https://...")->required();
  provision->add_option("--ca", ca, "CA file for https");
  provision->add_option("--prefix", prefix, "Device id prefix")->capture_default_str();
  provision->add_option("--first", first, "First device index")->capture_default_str();
  provision->add_option("--count", count, "Devices to register")->required();
  provision->add_option("--device-key", key, "Symmetric key of every device (base64)")->required();
  provision->add_option("--parallel", parallel, "Bulk requests in flight")->capture_default_str();

  std::string scenario_name;
  std::string hub_file;
  std::string peer_file;
  std::vector<std::string> ratio_texts;
  std::vector<std::string> require_texts;
  auto* combine =
      app.add_subcommand("combine", "Join hub and peer figures of one scenario, with ratios");
  combine->add_option("--scenario", scenario_name, "Scenario name (B1, B3, ...)")->required();
  combine->add_option("--hub", hub_file, "Hub figures (JSON file)")->required();
  combine->add_option("--peer", peer_file, "Peer figures (JSON file)")->required();
  combine->add_option("--ratio", ratio_texts, "name=hubpath[/peerpath]: ratio hub/peer");
  combine->add_option("--require", require_texts,
                      "PATH OP NUMBER that must hold, e.g. hub.connect.failed==0");

  std::string acks_file;
  std::string reads_file;
  auto* join = app.add_subcommand(
      "d2c-join", "Join a telemetry run's PUBACK log with a reader's arrival log; prints JSON");
  join->add_option("--acks", acks_file, "fleetsim's --ack-log")->required();
  join->add_option("--reads", reads_file, "The reader's --log")->required();
  double steady_fraction = 0.5;
  join->add_option("--steady-fraction", steady_fraction,
                   "\"steady\": the same join over the messages published in this last "
                   "fraction of the run")
      ->capture_default_str();

  app.add_subcommand("free-port", "Print a TCP port that is free on 127.0.0.1 right now");

  CLI11_PARSE(app, argc, argv);

  if (app.got_subcommand("free-port")) return freePort();

  if (app.got_subcommand("d2c-join")) {
    std::vector<fs::D2cRecord> acks;
    std::vector<fs::D2cRecord> reads;
    if (!assign(fs::readD2cRecords(acks_file), acks, "--acks") ||
        !assign(fs::readD2cRecords(reads_file), reads, "--reads"))
      return 2;
    auto out = fs::d2cJoinJson(fs::joinD2c(acks, reads));
    const fs::D2cRecords late = fs::lastPartOf(acks, reads, steady_fraction);
    auto steady = fs::d2cJoinJson(fs::joinD2c(late.acks, late.reads));
    steady["fraction"] = steady_fraction;
    out["steady"] = std::move(steady);
    std::cout << iothub::toJson(out) << std::endl;
    return 0;
  }

  if (app.got_subcommand("provision")) {
    auto result = fs::provisionDevices(cs, endpoint, ca, prefix, first, count, key, parallel);
    if (!result) {
      std::fprintf(stderr, "fleetsim: provision: %s\n", result.status().message().c_str());
      return 1;
    }
    std::cout << iothub::toJson(*result) << std::endl;
    return 0;
  }

  if (app.got_subcommand("combine")) {
    std::vector<fs::RatioSpec> ratios;
    std::vector<fs::Requirement> requirements;
    for (const auto& t : ratio_texts) {
      fs::RatioSpec spec;
      if (!assign(fs::parseRatioSpec(t), spec, "--ratio")) return 2;
      ratios.push_back(std::move(spec));
    }
    for (const auto& t : require_texts) {
      fs::Requirement r;
      if (!assign(fs::parseRequirement(t), r, "--require")) return 2;
      requirements.push_back(std::move(r));
    }
    iothub::json::value hub;
    iothub::json::value peer;
    if (!assign(readJsonFile(hub_file), hub, "--hub") ||
        !assign(readJsonFile(peer_file), peer, "--peer"))
      return 2;
    auto combined = fs::combineResults(scenario_name, hub, peer, ratios);
    if (!combined) {
      std::fprintf(stderr, "fleetsim: combine: %s\n", combined.status().message().c_str());
      return 1;
    }
    std::cout << iothub::toJson(*combined) << std::endl;
    if (auto s = fs::checkRequirements(*combined, requirements); !s) {
      std::fprintf(stderr, "fleetsim: requirements not met: %s\n", s.message().c_str());
      return 1;
    }
    return 0;
  }

  if (!assign(fs::parseTarget(text.target), options.target, "--target") ||
      !assign(fs::parseScenario(text.scenario), options.scenario, "--scenario") ||
      !assign(fs::parseDuration(text.method_delay), options.method_delay, "--method-delay") ||
      !assign(fs::parseDuration(text.duration), options.duration, "--duration")) {
    return 2;
  }
  std::chrono::milliseconds every{0};
  if (!assign(fs::parseDuration(text.report_every), every, "--report-every")) return 2;
  options.report_every = std::chrono::duration_cast<std::chrono::seconds>(every);
  if (!assign(fs::parseDuration(text.storm_every), every, "--storm-every")) return 2;
  options.storm_every = std::chrono::duration_cast<std::chrono::seconds>(every);
  if (!assign(fs::parseDuration(text.timeout), every, "--timeout")) return 2;
  options.timeout = std::chrono::duration_cast<std::chrono::seconds>(every);
  if (!assign(fs::parseDuration(text.response_timeout), every, "--response-timeout")) return 2;
  options.response_timeout = std::chrono::duration_cast<std::chrono::seconds>(every);
  if (!assign(fs::parseDuration(text.sample_every), options.sample_every, "--sample-every"))
    return 2;
  for (const auto& t : text.flaky) {
    fs::FlakyGroup group;
    if (!assign(fs::parseFlakyGroup(t), group, "--flaky")) return 2;
    options.flaky.push_back(group);
  }

  ::signal(SIGINT, onSignal);
  ::signal(SIGTERM, onSignal);
  ::signal(SIGPIPE, SIG_IGN);
  auto result = fs::runFleet(options, g_stop);
  if (!result) {
    std::fprintf(stderr, "fleetsim: %s\n", result.status().message().c_str());
    return 2;
  }
  std::cout << iothub::toJson(*result) << std::endl;
  return result->contains("error") ? 1 : 0;
}
