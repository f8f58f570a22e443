#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "store/records.hpp"

namespace iothub::bench {

// Deterministic synthetic fleets for the query benchmark (docs/benchmarks.md, issue 4).
//
// Twin `i` of a fleet depends only on (seed, i), so every engine of one run can regenerate
// the same twins as a stream instead of holding a second copy in memory. The twin is
// written the way the twin service writes it (twin::applyServicePatch, then
// twin::applyReportedPatch), so desired and reported carry real "$metadata".
//
// Shape and value distributions (what the benchmark's predicates select on):
//   deviceId  "device-%07d" of i (so id order is i order)
//   tags      location {region: 1 of 8, building: "b0".."b99", floor: 0..9},
//             serial "SN-%07d" (unique: a bijection of i below 10^7),
//             customer "cust-000".."cust-099", mode normal 70% / eco 15% /
//             maintenance 10% / test 5%
//   desired   fw, interval, telemetry {enabled}, thresholds {tempHigh, tempLow}
//   reported  fw, temp (20.0..37.5, one decimal: about 40% above 30.5), battery 0..100,
//             online (80% true), uptime, network {type, rssi}
struct SyntheticTwin {
  store::DeviceRecord device;
  store::TwinRecord twin;
};

// Twin `i` of the fleet `seed`. Pure and thread-safe.
SyntheticTwin makeSyntheticTwin(std::uint64_t seed, std::size_t i);

// The device id and serial of twin `i` (what makeSyntheticTwin writes).
std::string syntheticDeviceId(std::size_t i);
std::string syntheticSerial(std::size_t i);

}  // namespace iothub::bench
