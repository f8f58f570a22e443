#include "synthetic_twins.hpp"

#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "common/clock.hpp"
#include "common/json.hpp"
#include "common/time_format.hpp"
#include "twin/twin_patch.hpp"

namespace iothub::bench {
namespace {

// SplitMix64: tiny, fast and the same on every platform (std:: distributions are not).
class SplitMix {
 public:
  explicit SplitMix(std::uint64_t seed) : state_(seed) {}
  std::uint64_t next() {
    std::uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  std::uint64_t below(std::uint64_t n) { return next() % n; }
  double unit() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }

 private:
  std::uint64_t state_;
};

constexpr std::array<std::string_view, 8> kRegions = {"westeurope",  "northeurope", "eastus",
                                                      "westus2",     "japaneast",   "australiaeast",
                                                      "brazilsouth", "southindia"};
constexpr std::array<std::string_view, 4> kFirmware = {"1.4.2", "1.4.3", "1.5.0", "2.0.0-rc1"};
const SystemTime kEpoch{std::chrono::seconds{1704067200}};  // 2024-01-01T00:00:00Z

std::string base64ish(SplitMix& rng, std::size_t length) {
  static constexpr std::string_view kAlphabet =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out(length, '=');
  for (std::size_t k = 0; k + 1 < length; ++k) out[k] = kAlphabet[rng.below(kAlphabet.size())];
  return out;
}

std::string_view mode(SplitMix& rng) {
  std::uint64_t p = rng.below(100);
  if (p < 70) return "normal";
  if (p < 85) return "eco";
  if (p < 95) return "maintenance";
  return "test";
}

}  // namespace

std::string syntheticDeviceId(std::size_t i) {
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "device-%07zu", i);
  return buffer;
}

std::string syntheticSerial(std::size_t i) {
  // 7919 is prime and coprime to 10^7, so i -> serial is a bijection below 10^7.
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "SN-%07llu",
                static_cast<unsigned long long>((i * 7919ull + 12345ull) % 10000000ull));
  return buffer;
}

SyntheticTwin makeSyntheticTwin(std::uint64_t seed, std::size_t i) {
  SplitMix rng(seed * 0x100000001b3ull + i);
  SyntheticTwin out;
  SystemTime created = kEpoch + std::chrono::seconds(i % 86400);
  SystemTime desired_time = created + std::chrono::minutes(5 + rng.below(600));
  SystemTime reported_time = desired_time + std::chrono::seconds(1 + rng.below(3600));

  store::DeviceRecord& d = out.device;
  d.device_id = syntheticDeviceId(i);
  d.generation_id = "6384" + std::to_string(100000000000ull + rng.below(900000000000ull));
  d.etag = base64ish(rng, 12);
  d.status_updated_time = created;
  d.primary_key = base64ish(rng, 44);
  d.secondary_key = base64ish(rng, 44);
  d.connection_state_updated_time = reported_time;
  d.last_activity_time = reported_time;

  store::TwinRecord base;
  base.device_id = d.device_id;
  std::string_view fw = kFirmware[rng.below(kFirmware.size())];

  twin::TwinPatch patch;
  patch.tags.members = json::object{
      {"location",
       json::object{{"region", kRegions[rng.below(kRegions.size())]},
                    {"building", "b" + std::to_string(rng.below(100))},
                    {"floor", static_cast<std::int64_t>(rng.below(10))}}},
      {"serial", syntheticSerial(i)},
      {"customer", [&rng] {
         char buffer[16];
         std::snprintf(buffer, sizeof buffer, "cust-%03u", static_cast<unsigned>(rng.below(100)));
         return std::string(buffer);
       }()},
      {"mode", mode(rng)}};
  patch.desired.members =
      json::object{{"fw", fw},
                   {"interval", static_cast<std::int64_t>(std::array{30, 60, 300}[rng.below(3)])},
                   {"telemetry", json::object{{"enabled", rng.below(10) != 0}}},
                   {"thresholds", json::object{{"tempHigh", 35.0}, {"tempLow", 5.0}}}};
  auto serviced = twin::applyServicePatch(base, patch, formatTimestamp(desired_time));
  // The generator's own patches are valid by construction; a failure is a bug here.
  if (!serviced) std::abort();

  twin::SectionPatch reported;
  double temp = std::round((20.0 + 17.5 * rng.unit()) * 10.0) / 10.0;
  reported.members = json::object{
      {"fw", fw},
      {"temp", temp},
      {"battery", static_cast<std::int64_t>(rng.below(101))},
      {"online", rng.below(10) < 8},
      {"uptime", static_cast<std::int64_t>(rng.below(30 * 86400))},
      {"network", json::object{{"type", rng.below(2) == 0 ? "wifi" : "lte"},
                               {"rssi", -static_cast<std::int64_t>(40 + rng.below(60))}}}};
  auto written = twin::applyReportedPatch(serviced->twin, reported, formatTimestamp(reported_time));
  if (!written) std::abort();
  out.twin = std::move(*written);
  return out;
}

}  // namespace iothub::bench
