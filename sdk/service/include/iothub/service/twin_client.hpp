#pragma once

#include <memory>
#include <string_view>

#include "iothub/json.hpp"
#include "iothub/status.hpp"
#include "iothub/service/http_transport.hpp"
#include "iothub/service/service_client_options.hpp"
#include "iothub/service/twin.hpp"

namespace iothub::service {

// Device twin operations of the service REST API (docs/protocol.md §6), on the wire
// like the Node SDK's Registry.getTwin/updateTwin plus the REST "Replace Twin". Every call
// is synchronous and returns the full twin as the hub stored it. Errors: ArgumentInvalid
// for an empty device id (nothing is sent); otherwise the hub's, mapped by
// statusFromErrorResponse() (DeviceNotFound, PreconditionFailed for a stale etag,
// ArgumentInvalid for a patch the hub rejects, Unauthorized, …), IotHubFormatError for a
// reply that is not a twin, or transport failures (isTransportFailure()). Thread-safety is
// that of the shared HttpTransport.
class TwinClient {
 public:
  explicit TwinClient(std::shared_ptr<HttpTransport> transport);

  // Parses a service connection string and opens a transport for it. Errors: ArgumentInvalid.
  static Result<TwinClient> fromConnectionString(std::string_view connection_string,
                                                 ServiceClientOptions options = {});

  // GET /twins/{id}.
  Result<Twin> get(std::string_view device_id);

  // PATCH /twins/{id} with If-Match: `etag` ("*" = unconditional; quoted on the wire).
  // `patch` is {"tags":{…}, "properties":{"desired":{…}}}: merged into the twin, a null
  // member deletes, "tags": null / "desired": null clear the section (docs/protocol.md §6.3).
  Result<Twin> update(std::string_view device_id, const json::object& patch,
                      std::string_view etag = "*");

  // PUT /twins/{id} with If-Match: `etag`: `twin` replaces tags and desired properties.
  // The hub ignores read-only parts, so a twin read with get() (its `raw`) can be edited
  // and sent back whole.
  Result<Twin> replace(std::string_view device_id, const json::object& twin,
                       std::string_view etag = "*");

  const std::shared_ptr<HttpTransport>& transport() const { return transport_; }

 private:
  Result<Twin> send(const HttpRequest& request);

  std::shared_ptr<HttpTransport> transport_;
};

}  // namespace iothub::service
