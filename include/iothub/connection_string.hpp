#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "iothub/status.hpp"

namespace iothub::auth {

// Splits "K1=V1;K2=V2" per docs/protocol.md §1.1: split on ';', each element at its FIRST '='
// (base64 padding survives), elements with an empty name or value dropped, last duplicate
// wins, keys case-sensitive. Never fails.
std::map<std::string, std::string, std::less<>> parseConnectionStringPairs(std::string_view text);

// HostName=…;SharedAccessKeyName=…;SharedAccessKey=…
struct ServiceConnectionString {
  std::string host_name;
  std::string key_name;  // policy name
  std::string key;       // base64

  // Errors: ArgumentInvalid naming the missing/invalid field (never echoes the key); the key
  // must be valid base64. Other elements are ignored.
  static Result<ServiceConnectionString> parse(std::string_view text);
  // Fields in the order above. Values containing ';' (or empty ones) do not round-trip.
  std::string toString() const;
};

// HostName=…;DeviceId=…;[ModuleId=…;]SharedAccessKey=… | SharedAccessSignature=… | x509=true
// [;GatewayHostName=…][;SharedAccessKeyName=…]
struct DeviceConnectionString {
  std::string host_name;
  std::string device_id;
  std::optional<std::string> module_id;
  std::optional<std::string> shared_access_key;
  std::optional<std::string> shared_access_key_name;
  std::optional<std::string> shared_access_signature;
  bool x509 = false;
  std::optional<std::string> gateway_host_name;

  // Errors: ArgumentInvalid (missing HostName/DeviceId, x509 with a value other than "true"
  // (any case), not exactly one of SharedAccessKey, SharedAccessSignature, x509=true, or a
  // SharedAccessKey that is not base64). Other elements are ignored.
  static Result<DeviceConnectionString> parse(std::string_view text);
  // HostName;DeviceId;[ModuleId;]credential[;GatewayHostName][;SharedAccessKeyName], the
  // credential being SharedAccessKey, SharedAccessSignature or x509=true. Values containing
  // ';' (or empty ones) do not round-trip.
  std::string toString() const;
};

}  // namespace iothub::auth
