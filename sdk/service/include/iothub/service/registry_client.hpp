#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "iothub/json.hpp"
#include "iothub/status.hpp"
#include "iothub/service/device.hpp"
#include "iothub/service/http_transport.hpp"
#include "iothub/service/service_client_options.hpp"

namespace iothub::service {

// importMode of one bulk entry (docs/protocol.md §5.5, POST /devices).
enum class BulkImportMode { Create, Update, UpdateIfMatchETag, Delete, DeleteIfMatchETag };

struct BulkOperation {
  BulkImportMode mode = BulkImportMode::Create;
  // For deletes only device_id (and etag for DeleteIfMatchETag) matter.
  Device device;
};

struct BulkError {
  std::string device_id;
  std::string module_id;
  std::string error_code;    // e.g. "DeviceAlreadyExists"
  std::string error_status;  // the hub's human text
  std::string operation;
};

struct BulkWarning {
  std::string device_id;
  std::string warning_code;
  std::string warning_status;
};

struct BulkRegistryResult {
  bool is_successful = false;
  std::vector<BulkError> errors;
  std::vector<BulkWarning> warnings;
};

struct RegistryStatistics {
  std::int64_t total_device_count = 0;
  std::int64_t enabled_device_count = 0;
  std::int64_t disabled_device_count = 0;
  json::object raw;
};

// Device identity registry operations, on the wire exactly like the Node SDK's Registry
// (docs/protocol.md §4.3). Every call is synchronous; errors are the hub's, mapped by
// statusFromErrorResponse() (DeviceNotFound, DeviceAlreadyExists, PreconditionFailed,
// Unauthorized, …), or transport failures (isTransportFailure()). Thread-safety is that of
// the shared HttpTransport.
class RegistryClient {
 public:
  explicit RegistryClient(std::shared_ptr<HttpTransport> transport);

  // Parses a service connection string and opens a transport for it. Errors: ArgumentInvalid.
  static Result<RegistryClient> fromConnectionString(std::string_view connection_string,
                                                     ServiceClientOptions options = {});

  // PUT /devices/{id} without If-Match: fails with DeviceAlreadyExists when the id is taken.
  // Empty keys ask the hub to generate them; the returned device carries them.
  Result<Device> create(const Device& device);
  // GET /devices/{id}.
  Result<Device> get(std::string_view device_id);
  // GET /devices/ (trailing slash, as Node sends it).
  Result<std::vector<Device>> list();
  // PUT /devices/{id} with If-Match: `etag` ("*" = unconditional). DeviceNotFound when the
  // device does not exist, PreconditionFailed when the etag is stale.
  Result<Device> update(const Device& device, std::string_view etag = "*");
  // DELETE /devices/{id} with If-Match: `etag`.
  Status remove(std::string_view device_id, std::string_view etag = "*");
  // POST /devices with 1..100 entries {id, importMode, …device}. Per-device failures are
  // reported in the result (is_successful false), also when the hub answers them with 400.
  Result<BulkRegistryResult> bulk(const std::vector<BulkOperation>& operations);
  // GET /statistics/devices.
  Result<RegistryStatistics> statistics();

  // "HostName=<host>;DeviceId=<id>;SharedAccessKey=<primary key>" ("x509=true" instead of
  // the key for X.509 devices). Errors: ArgumentInvalid for a SAS device without a key.
  static Result<std::string> deviceConnectionString(const Device& device,
                                                    std::string_view host_name);

  const std::shared_ptr<HttpTransport>& transport() const { return transport_; }

 private:
  std::shared_ptr<HttpTransport> transport_;
};

}  // namespace iothub::service
