#include "output.hpp"

#include <algorithm>
#include <array>
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
  constexpr std::size_t kColumns = 6;
  using Row = std::array<std::string, kColumns>;
  std::vector<Row> rows;
  rows.push_back({"DEVICE ID", "STATUS", "CONNECTION", "AUTH", "C2D", "LAST ACTIVITY"});
  for (const Device& d : devices) {
    rows.push_back({d.device_id, std::string(service::toString(d.status)),
                    std::string(service::toString(d.connection_state)),
                    std::string(service::toString(d.authentication_type)),
                    std::to_string(d.cloud_to_device_message_count), orDash(d.last_activity_time)});
  }
  std::array<std::size_t, kColumns> widths{};
  for (const Row& row : rows) {
    for (std::size_t i = 0; i < kColumns; ++i) widths[i] = std::max(widths[i], row[i].size());
  }
  std::string out;
  for (const Row& row : rows) {
    std::string line;
    for (std::size_t i = 0; i < kColumns; ++i) {
      line += row[i];
      if (i + 1 < kColumns) line.append(widths[i] - row[i].size() + 2, ' ');
    }
    out += line;
    out += '\n';
  }
  return out;
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

}  // namespace iothub::ctl
