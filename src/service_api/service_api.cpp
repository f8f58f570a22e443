#include "service_api/service_api.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <boost/url/parse.hpp>
#include <charconv>
#include <future>
#include <optional>
#include <vector>

#include "common/json.hpp"
#include "service_api/error_response.hpp"

namespace iothub::service_api {
namespace {

using store::Permission;

struct Route {
  std::vector<std::string> segments;      // decoded path segments, trailing empty one dropped
  std::optional<std::string> top;         // ?top=
  std::optional<std::string> job_type;    // ?jobType=
  std::optional<std::string> job_status;  // ?jobStatus=
};

// Identifiers (device ids, job ids) and the parameters iothub reads are printable ASCII
// (decisions §12). Decoded bytes outside it are refused here, before they can reach an error
// message: a raw 0x8A would make the JSON error body invalid UTF-8.
bool printableAscii(std::string_view text) {
  return std::all_of(text.begin(), text.end(), [](char c) { return c >= 0x20 && c < 0x7f; });
}

Result<Route> parseTarget(std::string_view target) {
  auto url = boost::urls::parse_origin_form(target);
  if (!url) return Status(ErrorCode::ArgumentInvalid, "The request target is not a valid URL path");
  Status not_ascii(ErrorCode::ArgumentInvalid,
                   "The request path and query must decode to printable ASCII");
  Route route;
  for (auto segment : url->segments()) {
    if (!printableAscii(segment)) return not_ascii;
    route.segments.push_back(segment);
  }
  if (!route.segments.empty() && route.segments.back().empty()) route.segments.pop_back();
  for (auto param : url->params()) {
    if (!param.has_value) continue;
    if (!printableAscii(param.key) || !printableAscii(param.value)) return not_ascii;
    if (param.key == "top") route.top = param.value;
    if (param.key == "jobType" && !param.value.empty()) route.job_type = param.value;
    if (param.key == "jobStatus" && !param.value.empty()) route.job_status = param.value;
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

// x-ms-max-item-count (docs/protocol.md §8.6): 1..1000, default 100.
Result<std::size_t> pageSize(const HttpRequest& request) {
  const std::string* v = request.headers.find("x-ms-max-item-count");
  if (v == nullptr || v->empty()) return index::QueryRunner::kDefaultPageSize;
  std::size_t value = 0;
  auto [end, ec] = std::from_chars(v->data(), v->data() + v->size(), value);
  if (ec != std::errc() || end != v->data() + v->size() || value == 0 ||
      value > index::QueryRunner::kMaxPageSize) {
    return Status(ErrorCode::ArgumentInvalid,
                  "x-ms-max-item-count must be an integer between 1 and " +
                      std::to_string(index::QueryRunner::kMaxPageSize));
  }
  return value;
}

std::optional<std::string_view> continuation(const HttpRequest& request) {
  const std::string* v = request.headers.find("x-ms-continuation");
  if (v == nullptr || v->empty()) return std::nullopt;
  return std::string_view(*v);
}

// A page of rows with the paging headers: x-ms-continuation only while more remain.
HttpResponse pageResponse(json::array rows, std::string_view item_type,
                          const std::optional<std::string>& next) {
  HttpResponse r = jsonResponse(200, json::serialize(rows));
  r.headers.set("x-ms-item-type", std::string(item_type));
  if (next) r.headers.set("x-ms-continuation", *next);
  return r;
}

std::optional<std::string> ifMatch(const HttpRequest& request) {
  const std::string* v = request.headers.find("If-Match");
  if (v == nullptr) return std::nullopt;
  return normalizeEtag(*v);
}

}  // namespace

std::string_view routeTemplate(std::string_view target) {
  auto route = parseTarget(target);
  if (!route) return "other";
  const auto& seg = route->segments;
  const std::size_t n = seg.size();
  if (n == 1 && seg[0] == "devices") return "/devices";
  if (n == 2 && seg[0] == "devices") return seg[1] == "query" ? "/devices/query" : "/devices/{id}";
  if (n == 2 && seg[0] == "twins") return "/twins/{id}";
  if (n == 3 && seg[0] == "twins" && seg[2] == "methods") return "/twins/{id}/methods";
  if (n == 3 && seg[0] == "jobs" && seg[1] == "v2") {
    return seg[2] == "query" ? "/jobs/v2/query" : "/jobs/v2/{id}";
  }
  if (n == 4 && seg[0] == "jobs" && seg[1] == "v2" && seg[3] == "cancel") {
    return "/jobs/v2/{id}/cancel";
  }
  if (n == 2 && seg[0] == "statistics" && seg[1] == "service") return "/statistics/service";
  if (n == 2 && seg[0] == "statistics" && seg[1] == "devices") return "/statistics/devices";
  if (n == 2 && seg[0] == "cluster" && seg[1] == "nodes") return "/cluster/nodes";
  return "other";
}

std::string normalizeEtag(std::string_view v) {
  while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
  while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
  if (v.starts_with("W/")) v.remove_prefix(2);
  if (v.size() >= 2 && v.front() == '"' && v.back() == '"') v = v.substr(1, v.size() - 2);
  return std::string(v);
}

ServiceApi::ServiceApi(ServiceApiDeps deps) : deps_(deps) {}

HttpResponse ServiceApi::handle(const HttpRequest& request) const {
  std::promise<HttpResponse> promise;
  auto future = promise.get_future();
  handleAsync(request, [&promise](HttpResponse r) { promise.set_value(std::move(r)); });
  return future.get();
}

void ServiceApi::handleAsync(const HttpRequest& request,
                             std::function<void(HttpResponse)> respond) const {
  Random& random = *deps_.random;
  SystemTime now = deps_.clock->now();
  auto failure = [&random, now, remote = request.remote_address, method = request.method,
                  path = request.target.substr(0, request.target.find('?'))](const Status& s) {
    HttpResponse r = errorResponse(s, random, now);
    // Never log the Authorization header or bodies: they may carry keys.
    spdlog::info("{} {} {} -> {} {}", remote, method, path, r.status, s.toString());
    return r;
  };
  HttpResponse response = route(request, failure, respond);
  if (response.status != 0) respond(std::move(response));
}

HttpResponse ServiceApi::route(const HttpRequest& request,
                               const std::function<HttpResponse(const Status&)>& fail,
                               const std::function<void(HttpResponse)>& respond) const {
  auto target = parseTarget(request.target);
  if (!target) return fail(target.status());
  const auto& seg = target->segments;
  const std::string& method = request.method;

  // Resolve the route and the permission it needs before authenticating, so an unknown
  // route is a 404 for everyone and a known one is a 401 without credentials.
  enum class Op {
    GetDevice,
    PutDevice,
    DeleteDevice,
    ListDevices,
    BulkDevices,
    DeviceStats,
    GetTwin,
    PatchTwin,
    ReplaceTwin,
    InvokeMethod,
    ServiceStats,
    ClusterNodes,
    Query,
    PutJob,
    GetJob,
    CancelJob,
    ListJobs,
  };
  std::optional<Op> op;
  std::string allowed;
  if (seg.size() == 2 && seg[0] == "twins") {
    allowed = "GET, PATCH, PUT";
    if (method == "GET")
      op = Op::GetTwin;
    else if (method == "PATCH")
      op = Op::PatchTwin;
    else if (method == "PUT")
      op = Op::ReplaceTwin;
  } else if (seg.size() == 3 && seg[0] == "twins" && seg[2] == "methods") {
    allowed = "POST";
    if (method == "POST") op = Op::InvokeMethod;
  } else if (seg.size() == 2 && seg[0] == "devices" && seg[1] == "query" && method == "POST" &&
             deps_.queries != nullptr) {
    // Other methods on /devices/query address a device named "query".
    allowed = "POST";
    op = Op::Query;
  } else if (seg.size() == 3 && seg[0] == "jobs" && seg[1] == "v2" && seg[2] == "query" &&
             deps_.jobs != nullptr) {
    allowed = "GET";
    if (method == "GET") op = Op::ListJobs;
  } else if (seg.size() == 3 && seg[0] == "jobs" && seg[1] == "v2" && deps_.jobs != nullptr) {
    allowed = "GET, PUT";
    if (method == "GET")
      op = Op::GetJob;
    else if (method == "PUT")
      op = Op::PutJob;
  } else if (seg.size() == 4 && seg[0] == "jobs" && seg[1] == "v2" && seg[3] == "cancel" &&
             deps_.jobs != nullptr) {
    allowed = "POST";
    if (method == "POST") op = Op::CancelJob;
  } else if (seg.size() == 2 && seg[0] == "devices") {
    allowed = "GET, PUT, DELETE";
    if (method == "GET")
      op = Op::GetDevice;
    else if (method == "PUT")
      op = Op::PutDevice;
    else if (method == "DELETE")
      op = Op::DeleteDevice;
  } else if (seg.size() == 1 && seg[0] == "devices") {
    allowed = "GET, POST";
    if (method == "GET")
      op = Op::ListDevices;
    else if (method == "POST")
      op = Op::BulkDevices;
  } else if (seg.size() == 2 && seg[0] == "statistics" && seg[1] == "service" &&
             deps_.service_statistics) {
    allowed = "GET";
    if (method == "GET") op = Op::ServiceStats;
  } else if (seg.size() == 2 && seg[0] == "statistics" && seg[1] == "devices") {
    allowed = "GET";
    if (method == "GET") op = Op::DeviceStats;
  } else if (seg.size() == 2 && seg[0] == "cluster" && seg[1] == "nodes" && deps_.cluster_nodes) {
    allowed = "GET";
    if (method == "GET") op = Op::ClusterNodes;
  }
  if (allowed.empty()) {
    return fail({ErrorCode::NotFound, "No resource at " + std::string(request.target.substr(
                                                              0, request.target.find('?')))});
  }
  if (!op) {
    HttpResponse r =
        fail({ErrorCode::MethodNotAllowed, "Method " + method + " is not allowed here"});
    r.headers.set("Allow", allowed);
    return r;
  }

  const std::string* authorization = request.headers.find("Authorization");
  if (authorization == nullptr) {
    return fail({ErrorCode::Unauthorized,
                 "The Authorization header with a SharedAccessSignature is missing"});
  }
  auto identity = deps_.authenticator->authenticate(*authorization);
  if (!identity) return fail(identity.status());
  Permission needed = store::kRegistryWrite;
  if (*op == Op::GetDevice || *op == Op::ListDevices || *op == Op::DeviceStats) {
    needed = store::kRegistryRead;
  } else if (*op == Op::Query) {
    // Twin queries read the registry; a service policy (ServiceConnect) may query too.
    needed = (identity->permissions & store::kServiceConnect) != 0 ? store::kServiceConnect
                                                                   : store::kRegistryRead;
  } else if (*op == Op::GetTwin || *op == Op::PatchTwin || *op == Op::ReplaceTwin ||
             *op == Op::InvokeMethod || *op == Op::ServiceStats || *op == Op::ClusterNodes ||
             *op == Op::PutJob || *op == Op::GetJob || *op == Op::CancelJob ||
             *op == Op::ListJobs) {
    // ServiceConnect covers twins and direct methods (docs/protocol.md §1.3).
    needed = store::kServiceConnect;
  }
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
      // (docs/protocol.md §5.3): absent = create, present = update.
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
      auto top = parseTop(target->top);
      if (!top) return fail(top.status());
      auto devices = reg.list(*top);
      if (!devices) return fail(devices.status());
      json::array out;
      out.reserve(devices->size());
      for (const auto& d : *devices)
        out.push_back(registry::deviceToJson(d, connected(d.device_id)));
      return jsonResponse(200, json::serialize(out));
    }
    case Op::BulkDevices: {
      auto body = parseBody(request);
      if (!body) return fail(body.status());
      auto result = reg.bulk(*body);
      if (!result) return fail(result.status());
      return jsonResponse(200, json::serialize(result->toJson()));
    }
    case Op::GetTwin: {
      auto twin = deps_.twins->getTwin(seg[1]);
      if (!twin) return fail(twin.status());
      return jsonResponse(200, json::serialize(*twin));
    }
    case Op::PatchTwin:
    case Op::ReplaceTwin: {
      auto body = parseBody(request);
      if (!body) return fail(body.status());
      std::string etag = ifMatch(request).value_or("*");
      auto twin = *op == Op::PatchTwin ? deps_.twins->patchTwin(seg[1], *body, etag)
                                       : deps_.twins->replaceTwin(seg[1], *body, etag);
      if (!twin) {
        // Azure answers an oversized twin over REST with 400 (docs/protocol.md §10.1).
        if (twin.code() == ErrorCode::MessageTooLarge) {
          return fail({ErrorCode::ArgumentInvalid, twin.status().message()});
        }
        return fail(twin.status());
      }
      return jsonResponse(200, json::serialize(*twin));
    }
    case Op::InvokeMethod: {
      auto body = parseBody(request);
      if (!body) return fail(body.status());
      auto call = methods::parseMethodCall(seg[1], *body);
      if (!call) return fail(call.status());
      if (auto device = reg.get(seg[1]); !device) return fail(device.status());
      deps_.methods->invoke(std::move(*call), [fail,
                                               respond](Result<methods::MethodResult> result) {
        if (!result) {
          respond(fail(result.status()));
          return;
        }
        json::value payload;
        if (auto parsed = parseJson(result->payload_json)) {
          payload = std::move(*parsed);
        } else {
          // A device that answers with something other than JSON: pass it on as a string.
          payload = json::string(result->payload_json);
        }
        respond(jsonResponse(200, json::serialize(json::object{{"status", result->status},
                                                               {"payload", std::move(payload)}})));
      });
      return HttpResponse{0, {}, {}};  // answered later
    }
    case Op::ServiceStats:
      return jsonResponse(200, json::serialize(deps_.service_statistics()));
    case Op::ClusterNodes: {
      auto nodes = deps_.cluster_nodes();
      if (!nodes) return fail(nodes.status());
      return jsonResponse(200, json::serialize(*nodes));
    }
    case Op::Query: {
      auto body = parseBody(request);
      if (!body) return fail(body.status());
      const json::string* text =
          body->is_object() ? findString(body->get_object(), "query") : nullptr;
      if (text == nullptr)
        return fail({ErrorCode::ArgumentInvalid, "The body must be {\"query\": \"<query text>\"}"});
      auto size = pageSize(request);
      if (!size) return fail(size.status());
      auto page = deps_.queries->run(*text, *size, continuation(request));
      if (!page) return fail(page.status());
      return pageResponse(std::move(page->rows), query::itemTypeName(page->item_type),
                          page->continuation);
    }
    case Op::PutJob: {
      auto body = parseBody(request);
      if (!body) return fail(body.status());
      auto job = deps_.jobs->create(seg[2], *body);
      if (!job) return fail(job.status());
      return jsonResponse(200, json::serialize(*job));
    }
    case Op::GetJob:
    case Op::CancelJob: {
      auto job = *op == Op::GetJob ? deps_.jobs->get(seg[2]) : deps_.jobs->cancel(seg[2]);
      if (!job) return fail(job.status());
      return jsonResponse(200, json::serialize(*job));
    }
    case Op::ListJobs: {
      auto size = pageSize(request);
      if (!size) return fail(size.status());
      auto page =
          deps_.jobs->list(target->job_type, target->job_status, *size, continuation(request));
      if (!page) return fail(page.status());
      return pageResponse(std::move(page->jobs), "JobResponse", page->continuation);
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
