// Bulk device registration through the service SDK (no Asio here: the SDK hides it).

#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>
#include <vector>

#include "apps/fleetsim/fleet.hpp"
#include "iothub/service/registry_client.hpp"

namespace iothub::fleetsim {

Result<json::object> provisionDevices(const std::string& service_connection_string,
                                      const std::string& endpoint, const std::string& ca_file,
                                      const std::string& prefix, std::size_t first,
                                      std::size_t count, const std::string& device_key,
                                      std::size_t parallel) {
  constexpr std::size_t kBatch = 100;  // the hub's (and Azure's) bulk limit
  const std::size_t batches = (count + kBatch - 1) / kBatch;
  std::atomic<std::size_t> next_batch{0};
  std::atomic<std::size_t> created{0};
  std::atomic<std::size_t> existing{0};
  std::mutex error_mutex;
  Status first_error;
  const auto started = std::chrono::steady_clock::now();
  auto worker = [&] {
    service::ServiceClientOptions options;
    options.endpoint = endpoint;
    options.ca_file = ca_file;
    auto client = service::RegistryClient::fromConnectionString(service_connection_string, options);
    if (!client) {
      std::lock_guard lock(error_mutex);
      first_error = client.status();
      return;
    }
    for (;;) {
      const std::size_t b = next_batch.fetch_add(1);
      if (b >= batches) return;
      std::vector<service::BulkOperation> operations;
      const std::size_t begin = first + b * kBatch;
      const std::size_t end = std::min(first + count, begin + kBatch);
      for (std::size_t i = begin; i < end; ++i) {
        service::BulkOperation op;
        op.mode = service::BulkImportMode::Create;
        op.device.device_id = deviceId(prefix, i);
        op.device.primary_key = device_key;
        op.device.secondary_key = device_key;
        operations.push_back(std::move(op));
      }
      auto result = client->bulk(operations);
      if (!result) {
        std::lock_guard lock(error_mutex);
        first_error = result.status();
        return;
      }
      std::size_t failed = 0;
      for (const auto& e : result->errors) {
        if (e.error_code == "DeviceAlreadyExists" || e.error_code == "409001") {
          existing.fetch_add(1);
        } else {
          ++failed;
        }
      }
      if (failed > 0) {
        std::lock_guard lock(error_mutex);
        first_error = Status(ErrorCode::ServiceUnavailable,
                             "bulk create failed for " + std::to_string(failed) +
                                 " devices: " + result->errors.front().error_code + " " +
                                 result->errors.front().error_status);
        return;
      }
      created.fetch_add(operations.size() - (result->errors.size()));
    }
  };
  std::vector<std::thread> threads;
  for (std::size_t t = 0; t < std::max<std::size_t>(1, parallel); ++t) threads.emplace_back(worker);
  for (auto& t : threads) t.join();
  if (!first_error.isOk()) return first_error;
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  json::object out;
  out["devices"] = count;
  out["created"] = created.load();
  out["already_existed"] = existing.load();
  out["elapsed_s"] = elapsed;
  out["devices_per_s"] = elapsed > 0 ? static_cast<double>(count) / elapsed : 0.0;
  return out;
}

}  // namespace iothub::fleetsim
