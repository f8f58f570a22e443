#include "request_building.hpp"

#include <array>
#include <chrono>

#include "auth/sas_token.hpp"
#include "common/encoding.hpp"

namespace iothub::service::detail {

std::int64_t serviceTokenExpiry(SystemTime now) {
  using std::chrono::duration_cast;
  using std::chrono::seconds;
  auto since_epoch = now.time_since_epoch();
  auto whole = duration_cast<seconds>(since_epoch);
  if (whole < since_epoch) whole += seconds{1};  // Math.ceil(Date.now() / 1000)
  return whole.count() + kTokenLifetimeSeconds;
}

Result<std::string> serviceSasToken(const auth::ServiceConnectionString& connection_string,
                                    SystemTime now) {
  return auth::buildSasToken(connection_string.host_name, connection_string.key,
                             std::string_view{connection_string.key_name},
                             serviceTokenExpiry(now));
}

std::string newRequestId(Random& random) {
  std::array<unsigned char, 16> b{};
  random.fill(b.data(), b.size());
  b[6] = static_cast<unsigned char>((b[6] & 0x0F) | 0x40);  // version 4
  b[8] = static_cast<unsigned char>((b[8] & 0x3F) | 0x80);  // RFC 4122 variant
  std::string hex = hexEncode(std::string_view(reinterpret_cast<const char*>(b.data()), b.size()));
  return hex.substr(0, 8) + "-" + hex.substr(8, 4) + "-" + hex.substr(12, 4) + "-" +
         hex.substr(16, 4) + "-" + hex.substr(20);
}

std::string quoteEtag(std::string_view etag) {
  if (etag.size() >= 2 && etag.front() == '"' && etag.back() == '"') return std::string(etag);
  return "\"" + std::string(etag) + "\"";
}

std::string requestTarget(const HttpRequest& request) {
  std::string target = request.path;
  target += "?api-version=";
  target += kApiVersion;
  if (!request.query.empty()) {
    target += '&';
    target += request.query;
  }
  return target;
}

std::string devicePath(std::string_view device_id) {
  return "/devices/" + urlEncodeStrict(device_id);
}

std::string twinPath(std::string_view device_id) {
  return "/twins/" + urlEncodeStrict(device_id);
}

std::string durationText(std::chrono::milliseconds duration) {
  if (duration.count() % 1000 == 0) return std::to_string(duration.count() / 1000) + "s";
  return std::to_string(duration.count()) + "ms";
}

}  // namespace iothub::service::detail
