#include "output.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <string_view>
#include <utility>

namespace iothub::ctl {
namespace {

using service::AuthenticationType;
using service::Device;

std::string keyValueLines(const std::vector<std::pair<std::string, std::string>>& rows) {
  std::size_t width = 0;
  for (const auto& row : rows) width = std::max(width, row.first.size());
  std::string out;
  for (const auto& [key, value] : rows) {
    out += key;
    out += ':';
    out.append(width - key.size() + 1, ' ');
    out += value;
    out += '\n';
  }
  return out;
}

std::string orDash(const std::string& text) { return text.empty() ? "-" : text; }

// Compact JSON with doubles in their shortest form (2.5, not Boost.JSON's 2.5E0).
void appendCompact(const json::value& value, std::string& out) {
  if (value.is_double()) {
    char number[64];
    auto [end, ec] = std::to_chars(number, number + sizeof number, value.get_double());
    out.append(number, ec == std::errc{} ? end : number);
  } else if (const json::object* o = value.if_object()) {
    out += '{';
    bool first = true;
    for (const auto& member : *o) {
      if (!first) out += ',';
      first = false;
      out += json::serialize(json::string(member.key()));
      out += ':';
      appendCompact(member.value(), out);
    }
    out += '}';
  } else if (const json::array* a = value.if_array()) {
    out += '[';
    bool first = true;
    for (const json::value& item : *a) {
      if (!first) out += ',';
      first = false;
      appendCompact(item, out);
    }
    out += ']';
  } else {
    out += json::serialize(value);
  }
}

std::string compactJson(const json::value& value) {
  std::string out;
  appendCompact(value, out);
  return out;
}

void appendPretty(const json::value& value, int depth, std::string& out) {
  auto newline = [&out](int level) {
    out += '\n';
    out.append(static_cast<std::size_t>(level) * 2, ' ');
  };
  if (const json::object* o = value.if_object(); o && !o->empty()) {
    out += '{';
    bool first = true;
    for (const auto& member : *o) {
      if (!first) out += ',';
      first = false;
      newline(depth + 1);
      out += json::serialize(json::string(member.key()));
      out += ": ";
      appendPretty(member.value(), depth + 1, out);
    }
    newline(depth);
    out += '}';
  } else if (const json::array* a = value.if_array(); a && !a->empty()) {
    out += '[';
    bool first = true;
    for (const json::value& item : *a) {
      if (!first) out += ',';
      first = false;
      newline(depth + 1);
      appendPretty(item, depth + 1, out);
    }
    newline(depth);
    out += ']';
  } else {
    out += json::serialize(value);  // scalars, {} and []
  }
}

std::string cellText(const json::value& value) {
  if (const json::string* s = value.if_string()) return std::string(*s);
  return json::serialize(value);
}

std::string countText(std::int64_t n) { return std::to_string(n); }

}  // namespace

std::string formatDevice(const Device& device) {
  std::vector<std::pair<std::string, std::string>> rows = {
      {"deviceId", device.device_id},
      {"status", std::string(service::toString(device.status))},
      {"statusReason", device.status_reason.value_or("-")},
      {"connectionState", std::string(service::toString(device.connection_state))},
      {"connectionStateUpdatedTime", orDash(device.connection_state_updated_time)},
      {"statusUpdatedTime", orDash(device.status_updated_time)},
      {"lastActivityTime", orDash(device.last_activity_time)},
      {"cloudToDeviceMessageCount", std::to_string(device.cloud_to_device_message_count)},
      {"authenticationType", std::string(service::toString(device.authentication_type))},
  };
  if (device.authentication_type == AuthenticationType::Sas) {
    rows.emplace_back("primaryKey", orDash(device.primary_key));
    rows.emplace_back("secondaryKey", orDash(device.secondary_key));
  } else if (device.authentication_type == AuthenticationType::SelfSigned) {
    rows.emplace_back("primaryThumbprint", device.primary_thumbprint.value_or("-"));
    rows.emplace_back("secondaryThumbprint", device.secondary_thumbprint.value_or("-"));
  }
  rows.emplace_back("iotEdge", device.iot_edge ? "true" : "false");
  rows.emplace_back("generationId", orDash(device.generation_id));
  rows.emplace_back("etag", orDash(device.etag));
  return keyValueLines(rows);
}

std::string formatDeviceTable(const std::vector<Device>& devices) {
  std::vector<std::vector<std::string>> rows;
  rows.reserve(devices.size());
  for (const Device& d : devices) {
    rows.push_back({d.device_id, std::string(service::toString(d.status)),
                    std::string(service::toString(d.connection_state)),
                    std::string(service::toString(d.authentication_type)),
                    std::to_string(d.cloud_to_device_message_count), orDash(d.last_activity_time)});
  }
  return formatTable({"DEVICE ID", "STATUS", "CONNECTION", "AUTH", "C2D", "LAST ACTIVITY"}, rows);
}

std::string formatStatistics(const service::RegistryStatistics& stats) {
  return keyValueLines({{"totalDeviceCount", std::to_string(stats.total_device_count)},
                        {"enabledDeviceCount", std::to_string(stats.enabled_device_count)},
                        {"disabledDeviceCount", std::to_string(stats.disabled_device_count)}});
}

std::string formatJsonPretty(const json::value& value) {
  std::string out;
  appendPretty(value, 0, out);
  out += '\n';
  return out;
}

std::string formatMethodResponse(const service::MethodResponse& response) {
  return "status: " + std::to_string(response.status) + "\n" + formatJsonPretty(response.payload);
}

std::string formatTable(const std::vector<std::string>& header,
                        const std::vector<std::vector<std::string>>& rows) {
  const std::size_t columns = header.size();
  std::vector<std::size_t> widths(columns, 0);
  auto measure = [&](const std::vector<std::string>& row) {
    for (std::size_t i = 0; i < columns && i < row.size(); ++i) {
      widths[i] = std::max(widths[i], row[i].size());
    }
  };
  measure(header);
  for (const auto& row : rows) measure(row);
  std::string out;
  auto emit = [&](const std::vector<std::string>& row) {
    for (std::size_t i = 0; i < columns; ++i) {
      std::string_view cell = i < row.size() ? std::string_view(row[i]) : std::string_view();
      out += cell;
      if (i + 1 < columns) out.append(widths[i] - cell.size() + 2, ' ');
    }
    out += '\n';
  };
  emit(header);
  for (const auto& row : rows) emit(row);
  return out;
}

std::string formatQueryTable(const json::array& rows, service::QueryItemType item_type) {
  if (rows.empty()) return "(no results)\n";
  std::vector<std::string> keys;
  bool all_objects =
      std::all_of(rows.begin(), rows.end(), [](const json::value& row) { return row.is_object(); });
  if (!all_objects) {
    keys = {"value"};
  } else if (item_type == service::QueryItemType::Twin) {
    bool modules = std::any_of(rows.begin(), rows.end(), [](const json::value& row) {
      return findMember(row.get_object(), "moduleId") != nullptr;
    });
    keys = {"deviceId"};
    if (modules) keys.emplace_back("moduleId");
    for (std::string_view key :
         {"status", "connectionState", "lastActivityTime", "version", "tags"}) {
      keys.emplace_back(key);
    }
  } else {
    // Identity first for job rows, whatever order the hub wrote the members in.
    if (item_type == service::QueryItemType::DeviceJob) {
      keys = {"deviceId", "jobId", "jobType", "status"};
    } else if (item_type == service::QueryItemType::JobResponse) {
      keys = {"jobId", "type", "status"};
    }
    for (const json::value& row : rows) {
      for (const auto& member : row.get_object()) {
        std::string key(member.key());
        if (std::find(keys.begin(), keys.end(), key) == keys.end()) keys.push_back(std::move(key));
      }
    }
  }
  std::vector<std::vector<std::string>> cells;
  cells.reserve(rows.size());
  for (const json::value& row : rows) {
    std::vector<std::string> line;
    if (!all_objects) {
      line.push_back(cellText(row));
    } else {
      for (const std::string& key : keys) {
        const json::value* v = findMember(row.get_object(), key);
        line.push_back(v == nullptr ? "-" : cellText(*v));
      }
    }
    cells.push_back(std::move(line));
  }
  return formatTable(keys, cells);
}

std::string formatJob(const service::Job& job) {
  std::vector<std::pair<std::string, std::string>> rows = {
      {"jobId", job.job_id},
      {"type", std::string(service::toString(job.type))},
      {"status", std::string(service::toString(job.status))},
      {"queryCondition", orDash(job.query_condition)},
      {"createdTime", orDash(job.created_time)},
      {"startTime", job.start_time.value_or("-")},
      {"endTime", job.end_time.value_or("-")},
      {"maxExecutionTimeInSeconds",
       job.max_execution_time_seconds ? std::to_string(*job.max_execution_time_seconds) : "-"},
  };
  if (job.device_operations_per_second) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%g", *job.device_operations_per_second);
    rows.emplace_back("deviceOperationsPerSecond", buf);
  }
  // The other extensions as the hub echoed them.
  for (std::string_view key : {"priority", "failOnDeviceStatus", "rollout", "abort", "retry",
                               "offlineDevices", "convergence", "continuous", "rerunOf"}) {
    const json::value* value = findMember(job.raw, key);
    if (value != nullptr && !value->is_null()) {
      rows.emplace_back(std::string(key), compactJson(*value));
    }
  }
  if (const auto& method = job.cloud_to_device_method) {
    rows.emplace_back("methodName", method->method_name);
    rows.emplace_back("payload", json::serialize(method->payload));
    rows.emplace_back("responseTimeoutInSeconds", std::to_string(method->response_timeout.count()));
    rows.emplace_back("connectTimeoutInSeconds", std::to_string(method->connect_timeout.count()));
  }
  if (job.update_twin) rows.emplace_back("updateTwin", json::serialize(*job.update_twin));
  if (!job.failure_reason.empty()) rows.emplace_back("failureReason", job.failure_reason);
  if (!job.status_message.empty()) rows.emplace_back("statusMessage", job.status_message);
  const service::DeviceJobStatistics& stats = job.statistics;
  rows.emplace_back("deviceCount", countText(stats.device_count));
  rows.emplace_back("succeededCount", countText(stats.succeeded_count));
  rows.emplace_back("failedCount", countText(stats.failed_count));
  rows.emplace_back("runningCount", countText(stats.running_count));
  rows.emplace_back("pendingCount", countText(stats.pending_count));
  rows.emplace_back("canceledCount", countText(stats.canceled_count));
  return keyValueLines(rows);
}

std::string formatJobTable(const std::vector<service::Job>& jobs) {
  std::vector<std::vector<std::string>> rows;
  rows.reserve(jobs.size());
  for (const service::Job& job : jobs) {
    rows.push_back({job.job_id, std::string(service::toString(job.type)),
                    std::string(service::toString(job.status)), orDash(job.created_time),
                    countText(job.statistics.device_count),
                    countText(job.statistics.succeeded_count),
                    countText(job.statistics.failed_count)});
  }
  return formatTable({"JOB ID", "TYPE", "STATUS", "CREATED", "DEVICES", "SUCCEEDED", "FAILED"},
                     rows);
}

std::string formatDeviceJobTable(const std::vector<service::DeviceJob>& rows) {
  std::vector<std::vector<std::string>> cells;
  cells.reserve(rows.size());
  for (const service::DeviceJob& row : rows) {
    std::string result = "-";
    if (row.error) {
      result = row.error->code;
      if (!row.error->description.empty()) result += ": " + row.error->description;
    } else if (row.method_response) {
      result = std::to_string(row.method_response->status) + " " +
               json::serialize(row.method_response->payload);
    }
    cells.push_back({row.device_id, std::string(service::toString(row.status)),
                     orDash(row.start_time), orDash(row.end_time), std::move(result)});
  }
  return formatTable({"DEVICE ID", "STATUS", "START", "END", "RESULT"}, cells);
}

std::string formatDuration(std::chrono::seconds duration) {
  std::int64_t total = std::max<std::int64_t>(0, duration.count());
  char buf[32];
  if (total < 60) {
    std::snprintf(buf, sizeof buf, "%llds", static_cast<long long>(total));
  } else if (total < 3600) {
    std::snprintf(buf, sizeof buf, "%lldm%02llds", static_cast<long long>(total / 60),
                  static_cast<long long>(total % 60));
  } else {
    std::snprintf(buf, sizeof buf, "%lldh%02lldm", static_cast<long long>(total / 3600),
                  static_cast<long long>(total % 3600 / 60));
  }
  return buf;
}

JobRateEstimator::JobRateEstimator(std::chrono::milliseconds window) : window_(window) {}

void JobRateEstimator::add(TimePoint at, std::int64_t finished) {
  samples_.push_back(Sample{at, finished});
  // Keep the newest sample older than the window too, so the rate spans the whole window.
  while (samples_.size() > 2 && samples_[1].at <= at - window_) samples_.pop_front();
}

std::optional<double> JobRateEstimator::rate() const {
  if (samples_.size() < 2) return std::nullopt;
  const Sample& first = samples_.front();
  const Sample& last = samples_.back();
  auto span = std::chrono::duration<double>(last.at - first.at);
  if (span < std::chrono::milliseconds{100}) return std::nullopt;
  return std::max<double>(0, static_cast<double>(last.finished - first.finished)) / span.count();
}

std::optional<std::chrono::seconds> JobRateEstimator::eta(std::int64_t remaining) const {
  auto r = rate();
  if (!r || *r <= 0) return std::nullopt;
  if (remaining <= 0) return std::chrono::seconds{0};
  return std::chrono::seconds{
      static_cast<std::int64_t>(std::ceil(static_cast<double>(remaining) / *r))};
}

std::int64_t finishedDevices(const service::DeviceJobStatistics& stats) {
  return stats.succeeded_count + stats.failed_count + stats.canceled_count;
}

std::string formatJobProgress(const service::Job& job, std::optional<double> rate,
                              std::optional<std::chrono::seconds> eta, std::size_t bar_width) {
  const service::DeviceJobStatistics& stats = job.statistics;
  std::int64_t finished = finishedDevices(stats);
  std::string line = job.job_id + " " + std::string(service::toString(job.status));
  if (bar_width > 0) {
    std::size_t filled = 0;
    if (stats.device_count > 0) {
      filled = static_cast<std::size_t>(std::clamp<std::int64_t>(finished, 0, stats.device_count) *
                                        static_cast<std::int64_t>(bar_width) / stats.device_count);
    }
    line += " [";
    line.append(filled, '#');
    line.append(bar_width - filled, '-');
    line += ']';
  }
  auto count = [&line](std::string_view label, std::int64_t n) {
    line += label;
    line += countText(n);
  };
  count(" ", finished);
  count("/", stats.device_count);
  count(" ok ", stats.succeeded_count);
  count(" failed ", stats.failed_count);
  count(" running ", stats.running_count);
  count(" pending ", stats.pending_count);
  if (stats.canceled_count > 0) count(" canceled ", stats.canceled_count);
  if (rate) {
    char buf[32];
    std::snprintf(buf, sizeof buf, " %.1f/s", *rate);
    line += buf;
  }
  if (eta && !service::isTerminal(job.status)) line += " ETA " + formatDuration(*eta);
  return line;
}

std::string formatDryRun(const service::DryRunResult& result) {
  std::string out = "Would target " + countText(result.device_count) +
                    (result.device_count == 1 ? " device" : " devices");
  if (result.sample_device_ids.empty()) return out + "\n";
  out += ", first:\n";
  for (const std::string& id : result.sample_device_ids) out += "  " + id + "\n";
  auto shown = static_cast<std::int64_t>(result.sample_device_ids.size());
  if (result.device_count > shown) {
    out += "  … and " + countText(result.device_count - shown) + " more\n";
  }
  return out;
}

namespace {

Status flagError(std::string_view flag, std::string_view text, std::string_view form) {
  return Status(ErrorCode::ArgumentInvalid,
                std::string(flag) + " '" + std::string(text) + "': expected " + std::string(form));
}

std::vector<std::string_view> split(std::string_view text, char separator) {
  std::vector<std::string_view> parts;
  for (;;) {
    auto at = text.find(separator);
    parts.push_back(text.substr(0, at));
    if (at == std::string_view::npos) return parts;
    text.remove_prefix(at + 1);
  }
}

// The whole of `text` as a number / integer, else nullopt.
std::optional<double> wholeNumber(std::string_view text) {
  double value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || ec != std::errc{} || end != text.data() + text.size()) return std::nullopt;
  return value;
}

std::optional<std::int64_t> wholeInteger(std::string_view text) {
  std::int64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || ec != std::errc{} || end != text.data() + text.size()) return std::nullopt;
  return value;
}

}  // namespace

Result<service::AbortCriterion> parseAbortFlag(std::string_view text) {
  constexpr std::string_view kForm =
      "TYPE:PERCENT:MIN, TYPE failed, timedOut or any (e.g. failed:10:50)";
  auto parts = split(text, ':');
  if (parts.size() != 3) return flagError("--abort", text, kForm);
  auto type = service::parseAbortFailureType(parts[0]);
  auto percent = wholeNumber(parts[1]);
  auto min = wholeInteger(parts[2]);
  if (!type || !percent || !min) return flagError("--abort", text, kForm);
  return service::AbortCriterion{*type, *percent, *min};
}

Result<service::RetryPolicy> parseRetryFlag(std::string_view text) {
  constexpr std::string_view kForm =
      "ATTEMPTS:BACKOFF_SECONDS[:CODE,CODE], CODE DeviceNotOnline, GatewayTimeout or "
      "DeviceMethodFailed (e.g. 3:10 or 3:10:DeviceMethodFailed)";
  auto parts = split(text, ':');
  if (parts.size() < 2 || parts.size() > 3) return flagError("--retry", text, kForm);
  auto attempts = wholeInteger(parts[0]);
  auto backoff = wholeNumber(parts[1]);
  if (!attempts || !backoff || *attempts < 0 || *attempts > 1000) {
    return flagError("--retry", text, kForm);
  }
  service::RetryPolicy retry;
  retry.max_attempts = static_cast<int>(*attempts);
  retry.backoff = std::chrono::duration<double>(*backoff);
  if (parts.size() == 3) {
    retry.retry_on.clear();
    for (std::string_view name : split(parts[2], ',')) {
      auto code = service::parseRetryOn(name);
      if (!code) return flagError("--retry", text, kForm);
      retry.retry_on.push_back(*code);
    }
  }
  return retry;
}

Result<std::vector<service::DeviceJobStatus>> parseDeviceJobStatusList(std::string_view text) {
  std::vector<service::DeviceJobStatus> statuses;
  for (std::string_view name : split(text, ',')) {
    auto status = service::parseDeviceJobStatus(name);
    if (!status || *status == service::DeviceJobStatus::Scheduled) {
      return flagError("--status", text,
                       "a comma-separated list of pending, running, completed, failed, canceled");
    }
    statuses.push_back(*status);
  }
  return statuses;
}

Result<std::optional<service::Rollout>> rolloutFromFlags(const RolloutFlags& flags) {
  bool any_exponential = flags.base_per_minute || flags.factor || flags.every;
  bool all_exponential = flags.base_per_minute && flags.factor && flags.every;
  if (any_exponential && !all_exponential) {
    return Status(ErrorCode::ArgumentInvalid,
                  "an exponential rollout needs --rollout-base-per-minute, --rollout-factor and "
                  "--rollout-every together");
  }
  if (!flags.max_per_minute && !any_exponential) return std::optional<service::Rollout>();
  service::Rollout rollout;
  rollout.maximum_per_minute = flags.max_per_minute;
  if (all_exponential) {
    rollout.exponential_rate =
        service::ExponentialRollout{*flags.base_per_minute, *flags.factor, *flags.every};
  }
  return std::optional<service::Rollout>(rollout);
}

std::string formatConsumerGroupTable(const json::array& groups) {
  auto member = [](const json::object& o, std::string_view key) -> std::string {
    const json::value* v = o.if_contains(key);
    return v != nullptr && v->is_string() ? orDash(std::string(v->get_string())) : "-";
  };
  std::vector<std::vector<std::string>> rows;
  rows.reserve(groups.size());
  for (const json::value& group : groups) {
    if (!group.is_object()) continue;
    rows.push_back({member(group.get_object(), "name"), member(group.get_object(), "createdTime")});
  }
  return formatTable({"CONSUMER GROUP", "CREATED"}, rows);
}

}  // namespace iothub::ctl
