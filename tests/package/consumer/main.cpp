// consumer SERVICE_CONNECTION_STRING HTTPS_ENDPOINT MQTT_ENDPOINT CA_FILE
// Creates a device with the service SDK, connects it with the device SDK, reports a twin
// property and reads it back through the service SDK. Exit status 0 when all of it worked.
#include <cstdio>
#include <string>

#include "iothub/connection_string.hpp"
#include "iothub/device/device_client.hpp"
#include "iothub/service/registry_client.hpp"
#include "iothub/service/twin_client.hpp"

namespace {

int fail(const std::string& what, const iothub::Status& status) {
  std::fprintf(stderr, "consumer: %s: %s\n", what.c_str(), status.toString().c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 5) {
    std::fprintf(stderr, "usage: consumer SERVICE_CS HTTPS_ENDPOINT MQTT_ENDPOINT CA_FILE\n");
    return 2;
  }
  const std::string service_cs = argv[1], https_endpoint = argv[2], mqtt_endpoint = argv[3],
                    ca_file = argv[4];

  auto parsed = iothub::auth::ServiceConnectionString::parse(service_cs);
  if (!parsed) return fail("parse the service connection string", parsed.status());
  const iothub::service::ServiceClientOptions service_options{.ca_file = ca_file,
                                                              .endpoint = https_endpoint};
  auto registry = iothub::service::RegistryClient::fromConnectionString(service_cs, service_options);
  if (!registry) return fail("open the registry", registry.status());

  iothub::service::Device wanted;
  wanted.device_id = "package-consumer";
  auto device = registry->create(wanted);
  if (!device) return fail("create the device", device.status());
  auto device_cs = iothub::service::RegistryClient::deviceConnectionString(*device, parsed->host_name);
  if (!device_cs) return fail("its connection string", device_cs.status());

  auto client = iothub::device::DeviceClient::create(
      *device_cs, iothub::device::DeviceClientOptions{.ca_file = ca_file, .endpoint = mqtt_endpoint});
  if (!client) return fail("create the device client", client.status());
  if (iothub::Status opened = (*client)->open(); !opened) return fail("connect", opened);
  auto reported = (*client)->patchReported(iothub::json::object{{"packaged", true}});
  if (!reported) return fail("report a property", reported.status());
  (*client)->close();

  auto twins = iothub::service::TwinClient::fromConnectionString(service_cs, service_options);
  if (!twins) return fail("open the twin client", twins.status());
  auto twin = twins->get("package-consumer");
  if (!twin) return fail("read the twin", twin.status());
  const iothub::json::value* packaged = iothub::findMember(twin->reported, "packaged");
  if (packaged == nullptr || !packaged->is_bool() || !packaged->as_bool()) {
    std::fprintf(stderr, "consumer: the twin lacks reported.packaged: %s\n",
                 iothub::toJson(twin->raw).c_str());
    return 1;
  }
  std::printf("consumer: device package-consumer connected; reported %s\n",
              iothub::toJson(twin->reported).c_str());
  return 0;
}
