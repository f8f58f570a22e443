#include "service_api/service_api.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <boost/url/parse.hpp>
#include <charconv>
#include <future>
#include <optional>
#include <span>
#include <vector>

#include "common/json.hpp"
#include "common/log.hpp"
#include "common/time_format.hpp"
#include "service_api/error_response.hpp"
#include "service_api/job_events.hpp"
#include "service_api/route_table.hpp"
#include "telemetry/consumer_group.hpp"

namespace iothub::service_api {
namespace {

using store::Permission;

struct Target {
  std::vector<std::string> segments;      // decoded path segments, trailing empty one dropped
  std::optional<std::string> top;         // ?top=
  std::optional<std::string> job_type;    // ?jobType=
  std::optional<std::string> job_status;  // ?jobStatus=
  std::optional<std::string> dry_run;     // ?dryRun= (PUT /jobs/v2/{id}, docs/jobs.md)
};

// Identifiers (device ids, job ids) and the parameters iothub reads are printable ASCII
// (decisions §12). Decoded bytes outside it are refused here, before they can reach an error
// message: a raw 0x8A would make the JSON error body invalid UTF-8.
bool printableAscii(std::string_view text) {
  return std::all_of(text.begin(), text.end(), [](char c) { return c >= 0x20 && c < 0x7f; });
}

Result<Target> parseTarget(std::string_view target) {
  auto url = boost::urls::parse_origin_form(target);
  if (!url) return Status(ErrorCode::ArgumentInvalid, "The request target is not a valid URL path");
  Status not_ascii(ErrorCode::ArgumentInvalid,
                   "The request path and query must decode to printable ASCII");
  Target route;
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
    if (param.key == "dryRun") route.dry_run = param.value;
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

// One request being answered: what a route's handler reads.
struct Call {
  const ServiceApiDeps& deps;
  const HttpRequest& request;
  const Target& target;
  const std::vector<std::string>& params;  // the route pattern's parameters
  const std::function<HttpResponse(const Status&)>& fail;
  const std::function<void(HttpResponse)>& respond;
  // A connection of the device `id()` is open on this node (ServiceApi::handleInline): it
  // exists, so the handler need not read the store to say DeviceNotFound.
  bool held_here = false;

  const std::string& id() const { return params.front(); }
  bool connected(const std::string& device_id) const {
    return deps.connections != nullptr && deps.connections->isConnected(device_id);
  }
  HttpResponse device(const store::DeviceRecord& d) const {
    return jsonResponse(200, json::serialize(registry::deviceToJson(d, connected(d.device_id))));
  }
};

// Answers the request: the response, or one with status 0 when `respond` gets it later.
using HandlerFn = HttpResponse (*)(const Call&);

HttpResponse getDevice(const Call& c) {
  auto d = c.deps.registry->get(c.id());
  if (!d) return c.fail(d.status());
  return c.device(*d);
}

HttpResponse putDevice(const Call& c) {
  auto body = parseBody(c.request);
  if (!body) return c.fail(body.status());
  auto spec = registry::parseDeviceSpec(*body);
  if (!spec) return c.fail(spec.status());
  // Node's Registry.create and update differ on the wire only by If-Match
  // (docs/protocol.md §5.3): absent = create, present = update.
  auto etag = ifMatch(c.request);
  auto d =
      etag ? c.deps.registry->update(c.id(), *spec, *etag) : c.deps.registry->create(c.id(), *spec);
  if (!d) return c.fail(d.status());
  return c.device(*d);
}

HttpResponse deleteDevice(const Call& c) {
  Status s = c.deps.registry->remove(c.id(), ifMatch(c.request).value_or("*"));
  if (!s) return c.fail(s);
  HttpResponse r;
  r.status = 204;
  return r;
}

// Azure's "purge cloud-to-device message queue": removes the device's waiting C2D messages
// (docs/c2d.md §5).
HttpResponse purgeCommands(const Call& c) {
  auto purged = c.deps.c2d->purge(c.id());
  if (!purged) return c.fail(purged.status());
  return jsonResponse(
      200, json::serialize(json::object{
               {"deviceId", c.id()}, {"totalMessagesPurged", static_cast<std::int64_t>(*purged)}}));
}

HttpResponse listDevices(const Call& c) {
  auto top = parseTop(c.target.top);
  if (!top) return c.fail(top.status());
  auto devices = c.deps.registry->list(*top);
  if (!devices) return c.fail(devices.status());
  json::array out;
  out.reserve(devices->size());
  for (const auto& d : *devices) out.push_back(registry::deviceToJson(d, c.connected(d.device_id)));
  return jsonResponse(200, json::serialize(out));
}

HttpResponse bulkDevices(const Call& c) {
  auto body = parseBody(c.request);
  if (!body) return c.fail(body.status());
  auto result = c.deps.registry->bulk(*body);
  if (!result) return c.fail(result.status());
  return jsonResponse(200, json::serialize(result->toJson()));
}

HttpResponse deviceStatistics(const Call& c) {
  auto stats = c.deps.registry->statistics();
  if (!stats) return c.fail(stats.status());
  json::object o{{"totalDeviceCount", stats->total},
                 {"enabledDeviceCount", stats->enabled},
                 {"disabledDeviceCount", stats->disabled}};
  return jsonResponse(200, json::serialize(o));
}

HttpResponse getTwin(const Call& c) {
  auto twin = c.deps.twins->getTwin(c.id());
  if (!twin) return c.fail(twin.status());
  return jsonResponse(200, json::serialize(*twin));
}

HttpResponse writeTwin(const Call& c, bool patch) {
  auto body = parseBody(c.request);
  if (!body) return c.fail(body.status());
  std::string etag = ifMatch(c.request).value_or("*");
  auto twin = patch ? c.deps.twins->patchTwin(c.id(), *body, etag)
                    : c.deps.twins->replaceTwin(c.id(), *body, etag);
  if (!twin) {
    // Azure answers an oversized twin over REST with 400 (docs/protocol.md §10.1).
    if (twin.code() == ErrorCode::MessageTooLarge) {
      return c.fail({ErrorCode::ArgumentInvalid, twin.status().message()});
    }
    return c.fail(twin.status());
  }
  return jsonResponse(200, json::serialize(*twin));
}
HttpResponse patchTwin(const Call& c) { return writeTwin(c, true); }
HttpResponse replaceTwin(const Call& c) { return writeTwin(c, false); }

HttpResponse invokeMethod(const Call& c) {
  auto body = parseBody(c.request);
  if (!body) return c.fail(body.status());
  auto call = methods::parseMethodCall(c.id(), *body);
  if (!call) return c.fail(call.status());
  if (!c.held_here) {
    if (auto device = c.deps.registry->get(c.id()); !device) return c.fail(device.status());
  }
  c.deps.methods->invoke(
      std::move(*call), [fail = c.fail, respond = c.respond](Result<methods::MethodResult> result) {
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
  return HttpResponse{0, {}, {}, nullptr};  // answered later
}

HttpResponse serviceStatistics(const Call& c) {
  return jsonResponse(200, json::serialize(c.deps.service_statistics()));
}

HttpResponse clusterNodes(const Call& c) {
  auto nodes = c.deps.cluster_nodes();
  if (!nodes) return c.fail(nodes.status());
  return jsonResponse(200, json::serialize(*nodes));
}

HttpResponse queryDevices(const Call& c) {
  auto body = parseBody(c.request);
  if (!body) return c.fail(body.status());
  const json::string* text = body->is_object() ? findString(body->get_object(), "query") : nullptr;
  if (text == nullptr) {
    return c.fail({ErrorCode::ArgumentInvalid, "The body must be {\"query\": \"<query text>\"}"});
  }
  auto size = pageSize(c.request);
  if (!size) return c.fail(size.status());
  auto page = c.deps.queries->run(*text, *size, continuation(c.request));
  if (!page) return c.fail(page.status());
  return pageResponse(std::move(page->rows), query::itemTypeName(page->item_type),
                      page->continuation);
}

HttpResponse putJob(const Call& c) {
  auto body = parseBody(c.request);
  if (!body) return c.fail(body.status());
  if (c.target.dry_run && *c.target.dry_run != "false") {
    if (*c.target.dry_run != "true") {
      return c.fail({ErrorCode::ArgumentInvalid, "dryRun must be true or false"});
    }
    auto preview = c.deps.jobs->dryRun(c.id(), *body);
    if (!preview) return c.fail(preview.status());
    return jsonResponse(200, json::serialize(*preview));
  }
  auto job = c.deps.jobs->create(c.id(), *body);
  if (!job) return c.fail(job.status());
  return jsonResponse(200, json::serialize(*job));
}

HttpResponse getJob(const Call& c) {
  auto job = c.deps.jobs->get(c.id());
  if (!job) return c.fail(job.status());
  return jsonResponse(200, json::serialize(*job));
}

// GET /jobs/v2/{id}/events (docs/jobs.md "Live progress"): errors before the stream starts
// are ordinary error responses; then the JobResponse streams as server-sent events.
HttpResponse jobEvents(const Call& c) {
  auto job = c.deps.jobs->get(c.id());
  if (!job) return c.fail(job.status());
  HttpResponse r;
  r.status = 200;
  r.headers.set("Content-Type", "text/event-stream");
  r.headers.set("Cache-Control", "no-cache");
  r.headers.set("X-Accel-Buffering", "no");  // reverse proxies: pass events on at once
  r.stream = std::make_shared<JobEventSource>(
      std::move(*job), [jobs = c.deps.jobs, id = c.id()] { return jobs->get(id); });
  return r;
}

HttpResponse cancelJob(const Call& c) {
  auto job = c.deps.jobs->cancel(c.id());
  if (!job) return c.fail(job.status());
  return jsonResponse(200, json::serialize(*job));
}

HttpResponse listJobs(const Call& c) {
  auto size = pageSize(c.request);
  if (!size) return c.fail(size.status());
  auto page =
      c.deps.jobs->list(c.target.job_type, c.target.job_status, *size, continuation(c.request));
  if (!page) return c.fail(page.status());
  return pageResponse(std::move(page->jobs), "JobResponse", page->continuation);
}

HttpResponse console(const Call& c) { return c.deps.console(c.request); }

// --- consumer groups of the Event Hubs-compatible endpoint (docs/telemetry.md §9) ---
// iothub's own routes: Azure manages them through Azure Resource Manager (decisions §78).

json::object consumerGroupToJson(const store::ConsumerGroupRecord& group) {
  return json::object{{"name", group.name}, {"createdTime", formatTimestamp(group.created_time)}};
}

HttpResponse listConsumerGroups(const Call& c) {
  auto groups = c.deps.consumer_groups->listConsumerGroups();
  if (!groups) return c.fail(groups.status());
  json::array out;
  out.reserve(groups->size());
  for (const auto& group : *groups) out.push_back(consumerGroupToJson(group));
  return jsonResponse(200, json::serialize(out));
}

HttpResponse getConsumerGroup(const Call& c) {
  auto group = c.deps.consumer_groups->getConsumerGroup(c.id());
  if (!group) return c.fail(group.status());
  return jsonResponse(200, json::serialize(consumerGroupToJson(*group)));
}

// Idempotent: a group that exists under the name in any case is answered as it is.
HttpResponse putConsumerGroup(const Call& c) {
  if (!telemetry::validConsumerGroupName(c.id())) {
    return c.fail({ErrorCode::ArgumentInvalid,
                   "A consumer group name has 1 to 50 letters, digits, periods, hyphens and "
                   "underscores, and begins and ends with a letter or digit"});
  }
  Status created = c.deps.consumer_groups->createConsumerGroup({c.id(), c.deps.clock->now()},
                                                               telemetry::kMaxConsumerGroups);
  if (!created && created.code() != ErrorCode::ConsumerGroupAlreadyExists) return c.fail(created);
  return getConsumerGroup(c);
}

HttpResponse deleteConsumerGroup(const Call& c) {
  Status s = c.deps.consumer_groups->deleteConsumerGroup(c.id());
  if (!s) return c.fail(s);
  HttpResponse r;
  r.status = 204;
  return r;
}

// A route's handler and who may call it: a caller needs one of the `any_of` permissions
// (none for 0: no Authorization at all, for the console's static files).
struct Endpoint {
  HandlerFn handle;
  std::uint32_t any_of;
  // Served on the I/O thread when the device in the path is connected to this node: the
  // handler then touches no store (ServiceApi::handleInline).
  bool inline_when_held = false;
};

}  // namespace

struct ServiceApi::Routes : RouteTable<Endpoint> {};

namespace {

// The service API's routes (docs/protocol.md §4). Routes whose dependency the hub did not
// provide are left out (their paths answer 404), unless `all` (routeTemplate's table).
ServiceApi::Routes buildRoutes(const ServiceApiDeps& deps, bool all = false) {
  constexpr std::uint32_t kRead = store::kRegistryRead;
  constexpr std::uint32_t kWrite = store::kRegistryWrite;
  // ServiceConnect covers twins, direct methods and jobs (docs/protocol.md §1.3).
  constexpr std::uint32_t kService = store::kServiceConnect;
  ServiceApi::Routes r;
  r.add("GET", "/twins/{id}", {getTwin, kService});
  r.add("PATCH", "/twins/{id}", {patchTwin, kService});
  r.add("PUT", "/twins/{id}", {replaceTwin, kService});
  r.add("POST", "/twins/{id}/methods", {invokeMethod, kService, true});
  // Twin queries read the registry; a service policy (ServiceConnect) may query too.
  if (all || deps.queries) r.add("POST", "/devices/query", {queryDevices, kRead | kService}, false);
  if (all || deps.jobs) {
    r.add("GET", "/jobs/v2/query", {listJobs, kService});
    r.add("GET", "/jobs/v2/{id}", {getJob, kService});
    r.add("PUT", "/jobs/v2/{id}", {putJob, kService});
    r.add("POST", "/jobs/v2/{id}/cancel", {cancelJob, kService});
    r.add("GET", "/jobs/v2/{id}/events", {jobEvents, kService});
  }
  r.add("GET", "/devices/{id}", {getDevice, kRead});
  r.add("PUT", "/devices/{id}", {putDevice, kWrite});
  r.add("DELETE", "/devices/{id}", {deleteDevice, kWrite});
  if (all || deps.c2d)
    r.add("DELETE", "/devices/{id}/commands", {purgeCommands, kService | kWrite});
  r.add("GET", "/devices", {listDevices, kRead});
  r.add("POST", "/devices", {bulkDevices, kWrite});
  if (all || deps.service_statistics) {
    r.add("GET", "/statistics/service", {serviceStatistics, kService});
  }
  r.add("GET", "/statistics/devices", {deviceStatistics, kRead});
  if (all || deps.cluster_nodes) r.add("GET", "/cluster/nodes", {clusterNodes, kService});
  if (all || deps.consumer_groups) {
    r.add("GET", "/eventHubEndpoint/consumerGroups", {listConsumerGroups, kRead | kService});
    r.add("GET", "/eventHubEndpoint/consumerGroups/{name}", {getConsumerGroup, kRead | kService});
    r.add("PUT", "/eventHubEndpoint/consumerGroups/{name}", {putConsumerGroup, kWrite});
    r.add("DELETE", "/eventHubEndpoint/consumerGroups/{name}", {deleteConsumerGroup, kWrite});
  }
  if (all || deps.console) {
    r.add("GET", "/ui/{path*}", {console, 0});
    r.add("HEAD", "/ui/{path*}", {console, 0});
  }
  return r;
}

}  // namespace

std::string normalizeEtag(std::string_view v) {
  while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
  while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
  if (v.starts_with("W/")) v.remove_prefix(2);
  if (v.size() >= 2 && v.front() == '"' && v.back() == '"') v = v.substr(1, v.size() - 2);
  return std::string(v);
}

ServiceApi::ServiceApi(ServiceApiDeps deps)
    : deps_(std::move(deps)), routes_(std::make_shared<const Routes>(buildRoutes(deps_))) {}

std::string_view routeTemplate(std::string_view target) {
  static const ServiceApi::Routes* const all =
      new ServiceApi::Routes(buildRoutes(ServiceApiDeps{}, true));
  // The raw segments, not decoded (no allocation on the request path): a label only needs
  // the literal segments, which clients do not percent-encode.
  std::string_view path = target.substr(0, target.find('?'));
  if (!path.starts_with('/')) return "other";
  std::array<std::string_view, 8> segments;
  std::size_t n = 0;
  while (!path.empty()) {
    path.remove_prefix(1);  // the '/'
    std::size_t end = path.find('/');
    if (end == std::string_view::npos && path.empty()) break;  // a trailing '/'
    if (n == segments.size()) return "other";
    segments[n++] = path.substr(0, end);
    path = end == std::string_view::npos ? std::string_view() : path.substr(end);
  }
  std::string_view pattern = all->patternOf(std::span<const std::string_view>(segments.data(), n));
  return pattern.empty() ? "other" : pattern;
}

namespace {

using Match = RouteTable<Endpoint>::Match;

std::string_view pathOf(std::string_view target) { return target.substr(0, target.find('?')); }

HttpResponse failure(Random& random, const Clock& clock, std::string_view remote,
                     std::string_view method, std::string_view path, const Status& s) {
  HttpResponse r = errorResponse(s, random, clock.now());
  // Never log the Authorization header or bodies: they may carry keys.
  log::withFields(spdlog::level::info, {{"remote", remote}}, "{} {} {} -> {} {}", remote, method,
                  path, r.status, s.toString());
  return r;
}

// The response, or one with status 0 when `respond` gets it later.
HttpResponse route(const ServiceApiDeps& deps, const HttpRequest& request, const Target& target,
                   const Match& match, const std::function<HttpResponse(const Status&)>& fail,
                   const std::function<void(HttpResponse)>& respond, bool held_here) {
  // The route and the permission it needs are known before authenticating, so an unknown
  // route is a 404 for everyone and a known one is a 401 without credentials.
  if (match.route == nullptr) {
    if (match.allow.empty()) {
      return fail({ErrorCode::NotFound, "No resource at " + std::string(pathOf(request.target))});
    }
    HttpResponse r =
        fail({ErrorCode::MethodNotAllowed, "Method " + request.method + " is not allowed here"});
    r.headers.set("Allow", match.allow);
    return r;
  }
  const Endpoint& endpoint = match.route->handler;
  if (endpoint.any_of != 0) {
    const std::string* authorization = request.headers.find("Authorization");
    if (authorization == nullptr) {
      return fail({ErrorCode::Unauthorized,
                   "The Authorization header with a SharedAccessSignature is missing"});
    }
    auto identity = deps.authenticator->authenticate(*authorization);
    if (!identity) return fail(identity.status());
    if ((identity->permissions & endpoint.any_of) == 0) {
      // Name the narrowest permission that would do (the lowest bit: RegistryRead for queries).
      const auto narrowest = static_cast<Permission>(endpoint.any_of & (~endpoint.any_of + 1));
      return fail(auth::requirePermission(*identity, narrowest));
    }
  }
  return endpoint.handle(Call{deps, request, target, match.params, fail, respond, held_here});
}

void answer(const ServiceApiDeps& deps, const HttpRequest& request, const Target& target,
            const Match& match, const std::function<void(HttpResponse)>& respond, bool held_here) {
  // A direct method's failure is built when the device answers, after `request` is gone.
  // (The random source and the clock are the hub's, not this API's: they outlive calls
  // that a shutdown cancels.)
  auto fail = [random = deps.random, clock = deps.clock, remote = request.remote_address,
               method = request.method, path = std::string(pathOf(request.target))](
                  const Status& s) { return failure(*random, *clock, remote, method, path, s); };
  HttpResponse response = route(deps, request, target, match, fail, respond, held_here);
  if (response.status != 0) respond(std::move(response));
}

}  // namespace

HttpResponse ServiceApi::handle(const HttpRequest& request) const {
  std::promise<HttpResponse> promise;
  auto future = promise.get_future();
  handleAsync(request, [&promise](HttpResponse r) { promise.set_value(std::move(r)); });
  return future.get();
}

bool ServiceApi::handleInline(const HttpRequest& request,
                              const std::function<void(HttpResponse)>& respond) const {
  if (!deps_.held_here) return false;
  auto target = parseTarget(request.target);
  if (!target) return false;
  auto match = routes_->find(request.method, target->segments);
  if (match.route == nullptr || !match.route->handler.inline_when_held ||
      !deps_.held_here(match.params.front()))
    return false;
  answer(deps_, request, *target, match, respond, true);
  return true;
}

void ServiceApi::handleAsync(const HttpRequest& request,
                             std::function<void(HttpResponse)> respond) const {
  auto target = parseTarget(request.target);
  if (!target) {
    respond(failure(*deps_.random, *deps_.clock, request.remote_address, request.method,
                    pathOf(request.target), target.status()));
    return;
  }
  auto match = routes_->find(request.method, target->segments);
  answer(deps_, request, *target, match, respond, false);
}

}  // namespace iothub::service_api
