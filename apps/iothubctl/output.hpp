#pragma once

// Human-readable renderings of SDK values for iothubctl. Pure functions, no I/O.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <vector>

#include "common/json.hpp"
#include "common/status.hpp"
#include "iothub/service/device.hpp"
#include "iothub/service/job_client.hpp"
#include "iothub/service/method_client.hpp"
#include "iothub/service/query_client.hpp"
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

// An aligned table: `header` and then `rows`, columns separated by two spaces, the last
// column not padded. Rows shorter than the header get empty cells.
std::string formatTable(const std::vector<std::string>& header,
                        const std::vector<std::vector<std::string>>& rows);

// Query results as a table. Columns: for Twin rows a fixed set (deviceId, moduleId when any
// row has one, status, connectionState, lastActivityTime, version, tags); otherwise the
// union of the rows' top-level keys in order of first appearance, led by deviceId, jobId,
// jobType, status for DeviceJob rows and jobId, type, status for JobResponse rows. Strings
// are shown as they are, other values as compact JSON, absent members as "-". Rows that are
// not objects get one column "value". "(no results)" for no rows.
std::string formatQueryTable(const json::array& rows, service::QueryItemType item_type);

// "key: value" lines of a job: id, type, status, condition, times, the iothub extensions
// that are set (as compact JSON), operation, statistics.
std::string formatJob(const service::Job& job);
// One line per job: id, type, status, created, devices, succeeded, failed.
std::string formatJobTable(const std::vector<service::Job>& jobs);
// One line per device record: device, status, start, end, result (the method status and
// payload, or the error).
std::string formatDeviceJobTable(const std::vector<service::DeviceJob>& rows);

// One line per consumer group of the Event Hubs-compatible endpoint (docs/telemetry.md §9),
// from the hub's JSON array of {"name", "createdTime"}: name and creation time. Absent or
// non-string members are shown as "-", entries that are not objects are skipped.
std::string formatConsumerGroupTable(const json::array& groups);

// "45s", "3m05s", "2h07m" (negative durations as 0s).
std::string formatDuration(std::chrono::seconds duration);

// Devices processed per second over a sliding window of samples of a job's finished count
// (succeeded + failed + canceled). Pure: the caller supplies the times.
class JobRateEstimator {
 public:
  using TimePoint = std::chrono::steady_clock::time_point;
  explicit JobRateEstimator(std::chrono::milliseconds window = std::chrono::seconds{10});

  void add(TimePoint at, std::int64_t finished);
  // nullopt until two samples at least 100 ms apart exist within the window.
  std::optional<double> rate() const;
  // Time to finish `remaining` devices at rate(); nullopt without a positive rate.
  std::optional<std::chrono::seconds> eta(std::int64_t remaining) const;

 private:
  struct Sample {
    TimePoint at;
    std::int64_t finished;
  };
  std::chrono::milliseconds window_;
  std::deque<Sample> samples_;
};

// Devices of the job no longer pending or running (succeeded + failed + canceled).
std::int64_t finishedDevices(const service::DeviceJobStatistics& stats);

// One progress line of `job watch`, e.g.
// "j1 running [########------------] 40/100 ok 38 failed 2 running 5 pending 55 4.0/s ETA 14s".
// `bar_width` 0 leaves the bar out; rate and ETA are left out when unknown.
std::string formatJobProgress(const service::Job& job, std::optional<double> rate,
                              std::optional<std::chrono::seconds> eta, std::size_t bar_width = 20);

// What a dry run would target: "Would target <n> devices" and the sample ids, one per line
// ("… and <k> more" when the sample is shorter than the count).
std::string formatDryRun(const service::DryRunResult& result);

// ---- Flags of `job schedule-*` (pure parsers; the SDK checks the ranges) ----
// Errors: ArgumentInvalid naming the flag and the expected form.

// --abort TYPE:PERCENT:MIN, e.g. "failed:10:50": TYPE failed, timedOut or any, PERCENT a
// number, MIN an integer.
Result<service::AbortCriterion> parseAbortFlag(std::string_view text);

// --retry ATTEMPTS:BACKOFF_SECONDS[:Code,Code], e.g. "3:10" or "3:2.5:DeviceMethodFailed":
// ATTEMPTS an integer, BACKOFF_SECONDS a number, codes DeviceNotOnline, GatewayTimeout or
// DeviceMethodFailed (default: DeviceNotOnline,GatewayTimeout).
Result<service::RetryPolicy> parseRetryFlag(std::string_view text);

// --status of --rerun-of: comma-separated device job statuses, e.g. "failed,canceled".
Result<std::vector<service::DeviceJobStatus>> parseDeviceJobStatusList(std::string_view text);

// --rollout-max-per-minute, --rollout-base-per-minute, --rollout-factor, --rollout-every.
struct RolloutFlags {
  std::optional<double> max_per_minute;
  std::optional<double> base_per_minute;
  std::optional<double> factor;
  std::optional<std::int64_t> every;
};
// nullopt when no rollout flag is given; an exponential rate needs base, factor and every
// together (ArgumentInvalid otherwise).
Result<std::optional<service::Rollout>> rolloutFromFlags(const RolloutFlags& flags);

}  // namespace iothub::ctl
