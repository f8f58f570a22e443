#pragma once
// Test helpers for integration tests that drive a real iothubd over the wire: raw REST calls
// through our service SDK's transport (so tests state the wire), bulk device creation, and
// devices running our C++ device SDK that answer lockDoor and record desired updates.
#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "iothub/device/device_client.hpp"
#include "iothub/service/http_transport.hpp"
#include "iothub/service/registry_client.hpp"
#include "tests/support/hub_process.hpp"

namespace iothub::testing {

inline constexpr std::string_view kDeviceHostName = "localhost";  // the test hubs' name

inline json::value parsed(std::string_view text) {
  auto v = parseJson(text);
  EXPECT_TRUE(v.isOk()) << text;
  return v ? *v : json::value();
}

// The service side over our SDK's transport: raw REST calls, so the test states the wire.
class Service {
 public:
  explicit Service(HubProcess& hub) {
    auto cs = auth::ServiceConnectionString::parse(hub.serviceConnectionString());
    EXPECT_TRUE(cs.isOk());
    service::ServiceClientOptions options;
    options.ca_file = hub.caFile().string();
    options.endpoint = hub.httpsEndpoint();
    auto transport = service::HttpTransport::create(*cs, options);
    EXPECT_TRUE(transport.isOk()) << transport.status().toString();
    transport_ = std::shared_ptr<service::HttpTransport>(std::move(*transport));
    registry_ = std::make_unique<service::RegistryClient>(transport_);
  }

  Result<service::HttpResponse> call(
      std::string method, std::string target, std::string body = "",
      std::vector<std::pair<std::string, std::string>> headers = {}) {
    service::HttpRequest r;
    r.method = std::move(method);
    auto q = target.find('?');
    r.path = target.substr(0, q);
    if (q != std::string::npos) r.query = target.substr(q + 1);
    if (!body.empty()) r.body = std::move(body);
    r.headers = std::move(headers);
    return transport_->send(r);
  }
  json::value ok(std::string method, std::string target, std::string body = "") {
    auto r = call(std::move(method), std::move(target), std::move(body));
    EXPECT_TRUE(r.isOk()) << r.status().toString();
    if (!r) return nullptr;
    EXPECT_EQ(r->status, 200) << r->body;
    return parsed(r->body);
  }

  // Every row of a query, following continuations; checks the paging headers.
  json::array query(const std::string& sql, int page_size, int* pages = nullptr) {
    json::array rows;
    std::optional<std::string> token;
    for (int n = 1; n < 10000; ++n) {
      std::vector<std::pair<std::string, std::string>> headers{
          {"x-ms-max-item-count", std::to_string(page_size)}};
      if (token) headers.emplace_back("x-ms-continuation", *token);
      auto r =
          call("POST", "/devices/query", json::serialize(json::object{{"query", sql}}), headers);
      EXPECT_TRUE(r.isOk() && r->status == 200) << (r ? r->body : r.status().toString());
      if (!r || r->status != 200) break;
      EXPECT_TRUE(r->header("x-ms-item-type").has_value());
      json::value page = parsed(r->body);
      EXPECT_LE(page.as_array().size(), static_cast<std::size_t>(page_size));
      for (auto& row : page.as_array()) rows.push_back(row);
      auto next = r->header("x-ms-continuation");
      if (!next) {
        if (pages) *pages = n;
        return rows;
      }
      EXPECT_FALSE(next->empty());
      token = *next;
    }
    ADD_FAILURE() << "paging did not end";
    return rows;
  }

  json::object job(const std::string& id) { return ok("GET", "/jobs/v2/" + id).as_object(); }
  std::string jobStatus(const std::string& id) {
    return std::string(job(id).at("status").as_string());
  }
  bool jobDone(const std::string& id) {
    std::string s = jobStatus(id);
    return s == "completed" || s == "failed" || s == "cancelled";
  }
  std::map<std::string, std::int64_t> stats(const std::string& id) {
    std::map<std::string, std::int64_t> out;
    json::object j = job(id);
    for (auto& [k, v] : j.at("deviceJobStatistics").as_object()) out[std::string(k)] = v.as_int64();
    return out;
  }
  // deviceId → row of devices.jobs for one job.
  std::map<std::string, json::object> rows(const std::string& job_id) {
    std::map<std::string, json::object> out;
    for (auto& row :
         query("SELECT * FROM devices.jobs WHERE devices.jobs.jobId = '" + job_id + "'", 50)) {
      out[std::string(row.at("deviceId").as_string())] = row.as_object();
    }
    return out;
  }

  service::RegistryClient& registry() { return *registry_; }

 private:
  std::shared_ptr<service::HttpTransport> transport_;
  std::unique_ptr<service::RegistryClient> registry_;
};

inline std::vector<service::Device> createDevices(Service& service, const std::string& prefix,
                                                  int n) {
  std::vector<service::Device> created;
  for (int i = 0; i < n; i += 100) {
    std::vector<service::BulkOperation> ops;
    for (int j = i; j < std::min(n, i + 100); ++j) {
      service::BulkOperation op;
      op.device.device_id = prefix + std::to_string(1000 + j);
      ops.push_back(op);
    }
    auto r = service.registry().bulk(ops);
    EXPECT_TRUE(r.isOk() && r->is_successful) << (r ? "" : r.status().toString());
  }
  for (int j = 0; j < n; ++j) {
    auto d = service.registry().get(prefix + std::to_string(1000 + j));
    EXPECT_TRUE(d.isOk());
    if (d) created.push_back(*d);
  }
  return created;
}

// A connected device that answers lockDoor and records desired updates.
struct OnlineDevice {
  // Times the connection was lost or closed after open() (declared before `client`, whose
  // close reports one while it is destroyed).
  std::atomic<int> disconnects{0};
  std::unique_ptr<device::DeviceClient> client;
  std::atomic<int> lock_calls{0};
  std::mutex mutex;
  std::vector<json::object> desired;
};

// Connects `d` to the MQTT/TLS listener of `hub` (the device's token is signed for the hub
// name, whatever node it connects to).
inline std::unique_ptr<OnlineDevice> connect(HubProcess& hub, const service::Device& d) {
  auto device = std::make_unique<OnlineDevice>();
  device::DeviceClientOptions options;
  options.ca_file = hub.caFile().string();
  options.endpoint = "127.0.0.1:" + std::to_string(hub.mqttPort());
  auto cs = service::RegistryClient::deviceConnectionString(d, kDeviceHostName);
  EXPECT_TRUE(cs.isOk());
  auto client = device::DeviceClient::create(*cs, options);
  EXPECT_TRUE(client.isOk()) << client.status().toString();
  if (!client) return device;
  device->client = std::move(*client);
  OnlineDevice* raw = device.get();
  device->client->onMethod("lockDoor", [raw](const json::value& payload) {
    ++raw->lock_calls;
    return device::MethodResponse{200, json::object{{"locked", true}, {"request", payload}}};
  });
  device->client->onDesired([raw](const json::object& patch, std::int64_t) {
    std::lock_guard lock(raw->mutex);
    raw->desired.push_back(patch);
  });
  Status opened = device->client->open();
  device->client->onConnectionStatus([raw](const device::ConnectionStatusChange& change) {
    if (change.status != device::ConnectionStatus::Connected) ++raw->disconnects;
  });
  EXPECT_TRUE(opened.isOk()) << opened.toString();
  return device;
}

}  // namespace iothub::testing
