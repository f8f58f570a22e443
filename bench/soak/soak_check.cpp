#include "bench/soak/soak_check.hpp"

#include <algorithm>
#include <cmath>

namespace iothub::soak {

RssVerdict checkRssFlat(const std::vector<RssSample>& samples, double warmup_s, double tolerance) {
  RssVerdict v;
  const double reference_end = 2 * warmup_s;
  bool any_reference = false, any_after = false;
  for (const auto& s : samples) {
    if (s.at_s >= warmup_s && s.at_s < reference_end) {
      v.reference_kb = std::max(v.reference_kb, s.rss_kb);
      any_reference = true;
    } else if (s.at_s >= reference_end) {
      v.max_after_kb = std::max(v.max_after_kb, s.rss_kb);
      any_after = true;
    }
  }
  if (!any_reference || !any_after) {
    v.why = "too few samples: the run must last beyond twice the warm-up";
    return v;
  }
  v.bound_kb =
      static_cast<std::int64_t>(std::ceil(static_cast<double>(v.reference_kb) * (1 + tolerance)));

  // Least-squares slope of RSS over time after warm-up, reported for the record.
  double n = 0, sx = 0, sy = 0, sxx = 0, sxy = 0;
  for (const auto& s : samples) {
    if (s.at_s < warmup_s) continue;
    const double x = s.at_s / 60.0, y = static_cast<double>(s.rss_kb);
    n += 1, sx += x, sy += y, sxx += x * x, sxy += x * y;
  }
  const double denominator = n * sxx - sx * sx;
  if (n >= 2 && denominator > 0) v.slope_kb_per_min = (n * sxy - sx * sy) / denominator;

  if (v.max_after_kb > v.bound_kb) {
    v.why = "RSS grew to " + std::to_string(v.max_after_kb) +
            " kB after warm-up, above the bound " + std::to_string(v.bound_kb) + " kB";
    return v;
  }
  v.ok = true;
  return v;
}

std::vector<std::string> checkJob(const JobOutcome& job, std::int64_t expected_devices,
                                  const std::vector<std::string>& expected_failure_codes) {
  std::vector<std::string> problems;
  auto problem = [&](const std::string& text) { problems.push_back(job.job_id + ": " + text); };
  if (job.status != "completed") problem("status " + job.status + ", not completed");
  if (job.device_count != expected_devices) {
    problem("deviceCount " + std::to_string(job.device_count) + ", expected " +
            std::to_string(expected_devices));
  }
  const std::int64_t sum = job.succeeded + job.failed + job.running + job.pending + job.canceled;
  if (sum != job.device_count) {
    problem("statistics add up to " + std::to_string(sum) + ", deviceCount is " +
            std::to_string(job.device_count));
  }
  if (job.running != 0 || job.pending != 0) {
    problem(std::to_string(job.running) + " running and " + std::to_string(job.pending) +
            " pending devices in a finished job");
  }
  std::int64_t rows = 0;
  for (const auto& [status, count] : job.rows_by_status) rows += count;
  if (rows != job.device_count) {
    problem(std::to_string(rows) + " device rows, deviceCount is " +
            std::to_string(job.device_count));
  }
  auto rowCount = [&](const std::string& status) {
    auto it = job.rows_by_status.find(status);
    return it == job.rows_by_status.end() ? std::int64_t{0} : it->second;
  };
  const std::pair<const char*, std::int64_t> by_status[] = {{"completed", job.succeeded},
                                                            {"failed", job.failed},
                                                            {"running", job.running},
                                                            {"pending", job.pending},
                                                            {"canceled", job.canceled}};
  for (const auto& [status, count] : by_status) {
    if (rowCount(status) != count) {
      problem(std::string("statistics say ") + std::to_string(count) + " " + status +
              ", rows say " + std::to_string(rowCount(status)));
    }
  }
  std::int64_t coded = 0;
  for (const auto& [code, count] : job.failure_codes) {
    coded += count;
    if (std::find(expected_failure_codes.begin(), expected_failure_codes.end(), code) ==
        expected_failure_codes.end()) {
      problem(std::to_string(count) + " device(s) failed with unexpected error " + code);
    }
  }
  if (coded != job.failed) {
    problem(std::to_string(job.failed) + " failed devices, " + std::to_string(coded) +
            " failure rows with an error code");
  }
  return problems;
}

json::object toJson(const RssVerdict& v) {
  json::object o;
  o["ok"] = v.ok;
  o["reference_kb"] = v.reference_kb;
  o["bound_kb"] = v.bound_kb;
  o["max_after_kb"] = v.max_after_kb;
  o["slope_kb_per_min"] = std::round(v.slope_kb_per_min * 10) / 10;
  if (!v.why.empty()) o["why"] = v.why;
  return o;
}

json::object toJson(const JobOutcome& job) {
  json::object o;
  o["jobId"] = job.job_id;
  o["type"] = job.type;
  o["status"] = job.status;
  o["deviceCount"] = job.device_count;
  o["succeeded"] = job.succeeded;
  o["failed"] = job.failed;
  json::object rows;
  for (const auto& [status, count] : job.rows_by_status) rows[status] = count;
  o["rows"] = std::move(rows);
  if (!job.failure_codes.empty()) {
    json::object codes;
    for (const auto& [code, count] : job.failure_codes) codes[code] = count;
    o["failure_codes"] = std::move(codes);
  }
  return o;
}

}  // namespace iothub::soak
