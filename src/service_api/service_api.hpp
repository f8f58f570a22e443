#pragma once

#include <memory>
#include <string>

#include "auth/policy.hpp"
#include "c2d/cloud_to_device.hpp"
#include "common/clock.hpp"
#include "common/http_message.hpp"
#include "common/random.hpp"
#include "index/query_runner.hpp"
#include "jobs/jobs_engine.hpp"
#include "methods/method_invoker.hpp"
#include "methods/method_request.hpp"
#include "registry/device_registry.hpp"
#include "store/store.hpp"
#include "twin/twin_service.hpp"

namespace iothub::service_api {

struct ServiceApiDeps {
  const auth::ServiceAuthenticator* authenticator = nullptr;
  registry::DeviceRegistry* registry = nullptr;
  const registry::ConnectionStates* connections = nullptr;
  twin::TwinService* twins = nullptr;
  methods::MethodDispatcher* methods = nullptr;
  const index::QueryRunner* queries = nullptr;  // POST /devices/query (404 when null)
  jobs::JobsEngine* jobs = nullptr;             // /jobs/v2 (404 when null)
  c2d::CloudToDevice* c2d = nullptr;            // DELETE /devices/{id}/commands (404 when null)
  // /eventHubEndpoint/consumerGroups (iothub's own routes, docs/telemetry.md §9; 404 when
  // null): the consumer groups of the Event Hubs-compatible endpoint.
  store::TelemetryStore* consumer_groups = nullptr;
  Random* random = nullptr;
  const Clock* clock = nullptr;
  // GET /statistics/service: Azure's {"connectedDeviceCount": n} plus iothub's counters.
  std::function<json::object()> service_statistics;
  // GET /cluster/nodes (iothub's own, cluster mode only; 404 when null): this node's id and
  // the live nodes it sees (docs/cluster.md).
  std::function<Result<json::object>()> cluster_nodes;
  // GET and HEAD /ui/…: the web console's static files, served without authentication
  // (docs/operations.md; 404 when null).
  std::function<HttpResponse(const HttpRequest&)> console;
  // True when a connection of the device is open on this node; an in-memory lookup, for
  // handleInline (null: nothing is served inline).
  std::function<bool(std::string_view device_id)> held_here;
};

// The service-facing REST API (docs/protocol.md §4) as a pure function from request to
// response: no I/O of its own, but it blocks on the store, so call it from a worker
// thread, never an I/O thread. Thread-safe.
//
// Every request is authenticated (Authorization: SharedAccessSignature …) and checked for
// the permission its route needs; every failure is answered with an Azure-shaped error
// body (see error_response.hpp). `api-version` is accepted with any value.
class ServiceApi {
 public:
  explicit ServiceApi(ServiceApiDeps deps);

  // Answers through `respond`, exactly once: at once for most routes, when the device
  // answers (or times out) for direct methods. `request` is only read during the call.
  void handleAsync(const HttpRequest& request, std::function<void(HttpResponse)> respond) const;

  // The same for routes that answer at once; a direct-method call blocks until it ends.
  HttpResponse handle(const HttpRequest& request) const;

  // For an I/O thread, which must not block: takes the request only when it can be served
  // without the store, and then answers it as handleAsync does (through a copy of
  // `respond`). Today that is a direct method to a device with a connection open on this
  // node (`held_here`): the connection shows that the device exists, so the registry read
  // that answers DeviceNotFound is not needed. Returns false, having done nothing, for
  // every other request.
  bool handleInline(const HttpRequest& request,
                    const std::function<void(HttpResponse)>& respond) const;

  struct Routes;  // the route table: {method, path pattern, permission, handler}

 private:
  ServiceApiDeps deps_;
  std::shared_ptr<const Routes> routes_;
};

// The route a request target falls under, as the route's path pattern
// ("/twins/{id}/methods", "/jobs/v2/{id}/cancel", ...; "other" for anything the API does not
// serve): a label of bounded cardinality for metrics and logs.
std::string_view routeTemplate(std::string_view target);

// Strips the quotes and an optional W/ that clients put around an If-Match value
// (docs/protocol.md §6.4: the Node SDK always quotes, so the wildcard arrives as "*").
std::string normalizeEtag(std::string_view if_match);

}  // namespace iothub::service_api
