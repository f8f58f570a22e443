// simdevice: a simulated device built on the C++ device SDK. Answers the direct method
// lockDoor, prints desired-property updates and connection status changes (one flushed line
// each: tests read stdout), reconnects by itself and stops cleanly on SIGINT/SIGTERM.
// Exit codes: 0 stopped by a signal, 1 the client could not connect for good (refused
// credentials, or the retry policy gave up), 2 usage or configuration error.

#include <pthread.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <csignal>
#include <iostream>
#include <mutex>
#include <string>

#include "iothub/device/device_client.hpp"

namespace {

using iothub::Status;
namespace device = iothub::device;
namespace json = iothub::json;

constexpr int kExitConnectFailed = 1;
constexpr int kExitUsageError = 2;

// Lines come from the SDK's I/O thread and from main; each is written whole and flushed.
void printLine(const std::string& line) {
  static std::mutex mutex;
  std::lock_guard lock(mutex);
  std::cout << line << std::endl;
}

std::string describe(const Status& status) {
  return std::string(iothub::errorInfo(status.code()).name) + ": " + status.message();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Simulated IoT device: answers lockDoor, prints desired-property updates"};
  std::string connection_string;
  device::DeviceClientOptions options;
  bool plain = false;
  app.add_option("--connection-string", connection_string, "Device connection string")
      ->envname("IOTHUB_DEVICE_CONNECTION_STRING")
      ->required();
  app.add_option("--ca", options.ca_file, "PEM file of the CA that signs the hub's certificate")
      ->envname("IOTHUB_CA_FILE");
  app.add_flag("--plain", plain, "Plain MQTT over TCP instead of TLS (local tests only)");
  app.add_option("--endpoint", options.endpoint,
                 "Where to connect, host:port (default: GatewayHostName or HostName, port 8883)");
  CLI11_PARSE(app, argc, argv);
  options.use_tls = !plain;

  // Signals are taken synchronously by sigwait() below; blocking them before the SDK starts
  // its thread keeps them away from it. SIGUSR1 is how a final connection failure wakes main.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGUSR1);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  // Declared before the client, which may report a failure into them until it is destroyed.
  std::mutex failure_mutex;
  Status failure;
  auto client = device::DeviceClient::create(connection_string, options);
  if (!client) {
    std::cerr << "simdevice: " << describe(client.status()) << '\n';
    return kExitUsageError;
  }
  device::DeviceClient& device_client = **client;

  device_client.onConnectionStatus([](const device::ConnectionStatusChange& change) {
    std::string line = "Connection status: " + std::string(device::toString(change.status)) + " (" +
                       std::string(device::toString(change.reason)) + ")";
    if (!change.detail.empty()) line += ": " + change.detail;
    printLine(line);
  });
  device_client.onMethod("lockDoor", [](const json::value&) {
    printLine("Locking Door!");
    return device::MethodResponse{200, json::object{{"Response", "lockDoor called successfully"}}};
  });
  device_client.onDesired([](const json::object& patch, std::int64_t version) {
    printLine("Desired properties updated (version " + std::to_string(version) +
              "): " + json::serialize(patch));
  });

  printLine("Connecting to " + device_client.endpoint() + " as " + device_client.deviceId());
  device_client.openAsync([&](Status status) {
    if (status.isOk() || status.code() == iothub::ErrorCode::Cancelled) return;
    {
      std::lock_guard lock(failure_mutex);
      failure = status;
    }
    ::kill(::getpid(), SIGUSR1);
  });

  int signal_number = 0;
  sigwait(&signals, &signal_number);
  device_client.close();
  if (signal_number == SIGUSR1) {
    std::lock_guard lock(failure_mutex);
    std::cerr << "simdevice: " << describe(failure) << '\n';
    return kExitConnectFailed;
  }
  printLine("Stopped");
  return 0;
}
