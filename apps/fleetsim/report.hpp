#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "apps/fleetsim/latency_histogram.hpp"
#include "common/json.hpp"
#include "common/status.hpp"

namespace iothub::fleetsim {

// `v` rounded to three decimals (report figures).
double round3(double v);
// A latency histogram (microseconds) as a report object: count, p50_ms, p90_ms, p99_ms,
// max_ms, mean_ms.
json::object latencyJson(const LatencyHistogram& h);

// The number at a dotted path ("connect.p99_ms") of a JSON document. Errors: NotFound-style
// ArgumentInvalid naming the path when a member is missing or the value is not a number.
Result<double> numberAt(const json::value& doc, std::string_view path);

// One ratio of a comparison: "name=hubpath/peerpath" or "name=path" (same path in both
// documents). The ratio is hub ÷ peer.
struct RatioSpec {
  std::string name;
  std::string hub_path;
  std::string peer_path;
};
Result<RatioSpec> parseRatioSpec(std::string_view text);

// A check on the combined document: "hub.connected>=19000", "ratios.x>0", "peer.errors==0".
// Operators: >=, <=, ==, >, <.
struct Requirement {
  std::string path;
  std::string op;
  double threshold = 0;
};
Result<Requirement> parseRequirement(std::string_view text);

// {"scenario", "hub": hub, "peer": peer, "ratios": {name: hub/peer}}. A peer value of 0
// gives a null ratio. Errors: those of numberAt for a missing figure.
Result<json::object> combineResults(std::string_view scenario, const json::value& hub,
                                    const json::value& peer, const std::vector<RatioSpec>& ratios);

// Ok when every requirement holds; otherwise FailedPrecondition-style ArgumentInvalid
// listing each one that failed with the value found.
Status checkRequirements(const json::value& combined, const std::vector<Requirement>& requirements);

// What /proc says about a process: resident memory and CPU time consumed so far.
struct ProcessSample {
  std::int64_t rss_kb = 0;
  std::int64_t cpu_ticks = 0;  // utime + stime, in clock ticks
  std::chrono::steady_clock::time_point at;
};
// VmRSS (kB) from the text of /proc/PID/status.
std::optional<std::int64_t> parseVmRssKb(std::string_view status_text);
// utime + stime from the text of /proc/PID/stat (fields 14 and 15, counted after the ')'
// that ends the command name, which may itself contain spaces or parentheses).
std::optional<std::int64_t> parseCpuTicks(std::string_view stat_text);
// Reads both files; nullopt when the process is gone.
std::optional<ProcessSample> sampleProcess(int pid);
// CPU used between two samples, in percent of one core.
double cpuPercent(const ProcessSample& from, const ProcessSample& to);

}  // namespace iothub::fleetsim
