#include "service_api/service_api.hpp"

#include <spdlog/spdlog.h>

#include <boost/url/parse.hpp>
#include <charconv>
#include <optional>
#include <vector>

#include "common/json.hpp"
#include "service_api/error_response.hpp"

namespace iothub::service_api {
namespace {

using store::Permission;

struct Route {
  std::vector<std::string> segments;  // decoded path segments, trailing empty one dropped
  std::optional<std::string> top;     // ?top=
};

Result<Route> parseTarget(std::string_view target) {
  auto url = boost::urls::parse_origin_form(target);
  if (!url) return Status(ErrorCode::ArgumentInvalid, "The request target is not a valid URL path");
  Route route;
  for (auto segment : url->segments()) route.segments.push_back(segment);
  if (!route.segments.empty() && route.segments.back().empty()) route.segments.pop_back();
  for (auto param : url->params()) {
    if (param.key == "top" && param.has_value) route.top = param.value;
  }
  return route;
}

Result<std::size_t> parseTop(const std::optional<std::string>& top) {
  if (!top) return registry::DeviceRegistry::kMaxListSize;
  std::size_t value = 0;
  auto [end, ec] = std::from_chars(top->data(), top->data() + top->size(), value);
  if (ec != std::errc() || end != top->data() + top->size() || value == 0 ||
      value > registry::DeviceRegistry::kMaxListSize) {
    return Status(ErrorCode::ArgumentInvalid,
                  "top must be an integer between 1 and " +
                      std::to_string(registry::DeviceRegistry::kMaxListSize));
  }
  return value;
}

Result<json::value> parseBody(const HttpRequest& request) {
  if (request.body.empty()) return Status(ErrorCode::ArgumentNull, "The request body is empty");
  return parseJson(request.body);
}

std::optional<std::string> ifMatch(const HttpRequest& request) {
  const std::string* v = request.headers.find("If-Match");
  if (v == nullptr) return std::nullopt;
  return normalizeEtag(*v);
}

}  // namespace

std::string normalizeEtag(std::string_view v) {
  while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
  while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
  if (v.starts_with("W/")) v.remove_prefix(2);
  if (v.size() >= 2 && v.front() == '"' && v.back() == '"') v = v.substr(1, v.size() - 2);
  return std::string(v);
}

ServiceApi::ServiceApi(ServiceApiDeps deps) : deps_(deps) {}

HttpResponse ServiceApi::handle(const HttpRequest& request) const {
  Random& random = *deps_.random;
  SystemTime now = deps_.clock->now();
  auto fail = [&](const Status& s) {
    HttpResponse r = errorResponse(s, random, now);
    // Never log the Authorization header or bodies: they may carry keys.
    spdlog::info("{} {} {} -> {} {}", request.remote_address, request.method,
                 request.target.substr(0, request.target.find('?')), r.status, s.toString());
    return r;
  };

  auto route = parseTarget(request.target);
  if (!route) return fail(route.status());
  const auto& seg = route->segments;
  const std::string& method = request.method;

  // Resolve the route and the permission it needs before authenticating, so an unknown
  // route is a 404 for everyone and a known one is a 401 without credentials.
  enum class Op { GetDevice, PutDevice, DeleteDevice, ListDevices, BulkDevices, DeviceStats };
  std::optional<Op> op;
  std::string allowed;
  if (seg.size() == 2 && seg[0] == "devices") {
    allowed = "GET, PUT, DELETE";
    if (method == "GET") op = Op::GetDevice;
    else if (method == "PUT") op = Op::PutDevice;
    else if (method == "DELETE") op = Op::DeleteDevice;
  } else if (seg.size() == 1 && seg[0] == "devices") {
    allowed = "GET, POST";
    if (method == "GET") op = Op::ListDevices;
    else if (method == "POST") op = Op::BulkDevices;
  } else if (seg.size() == 2 && seg[0] == "statistics" && seg[1] == "devices") {
    allowed = "GET";
    if (method == "GET") op = Op::DeviceStats;
  }
  if (allowed.empty()) {
    return fail({ErrorCode::NotFound, "No resource at " + std::string(request.target.substr(
                                          0, request.target.find('?')))});
  }
  if (!op) {
    HttpResponse r = fail({ErrorCode::MethodNotAllowed, "Method " + method + " is not allowed here"});
    r.headers.set("Allow", allowed);
    return r;
  }

  const std::string* authorization = request.headers.find("Authorization");
  if (authorization == nullptr) {
    return fail({ErrorCode::Unauthorized, "The Authorization header with a SharedAccessSignature is missing"});
  }
  auto identity = deps_.authenticator->authenticate(*authorization);
  if (!identity) return fail(identity.status());
  Permission needed = (*op == Op::GetDevice || *op == Op::ListDevices || *op == Op::DeviceStats)
                          ? store::kRegistryRead
                          : store::kRegistryWrite;
  if (Status s = auth::requirePermission(*identity, needed); !s) return fail(s);

  registry::DeviceRegistry& reg = *deps_.registry;
  auto connected = [&](const std::string& id) {
    return deps_.connections != nullptr && deps_.connections->isConnected(id);
  };
  auto deviceResponse = [&](const store::DeviceRecord& d) {
    return jsonResponse(200, json::serialize(registry::deviceToJson(d, connected(d.device_id))));
  };

  switch (*op) {
    case Op::GetDevice: {
      auto d = reg.get(seg[1]);
      if (!d) return fail(d.status());
      return deviceResponse(*d);
    }
    case Op::PutDevice: {
      auto body = parseBody(request);
      if (!body) return fail(body.status());
      auto spec = registry::parseDeviceSpec(*body);
      if (!spec) return fail(spec.status());
      // Node's Registry.create and update differ on the wire only by If-Match
      // (reference §3.3): absent = create, present = update.
      auto etag = ifMatch(request);
      auto d = etag ? reg.update(seg[1], *spec, *etag) : reg.create(seg[1], *spec);
      if (!d) return fail(d.status());
      return deviceResponse(*d);
    }
    case Op::DeleteDevice: {
      Status s = reg.remove(seg[1], ifMatch(request).value_or("*"));
      if (!s) return fail(s);
      HttpResponse r;
      r.status = 204;
      return r;
    }
    case Op::ListDevices: {
      auto top = parseTop(route->top);
      if (!top) return fail(top.status());
      auto devices = reg.list(*top);
      if (!devices) return fail(devices.status());
      json::array out;
      out.reserve(devices->size());
      for (const auto& d : *devices) out.push_back(registry::deviceToJson(d, connected(d.device_id)));
      return jsonResponse(200, json::serialize(out));
    }
    case Op::BulkDevices: {
      auto body = parseBody(request);
      if (!body) return fail(body.status());
      auto result = reg.bulk(*body);
      if (!result) return fail(result.status());
      return jsonResponse(200, json::serialize(result->toJson()));
    }
    case Op::DeviceStats: {
      auto stats = reg.statistics();
      if (!stats) return fail(stats.status());
      json::object o{{"totalDeviceCount", stats->total},
                     {"enabledDeviceCount", stats->enabled},
                     {"disabledDeviceCount", stats->disabled}};
      return jsonResponse(200, json::serialize(o));
    }
  }
  return fail({ErrorCode::ServerError, "unhandled route"});
}

}  // namespace iothub::service_api
