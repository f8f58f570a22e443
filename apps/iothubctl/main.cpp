// iothubctl: command-line client of the hub's service REST API, built on the C++ service SDK.
// Exit codes: 0 ok, 1 the hub reported an error, 2 usage or configuration error,
// 3 the hub could not be reached (connection, TLS, timeout).

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdint>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>

#include "auth/connection_string.hpp"
#include "iothub/service/http_transport.hpp"
#include "iothub/service/method_client.hpp"
#include "iothub/service/registry_client.hpp"
#include "iothub/service/twin_client.hpp"
#include "output.hpp"

namespace {

using iothub::ErrorCode;
using iothub::Status;
using iothub::service::Device;
using iothub::service::HttpTransport;
using iothub::service::MethodClient;
using iothub::service::MethodRequest;
using iothub::service::RegistryClient;
using iothub::service::TwinClient;
namespace json = iothub::json;

constexpr int kExitServiceError = 1;
constexpr int kExitUsageError = 2;
constexpr int kExitTransportError = 3;

int fail(const Status& status) {
  std::cerr << "iothubctl: " << iothub::errorInfo(status.code()).name << ": " << status.message()
            << '\n';
  return iothub::service::isTransportFailure(status) ? kExitTransportError : kExitServiceError;
}

int usageError(const std::string& message) {
  std::cerr << "iothubctl: " << iothub::errorInfo(ErrorCode::ArgumentInvalid).name << ": "
            << message << '\n';
  return kExitUsageError;
}

void printJson(const json::value& value) { std::cout << json::serialize(value) << '\n'; }

struct Arguments {
  std::string connection_string;
  std::string ca_file;
  std::string endpoint;
  bool json = false;
  std::string device_id;
  std::string etag = "*";
  bool disabled = false;
  std::string primary_key;
  std::string secondary_key;
  std::string status;
  std::string status_reason;
  bool has_status_reason = false;
  // twin update/replace: the document, inline or from a file ("-" = stdin).
  std::optional<std::string> twin_text;
  std::optional<std::string> twin_file;
  // method invoke
  std::string method_name;
  std::optional<std::string> payload_text;
  std::int64_t response_timeout_seconds = 30;
  std::int64_t connect_timeout_seconds = 0;
};

enum class Command {
  None,
  Create,
  Get,
  List,
  Delete,
  ConnectionString,
  Update,
  Stats,
  TwinGet,
  TwinUpdate,
  TwinReplace,
  MethodInvoke,
};

// What the command line asked for, checked before anything goes to the hub.
struct Inputs {
  json::object twin_document;  // twin update (the patch) / twin replace (the twin)
  MethodRequest method;
};

// A command-line JSON value; a syntax error is a usage error naming `source`.
iothub::Result<json::value> parseJsonArgument(const std::string& text, const std::string& source) {
  auto parsed = iothub::parseJson(text);
  if (!parsed) {
    return Status(ErrorCode::ArgumentInvalid,
                  source + " is not valid JSON: " + parsed.status().message());
  }
  return parsed;
}

iothub::Result<json::object> readTwinDocument(const Arguments& args, std::string_view what) {
  std::string text;
  std::string source;
  if (args.twin_text) {
    text = *args.twin_text;
    source = "--json";
  } else if (args.twin_file) {
    source = "--file '" + *args.twin_file + "'";
    std::ostringstream contents;
    if (*args.twin_file == "-") {
      contents << std::cin.rdbuf();
    } else {
      std::ifstream file(*args.twin_file, std::ios::binary);
      if (!file) return Status(ErrorCode::ArgumentInvalid, "cannot read " + source);
      contents << file.rdbuf();
    }
    text = contents.str();
  } else {
    return Status(ErrorCode::ArgumentInvalid,
                  "give the " + std::string(what) + " as --json '<json>' or --file <path>");
  }
  auto parsed = parseJsonArgument(text, source);
  if (!parsed) return parsed.status();
  if (!parsed->is_object()) {
    return Status(ErrorCode::ArgumentInvalid,
                  "the " + std::string(what) + " in " + source + " must be a JSON object");
  }
  return std::move(parsed->get_object());
}

iothub::Result<Inputs> checkInputs(Command command, const Arguments& args) {
  Inputs inputs;
  switch (command) {
    case Command::TwinUpdate:
    case Command::TwinReplace: {
      auto document = readTwinDocument(args, command == Command::TwinUpdate ? "patch" : "twin");
      if (!document) return document.status();
      inputs.twin_document = std::move(*document);
      break;
    }
    case Command::MethodInvoke: {
      inputs.method.method_name = args.method_name;
      if (args.payload_text) {
        auto payload = parseJsonArgument(*args.payload_text, "--payload");
        if (!payload) return payload.status();
        inputs.method.payload = std::move(*payload);
      }
      inputs.method.response_timeout = std::chrono::seconds{args.response_timeout_seconds};
      inputs.method.connect_timeout = std::chrono::seconds{args.connect_timeout_seconds};
      // The SDK's own argument checks, before any connection is made.
      auto request = MethodClient::buildRequest(args.device_id, inputs.method);
      if (!request) return request.status();
      break;
    }
    default:
      break;
  }
  return inputs;
}

int printDevice(const Arguments& args, const iothub::Result<Device>& device) {
  if (!device) return fail(device.status());
  if (args.json) {
    printJson(device->raw);
  } else {
    std::cout << iothub::ctl::formatDevice(*device);
  }
  return 0;
}

int printTwin(const Arguments& args, const iothub::Result<iothub::service::Twin>& twin) {
  if (!twin) return fail(twin.status());
  if (args.json) {
    printJson(twin->raw);
  } else {
    std::cout << iothub::ctl::formatJsonPretty(twin->raw);
  }
  return 0;
}

int run(Command command, const Arguments& args, const Inputs& inputs,
        const std::shared_ptr<HttpTransport>& transport, const std::string& host_name) {
  RegistryClient registry(transport);
  switch (command) {
    case Command::Create: {
      Device device;
      device.device_id = args.device_id;
      if (args.disabled) device.status = iothub::service::DeviceStatus::Disabled;
      device.primary_key = args.primary_key;
      device.secondary_key = args.secondary_key;
      return printDevice(args, registry.create(device));
    }
    case Command::Get:
      return printDevice(args, registry.get(args.device_id));
    case Command::List: {
      auto devices = registry.list();
      if (!devices) return fail(devices.status());
      if (args.json) {
        json::array raw;
        for (const Device& d : *devices) raw.push_back(d.raw);
        printJson(raw);
      } else {
        std::cout << iothub::ctl::formatDeviceTable(*devices);
      }
      return 0;
    }
    case Command::Delete: {
      Status status = registry.remove(args.device_id, args.etag);
      if (!status) return fail(status);
      if (!args.json) std::cout << "Deleted device " << args.device_id << '\n';
      return 0;
    }
    case Command::ConnectionString: {
      auto device = registry.get(args.device_id);
      if (!device) return fail(device.status());
      auto text = RegistryClient::deviceConnectionString(*device, host_name);
      if (!text) return fail(text.status());
      if (args.json) {
        printJson(json::object{{"connectionString", *text}});
      } else {
        std::cout << *text << '\n';
      }
      return 0;
    }
    case Command::Update: {
      // Read-modify-write so that keys and other settings are sent back unchanged.
      auto device = registry.get(args.device_id);
      if (!device) return fail(device.status());
      device->status = *iothub::service::parseDeviceStatus(args.status);
      if (args.has_status_reason) device->status_reason = args.status_reason;
      return printDevice(args, registry.update(*device, args.etag));
    }
    case Command::Stats: {
      auto stats = registry.statistics();
      if (!stats) return fail(stats.status());
      if (args.json) {
        printJson(stats->raw);
      } else {
        std::cout << iothub::ctl::formatStatistics(*stats);
      }
      return 0;
    }
    case Command::TwinGet:
      return printTwin(args, TwinClient(transport).get(args.device_id));
    case Command::TwinUpdate:
      return printTwin(args, TwinClient(transport).update(args.device_id, inputs.twin_document,
                                                          args.etag));
    case Command::TwinReplace:
      return printTwin(args, TwinClient(transport).replace(args.device_id, inputs.twin_document,
                                                           args.etag));
    case Command::MethodInvoke: {
      auto response = MethodClient(transport).invoke(args.device_id, inputs.method);
      if (!response) return fail(response.status());
      if (args.json) {
        printJson(json::object{{"status", response->status}, {"payload", response->payload}});
      } else {
        std::cout << iothub::ctl::formatMethodResponse(*response);
      }
      return 0;
    }
    case Command::None:
      break;
  }
  return usageError("no command given");
}

}  // namespace

int main(int argc, char** argv) {
  Arguments args;
  Command command = Command::None;
  auto select = [&command](Command c) { return [&command, c] { command = c; }; };

  CLI::App app{"Manage devices, twins and direct methods of an Azure-IoT-Hub-compatible hub.",
               "iothubctl"};
  // Subcommands inherit this: options they do not know, like a trailing --json, go to the
  // parent. A subcommand's own option of the same name (twin update --json) wins.
  app.fallthrough();
  app.add_option("--connection-string", args.connection_string,
                 "Service connection string (HostName=…;SharedAccessKeyName=…;SharedAccessKey=…)")
      ->envname("IOTHUB_CONNECTION_STRING");
  app.add_option("--ca", args.ca_file, "PEM file of the CA that signs the hub's certificate")
      ->envname("IOTHUB_CA_FILE");
  app.add_option("--endpoint", args.endpoint,
                 "Where to connect instead of https://<HostName>:443, e.g. https://127.0.0.1:8443")
      ->envname("IOTHUB_ENDPOINT");
  app.add_flag("--json", args.json, "Print the hub's raw JSON (for scripts)");
  app.require_subcommand(1);

  CLI::App* device = app.add_subcommand("device", "Manage device identities");
  device->require_subcommand(1);

  CLI::App* create = device->add_subcommand("create", "Register a new device");
  create->add_option("id", args.device_id, "Device id")->required();
  create->add_flag("--disabled", args.disabled, "Create the device disabled");
  CLI::Option* primary =
      create->add_option("--primary-key", args.primary_key, "Base64 primary key (default: generated)");
  CLI::Option* secondary = create->add_option("--secondary-key", args.secondary_key,
                                              "Base64 secondary key (default: generated)");
  primary->needs(secondary);
  secondary->needs(primary);
  create->callback(select(Command::Create));

  CLI::App* get = device->add_subcommand("get", "Show one device");
  get->add_option("id", args.device_id, "Device id")->required();
  get->callback(select(Command::Get));

  device->add_subcommand("list", "List devices")->callback(select(Command::List));

  CLI::App* remove = device->add_subcommand("delete", "Delete a device");
  remove->add_option("id", args.device_id, "Device id")->required();
  remove->add_option("--etag", args.etag, "Only delete if the device's etag matches (default: *)");
  remove->callback(select(Command::Delete));

  CLI::App* connection_string =
      device->add_subcommand("connection-string", "Print the device's connection string");
  connection_string->add_option("id", args.device_id, "Device id")->required();
  connection_string->callback(select(Command::ConnectionString));

  CLI::App* update = device->add_subcommand("update", "Enable or disable a device");
  update->add_option("id", args.device_id, "Device id")->required();
  update->add_option("--status", args.status, "enabled or disabled")
      ->required()
      ->check(CLI::IsMember({"enabled", "disabled"}));
  CLI::Option* reason = update->add_option("--status-reason", args.status_reason, "Why");
  update->add_option("--etag", args.etag, "Only update if the device's etag matches (default: *)");
  update->callback(select(Command::Update));

  CLI::App* registry_command = app.add_subcommand("registry", "Registry-wide information");
  registry_command->require_subcommand(1);
  registry_command->add_subcommand("stats", "Device counts")->callback(select(Command::Stats));

  CLI::App* twin = app.add_subcommand("twin", "Read and write device twins");
  twin->require_subcommand(1);

  CLI::App* twin_get = twin->add_subcommand("get", "Show a device's twin (indented JSON)");
  twin_get->add_option("id", args.device_id, "Device id")->required();
  twin_get->callback(select(Command::TwinGet));

  auto add_twin_document = [&args](CLI::App* subcommand, const std::string& what) {
    subcommand->add_option("id", args.device_id, "Device id")->required();
    CLI::Option* text = subcommand->add_option(
        "--json", args.twin_text,
        "The " + what + " as JSON text (for raw JSON output, put --json before 'twin')");
    CLI::Option* file = subcommand->add_option("--file", args.twin_file,
                                               "Read the " + what + " from a file (- = stdin)");
    text->excludes(file);
    file->excludes(text);
    subcommand->add_option("--etag", args.etag, "Only write if the twin's etag matches (default: *)");
  };
  CLI::App* twin_update = twin->add_subcommand(
      "update", "Merge a patch {\"tags\":{…},\"properties\":{\"desired\":{…}}} into a twin");
  add_twin_document(twin_update, "patch");
  twin_update->callback(select(Command::TwinUpdate));

  CLI::App* twin_replace =
      twin->add_subcommand("replace", "Replace a twin's tags and desired properties");
  add_twin_document(twin_replace, "twin");
  twin_replace->callback(select(Command::TwinReplace));

  CLI::App* method = app.add_subcommand("method", "Direct methods");
  method->require_subcommand(1);
  CLI::App* invoke = method->add_subcommand(
      "invoke", "Call a direct method on a device; prints the device's status and payload");
  invoke->add_option("id", args.device_id, "Device id")->required();
  invoke->add_option("methodName", args.method_name, "Method name")->required();
  invoke->add_option("--payload", args.payload_text, "Request payload as JSON (default: null)");
  invoke->add_option("--response-timeout", args.response_timeout_seconds,
                     "Seconds the hub waits for the device's answer (default: 30)");
  invoke->add_option("--connect-timeout", args.connect_timeout_seconds,
                     "Seconds the hub waits for the device to connect (default: 0)");
  invoke->callback(select(Command::MethodInvoke));

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help
    return usageError(std::string(e.what()) + " (see iothubctl --help)");
  }
  args.has_status_reason = reason->count() > 0;
  auto inputs = checkInputs(command, args);
  if (!inputs) return usageError(inputs.status().message());

  if (args.connection_string.empty()) {
    return usageError("no connection string: pass --connection-string or set IOTHUB_CONNECTION_STRING");
  }
  auto parsed = iothub::auth::ServiceConnectionString::parse(args.connection_string);
  if (!parsed) return usageError(parsed.status().message());
  std::string host_name = parsed->host_name;
  iothub::service::ServiceClientOptions options;
  options.ca_file = args.ca_file;
  options.endpoint = args.endpoint;
  auto transport = iothub::service::HttpTransport::create(std::move(*parsed), options);
  if (!transport) return usageError(transport.status().message());
  return run(command, args, *inputs, std::shared_ptr<HttpTransport>(std::move(*transport)),
             host_name);
}
