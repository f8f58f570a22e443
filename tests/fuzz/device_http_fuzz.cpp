// Fuzz target for the untrusted parsers of the device transports (src/device_api): the MQTT
// telemetry topic's property bag, the device HTTP routes, the telemetry headers and batch
// bodies of sendEvent / sendEventBatch, and the headers a receive answer is built from
// (their values come from services over AMQP, so they are untrusted too).
//
// The first byte picks the parser (its distance from '0', modulo 5, so that seeds are text),
// the rest is its input:
//   0  the property bag of `devices/dev1/messages/events/<input>`
//   1  "<method>\n<target>" for parseDeviceHttpRoute and DeviceHttpApi::handles
//   2  "Name: value" lines, an empty line, then a body, for telemetryFromHttp
//   3  a batch body for parseTelemetryBatch
//   4  NUL-separated fields of a cloud-to-device message for receiveResponse
//
// Properties checked on any input, besides "never crashes, hangs or leaks":
//   - a bag that parses renders back (strictly percent-encoded) to a bag that parses to the
//     same message;
//   - a route that parses names a device id the registry accepts, the method its path
//     serves, and a path that handles() claims unless a literal segment was percent-encoded;
//   - accepted telemetry is within the size limits; errors have the documented codes;
//   - every header of a receive answer is a valid field (no CR, LF or NUL anywhere).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "common/encoding.hpp"
#include "device_api/device_http.hpp"
#include "device_api/telemetry.hpp"
#include "registry/device_json.hpp"

namespace {

using namespace iothub;
using namespace iothub::device_api;

void require(bool condition, const char* what) {
  if (!condition) {
    std::fprintf(stderr, "device_http_fuzz: property violated: %s\n", what);
    std::abort();
  }
}

bool sameMessage(const TelemetryMessage& a, const TelemetryMessage& b) {
  return a.device_id == b.device_id && a.message_id == b.message_id &&
         a.correlation_id == b.correlation_id && a.user_id == b.user_id && a.to == b.to &&
         a.content_type == b.content_type && a.content_encoding == b.content_encoding &&
         a.interface_id == b.interface_id && a.subject == b.subject && a.expiry == b.expiry &&
         a.properties == b.properties;
}

std::string renderBag(const TelemetryMessage& m) {
  std::string bag;
  auto add = [&bag](std::string_view key, const std::string& value) {
    if (!bag.empty()) bag += '&';
    bag += urlEncodeStrict(key) + "=" + urlEncodeStrict(value);
  };
  const std::pair<std::string_view, const std::string*> system[] = {
      {"$.mid", &m.message_id},    {"$.cid", &m.correlation_id},
      {"$.uid", &m.user_id},       {"$.to", &m.to},
      {"$.ct", &m.content_type},   {"$.ce", &m.content_encoding},
      {"$.ifid", &m.interface_id}, {"$.exp", &m.expiry},
      {"$.sub", &m.subject}};
  for (const auto& [key, value] : system) {
    if (!value->empty()) add(key, *value);
  }
  for (const auto& [key, value] : m.properties) add(key, value);
  return bag;
}

void fuzzBag(std::string_view input) {
  std::string topic = "devices/dev1/messages/events/" + std::string(input);
  auto m = parseMqttTelemetryTopic("dev1", topic);
  if (!m) {
    require(m.code() == ErrorCode::ArgumentInvalid, "bag errors are ArgumentInvalid");
    return;
  }
  require(m->device_id == "dev1" && m->source == "mqtt", "identity of a parsed message");
  for (const auto& [key, value] : m->properties) require(!key.empty(), "no empty property key");
  std::string bag = renderBag(*m);
  if (bag.size() > kMaxPropertyBagLength) return;  // encoding may triple it
  auto again = parseMqttTelemetryTopic("dev1", "devices/dev1/messages/events/" + bag);
  require(again.isOk(), "a rendered bag parses");
  require(sameMessage(*m, *again), "a bag survives rendering");
  // The raw input as a whole topic: only the shape check, for any device id.
  (void)parseMqttTelemetryTopic(input.substr(0, 8), input);
}

void fuzzRoute(std::string_view input) {
  std::size_t nl = input.find('\n');
  std::string_view method = nl == std::string_view::npos ? "POST" : input.substr(0, nl);
  std::string_view target = nl == std::string_view::npos ? input : input.substr(nl + 1);
  bool claimed = DeviceHttpApi::handles(target);
  std::string allow = allowedMethod(target);
  auto route = parseDeviceHttpRoute(method, target);
  if (!route) {
    ErrorCode c = route.code();
    require(c == ErrorCode::NotFound || c == ErrorCode::MethodNotAllowed ||
                c == ErrorCode::ArgumentInvalid,
            "route errors are 404, 405 or 400");
    if (c == ErrorCode::MethodNotAllowed) require(!allow.empty(), "a 405 has an Allow method");
    return;
  }
  require(registry::validateDeviceId(route->device_id).isOk(), "routed device ids are valid");
  require(allow == method, "the routed method is the one the path serves");
  // handles() reads the raw path: it may only miss a route whose literals were encoded.
  std::string_view path = target.substr(0, target.find('?'));
  if (!claimed) require(path.find('%') != std::string_view::npos, "handles() claims routed paths");
}

void fuzzHeaders(std::string_view input) {
  HttpHeaders headers;
  while (!input.empty()) {
    std::size_t nl = input.find('\n');
    std::string_view line = input.substr(0, nl);
    input = nl == std::string_view::npos ? std::string_view() : input.substr(nl + 1);
    if (line.empty()) break;
    std::size_t colon = line.find(':');
    std::string_view value = colon == std::string_view::npos ? "" : line.substr(colon + 1);
    if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
    headers.fields.emplace_back(std::string(line.substr(0, colon)), std::string(value));
  }
  auto m = telemetryFromHttp("dev1", headers, std::string(input));
  if (!m) {
    require(m.code() == ErrorCode::MessageTooLarge, "header errors are MessageTooLarge");
    return;
  }
  require(m->size() <= kMaxTelemetryMessageBytes, "accepted messages are within the limit");
  require(m->source == "http" && m->body == input, "the body passes unchanged");
}

void fuzzBatch(std::string_view input) {
  auto batch = parseTelemetryBatch("dev1", input);
  if (!batch) {
    int status = errorInfo(batch.code()).http_status;
    require(status == 400 || status == 413, "batch errors are 400 or 413");
    return;
  }
  require(!batch->empty() && batch->size() <= kMaxTelemetryBatchMessages, "batch count");
  std::size_t total = 0;
  for (const auto& m : *batch) {
    require(m.size() <= kMaxTelemetryMessageBytes, "batch message within the limit");
    total += m.size();
  }
  require(total <= kMaxTelemetryBatchBytes, "batch total within the limit");
}

void fuzzReceive(std::string_view input) {
  std::vector<std::string> parts;
  while (parts.size() < 16) {
    std::size_t nul = input.find('\0');
    parts.emplace_back(input.substr(0, nul));
    if (nul == std::string_view::npos) break;
    input.remove_prefix(nul + 1);
  }
  parts.resize(16);
  c2d::DeviceMessage m;
  m.lock_token = parts[0];
  m.message_id = parts[1];
  m.correlation_id = parts[2];
  m.user_id = parts[3];
  m.to = parts[4];
  m.content_type = parts[5];
  m.content_encoding = parts[6];
  m.body = parts[7];
  for (std::size_t i = 8; i + 1 < parts.size(); i += 2)
    m.properties.emplace_back(parts[i], parts[i + 1]);
  HttpResponse r = receiveResponse(m);
  require(r.status == 200 && r.body == m.body, "the body passes unchanged");
  for (const auto& [name, value] : r.headers.fields) {
    require(!name.empty(), "header names are not empty");
    for (char c : name) require(c > 0x20 && c < 0x7f && c != ':', "header name characters");
    for (char c : value) require(c != '\r' && c != '\n' && c != '\0', "header value characters");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  std::string_view input(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (static_cast<unsigned char>(data[0] - '0') % 5) {
    case 0:
      fuzzBag(input);
      break;
    case 1:
      fuzzRoute(input);
      break;
    case 2:
      fuzzHeaders(input);
      break;
    case 3:
      fuzzBatch(input);
      break;
    default:
      fuzzReceive(input);
      break;
  }
  return 0;
}
