// iothubctl: command-line client of the hub's service REST API, built on the C++ service SDK.
// Exit codes: 0 ok, 1 the hub reported an error, 2 usage or configuration error,
// 3 the hub could not be reached (connection, TLS, timeout). `job watch` also exits 1 when the
// job ends failed or cancelled.

#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdint>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "auth/connection_string.hpp"
#include "common/encoding.hpp"
#include "common/time_format.hpp"
#include "iothub/service/http_transport.hpp"
#include "iothub/service/job_client.hpp"
#include "iothub/service/method_client.hpp"
#include "iothub/service/query_client.hpp"
#include "iothub/service/registry_client.hpp"
#include "iothub/service/twin_client.hpp"
#include "output.hpp"

namespace {

using iothub::ErrorCode;
using iothub::Status;
using iothub::service::Device;
using iothub::service::HttpTransport;
using iothub::service::Job;
using iothub::service::JobClient;
using iothub::service::JobSchedule;
using iothub::service::MethodClient;
using iothub::service::MethodRequest;
using iothub::service::QueryClient;
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
  // query
  std::string sql;
  std::optional<int> page_size;
  std::optional<std::size_t> max_pages;
  // job schedule-method / schedule-twin
  std::string job_id;
  std::optional<std::string> query_condition;
  std::optional<std::string> target_device;
  std::optional<std::int64_t> start_in_seconds;
  std::optional<std::string> start_time_text;
  std::optional<std::int64_t> max_execution_seconds;
  std::optional<double> rate;
  std::optional<std::string> desired_text;
  std::optional<std::string> tags_text;
  // job schedule-*: iothub's extensions (docs/jobs.md)
  std::optional<int> priority;
  bool fail_on_device_status = false;
  iothub::ctl::RolloutFlags rollout;
  std::vector<std::string> abort_flags;
  std::optional<std::string> retry_text;
  std::optional<std::int64_t> wait_offline_seconds;
  std::optional<std::int64_t> converge_seconds;
  bool continuous = false;
  bool dry_run = false;
  std::optional<std::string> rerun_of;
  std::optional<std::string> rerun_statuses_text;
  // job list / devices / watch
  std::optional<std::string> job_type_filter;
  std::optional<std::string> job_status_filter;
  std::int64_t interval_ms = 1000;
  // consumer-group create / delete
  std::string consumer_group;
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
  Query,
  JobScheduleMethod,
  JobScheduleTwin,
  JobGet,
  JobCancel,
  JobList,
  JobDevices,
  JobWatch,
  ConsumerGroupList,
  ConsumerGroupCreate,
  ConsumerGroupDelete,
};

// What the command line asked for, checked before anything goes to the hub.
struct Inputs {
  json::object twin_document;  // twin update (the patch) / twin replace (the twin)
  MethodRequest method;        // method invoke, job schedule-method
  JobSchedule schedule;        // job schedule-*
  bool generated_job_id = false;
  json::object update_twin;  // job schedule-twin
  std::optional<iothub::service::JobType> job_type;
  std::optional<iothub::service::JobStatus> job_status;
  std::optional<iothub::service::DeviceJobStatus> device_job_status;
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

iothub::Result<MethodRequest> methodFromArguments(const Arguments& args) {
  MethodRequest method;
  method.method_name = args.method_name;
  if (args.payload_text) {
    auto payload = parseJsonArgument(*args.payload_text, "--payload");
    if (!payload) return payload.status();
    method.payload = std::move(*payload);
  }
  method.response_timeout = std::chrono::seconds{args.response_timeout_seconds};
  method.connect_timeout = std::chrono::seconds{args.connect_timeout_seconds};
  return method;
}

iothub::Result<json::object> jsonObjectArgument(const std::string& text,
                                                const std::string& source) {
  auto parsed = parseJsonArgument(text, source);
  if (!parsed) return parsed.status();
  if (!parsed->is_object()) {
    return Status(ErrorCode::ArgumentInvalid, source + " must be a JSON object");
  }
  return std::move(parsed->get_object());
}

// The parts every job schedule-* command shares: id, target devices (or the job to re-run),
// timing, rate and the other extensions.
iothub::Result<JobSchedule> scheduleFromArguments(const Arguments& args, bool& generated_id) {
  JobSchedule schedule;
  generated_id = args.job_id.empty();
  schedule.job_id = generated_id ? JobClient::newJobId() : args.job_id;
  if (args.rerun_of) {
    auto statuses =
        iothub::ctl::parseDeviceJobStatusList(args.rerun_statuses_text.value_or("failed,canceled"));
    if (!statuses) return statuses.status();
    schedule.rerun_of = iothub::service::Rerun{*args.rerun_of, std::move(*statuses)};
  } else if (args.rerun_statuses_text) {
    return Status(ErrorCode::ArgumentInvalid, "--status goes with --rerun-of <job>");
  } else if (args.target_device) {
    schedule.query_condition = "deviceId = " + QueryClient::quoteString(*args.target_device);
  } else if (args.query_condition) {
    schedule.query_condition = *args.query_condition;
  } else {
    return Status(ErrorCode::ArgumentInvalid,
                  "say which devices: --query '<condition>' (or '*'), --device <id> or "
                  "--rerun-of <job>");
  }
  if (args.start_in_seconds) {
    schedule.start_time =
        std::chrono::system_clock::now() + std::chrono::seconds{*args.start_in_seconds};
  } else if (args.start_time_text) {
    schedule.start_time = iothub::parseTimestamp(*args.start_time_text);
    if (!schedule.start_time) {
      return Status(ErrorCode::ArgumentInvalid,
                    "--start-time must be an ISO-8601 date-time such as 2030-01-01T00:00:00Z");
    }
  }
  if (args.max_execution_seconds) {
    schedule.max_execution_time = std::chrono::seconds{*args.max_execution_seconds};
  }
  schedule.device_operations_per_second = args.rate;
  schedule.priority = args.priority;
  schedule.fail_on_device_status = args.fail_on_device_status;
  auto rollout = iothub::ctl::rolloutFromFlags(args.rollout);
  if (!rollout) return rollout.status();
  schedule.rollout = *rollout;
  for (const std::string& text : args.abort_flags) {
    auto criterion = iothub::ctl::parseAbortFlag(text);
    if (!criterion) return criterion.status();
    schedule.abort_criteria.push_back(*criterion);
  }
  if (args.retry_text) {
    auto retry = iothub::ctl::parseRetryFlag(*args.retry_text);
    if (!retry) return retry.status();
    schedule.retry = std::move(*retry);
  }
  if (args.wait_offline_seconds) {
    schedule.offline_wait = std::chrono::seconds{*args.wait_offline_seconds};
  }
  if (args.converge_seconds) {
    schedule.convergence_timeout = std::chrono::seconds{*args.converge_seconds};
  }
  schedule.continuous = args.continuous;
  return schedule;
}

template <class Enum>
iothub::Result<std::optional<Enum>> enumArgument(const std::optional<std::string>& text,
                                                 std::optional<Enum> (*parse)(std::string_view),
                                                 const std::string& option) {
  if (!text) return std::optional<Enum>();
  auto value = parse(*text);
  if (!value) return Status(ErrorCode::ArgumentInvalid, option + " '" + *text + "' is not known");
  return std::optional<Enum>(value);
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
      auto method = methodFromArguments(args);
      if (!method) return method.status();
      inputs.method = std::move(*method);
      // The SDK's own argument checks, before any connection is made.
      auto request = MethodClient::buildRequest(args.device_id, inputs.method);
      if (!request) return request.status();
      break;
    }
    case Command::JobScheduleMethod: {
      auto method = methodFromArguments(args);
      if (!method) return method.status();
      inputs.method = std::move(*method);
      auto schedule = scheduleFromArguments(args, inputs.generated_job_id);
      if (!schedule) return schedule.status();
      inputs.schedule = std::move(*schedule);
      auto request = JobClient::buildScheduleMethodRequest(inputs.schedule, inputs.method);
      if (!request) return request.status();
      break;
    }
    case Command::JobScheduleTwin: {
      if (!args.desired_text && !args.tags_text) {
        return Status(ErrorCode::ArgumentInvalid,
                      "give --desired '<json>', --tags '<json>' or both");
      }
      inputs.update_twin["etag"] = args.etag;
      if (args.tags_text) {
        auto tags = jsonObjectArgument(*args.tags_text, "--tags");
        if (!tags) return tags.status();
        inputs.update_twin["tags"] = std::move(*tags);
      }
      if (args.desired_text) {
        auto desired = jsonObjectArgument(*args.desired_text, "--desired");
        if (!desired) return desired.status();
        inputs.update_twin["properties"] = json::object{{"desired", std::move(*desired)}};
      }
      auto schedule = scheduleFromArguments(args, inputs.generated_job_id);
      if (!schedule) return schedule.status();
      inputs.schedule = std::move(*schedule);
      auto request = JobClient::buildScheduleTwinRequest(inputs.schedule, inputs.update_twin);
      if (!request) return request.status();
      break;
    }
    case Command::JobList: {
      auto type = enumArgument(args.job_type_filter, &iothub::service::parseJobType, "--type");
      if (!type) return type.status();
      auto status =
          enumArgument(args.job_status_filter, &iothub::service::parseJobStatus, "--status");
      if (!status) return status.status();
      inputs.job_type = *type;
      inputs.job_status = *status;
      break;
    }
    case Command::JobDevices: {
      auto status =
          enumArgument(args.job_status_filter, &iothub::service::parseDeviceJobStatus, "--status");
      if (!status) return status.status();
      inputs.device_job_status = *status;
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

int printJob(const Arguments& args, const iothub::Result<Job>& job) {
  if (!job) return fail(job.status());
  if (args.json) {
    printJson(job->raw);
  } else {
    std::cout << iothub::ctl::formatJob(*job);
  }
  return 0;
}

int runQuery(const Arguments& args, const std::shared_ptr<HttpTransport>& transport) {
  iothub::service::PagedQuery query = QueryClient(transport).createQuery(args.sql, args.page_size);
  json::array rows;
  auto item_type = iothub::service::QueryItemType::Unknown;
  while (query.hasMoreResults() &&
         (!args.max_pages || static_cast<std::size_t>(query.pagesFetched()) < *args.max_pages)) {
    auto page = query.next();
    if (!page) return fail(page.status());
    if (item_type == iothub::service::QueryItemType::Unknown) item_type = page->item_type;
    for (json::value& row : page->rows) rows.push_back(std::move(row));
  }
  if (args.json) {
    printJson(rows);
  } else {
    std::cout << iothub::ctl::formatQueryTable(rows, item_type);
  }
  if (query.hasMoreResults()) {
    std::cerr << "iothubctl: stopped after " << query.pagesFetched()
              << " pages; more results remain\n";
  }
  return 0;
}

// Follows the job's live event stream (JobClient::watchJob; a hub without it is polled
// every --interval-ms) until it is terminal. On a terminal a progress line is redrawn in
// place; otherwise one line per update (with --json, the JobResponse as one JSON line).
int watchJob(const Arguments& args, JobClient& jobs) {
  const bool redraw = !args.json && ::isatty(STDOUT_FILENO) == 1;
  iothub::ctl::JobRateEstimator estimator;
  bool drew = false;
  iothub::service::WatchOptions options;
  options.poll_interval = std::chrono::milliseconds{args.interval_ms};
  auto job = jobs.watchJob(
      args.job_id,
      [&](const Job& update) {
        const iothub::service::DeviceJobStatistics& stats = update.statistics;
        std::int64_t finished = iothub::ctl::finishedDevices(stats);
        estimator.add(std::chrono::steady_clock::now(), finished);
        if (args.json) {
          printJson(update.raw);
          std::cout << std::flush;
          return true;
        }
        std::string line = iothub::ctl::formatJobProgress(
            update, estimator.rate(), estimator.eta(stats.device_count - finished));
        if (redraw) {
          std::cout << '\r' << line << "\033[K" << std::flush;
          drew = true;
        } else {
          std::cout << line << std::endl;
        }
        return true;
      },
      options);
  if (drew) std::cout << '\n';
  if (!job) return fail(job.status());
  if (!job->failure_reason.empty()) {
    std::cerr << "iothubctl: job " << job->job_id << " " << iothub::service::toString(job->status)
              << ": " << job->failure_reason << '\n';
  }
  return job->status == iothub::service::JobStatus::Completed ? 0 : kExitServiceError;
}

// The consumer groups of the Event Hubs-compatible endpoint: iothub's own REST routes
// (docs/telemetry.md §9), which the service SDK has no client for.
std::string consumerGroupPath(const std::string& name) {
  return "/eventHubEndpoint/consumerGroups" +
         (name.empty() ? "" : "/" + iothub::urlEncodeStrict(name));
}

int consumerGroups(Command command, const Arguments& args, HttpTransport& transport) {
  iothub::service::HttpRequest request;
  request.path =
      consumerGroupPath(command == Command::ConsumerGroupList ? "" : args.consumer_group);
  if (command == Command::ConsumerGroupCreate) request.method = "PUT";
  if (command == Command::ConsumerGroupDelete) request.method = "DELETE";
  auto body = transport.sendJson(request);
  if (!body) return fail(body.status());
  if (command == Command::ConsumerGroupDelete) {
    if (!args.json) std::cout << "Deleted consumer group " << args.consumer_group << '\n';
    return 0;
  }
  if (args.json) {
    printJson(*body);
    return 0;
  }
  if (command == Command::ConsumerGroupList && body->is_array()) {
    std::cout << iothub::ctl::formatConsumerGroupTable(body->get_array());
  } else {
    std::cout << iothub::ctl::formatConsumerGroupTable(json::array{*body});
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
      return printTwin(
          args, TwinClient(transport).update(args.device_id, inputs.twin_document, args.etag));
    case Command::TwinReplace:
      return printTwin(
          args, TwinClient(transport).replace(args.device_id, inputs.twin_document, args.etag));
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
    case Command::Query:
      return runQuery(args, transport);
    case Command::JobScheduleMethod:
    case Command::JobScheduleTwin: {
      if (args.dry_run) {
        JobClient jobs(transport);
        auto result = command == Command::JobScheduleMethod
                          ? jobs.dryRun(inputs.schedule, inputs.method)
                          : jobs.dryRun(inputs.schedule, inputs.update_twin);
        if (!result) return fail(result.status());
        if (args.json) {
          printJson(result->raw);
        } else {
          std::cout << iothub::ctl::formatDryRun(*result);
        }
        return 0;
      }
      if (inputs.generated_job_id) {
        (args.json ? std::cerr : std::cout) << "Job id: " << inputs.schedule.job_id << '\n';
      }
      JobClient jobs(transport);
      return printJob(args, command == Command::JobScheduleMethod
                                ? jobs.scheduleDeviceMethod(inputs.schedule, inputs.method)
                                : jobs.scheduleTwinUpdate(inputs.schedule, inputs.update_twin));
    }
    case Command::JobGet:
      return printJob(args, JobClient(transport).getJob(args.job_id));
    case Command::JobCancel:
      return printJob(args, JobClient(transport).cancelJob(args.job_id));
    case Command::JobList: {
      auto jobs =
          JobClient(transport).listAllJobs(inputs.job_type, inputs.job_status, args.page_size);
      if (!jobs) return fail(jobs.status());
      if (args.json) {
        json::array raw;
        for (const Job& job : *jobs) raw.push_back(job.raw);
        printJson(raw);
      } else {
        std::cout << iothub::ctl::formatJobTable(*jobs);
      }
      return 0;
    }
    case Command::JobDevices: {
      auto rows =
          JobClient(transport).deviceJobs(args.job_id, inputs.device_job_status, args.page_size);
      if (!rows) return fail(rows.status());
      if (args.json) {
        json::array raw;
        for (const auto& row : *rows) raw.push_back(row.raw);
        printJson(raw);
      } else {
        std::cout << iothub::ctl::formatDeviceJobTable(*rows);
      }
      return 0;
    }
    case Command::JobWatch: {
      JobClient jobs(transport);
      return watchJob(args, jobs);
    }
    case Command::ConsumerGroupList:
    case Command::ConsumerGroupCreate:
    case Command::ConsumerGroupDelete:
      return consumerGroups(command, args, *transport);
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

  CLI::App app{
      "Manage devices, twins, direct methods, queries, jobs and consumer groups of an "
      "Azure-IoT-Hub-compatible hub.",
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
  CLI::Option* primary = create->add_option("--primary-key", args.primary_key,
                                            "Base64 primary key (default: generated)");
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
    subcommand->add_option("--etag", args.etag,
                           "Only write if the twin's etag matches (default: *)");
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

  auto page_size_check = CLI::Range(iothub::service::kMinPageSize, iothub::service::kMaxPageSize);
  CLI::App* query = app.add_subcommand(
      "query", "Run an IoT Hub query (SELECT … FROM devices | devices.modules | devices.jobs)");
  query->add_option("sql", args.sql, "The query text")->required();
  query->add_option("--page-size", args.page_size, "Rows per request (1..1000; default: the hub's)")
      ->check(page_size_check);
  query->add_option("--max-pages", args.max_pages, "Stop after this many pages")
      ->check(CLI::PositiveNumber);
  query->callback(select(Command::Query));

  CLI::App* job = app.add_subcommand("job", "Schedule, inspect and cancel jobs");
  job->require_subcommand(1);

  auto add_schedule_options = [&args](CLI::App* subcommand) {
    subcommand->add_option("--job-id", args.job_id,
                           "Job id: letters, digits and '-' (default: a generated UUID)");
    CLI::Option* condition = subcommand->add_option(
        "--query", args.query_condition,
        "Which devices: a query condition without WHERE, e.g. \"tags.floor = 3\", or '*'");
    CLI::Option* target =
        subcommand->add_option("--device", args.target_device, "Only this device");
    condition->excludes(target);
    target->excludes(condition);
    CLI::Option* rerun = subcommand->add_option(
        "--rerun-of", args.rerun_of,
        "Instead of --query/--device: the devices of this earlier job whose rows have a --status");
    rerun->excludes(condition)->excludes(target);
    subcommand
        ->add_option("--status", args.rerun_statuses_text,
                     "With --rerun-of: comma-separated device statuses among pending, running, "
                     "completed, failed, canceled (default: failed,canceled)")
        ->needs(rerun);
    CLI::Option* start_in =
        subcommand
            ->add_option("--start-in", args.start_in_seconds, "Start this many seconds from now")
            ->check(CLI::NonNegativeNumber);
    CLI::Option* start_time = subcommand->add_option("--start-time", args.start_time_text,
                                                     "Start at this ISO-8601 time (default: now)");
    start_in->excludes(start_time);
    start_time->excludes(start_in);
    subcommand
        ->add_option("--max-execution-time", args.max_execution_seconds,
                     "Seconds the job may run before remaining devices fail")
        ->check(CLI::PositiveNumber);
    subcommand
        ->add_option("--rate", args.rate,
                     "Device operations per second for this job (iothub extension)")
        ->check(CLI::PositiveNumber);
    subcommand
        ->add_option("--priority", args.priority,
                     "0..9: among waiting jobs the highest starts first (default 0)")
        ->check(CLI::Range(0, 9));
    subcommand->add_option("--rollout-max-per-minute", args.rollout.max_per_minute,
                           "Rollout: at most this many device operations start per minute");
    subcommand->add_option("--rollout-base-per-minute", args.rollout.base_per_minute,
                           "Exponential rollout: the starting rate per minute");
    subcommand->add_option("--rollout-factor", args.rollout.factor,
                           "Exponential rollout: the factor (> 1) the rate grows by");
    subcommand->add_option("--rollout-every", args.rollout.every,
                           "Exponential rollout: grow the rate each time this many more devices "
                           "succeeded");
    subcommand
        ->add_option("--abort", args.abort_flags,
                     "TYPE:PERCENT:MIN (repeatable): abort the job once PERCENT % of at least MIN "
                     "executed devices failed so; TYPE failed, timedOut or any")
        ->expected(1)
        ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
    subcommand->add_flag("--continuous", args.continuous, "A continuous job (docs/jobs.md)");
    subcommand->add_flag("--dry-run", args.dry_run,
                         "Only count the devices the job would target now and show the first "
                         "ones; create nothing");
  };

  CLI::App* schedule_method = job->add_subcommand(
      "schedule-method", "Schedule a direct method call on every device a query selects");
  add_schedule_options(schedule_method);
  schedule_method->add_option("--method", args.method_name, "Method name")->required();
  schedule_method->add_option("--payload", args.payload_text,
                              "Request payload as JSON (default: null)");
  schedule_method->add_option("--response-timeout", args.response_timeout_seconds,
                              "Seconds the hub waits for each device's answer (default: 30)");
  schedule_method->add_option("--connect-timeout", args.connect_timeout_seconds,
                              "Seconds the hub waits for each device to connect (default: 0)");
  schedule_method->add_flag("--fail-on-device-status", args.fail_on_device_status,
                            "A device answering with a status outside 200-299 fails");
  schedule_method->add_option(
      "--retry", args.retry_text,
      "ATTEMPTS:BACKOFF_SECONDS[:CODE,CODE]: try a failed device again, ATTEMPTS in all; CODEs "
      "among DeviceNotOnline, GatewayTimeout, DeviceMethodFailed (default: the first two)");
  schedule_method
      ->add_option("--wait-offline", args.wait_offline_seconds,
                   "Seconds the job waits for an offline device to connect")
      ->check(CLI::PositiveNumber);
  schedule_method->callback(select(Command::JobScheduleMethod));

  CLI::App* schedule_twin = job->add_subcommand(
      "schedule-twin", "Schedule a twin update (tags and/or desired properties) on devices");
  add_schedule_options(schedule_twin);
  schedule_twin->add_option("--desired", args.desired_text, "Desired properties patch as JSON");
  schedule_twin->add_option("--tags", args.tags_text, "Tags patch as JSON");
  schedule_twin->add_option("--etag", args.etag, "Twin etag condition (default: *)");
  schedule_twin
      ->add_option("--converge", args.converge_seconds,
                   "Convergence timeout in seconds (with --desired; docs/jobs.md)")
      ->check(CLI::PositiveNumber);
  schedule_twin->callback(select(Command::JobScheduleTwin));

  CLI::App* job_get = job->add_subcommand("get", "Show a job");
  job_get->add_option("id", args.job_id, "Job id")->required();
  job_get->callback(select(Command::JobGet));

  CLI::App* job_cancel = job->add_subcommand("cancel", "Cancel a job");
  job_cancel->add_option("id", args.job_id, "Job id")->required();
  job_cancel->callback(select(Command::JobCancel));

  CLI::App* job_list = job->add_subcommand("list", "List jobs");
  job_list->add_option("--type", args.job_type_filter, "scheduleDeviceMethod or scheduleUpdateTwin")
      ->check(CLI::IsMember({"scheduleDeviceMethod", "scheduleUpdateTwin"}));
  job_list
      ->add_option("--status", args.job_status_filter,
                   "queued, scheduled, running, completed, failed or cancelled")
      ->check(
          CLI::IsMember({"queued", "scheduled", "running", "completed", "failed", "cancelled"}));
  job_list->add_option("--page-size", args.page_size, "Jobs per request (1..1000)")
      ->check(page_size_check);
  job_list->callback(select(Command::JobList));

  CLI::App* job_devices = job->add_subcommand("devices", "Show each device's part in a job");
  job_devices->add_option("id", args.job_id, "Job id")->required();
  job_devices
      ->add_option("--status", args.job_status_filter,
                   "pending, scheduled, running, completed, failed or canceled")
      ->check(
          CLI::IsMember({"pending", "scheduled", "running", "completed", "failed", "canceled"}));
  job_devices->add_option("--page-size", args.page_size, "Rows per request (1..1000)")
      ->check(page_size_check);
  job_devices->callback(select(Command::JobDevices));

  CLI::App* job_watch = job->add_subcommand(
      "watch", "Follow a job's live progress until it ends; exit 0 if it completed, 1 otherwise");
  job_watch->add_option("id", args.job_id, "Job id")->required();
  job_watch
      ->add_option("--interval-ms", args.interval_ms,
                   "Milliseconds between polls of a hub without live job events (default: 1000)")
      ->check(CLI::Range(10, 3600000));
  job_watch->callback(select(Command::JobWatch));

  CLI::App* consumer_group = app.add_subcommand(
      "consumer-group", "Manage the consumer groups of the Event Hubs-compatible endpoint");
  consumer_group->require_subcommand(1);
  consumer_group->add_subcommand("list", "List the consumer groups, $Default included")
      ->callback(select(Command::ConsumerGroupList));
  CLI::App* group_create = consumer_group->add_subcommand(
      "create", "Create a consumer group (succeeds if it exists, in any case)");
  group_create
      ->add_option("name", args.consumer_group,
                   "1-50 letters, digits, '.', '-', '_'; a letter or digit at both ends")
      ->required();
  group_create->callback(select(Command::ConsumerGroupCreate));
  CLI::App* group_delete =
      consumer_group->add_subcommand("delete", "Delete a consumer group (not $Default)");
  group_delete->add_option("name", args.consumer_group, "Consumer group name")->required();
  group_delete->callback(select(Command::ConsumerGroupDelete));

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
    return usageError(
        "no connection string: pass --connection-string or set IOTHUB_CONNECTION_STRING");
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
