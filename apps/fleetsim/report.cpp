#include "apps/fleetsim/report.hpp"

#include <unistd.h>

#include <charconv>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <sstream>

namespace iothub::fleetsim {

double round3(double v) { return std::round(v * 1000.0) / 1000.0; }

json::object latencyJson(const LatencyHistogram& h) {
  json::object o;
  o["count"] = h.count();
  o["p50_ms"] = round3(static_cast<double>(h.percentile(0.50)) / 1000.0);
  o["p90_ms"] = round3(static_cast<double>(h.percentile(0.90)) / 1000.0);
  o["p99_ms"] = round3(static_cast<double>(h.percentile(0.99)) / 1000.0);
  o["max_ms"] = round3(static_cast<double>(h.max()) / 1000.0);
  o["mean_ms"] = round3(h.mean() / 1000.0);
  return o;
}

namespace {
Status invalid(std::string message) {
  return Status(ErrorCode::ArgumentInvalid, std::move(message));
}

std::string readWhole(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}
}  // namespace

Result<double> numberAt(const json::value& doc, std::string_view path) {
  const json::value* cur = &doc;
  std::size_t pos = 0;
  while (pos <= path.size()) {
    auto end = path.find('.', pos);
    if (end == std::string_view::npos) end = path.size();
    const std::string_view key = path.substr(pos, end - pos);
    const auto* object = cur->if_object();
    if (object == nullptr || key.empty())
      return invalid("no figure at '" + std::string(path) + "'");
    const auto it = object->find(key);
    if (it == object->end()) return invalid("no figure at '" + std::string(path) + "'");
    cur = &it->value();
    pos = end + 1;
  }
  if (cur->is_int64()) return static_cast<double>(cur->as_int64());
  if (cur->is_uint64()) return static_cast<double>(cur->as_uint64());
  if (cur->is_double()) return cur->as_double();
  if (cur->is_bool()) return cur->as_bool() ? 1.0 : 0.0;
  return invalid("figure at '" + std::string(path) + "' is not a number");
}

Result<RatioSpec> parseRatioSpec(std::string_view text) {
  const auto eq = text.find('=');
  if (eq == std::string_view::npos || eq == 0 || eq + 1 == text.size()) {
    return invalid("ratio '" + std::string(text) + "' is not name=hubpath/peerpath");
  }
  RatioSpec spec{std::string(text.substr(0, eq)), {}, {}};
  const std::string_view paths = text.substr(eq + 1);
  const auto slash = paths.find('/');
  if (slash == std::string_view::npos) {
    spec.hub_path = spec.peer_path = std::string(paths);
  } else {
    spec.hub_path = std::string(paths.substr(0, slash));
    spec.peer_path = std::string(paths.substr(slash + 1));
    if (spec.hub_path.empty() || spec.peer_path.empty()) {
      return invalid("ratio '" + std::string(text) + "' has an empty path");
    }
  }
  return spec;
}

Result<Requirement> parseRequirement(std::string_view text) {
  for (std::string_view op : {">=", "<=", "==", ">", "<"}) {
    const auto at = text.find(op);
    if (at == std::string_view::npos || at == 0) continue;
    const std::string_view number = text.substr(at + op.size());
    double threshold = 0;
    const auto [ptr, ec] = std::from_chars(number.data(), number.data() + number.size(), threshold);
    if (ec != std::errc() || ptr != number.data() + number.size() || number.empty()) break;
    return Requirement{std::string(text.substr(0, at)), std::string(op), threshold};
  }
  return invalid("requirement '" + std::string(text) +
                 "' is not PATH OP NUMBER (OP: >= <= == > <)");
}

Result<json::object> combineResults(std::string_view scenario, const json::value& hub,
                                    const json::value& peer, const std::vector<RatioSpec>& ratios) {
  json::object out;
  out["scenario"] = scenario;
  out["hub"] = hub;
  out["peer"] = peer;
  json::object values;
  for (const auto& spec : ratios) {
    auto h = numberAt(hub, spec.hub_path);
    if (!h) return h.status();
    auto p = numberAt(peer, spec.peer_path);
    if (!p) return p.status();
    if (*p == 0) {
      values[spec.name] = nullptr;
    } else {
      values[spec.name] = std::round(*h / *p * 1000.0) / 1000.0;
    }
  }
  out["ratios"] = std::move(values);
  return out;
}

Status checkRequirements(const json::value& combined,
                         const std::vector<Requirement>& requirements) {
  std::string failures;
  for (const auto& r : requirements) {
    auto value = numberAt(combined, r.path);
    bool ok = false;
    if (value) {
      const double v = *value;
      if (r.op == ">=")
        ok = v >= r.threshold;
      else if (r.op == "<=")
        ok = v <= r.threshold;
      else if (r.op == "==")
        ok = v == r.threshold;
      else if (r.op == ">")
        ok = v > r.threshold;
      else if (r.op == "<")
        ok = v < r.threshold;
    }
    if (!ok) {
      if (!failures.empty()) failures += "; ";
      failures += r.path + r.op + std::to_string(r.threshold) + " failed (" +
                  (value ? std::to_string(*value) : value.status().message()) + ")";
    }
  }
  if (failures.empty()) return Status::ok();
  return invalid(failures);
}

std::optional<std::int64_t> parseVmRssKb(std::string_view status_text) {
  const auto at = status_text.find("VmRSS:");
  if (at == std::string_view::npos) return std::nullopt;
  std::size_t pos = at + 6;
  while (pos < status_text.size() && (status_text[pos] == ' ' || status_text[pos] == '\t')) ++pos;
  std::int64_t kb = 0;
  const auto [ptr, ec] =
      std::from_chars(status_text.data() + pos, status_text.data() + status_text.size(), kb);
  if (ec != std::errc() || ptr == status_text.data() + pos) return std::nullopt;
  return kb;
}

std::optional<std::int64_t> parseCpuTicks(std::string_view stat_text) {
  const auto close = stat_text.rfind(')');
  if (close == std::string_view::npos) return std::nullopt;
  // After ") " come field 3 (state), 4, ... ; utime is field 14, stime field 15.
  std::size_t pos = close + 1;
  int field = 2;
  std::int64_t total = 0;
  int found = 0;
  while (pos < stat_text.size() && found < 2) {
    while (pos < stat_text.size() && stat_text[pos] == ' ') ++pos;
    if (pos >= stat_text.size()) break;
    auto end = stat_text.find(' ', pos);
    if (end == std::string_view::npos) end = stat_text.size();
    ++field;
    if (field == 14 || field == 15) {
      std::int64_t v = 0;
      const auto [ptr, ec] = std::from_chars(stat_text.data() + pos, stat_text.data() + end, v);
      if (ec != std::errc() || ptr != stat_text.data() + end) return std::nullopt;
      total += v;
      ++found;
    }
    pos = end;
  }
  if (found != 2) return std::nullopt;
  return total;
}

std::optional<ProcessSample> sampleProcess(int pid) {
  const std::string base = "/proc/" + std::to_string(pid);
  ProcessSample sample;
  sample.at = std::chrono::steady_clock::now();
  auto rss = parseVmRssKb(readWhole(base + "/status"));
  auto ticks = parseCpuTicks(readWhole(base + "/stat"));
  if (!rss || !ticks) return std::nullopt;
  sample.rss_kb = *rss;
  sample.cpu_ticks = *ticks;
  return sample;
}

double cpuPercent(const ProcessSample& from, const ProcessSample& to) {
  const double seconds = std::chrono::duration<double>(to.at - from.at).count();
  if (seconds <= 0) return 0;
  const double ticks_per_second = static_cast<double>(sysconf(_SC_CLK_TCK));
  return static_cast<double>(to.cpu_ticks - from.cpu_ticks) / ticks_per_second / seconds * 100.0;
}

}  // namespace iothub::fleetsim
