#include "apps/fleetsim/fleet_options.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "common/json.hpp"

namespace iothub::fleetsim {

namespace {
Status invalid(std::string message) {
  return Status(ErrorCode::ArgumentInvalid, std::move(message));
}

// Sockets one process may hold: the box's hard RLIMIT_NOFILE is 20 000 and the process
// needs a few descriptors of its own (REST connections, files, the io_context).
constexpr std::size_t kMaxDevicesPerProcess = 19'990;
}  // namespace

Status validate(const FleetOptions& o) {
  if (o.devices > kMaxDevicesPerProcess) {
    return invalid("--devices must be at most " + std::to_string(kMaxDevicesPerProcess) +
                   " per process (file descriptor limit)");
  }
  const bool jobs = o.scenario == Scenario::Jobs || o.scenario == Scenario::TwinJobs ||
                    o.scenario == Scenario::MethodJobs;
  if (o.devices == 0 && !jobs) return invalid("--devices must be at least 1");
  if (o.mqtt_port == 0 && o.devices > 0) return invalid("--mqtt-port is required");
  if (o.target == Target::Hub) {
    if (o.device_key.empty()) return invalid("--device-key is required for the hub target");
    const bool rest = o.scenario == Scenario::Methods || o.scenario == Scenario::Twin || jobs;
    if (rest && (o.http_port == 0 || o.service_connection_string.empty())) {
      return invalid("--http-port and --connection-string are required for this scenario");
    }
  } else if (o.scenario == Scenario::Twin || jobs) {
    return invalid("the " + std::string(toString(o.scenario)) +
                   " scenario only runs against the hub");
  }
  if (o.scenario == Scenario::Sweep && o.target != Target::Mosquitto)
    return invalid("the sweep scenario only runs against mosquitto (--target mosquitto)");
  if (o.tls && o.ca_file.empty()) return invalid("--tls needs --ca");
  if (o.source_addresses == 0) return invalid("--source-addresses must be at least 1");
  if (o.connect_window == 0) return invalid("--connect-window must be at least 1");
  if (o.threads == 0 || o.threads > 64) return invalid("--threads must be within [1, 64]");
  if (o.concurrency == 0) return invalid("--concurrency must be at least 1");
  if (const std::size_t requesters = requesterConnections(o); requesters > 0) {
    if (requesters < o.threads)
      return invalid("--requesters must be at least --threads (one per io_context thread)");
    if (o.devices + requesters > kMaxDevicesPerProcess) {
      return invalid(
          "--devices plus the requester connections (--requesters, default one per "
          "--concurrency) must be at most " +
          std::to_string(kMaxDevicesPerProcess) + " per process (file descriptor limit)");
    }
  }
  if (o.method_failure_rate < 0 || o.method_failure_rate > 1) {
    return invalid("--method-failure-rate must be within [0, 1]");
  }
  if (o.storm_fraction < 0 || o.storm_fraction > 1)
    return invalid("--storm-fraction must be within [0, 1]");
  if (o.device_stride == 0) return invalid("--stride must be at least 1");
  double flaky = 0;
  for (const auto& g : o.flaky) flaky += g.fraction;
  if (flaky > 1 + 1e-9) return invalid("--flaky fractions must add up to at most 1");
  if (o.scenario == Scenario::TwinJobs || o.scenario == Scenario::MethodJobs) {
    auto extensions = parseJson(o.job_extensions);
    if (!extensions || !extensions->is_object() || extensions->as_object().empty()) {
      return invalid(
          "--job-extensions must be a non-empty JSON object (the second job's extra members)");
    }
  }
  if (o.response_timeout < std::chrono::seconds(5) ||
      o.response_timeout > std::chrono::seconds(300))
    return invalid("--response-timeout must be within [5s, 300s]");
  if (o.sample_every.count() <= 0) return invalid("--sample-every must be positive");
  if (o.scenario == Scenario::C2d && (o.messages == 0 || o.messages > kMaxC2dMessages)) {
    return invalid("the c2d scenario needs --messages within [1, " +
                   std::to_string(kMaxC2dMessages) + "]");
  }
  if (o.rate < 0 || !std::isfinite(o.rate)) return invalid("--rate must be 0 or more");
  if (o.scenario == Scenario::Telemetry && o.duration.count() <= 0)
    return invalid("the telemetry scenario needs a --duration");
  // One past the highest device index this process connects.
  const std::size_t own_end = o.devices == 0 ? 0 : deviceIndex(o, o.devices - 1) + 1;
  if (o.fleet_devices != 0 && o.fleet_devices < own_end) {
    return invalid("--fleet-devices must include this process's devices (at least " +
                   std::to_string(own_end) + ")");
  }
  if (o.registered != 0 && o.registered < std::max(own_end, o.fleet_devices)) {
    return invalid("--registered must be 0 or at least --devices (and --fleet-devices)");
  }
  if ((o.scenario == Scenario::Jobs || o.scenario == Scenario::MethodJobs) &&
      o.fleet_devices == 0 && (o.first_device != 0 || o.device_stride != 1)) {
    return invalid(
        "the jobs scenario addresses devices 0..N-1: give --fleet-devices with --first or "
        "--stride");
  }
  const std::size_t addressed = addressedDevices(o).count;
  if (o.scenario == Scenario::Methods && o.target == Target::Hub && o.concurrency > addressed) {
    return invalid("--concurrency must not exceed --devices (one call in flight per device)");
  }
  if (o.scenario == Scenario::Twin && o.concurrency > addressed) {
    return invalid("--concurrency must not exceed --devices (one update in flight per device)");
  }
  return Status::ok();
}

std::size_t requesterConnections(const FleetOptions& o) {
  const bool broker_calls = o.target == Target::Mosquitto &&
                            (o.scenario == Scenario::Methods || o.scenario == Scenario::Sweep);
  if (!broker_calls) return 0;
  return o.requesters == 0 ? o.concurrency : std::min(o.requesters, o.concurrency);
}

std::size_t deviceIndex(const FleetOptions& o, std::size_t local) {
  return o.first_device + local * o.device_stride;
}

bool ownDevice(const FleetOptions& o, std::size_t index, std::size_t& local) {
  if (index < o.first_device || o.device_stride == 0) return false;
  const std::size_t offset = index - o.first_device;
  if (offset % o.device_stride != 0 || offset / o.device_stride >= o.devices) return false;
  local = offset / o.device_stride;
  return true;
}

AddressedDevices addressedDevices(const FleetOptions& o) {
  if (o.fleet_devices != 0) return {0, 1, o.fleet_devices};
  return {o.first_device, o.device_stride, o.devices};
}

std::string deviceId(std::string_view prefix, std::size_t index) {
  char digits[24];
  const int n = std::snprintf(digits, sizeof digits, "%06zu", index);
  std::string id(prefix);
  id.append(digits, static_cast<std::size_t>(n));
  return id;
}

Result<std::chrono::milliseconds> parseDuration(std::string_view text) {
  std::size_t digits = 0;
  while (digits < text.size() && text[digits] >= '0' && text[digits] <= '9') ++digits;
  if (digits == 0 || digits > 12) return invalid("invalid duration '" + std::string(text) + "'");
  std::int64_t value = 0;
  std::from_chars(text.data(), text.data() + digits, value);
  const std::string_view unit = text.substr(digits);
  std::int64_t factor = 0;
  if (unit.empty() || unit == "s") {
    factor = 1000;
  } else if (unit == "ms") {
    factor = 1;
  } else if (unit == "m") {
    factor = 60'000;
  } else if (unit == "h") {
    factor = 3'600'000;
  } else {
    return invalid("invalid duration unit in '" + std::string(text) + "' (use ms, s, m or h)");
  }
  return std::chrono::milliseconds(value * factor);
}

Result<Target> parseTarget(std::string_view text) {
  if (text == "hub") return Target::Hub;
  if (text == "mosquitto") return Target::Mosquitto;
  return invalid("unknown target '" + std::string(text) + "' (hub, mosquitto)");
}

Result<Scenario> parseScenario(std::string_view text) {
  for (auto s : {Scenario::Connect, Scenario::Idle, Scenario::Methods, Scenario::Twin,
                 Scenario::Jobs, Scenario::Serve, Scenario::TwinJobs, Scenario::MethodJobs,
                 Scenario::C2d, Scenario::Telemetry, Scenario::Sweep}) {
    if (toString(s) == text) return s;
  }
  return invalid("unknown scenario '" + std::string(text) +
                 "' (connect, idle, methods, twin, jobs, serve, twin-jobs, method-jobs, c2d, "
                 "telemetry, sweep)");
}

std::string_view toString(Target target) { return target == Target::Hub ? "hub" : "mosquitto"; }

std::string_view toString(Scenario scenario) {
  switch (scenario) {
    case Scenario::Connect:
      return "connect";
    case Scenario::Idle:
      return "idle";
    case Scenario::Methods:
      return "methods";
    case Scenario::Twin:
      return "twin";
    case Scenario::Jobs:
      return "jobs";
    case Scenario::Serve:
      return "serve";
    case Scenario::TwinJobs:
      return "twin-jobs";
    case Scenario::MethodJobs:
      return "method-jobs";
    case Scenario::C2d:
      return "c2d";
    case Scenario::Telemetry:
      return "telemetry";
    case Scenario::Sweep:
      return "sweep";
  }
  return "?";
}

bool parseMethodTopic(std::string_view topic, std::string_view& name, std::string_view& rid) {
  constexpr std::string_view kMarker = "/methods/POST/";
  const auto marker = topic.find(kMarker);
  if (marker == std::string_view::npos) return false;
  const std::string_view rest = topic.substr(marker + kMarker.size());
  const auto query = rest.find("/?");
  if (query == std::string_view::npos || query == 0) return false;
  name = rest.substr(0, query);
  const std::string_view params = rest.substr(query + 2);
  constexpr std::string_view kRid = "$rid=";
  std::size_t pos = 0;
  while (pos <= params.size()) {
    auto end = params.find('&', pos);
    if (end == std::string_view::npos) end = params.size();
    const std::string_view pair = params.substr(pos, end - pos);
    if (pair.starts_with(kRid) && pair.size() > kRid.size()) {
      rid = pair.substr(kRid.size());
      return true;
    }
    pos = end + 1;
  }
  return false;
}

std::int64_t parseVersionParameter(std::string_view topic) {
  constexpr std::string_view kVersion = "$version=";
  const auto pos = topic.find(kVersion);
  if (pos == std::string_view::npos) return -1;
  std::int64_t version = -1;
  const char* begin = topic.data() + pos + kVersion.size();
  const auto [ptr, ec] = std::from_chars(begin, topic.data() + topic.size(), version);
  if (ec != std::errc() || ptr == begin) return -1;
  return version;
}

int parseTwinResponseStatus(std::string_view topic) {
  constexpr std::string_view kMarker = "/twin/res/";
  const auto marker = topic.find(kMarker);
  if (marker == std::string_view::npos) return -1;
  const char* begin = topic.data() + marker + kMarker.size();
  const char* end = topic.data() + topic.size();
  int status = -1;
  const auto [ptr, ec] = std::from_chars(begin, end, status);
  if (ec != std::errc() || ptr == begin || (ptr != end && *ptr != '/')) return -1;
  return status;
}

Result<std::string> reportedFromDesired(std::string_view payload) {
  auto parsed = parseJson(payload);
  if (!parsed) return parsed.status();
  if (!parsed->is_object()) {
    return Status(ErrorCode::IotHubFormatError, "a desired-property patch must be a JSON object");
  }
  json::object& patch = parsed->as_object();
  for (auto it = patch.begin(); it != patch.end();) {
    if (it->key().starts_with("$")) {
      it = patch.erase(it);
    } else {
      ++it;
    }
  }
  return toJson(*parsed);
}

std::string c2dPayload(std::uint64_t seq, std::int64_t sent_ns) {
  return "c2d " + std::to_string(seq) + " " + std::to_string(sent_ns);
}

bool parseC2dPayload(std::string_view payload, std::uint64_t& seq, std::int64_t& sent_ns) {
  constexpr std::string_view kPrefix = "c2d ";
  if (!payload.starts_with(kPrefix)) return false;
  const char* p = payload.data() + kPrefix.size();
  const char* end = payload.data() + payload.size();
  const auto [after_seq, ec1] = std::from_chars(p, end, seq);
  if (ec1 != std::errc() || after_seq == p || after_seq == end || *after_seq != ' ') return false;
  const auto [after_ns, ec2] = std::from_chars(after_seq + 1, end, sent_ns);
  return ec2 == std::errc() && after_ns == end && after_ns != after_seq + 1 && sent_ns >= 0;
}

Result<FlakyGroup> parseFlakyGroup(std::string_view text) {
  const auto bad = [&] {
    return invalid("invalid --flaky '" + std::string(text) +
                   "' (FRACTION:CALLS[:silent|error], e.g. 0.05:2 or 0.01:always)");
  };
  const auto colon = text.find(':');
  if (colon == std::string_view::npos) return bad();
  FlakyGroup group;
  const std::string fraction(text.substr(0, colon));
  char* end = nullptr;
  group.fraction = std::strtod(fraction.c_str(), &end);
  if (fraction.empty() || end != fraction.c_str() + fraction.size() || !(group.fraction > 0) ||
      group.fraction > 1) {
    return bad();
  }
  std::string_view rest = text.substr(colon + 1);
  const auto mode_at = rest.find(':');
  const std::string_view calls = rest.substr(0, mode_at);
  if (calls == "always") {
    group.calls = kAlwaysFails;
  } else {
    const auto [ptr, ec] = std::from_chars(calls.data(), calls.data() + calls.size(), group.calls);
    if (ec != std::errc() || ptr != calls.data() + calls.size() || calls.empty() ||
        group.calls == 0 || group.calls == kAlwaysFails) {
      return bad();
    }
  }
  if (mode_at != std::string_view::npos) {
    const std::string_view mode = rest.substr(mode_at + 1);
    if (mode == "silent") {
      group.mode = FlakyMode::Silent;
    } else if (mode == "error") {
      group.mode = FlakyMode::Error;
    } else {
      return bad();
    }
  }
  return group;
}

double unitHash(std::size_t index) {
  std::uint64_t z = static_cast<std::uint64_t>(index) + 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  z ^= z >> 31;
  return static_cast<double>(z >> 11) * 0x1.0p-53;
}

int flakyGroupOf(const std::vector<FlakyGroup>& groups, std::size_t index) {
  if (groups.empty()) return -1;
  const double u = unitHash(index);
  double upper = 0;
  for (std::size_t g = 0; g < groups.size(); ++g) {
    upper += groups[g].fraction;
    if (u < upper) return static_cast<int>(g);
  }
  return -1;
}

ExpectedOutcome expectedOutcome(const FlakyGroup* group, std::uint32_t max_attempts, bool retried,
                                bool fails) {
  if (group == nullptr || !fails) return {};
  const std::uint32_t limit = retried ? std::max<std::uint32_t>(1, max_attempts) : 1;
  if (group->calls >= limit) return {false, limit};  // every attempt fails
  return {true, group->calls + 1};
}

}  // namespace iothub::fleetsim
