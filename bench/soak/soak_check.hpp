#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "common/json.hpp"

namespace iothub::soak {

// The verdicts of a soak run (docs/benchmarks.md "Soak"), kept apart from the I/O so that
// they are unit-tested: what counts as flat memory and as a job with exact statistics.

// One reading of the hub's resident memory, `at` seconds after the load started.
struct RssSample {
  double at_s = 0;
  std::int64_t rss_kb = 0;
};

struct RssVerdict {
  bool ok = false;
  std::int64_t reference_kb = 0;  // the highest RSS seen in the reference window
  std::int64_t bound_kb = 0;      // reference × (1 + tolerance)
  std::int64_t max_after_kb = 0;  // the highest RSS seen after the reference window
  double slope_kb_per_min = 0;    // least-squares slope over the samples after warm-up
  std::string why;                // empty when ok
};

// Memory is flat when no sample after the reference window [warmup, 2 × warmup) exceeds
// the highest sample inside it by more than `tolerance` (0.10 = 10 %). Needs samples
// beyond 2 × warmup; otherwise the verdict says so.
RssVerdict checkRssFlat(const std::vector<RssSample>& samples, double warmup_s, double tolerance);

// What the hub said of one job: its final statistics, and the per-device rows counted by
// status (SELECT status, COUNT() … FROM devices.jobs … GROUP BY status).
struct JobOutcome {
  std::string job_id;
  std::string type;
  std::string status;  // job status: must be "completed"
  std::int64_t device_count = 0;
  std::int64_t succeeded = 0;
  std::int64_t failed = 0;
  std::int64_t running = 0;
  std::int64_t pending = 0;
  std::int64_t canceled = 0;
  std::map<std::string, std::int64_t> rows_by_status;
  // Error codes of the failed rows (e.g. "GatewayTimeout" for a device dropped with the
  // request in flight), counted.
  std::map<std::string, std::int64_t> failure_codes;
};

// Problems of one job, empty when the statistics are exact: status completed; every
// targeted device counted once (device_count == expected_devices == the rows' total);
// statistics equal the rows by status; no device left running or pending; failures only
// of the kinds a reconnecting device causes (`expected_failure_codes`).
std::vector<std::string> checkJob(const JobOutcome& job, std::int64_t expected_devices,
                                  const std::vector<std::string>& expected_failure_codes);

json::object toJson(const RssVerdict& verdict);
json::object toJson(const JobOutcome& job);

}  // namespace iothub::soak
