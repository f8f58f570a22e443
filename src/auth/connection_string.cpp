#include "auth/connection_string.hpp"

#include <utility>

#include "common/encoding.hpp"

namespace iothub::auth {
namespace {

using Pairs = std::map<std::string, std::string, std::less<>>;

std::optional<std::string> take(Pairs& pairs, std::string_view name) {
  auto it = pairs.find(name);
  if (it == pairs.end()) return std::nullopt;
  return std::move(it->second);
}

Status missing(std::string_view what, std::string_view name) {
  return {ErrorCode::ArgumentInvalid,
          std::string(what) + " connection string is missing " + std::string(name)};
}

// A key that does not decode could never sign anything; say so at parse time rather than
// at the first request. The message names the field, never the value.
Status checkKey(std::string_view what, const std::string& key) {
  if (base64Decode(key).has_value()) return Status::ok();
  return {ErrorCode::ArgumentInvalid,
          std::string(what) + " connection string has a SharedAccessKey that is not base64"};
}

}  // namespace

std::map<std::string, std::string, std::less<>> parseConnectionStringPairs(std::string_view text) {
  Pairs pairs;
  while (true) {
    std::size_t semicolon = text.find(';');
    std::string_view element = text.substr(0, semicolon);
    std::size_t equals = element.find('=');
    if (equals != std::string_view::npos && equals > 0 && equals + 1 < element.size()) {
      pairs.insert_or_assign(std::string(element.substr(0, equals)),
                             std::string(element.substr(equals + 1)));
    }
    if (semicolon == std::string_view::npos) break;
    text.remove_prefix(semicolon + 1);
  }
  return pairs;
}

Result<ServiceConnectionString> ServiceConnectionString::parse(std::string_view text) {
  constexpr std::string_view kWhat = "Service";
  Pairs pairs = parseConnectionStringPairs(text);
  ServiceConnectionString out;
  auto host = take(pairs, "HostName");
  if (!host) return missing(kWhat, "HostName");
  auto key_name = take(pairs, "SharedAccessKeyName");
  if (!key_name) return missing(kWhat, "SharedAccessKeyName");
  auto key = take(pairs, "SharedAccessKey");
  if (!key) return missing(kWhat, "SharedAccessKey");
  IOTHUB_RETURN_IF_ERROR(checkKey(kWhat, *key));
  out.host_name = std::move(*host);
  out.key_name = std::move(*key_name);
  out.key = std::move(*key);
  return out;
}

std::string ServiceConnectionString::toString() const {
  return "HostName=" + host_name + ";SharedAccessKeyName=" + key_name + ";SharedAccessKey=" + key;
}

Result<DeviceConnectionString> DeviceConnectionString::parse(std::string_view text) {
  constexpr std::string_view kWhat = "Device";
  Pairs pairs = parseConnectionStringPairs(text);
  DeviceConnectionString out;
  auto host = take(pairs, "HostName");
  if (!host) return missing(kWhat, "HostName");
  auto device_id = take(pairs, "DeviceId");
  if (!device_id) return missing(kWhat, "DeviceId");
  out.host_name = std::move(*host);
  out.device_id = std::move(*device_id);
  out.module_id = take(pairs, "ModuleId");
  out.shared_access_key = take(pairs, "SharedAccessKey");
  out.shared_access_key_name = take(pairs, "SharedAccessKeyName");
  out.shared_access_signature = take(pairs, "SharedAccessSignature");
  out.gateway_host_name = take(pairs, "GatewayHostName");
  if (auto x509 = take(pairs, "x509")) {
    if (!equalsIgnoreCase(*x509, "true")) {
      return Status{ErrorCode::ArgumentInvalid,
                    "Device connection string has x509 set to something other than 'true'"};
    }
    out.x509 = true;
  }
  int credentials =
      (out.shared_access_key ? 1 : 0) + (out.shared_access_signature ? 1 : 0) + (out.x509 ? 1 : 0);
  if (credentials != 1) {
    return Status{ErrorCode::ArgumentInvalid,
                  "Device connection string must have exactly one of SharedAccessKey, "
                  "SharedAccessSignature or x509=true"};
  }
  if (out.shared_access_key) IOTHUB_RETURN_IF_ERROR(checkKey(kWhat, *out.shared_access_key));
  return out;
}

std::string DeviceConnectionString::toString() const {
  std::string out = "HostName=" + host_name + ";DeviceId=" + device_id;
  if (module_id) out += ";ModuleId=" + *module_id;
  if (shared_access_key) out += ";SharedAccessKey=" + *shared_access_key;
  if (shared_access_signature) out += ";SharedAccessSignature=" + *shared_access_signature;
  if (x509) out += ";x509=true";
  if (gateway_host_name) out += ";GatewayHostName=" + *gateway_host_name;
  if (shared_access_key_name) out += ";SharedAccessKeyName=" + *shared_access_key_name;
  return out;
}

}  // namespace iothub::auth
