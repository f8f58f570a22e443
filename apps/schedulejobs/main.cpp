// schedulejobs: the service app of Azure's "schedule jobs" tutorial, over the C++ service SDK.
// Schedules a direct-method job (lockDoor) and a twin-update job (desired building/floor)
// on the devices a query selects, then polls both until they end.
// Exit codes: 0 both jobs completed, 1 a job failed or was cancelled, the hub refused a call
// or --timeout passed, 2 usage or configuration error, 3 the hub could not be reached,
// 130 interrupted (SIGINT/SIGTERM; the jobs keep running on the hub).

#include <pthread.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <iostream>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "iothub/service/job_client.hpp"
#include "iothub/service/query_client.hpp"

namespace {

using iothub::Status;
using iothub::service::Job;
using iothub::service::JobClient;
using iothub::service::JobSchedule;
using iothub::service::JobStatus;
using iothub::service::MethodRequest;
namespace json = iothub::json;

constexpr int kExitJobsDidNotComplete = 1;
constexpr int kExitUsageError = 2;
constexpr int kExitTransportError = 3;
constexpr int kExitInterrupted = 130;

int fail(const std::string& what, const Status& status) {
  std::cerr << "schedulejobs: " << what << ": " << iothub::errorInfo(status.code()).name << ": "
            << status.message() << '\n';
  return iothub::service::isTransportFailure(status) ? kExitTransportError
                                                     : kExitJobsDidNotComplete;
}

// SIGINT/SIGTERM arrive at a dedicated thread through sigwait(); waits for the next poll
// wake up at once when one does. SIGUSR1 only ends that thread at exit.
class StopSignal {
 public:
  StopSignal() {
    sigemptyset(&signals_);
    sigaddset(&signals_, SIGINT);
    sigaddset(&signals_, SIGTERM);
    sigaddset(&signals_, SIGUSR1);
    // Blocked before any other thread exists, so every thread inherits the mask.
    pthread_sigmask(SIG_BLOCK, &signals_, nullptr);
    thread_ = std::thread([this] {
      int signal_number = 0;
      sigwait(&signals_, &signal_number);
      std::lock_guard lock(mutex_);
      stopped_ = signal_number != SIGUSR1;
      cv_.notify_all();
    });
  }
  ~StopSignal() {
    pthread_kill(thread_.native_handle(), SIGUSR1);
    thread_.join();
  }
  StopSignal(const StopSignal&) = delete;
  StopSignal& operator=(const StopSignal&) = delete;

  // Waits until `deadline` or a stop signal; true when stopped.
  bool waitUntil(std::chrono::steady_clock::time_point deadline) {
    std::unique_lock lock(mutex_);
    cv_.wait_until(lock, deadline, [this] { return stopped_; });
    return stopped_;
  }
  bool stopped() {
    std::lock_guard lock(mutex_);
    return stopped_;
  }

 private:
  sigset_t signals_{};
  std::thread thread_;
  std::mutex mutex_;
  std::condition_variable cv_;
  bool stopped_ = false;
};

struct Options {
  std::string connection_string;
  iothub::service::ServiceClientOptions client;
  std::optional<std::string> device_id;
  std::optional<std::string> query_condition;
  std::int64_t start_in_seconds = 20;
  std::int64_t poll_interval_ms = 1000;
  std::optional<std::int64_t> timeout_seconds;
};

struct TrackedJob {
  std::string job_id;
  std::optional<Job> last;  // the last answer of getJob, once terminal
};

std::string outcome(const Job& job) {
  const auto& stats = job.statistics;
  std::string text = "(" + std::to_string(stats.succeeded_count) + " succeeded, " +
                     std::to_string(stats.failed_count) + " failed of " +
                     std::to_string(stats.device_count) + " devices)";
  if (!job.failure_reason.empty()) text += ": " + job.failure_reason;
  return text;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "Schedule the tutorial's jobs: call lockDoor and set desired building/floor on devices, "
      "then wait for both jobs",
      "schedulejobs"};
  Options options;
  app.add_option("--connection-string", options.connection_string,
                 "Service connection string (HostName=…;SharedAccessKeyName=…;SharedAccessKey=…)")
      ->envname("IOTHUB_CONNECTION_STRING")
      ->required();
  app.add_option("--ca", options.client.ca_file,
                 "PEM file of the CA that signs the hub's certificate")
      ->envname("IOTHUB_CA_FILE");
  app.add_option("--endpoint", options.client.endpoint,
                 "Where to connect instead of https://<HostName>:443, e.g. https://127.0.0.1:8443")
      ->envname("IOTHUB_ENDPOINT");
  CLI::Option* device =
      app.add_option("--device", options.device_id, "Run the jobs on this device");
  CLI::Option* query = app.add_option(
      "--query", options.query_condition,
      "Run the jobs on the devices this condition selects, e.g. \"tags.floor = 3\" or '*'");
  device->excludes(query);
  query->excludes(device);
  app.add_option("--start-in", options.start_in_seconds,
                 "Seconds from now until both jobs start (default: 20)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--poll-interval-ms", options.poll_interval_ms,
                 "Milliseconds between job status checks (default: 1000)")
      ->check(CLI::Range(10, 3600000));
  app.add_option("--timeout", options.timeout_seconds,
                 "Give up after this many seconds of waiting (default: wait until both end)")
      ->check(CLI::PositiveNumber);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help
    std::cerr << "schedulejobs: " << e.what() << " (see schedulejobs --help)\n";
    return kExitUsageError;
  }
  std::string condition;
  if (options.device_id) {
    condition = "deviceId = " + iothub::service::QueryClient::quoteString(*options.device_id);
  } else if (options.query_condition) {
    condition = *options.query_condition;
  } else {
    std::cerr << "schedulejobs: say which devices: --device <id> or --query '<condition>'\n";
    return kExitUsageError;
  }

  StopSignal stop;
  auto client = JobClient::fromConnectionString(options.connection_string, options.client);
  if (!client) {
    std::cerr << "schedulejobs: " << client.status().message() << '\n';
    return kExitUsageError;
  }
  JobClient& jobs = *client;

  const auto start_time =
      std::chrono::system_clock::now() + std::chrono::seconds{options.start_in_seconds};
  JobSchedule method_job;
  method_job.job_id = "method-" + JobClient::newJobId();
  method_job.query_condition = condition;
  method_job.start_time = start_time;
  method_job.max_execution_time = std::chrono::seconds{3600};
  MethodRequest lock_door{"lockDoor", json::object{{"lockTime", "10m"}}, std::chrono::seconds{30}};
  auto scheduled = jobs.scheduleDeviceMethod(method_job, lock_door);
  if (!scheduled) return fail("could not schedule the direct method job", scheduled.status());
  std::cout << "Schedule direct method job: " << method_job.job_id << std::endl;

  JobSchedule twin_job;
  twin_job.job_id = "twin-" + JobClient::newJobId();
  twin_job.query_condition = condition;
  twin_job.start_time = start_time;
  twin_job.max_execution_time = std::chrono::seconds{3600};
  json::object update_twin{
      {"etag", "*"},
      {"properties", json::object{{"desired", json::object{{"building", 43}, {"floor", 3}}}}}};
  scheduled = jobs.scheduleTwinUpdate(twin_job, update_twin);
  if (!scheduled) return fail("could not schedule the twin update job", scheduled.status());
  std::cout << "Schedule twin update job: " << twin_job.job_id << std::endl;
  std::cout << "Both jobs start at " << JobClient::formatStartTime(start_time) << std::endl;

  std::vector<TrackedJob> tracked = {{method_job.job_id, std::nullopt},
                                     {twin_job.job_id, std::nullopt}};
  const auto interval = std::chrono::milliseconds{options.poll_interval_ms};
  std::optional<std::chrono::steady_clock::time_point> give_up;
  if (options.timeout_seconds) {
    give_up = std::chrono::steady_clock::now() + std::chrono::seconds{*options.timeout_seconds};
  }
  auto next_poll = std::chrono::steady_clock::now();
  while (true) {
    bool all_done = true;
    for (TrackedJob& t : tracked) {
      if (t.last) continue;
      if (stop.stopped()) break;
      auto job = jobs.getJob(t.job_id);
      if (!job) return fail("could not get job " + t.job_id, job.status());
      switch (job->status) {
        case JobStatus::Completed:
          std::cout << "...job " << t.job_id << " complete. " << outcome(*job) << std::endl;
          break;
        case JobStatus::Failed:
        case JobStatus::Cancelled:
          std::cout << "...job " << t.job_id << " " << iothub::service::toString(job->status)
                    << ". " << outcome(*job) << std::endl;
          break;
        default:
          std::cout << "...job " << t.job_id << " still running." << std::endl;
          all_done = false;
          continue;
      }
      t.last = std::move(*job);
    }
    if (stop.stopped()) break;
    if (all_done) {
      bool completed = true;
      for (const TrackedJob& t : tracked)
        completed = completed && t.last->status == JobStatus::Completed;
      return completed ? 0 : kExitJobsDidNotComplete;
    }
    next_poll += interval;
    if (stop.waitUntil(give_up ? std::min(next_poll, *give_up) : next_poll)) break;
    if (give_up && std::chrono::steady_clock::now() >= *give_up) {
      std::cerr << "schedulejobs: gave up after " << *options.timeout_seconds
                << " s; the jobs keep running on the hub\n";
      return kExitJobsDidNotComplete;
    }
  }
  std::cout << "Interrupted; the jobs keep running on the hub." << std::endl;
  return kExitInterrupted;
}
