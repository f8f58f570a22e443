#pragma once

#include <memory>
#include <string>

#include "auth/policy.hpp"
#include "common/clock.hpp"
#include "common/http_message.hpp"
#include "common/random.hpp"
#include "registry/device_registry.hpp"

namespace iothub::service_api {

struct ServiceApiDeps {
  const auth::ServiceAuthenticator* authenticator = nullptr;
  registry::DeviceRegistry* registry = nullptr;
  const registry::ConnectionStates* connections = nullptr;
  Random* random = nullptr;
  const Clock* clock = nullptr;
};

// The service-facing REST API (reference §3) as a pure function from request to
// response: no I/O of its own, but it blocks on the store, so call it from a worker
// thread, never an I/O thread. Thread-safe.
//
// Every request is authenticated (Authorization: SharedAccessSignature …) and checked for
// the permission its route needs; every failure is answered with an Azure-shaped error
// body (see error_response.hpp). `api-version` is accepted with any value.
class ServiceApi {
 public:
  explicit ServiceApi(ServiceApiDeps deps);
  HttpResponse handle(const HttpRequest& request) const;

 private:
  ServiceApiDeps deps_;
};

// Strips the quotes and an optional W/ that clients put around an If-Match value
// (reference §3.5: the Node SDK always quotes, so the wildcard arrives as "*").
std::string normalizeEtag(std::string_view if_match);

}  // namespace iothub::service_api
