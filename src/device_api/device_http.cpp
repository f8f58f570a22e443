#include "device_api/device_http.hpp"

#include <spdlog/spdlog.h>

#include <boost/url/parse.hpp>
#include <cctype>
#include <optional>
#include <utility>

#include "auth/policy.hpp"
#include "auth/sas_token.hpp"
#include "common/encoding.hpp"
#include "common/time_format.hpp"
#include "registry/device_json.hpp"
#include "service_api/error_response.hpp"
#include "service_api/service_api.hpp"

namespace iothub::device_api {
namespace {

using Kind = DeviceHttpRoute::Kind;

// What a client is told for every authentication failure after the token's syntax: Azure
// does not reveal whether the device exists, is disabled, or the key was wrong
// (docs/protocol.md §11.1). The precise reason goes to the log only.
constexpr std::string_view kNotAuthorized =
    "The SAS token does not authorize this device: it is invalid, expired or for another "
    "device, or the device is unknown or disabled";

bool printableAscii(std::string_view text) {
  for (char c : text) {
    if (c < 0x20 || c >= 0x7f) return false;
  }
  return true;
}

// HTTP field-name characters (RFC 9110 token).
bool headerName(std::string_view name) {
  if (name.empty()) return false;
  for (char c : name) {
    auto u = static_cast<unsigned char>(c);
    bool ok = (u < 0x80 && std::isalnum(u)) ||
              std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
    if (!ok) return false;
  }
  return true;
}

// A field value without control characters (HTAB allowed): CR or LF would split the
// response, NUL is refused by HTTP parsers.
bool headerValue(std::string_view value) {
  for (char c : value) {
    auto u = static_cast<unsigned char>(c);
    if ((u < 0x20 && c != '\t') || u == 0x7f) return false;
  }
  return true;
}

void setIfSafe(HttpResponse& response, std::string name, std::string_view value) {
  if (!headerName(name) || !headerValue(value)) {
    spdlog::debug("device http: property {} cannot be written as a header; left out",
                  headerName(name) ? name : std::string("(binary name)"));
    return;
  }
  response.headers.fields.emplace_back(std::move(name), std::string(value));
}

Status notFound(std::string_view target) {
  std::string_view path = target.substr(0, target.find('?'));
  return {ErrorCode::NotFound,
          "No resource at " +
              (printableAscii(path) ? std::string(path.substr(0, 256)) : std::string("this path"))};
}

HttpResponse noContent() {
  HttpResponse r;
  r.status = 204;
  return r;
}

// The route of a decoded path: /devices/{id}/messages/(events|devicebound)[/{lockToken}[/abandon]],
// and the one method it serves.
struct PathMatch {
  Kind kind = Kind::SendEvent;
  std::string_view method;
};

std::optional<PathMatch> matchPath(const std::vector<std::string>& segments) {
  if (segments.size() < 4 || segments[0] != "devices" ||
      !equalsIgnoreCase(segments[2], "messages")) {
    return std::nullopt;
  }
  if (equalsIgnoreCase(segments[3], "events")) {
    if (segments.size() == 4) return PathMatch{Kind::SendEvent, "POST"};
    return std::nullopt;
  }
  if (!equalsIgnoreCase(segments[3], "devicebound")) return std::nullopt;
  if (segments.size() == 4) return PathMatch{Kind::Receive, "GET"};
  // Complete, or Reject by the query (parseDeviceHttpRoute).
  if (segments.size() == 5) return PathMatch{Kind::Complete, "DELETE"};
  if (segments.size() == 6 && equalsIgnoreCase(segments[5], "abandon")) {
    return PathMatch{Kind::Abandon, "POST"};
  }
  return std::nullopt;
}

// The decoded path segments, the trailing empty one dropped; nullopt when the path is
// deeper than any route (so a hostile path costs no more than that).
std::optional<std::vector<std::string>> pathSegments(const boost::urls::url_view& url) {
  std::vector<std::string> segments;
  for (auto segment : url.segments()) {
    if (segments.size() == 7) return std::nullopt;
    segments.push_back(segment);
  }
  if (!segments.empty() && segments.back().empty()) segments.pop_back();
  return segments;
}

}  // namespace

std::string allowedMethod(std::string_view target) {
  auto url = boost::urls::parse_origin_form(target);
  if (!url) return {};
  auto segments = pathSegments(*url);
  if (!segments) return {};
  auto match = matchPath(*segments);
  return match ? std::string(match->method) : std::string();
}

Result<DeviceHttpRoute> parseDeviceHttpRoute(std::string_view method, std::string_view target) {
  auto url = boost::urls::parse_origin_form(target);
  if (!url) return Status(ErrorCode::ArgumentInvalid, "The request target is not a valid URL path");
  auto segments = pathSegments(*url);
  if (!segments) return notFound(target);
  auto match = matchPath(*segments);
  if (!match) return notFound(target);
  if (method != match->method) {
    return Status(
        ErrorCode::MethodNotAllowed,
        "Method " +
            (printableAscii(method) ? std::string(method.substr(0, 16)) : std::string("?")) +
            " is not allowed here; use " + std::string(match->method));
  }
  DeviceHttpRoute route;
  route.kind = match->kind;
  bool api_version = false;
  bool reject = false;
  for (auto param : url->params()) {
    if (param.key == "api-version" && param.has_value && !param.value.empty()) api_version = true;
    if (param.key == "reject") reject = true;  // the SDK sends it bare: `&reject`
  }
  // Every SDK sends api-version (docs/protocol.md §11.1); its value is not checked, as in
  // the service API (§4.1).
  if (!api_version) {
    return Status(ErrorCode::ArgumentInvalid, "The query parameter api-version is required");
  }
  if (route.kind == Kind::Complete && reject) route.kind = Kind::Reject;
  IOTHUB_RETURN_IF_ERROR(registry::validateDeviceId((*segments)[1]));
  route.device_id = std::move((*segments)[1]);
  if (route.kind != Kind::SendEvent && route.kind != Kind::Receive) {
    route.lock_token = std::move((*segments)[4]);
  }
  return route;
}

HttpResponse receiveResponse(const c2d::DeviceMessage& message) {
  HttpResponse r;
  r.status = 200;
  r.body = message.body;
  // The SDK takes the lock token from the ETag by dropping its first and last character
  // (docs/protocol.md §11.4), so the quotes are required.
  setIfSafe(r, "ETag", "\"" + message.lock_token + "\"");
  if (!message.message_id.empty()) setIfSafe(r, "iothub-messageid", message.message_id);
  if (!message.correlation_id.empty()) {
    setIfSafe(r, "iothub-correlationid", message.correlation_id);
  }
  if (!message.user_id.empty()) setIfSafe(r, "iothub-userid", message.user_id);
  if (!message.to.empty()) setIfSafe(r, "iothub-to", message.to);
  if (message.expiry_time.time_since_epoch().count() != 0) {
    setIfSafe(r, "iothub-expiry", formatTimestamp(message.expiry_time));
  }
  setIfSafe(r, "iothub-sequencenumber", std::to_string(message.sequence));
  setIfSafe(r, "iothub-enqueuedtime", formatTimestamp(message.enqueued_time));
  setIfSafe(r, "iothub-deliverycount", std::to_string(message.delivery_count));
  setIfSafe(r, "iothub-ack", c2d::ackName(message.ack));
  if (!message.content_type.empty()) setIfSafe(r, "Content-Type", message.content_type);
  if (!message.content_encoding.empty()) {
    setIfSafe(r, "Content-Encoding", message.content_encoding);
  }
  for (const auto& [name, value] : message.properties) {
    setIfSafe(r, "iothub-app-" + name, value);
  }
  return r;
}

DeviceHttpApi::DeviceHttpApi(std::string host_name, store::Store& store,
                             std::vector<store::AccessPolicyRecord> policies,
                             c2d::CloudToDevice& c2d, TelemetrySink* telemetry, const Clock& clock,
                             Random& random)
    : host_name_(std::move(host_name)),
      store_(store),
      policies_(std::move(policies)),
      c2d_(c2d),
      telemetry_(telemetry),
      clock_(clock),
      random_(random),
      activity_(store, clock) {}

bool DeviceHttpApi::handles(std::string_view target) {
  // The raw path, not decoded: the literal segments are never percent-encoded by clients,
  // and the hub asks this for every request.
  std::string_view path = target.substr(0, target.find('?'));
  constexpr std::string_view kDevices = "/devices/";
  if (!path.starts_with(kDevices)) return false;
  path.remove_prefix(kDevices.size());
  auto next = [&path]() -> std::optional<std::string_view> {
    std::size_t slash = path.find('/');
    if (slash == std::string_view::npos) return std::nullopt;
    path.remove_prefix(slash + 1);
    return path.substr(0, path.find('/'));
  };
  auto messages = next();  // skips the device id
  if (!messages || !equalsIgnoreCase(*messages, "messages")) return false;
  auto kind = next();
  return kind && (equalsIgnoreCase(*kind, "events") || equalsIgnoreCase(*kind, "devicebound"));
}

HttpResponse DeviceHttpApi::fail(const HttpRequest& request, const Status& status) {
  HttpResponse r = service_api::errorResponse(status, random_, clock_.now());
  if (r.status == 401) ++counters_.unauthorized;
  // Never log the Authorization header or bodies; the path has no secret.
  std::string_view path = std::string_view(request.target).substr(0, request.target.find('?'));
  spdlog::info("{} {} {} -> {} {}", request.remote_address, request.method.substr(0, 16),
               printableAscii(path) ? path.substr(0, 256) : "(binary path)", r.status,
               status.toString());
  return r;
}

Status DeviceHttpApi::authenticate(const HttpRequest& request, std::string_view device_id) {
  const std::string* authorization = request.headers.find("Authorization");
  if (authorization == nullptr) {
    return {ErrorCode::Unauthorized,
            "The Authorization header with a device SharedAccessSignature is missing"};
  }
  // A hostile header is refused before it costs a store read (docs/limits.md).
  if (authorization->size() > auth::kMaxSasTokenLength) {
    return {ErrorCode::Unauthorized, "The SAS token is too long"};
  }
  std::string_view token = *authorization;
  while (!token.empty() && (token.front() == ' ' || token.front() == '\t')) token.remove_prefix(1);
  while (!token.empty() && (token.back() == ' ' || token.back() == '\t')) token.remove_suffix(1);
  auto device = store_.registry().getDevice(device_id);
  std::string reason;
  if (!device) {
    if (device.code() != ErrorCode::DeviceNotFound) {
      return {ErrorCode::ServiceUnavailable, device.status().toString()};
    }
    reason = "unknown device";
  } else if (device->status != store::DeviceStatus::Enabled) {
    reason = "the device is disabled";
  } else {
    auto expiry = auth::verifyDeviceToken(token, host_name_, device_id, device->primary_key,
                                          device->secondary_key, policies_, clock_);
    if (expiry) return Status::ok();
    reason = expiry.status().message();
  }
  spdlog::info("{} device http: device {} not authorized: {}", request.remote_address, device_id,
               reason);
  return {ErrorCode::Unauthorized, std::string(kNotAuthorized)};
}

HttpResponse DeviceHttpApi::handle(const HttpRequest& request) {
  ++counters_.requests;
  auto route = parseDeviceHttpRoute(request.method, request.target);
  if (!route) {
    HttpResponse r = fail(request, route.status());
    if (r.status == 405) r.headers.set("Allow", allowedMethod(request.target));
    return r;
  }
  if (Status s = authenticate(request, route->device_id); !s) return fail(request, s);
  activity_.record(route->device_id);  // lastActivityTime, at most once a minute
  switch (route->kind) {
    case Kind::SendEvent:
      return sendEvent(request, *route);
    case Kind::Receive:
      return receive(request, *route);
    case Kind::Complete:
    case Kind::Reject:
    case Kind::Abandon:
      return settle(request, *route);
  }
  return fail(request, {ErrorCode::ServerError, "unknown route"});
}

Status DeviceHttpApi::deliver(std::vector<TelemetryMessage> messages) {
  std::size_t size = 0;
  for (const TelemetryMessage& message : messages) size += message.size();
  std::size_t count = messages.size();
  if (telemetry_ == nullptr) {
    counters_.telemetry_dropped += count;
  } else if (Status s = count == 1 ? telemetry_->accept(std::move(messages.front()))
                                   : telemetry_->acceptAll(std::move(messages));
             !s) {
    counters_.telemetry_refused += count;
    // The device retries a 503 (docs/protocol.md §11.3); the sink's reason stays in the log.
    spdlog::warn("device http: the telemetry sink refused {} message(s): {}", count, s.toString());
    return {ErrorCode::ServiceUnavailable, "The hub cannot take telemetry right now; retry later"};
  }
  counters_.telemetry_messages += count;
  counters_.telemetry_bytes += size;
  return Status::ok();
}

HttpResponse DeviceHttpApi::sendEvent(const HttpRequest& request, const DeviceHttpRoute& route) {
  const std::string* content_type = request.headers.find("Content-Type");
  std::string_view type = content_type ? std::string_view(*content_type) : std::string_view();
  type = type.substr(0, type.find(';'));
  while (!type.empty() && (type.back() == ' ' || type.back() == '\t')) type.remove_suffix(1);
  if (equalsIgnoreCase(type, kBatchContentType)) {
    auto messages = parseTelemetryBatch(route.device_id, request.body);
    if (!messages) return fail(request, messages.status());
    // The batch is taken whole or not at all: a 503 and the device sends it again.
    if (Status s = deliver(std::move(*messages)); !s) return fail(request, s);
    return noContent();
  }
  auto message = telemetryFromHttp(route.device_id, request.headers, request.body);
  if (!message) return fail(request, message.status());
  std::vector<TelemetryMessage> one;
  one.push_back(std::move(*message));
  if (Status s = deliver(std::move(one)); !s) return fail(request, s);
  return noContent();
}

HttpResponse DeviceHttpApi::receive(const HttpRequest& request, const DeviceHttpRoute& route) {
  auto message = c2d_.receive(route.device_id);
  if (!message) return fail(request, message.status());
  if (!message->has_value()) {
    ++counters_.empty_receives;
    return noContent();
  }
  ++counters_.receives;
  return receiveResponse(**message);
}

HttpResponse DeviceHttpApi::settle(const HttpRequest& request, const DeviceHttpRoute& route) {
  auto lost = [&](std::string why) {
    ++counters_.lock_lost;
    return fail(request, {ErrorCode::DeviceMessageLockLost, std::move(why)});
  };
  // Ours are UUIDs: a token that cannot be one holds no message (docs/protocol.md §11.4).
  if (route.lock_token.empty() || route.lock_token.size() > kMaxLockTokenLength ||
      !printableAscii(route.lock_token)) {
    return lost("The lock token is not one this hub hands out");
  }
  // The SDK repeats the token in If-Match; a client that sends another one is confused
  // about which message it settles (inferred: 412, as for any failed precondition).
  if (const std::string* if_match = request.headers.find("If-Match")) {
    std::string v = service_api::normalizeEtag(*if_match);
    if (v != route.lock_token && v != "*") {
      return fail(request, {ErrorCode::PreconditionFailed,
                            "If-Match names another lock token than the path"});
    }
  }
  Status s;
  switch (route.kind) {
    case Kind::Reject:
      s = c2d_.reject(route.device_id, route.lock_token);
      if (s) ++counters_.rejects;
      break;
    case Kind::Abandon:
      s = c2d_.abandon(route.device_id, route.lock_token);
      if (s) ++counters_.abandons;
      break;
    default:
      s = c2d_.complete(route.device_id, route.lock_token);
      if (s) ++counters_.completes;
      break;
  }
  if (!s) {
    if (s.code() == ErrorCode::DeviceMessageLockLost) ++counters_.lock_lost;
    return fail(request, s);
  }
  return noContent();
}

}  // namespace iothub::device_api
