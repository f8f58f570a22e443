// soak_driver: the service side of the soak run (bench/soak/run, docs/benchmarks.md "Soak").
// While fleetsim keeps the devices connected (and drops and reconnects some every minute),
// this program, through the C++ service SDK over REST:
//   - schedules a method job (lockDoor, waiting for offline devices) and a twin job (a new
//     desired property) over every device, every --job-every;
//   - reads and writes twins and devices at --rest-rate calls per second;
//   - samples the hub's RSS and open descriptors every --sample-every;
// then waits for every job to end and checks that each one completed with exact statistics
// (the statistics equal the per-device rows counted by status) and that memory stayed flat
// after warm-up. Prints one JSON report on stdout; exits 1 when anything unexpected happened.

#include <signal.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <iostream>
#include <mutex>
#include <random>
#include <thread>

#include "apps/fleetsim/fleet_options.hpp"
#include "apps/fleetsim/report.hpp"
#include "auth/connection_string.hpp"
#include "bench/soak/soak_check.hpp"
#include "common/time_format.hpp"
#include "iothub/service/http_transport.hpp"
#include "iothub/service/job_client.hpp"
#include "iothub/service/query_client.hpp"
#include "iothub/service/registry_client.hpp"
#include "iothub/service/twin_client.hpp"

namespace {

using namespace iothub;
using Clock = std::chrono::steady_clock;

std::atomic<bool> g_stop{false};
extern "C" void onSignal(int) { g_stop.store(true); }

struct Options {
  std::string connection_string;
  std::string endpoint;  // http://127.0.0.1:PORT
  int hub_pid = 0;
  std::int64_t devices = 0;
  std::chrono::milliseconds duration{};
  std::chrono::milliseconds job_every{};
  std::chrono::milliseconds warmup{};
  std::chrono::milliseconds sample_every{};
  std::chrono::seconds job_timeout{};
  double rest_rate = 20;
  double rss_tolerance = 0.10;
  std::string device_prefix = "fleet-";
};

double secondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

void logLine(const std::string& text) {
  static std::mutex m;
  std::lock_guard lock(m);
  std::cerr << formatTimestamp(std::chrono::system_clock::now()) << " soak: " << text << std::endl;
}

Result<std::shared_ptr<service::HttpTransport>> transportFor(const Options& o) {
  auto cs = auth::ServiceConnectionString::parse(o.connection_string);
  if (!cs) return cs.status();
  service::ServiceClientOptions so;
  so.endpoint = o.endpoint;
  so.timeout = std::chrono::seconds(60);
  auto t = service::HttpTransport::create(*cs, so);
  if (!t) return t.status();
  return std::shared_ptr<service::HttpTransport>(std::move(*t));
}

// Errors of one kind of call, counted, with the first few messages kept.
class ErrorLog {
 public:
  void add(const std::string& kind, const std::string& message) {
    std::lock_guard lock(mutex_);
    ++counts_[kind];
    if (samples_.size() < 20) samples_.push_back(kind + ": " + message);
  }
  std::int64_t total() const {
    std::lock_guard lock(mutex_);
    std::int64_t n = 0;
    for (const auto& [kind, count] : counts_) n += count;
    return n;
  }
  json::object toJson() const {
    std::lock_guard lock(mutex_);
    json::object o, counts;
    for (const auto& [kind, count] : counts_) counts[kind] = count;
    json::array samples;
    for (const auto& s : samples_) samples.emplace_back(s);
    o["counts"] = std::move(counts);
    o["first"] = std::move(samples);
    return o;
  }

 private:
  mutable std::mutex mutex_;
  std::map<std::string, std::int64_t> counts_;
  std::vector<std::string> samples_;
};

// REST reads and writes on random devices, paced at `rate` per second: GET twin, PATCH
// tags (checking the write is visible in the answer), GET device, and a count query.
struct RestLoad {
  std::atomic<std::int64_t> ok{0};
  ErrorLog errors;

  void run(const Options& o) {
    auto transport = transportFor(o);
    if (!transport) {
      errors.add("setup", transport.status().message());
      return;
    }
    service::TwinClient twins(*transport);
    service::RegistryClient registry(*transport);
    service::QueryClient query(*transport);
    std::mt19937_64 rng(42);
    std::uniform_int_distribution<std::int64_t> pick(0, o.devices - 1);
    const auto period = std::chrono::duration_cast<Clock::duration>(
        std::chrono::duration<double>(1.0 / o.rest_rate));
    auto next = Clock::now();
    std::int64_t k = 0;
    while (!g_stop.load()) {
      next += period;
      std::this_thread::sleep_until(next);
      const std::string id =
          fleetsim::deviceId(o.device_prefix, static_cast<std::size_t>(pick(rng)));
      switch (k++ % 4) {
        case 0: {
          auto twin = twins.get(id);
          if (!twin)
            errors.add("get twin", twin.status().message());
          else if (twin->device_id != id)
            errors.add("get twin", "answer for " + twin->device_id);
          else
            ok.fetch_add(1);
          break;
        }
        case 1: {
          json::object patch{{"tags", json::object{{"soak", json::object{{"write", k}}}}}};
          auto twin = twins.update(id, patch);
          if (!twin)
            errors.add("patch tags", twin.status().message());
          else if (json::value_to<std::int64_t>(twin->tags.at("soak").at("write")) != k)
            errors.add("patch tags", "the answer does not carry the write");
          else
            ok.fetch_add(1);
          break;
        }
        case 2: {
          auto device = registry.get(id);
          if (!device)
            errors.add("get device", device.status().message());
          else
            ok.fetch_add(1);
          break;
        }
        default: {
          auto page = query.query("SELECT COUNT() AS n FROM devices WHERE tags.soak.write > 0");
          if (!page)
            errors.add("query", page.status().message());
          else
            ok.fetch_add(1);
          break;
        }
      }
      // Falling far behind (a stalled hub) must not turn into a burst afterwards.
      if (Clock::now() - next > std::chrono::seconds(5)) next = Clock::now();
    }
  }
};

// Reads the final state of a finished job: statistics, rows by status, failure codes.
Result<soak::JobOutcome> readOutcome(service::JobClient& jobs, service::QueryClient& query,
                                     const service::Job& job) {
  soak::JobOutcome out;
  out.job_id = job.job_id;
  out.type = std::string(service::toString(job.type));
  out.status = std::string(service::toString(job.status));
  out.device_count = job.statistics.device_count;
  out.succeeded = job.statistics.succeeded_count;
  out.failed = job.statistics.failed_count;
  out.running = job.statistics.running_count;
  out.pending = job.statistics.pending_count;
  out.canceled = job.statistics.canceled_count;
  const std::string quoted = service::QueryClient::quoteString(job.job_id);
  auto groups = query.queryAll(
      "SELECT devices.jobs.status, COUNT() AS n FROM devices.jobs WHERE devices.jobs.jobId = " +
      quoted + " GROUP BY devices.jobs.status");
  if (!groups) return groups.status();
  for (const auto& row : *groups) {
    const auto& o = row.as_object();
    out.rows_by_status[json::value_to<std::string>(o.at("status"))] =
        json::value_to<std::int64_t>(o.at("n"));
  }
  if (out.failed > 0) {
    auto failed = jobs.deviceJobs(job.job_id, service::DeviceJobStatus::Failed);
    if (!failed) return failed.status();
    for (const auto& row : *failed) ++out.failure_codes[row.error ? row.error->code : "(none)"];
  }
  return out;
}

int run(const Options& o) {
  auto transport = transportFor(o);
  if (!transport) {
    std::cerr << "soak_driver: " << transport.status().message() << "\n";
    return 2;
  }
  service::JobClient jobs(*transport);
  service::QueryClient query(*transport);
  ErrorLog job_errors;
  std::vector<std::string> problems;

  std::vector<soak::RssSample> rss;
  json::array fd_samples;
  std::mutex samples_mutex;
  const auto start = Clock::now();
  std::thread sampler([&] {
    while (!g_stop.load()) {
      auto s = fleetsim::sampleProcess(o.hub_pid);
      if (!s) break;
      std::error_code ec;
      std::int64_t fds = 0;
      for (auto it = std::filesystem::directory_iterator(
               "/proc/" + std::to_string(o.hub_pid) + "/fd", ec);
           !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
        ++fds;
      }
      {
        std::lock_guard lock(samples_mutex);
        rss.push_back({secondsSince(start), s->rss_kb});
        fd_samples.emplace_back(fds);
      }
      for (auto wake = Clock::now() + o.sample_every; !g_stop.load() && Clock::now() < wake;)
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
  });
  RestLoad rest;
  std::thread rest_thread([&] { rest.run(o); });

  // Scheduling: a method job and a twin job at every tick, each followed until it ends.
  struct Pending {
    service::Job job;
    Clock::time_point scheduled;
  };
  std::vector<Pending> pending;
  std::vector<soak::JobOutcome> finished;
  std::int64_t round = 0;
  auto next_tick = start;
  const auto end = start + o.duration;
  auto follow = [&] {
    for (auto it = pending.begin(); it != pending.end();) {
      auto job = jobs.getJob(it->job.job_id);
      if (!job) {
        job_errors.add("get job", job.status().message());
        ++it;
        continue;
      }
      if (!service::isTerminal(job->status)) {
        if (Clock::now() - it->scheduled > o.job_timeout) {
          problems.push_back(job->job_id + ": not finished after " +
                             std::to_string(o.job_timeout.count()) + " s");
          it = pending.erase(it);
        } else {
          ++it;
        }
        continue;
      }
      auto outcome = readOutcome(jobs, query, *job);
      if (!outcome) {
        job_errors.add("read outcome", outcome.status().message());
        ++it;
        continue;
      }
      logLine(job->job_id + " " + outcome->status + " succeeded " +
              std::to_string(outcome->succeeded) + " failed " + std::to_string(outcome->failed) +
              " after " +
              std::to_string(static_cast<int>(
                  std::chrono::duration<double>(Clock::now() - it->scheduled).count())) +
              " s");
      finished.push_back(std::move(*outcome));
      it = pending.erase(it);
    }
  };
  while (!g_stop.load() && Clock::now() < end) {
    if (Clock::now() >= next_tick) {
      next_tick += o.job_every;
      ++round;
      service::JobSchedule schedule;
      schedule.query_condition = "*";
      schedule.job_id = "soak-method-" + std::to_string(round);
      service::MethodRequest method("lockDoor", json::object{{"lockTime", "10m"}},
                                    std::chrono::seconds(30), std::chrono::seconds(30));
      auto m = jobs.scheduleDeviceMethod(schedule, method);
      if (m)
        pending.push_back({*m, Clock::now()});
      else
        job_errors.add("schedule method job", m.status().message());
      schedule.job_id = "soak-twin-" + std::to_string(round);
      json::object update{
          {"properties", json::object{{"desired", json::object{{"soakRound", round}}}}}};
      auto t = jobs.scheduleTwinUpdate(schedule, update);
      if (t)
        pending.push_back({*t, Clock::now()});
      else
        job_errors.add("schedule twin job", t.status().message());
    }
    follow();
    std::this_thread::sleep_for(std::chrono::seconds(2));
  }
  const double load_seconds = secondsSince(start);
  logLine("load phase over after " + std::to_string(static_cast<int>(load_seconds)) + " s; " +
          std::to_string(pending.size()) + " jobs still running");
  g_stop.store(true);
  rest_thread.join();
  sampler.join();
  // The jobs scheduled last finish after the load phase.
  const auto drain_deadline = Clock::now() + o.job_timeout;
  while (!pending.empty() && Clock::now() < drain_deadline) {
    follow();
    if (!pending.empty()) std::this_thread::sleep_for(std::chrono::seconds(2));
  }
  for (const auto& p : pending) problems.push_back(p.job.job_id + ": not finished at the end");

  // Verdicts.
  json::array job_reports;
  std::map<std::string, std::int64_t> expected_failures;
  for (const auto& job : finished) {
    // A method call in flight when the storm drops its device times out (GatewayTimeout);
    // a device still offline after connectTimeoutInSeconds is DeviceNotOnline. Both are
    // what a real reconnecting device causes; they are counted and reported, not hidden.
    const std::vector<std::string> allowed =
        job.type == "scheduleDeviceMethod"
            ? std::vector<std::string>{"GatewayTimeout", "DeviceNotOnline"}
            : std::vector<std::string>{};
    for (auto& p : soak::checkJob(job, o.devices, allowed)) problems.push_back(std::move(p));
    for (const auto& [code, count] : job.failure_codes) expected_failures[code] += count;
    job_reports.push_back(soak::toJson(job));
  }
  if (rest.errors.total() > 0)
    problems.push_back(std::to_string(rest.errors.total()) + " REST calls failed");
  if (job_errors.total() > 0)
    problems.push_back(std::to_string(job_errors.total()) + " job API calls failed");
  if (finished.size() < 2) problems.push_back("fewer than two jobs ran");
  const auto verdict =
      soak::checkRssFlat(rss, std::chrono::duration<double>(o.warmup).count(), o.rss_tolerance);
  if (!verdict.ok) problems.push_back("memory: " + verdict.why);

  json::object report;
  report["devices"] = o.devices;
  report["load_seconds"] = static_cast<std::int64_t>(std::round(load_seconds));
  report["rounds"] = round;
  report["jobs_finished"] = finished.size();
  std::int64_t succeeded_ops = 0;
  for (const auto& job : finished) succeeded_ops += job.succeeded;
  report["job_device_operations_succeeded"] = succeeded_ops;
  json::object failures;
  for (const auto& [code, count] : expected_failures) failures[code] = count;
  report["job_device_failures_from_reconnects"] = std::move(failures);
  json::object rest_report = rest.errors.toJson();
  rest_report["ok"] = rest.ok.load();
  report["rest"] = std::move(rest_report);
  report["job_api_errors"] = job_errors.toJson();
  json::object memory = soak::toJson(verdict);
  memory["tolerance"] = o.rss_tolerance;
  memory["warmup_s"] = std::chrono::duration_cast<std::chrono::seconds>(o.warmup).count();
  json::array series;
  for (const auto& s : rss)
    series.push_back(json::array{static_cast<std::int64_t>(std::round(s.at_s)), s.rss_kb});
  memory["samples"] = std::move(series);
  memory["open_fds"] = std::move(fd_samples);
  report["hub_memory"] = std::move(memory);
  report["jobs"] = std::move(job_reports);
  json::array problem_list;
  for (const auto& p : problems) problem_list.emplace_back(p);
  report["problems"] = std::move(problem_list);
  report["ok"] = problems.empty();
  std::cout << json::serialize(report) << std::endl;
  for (const auto& p : problems) logLine("PROBLEM " + p);
  return problems.empty() ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"soak_driver: jobs, REST load and memory checks of a soak run"};
  Options o;
  std::string duration = "30m", job_every = "60s", warmup = "5m", sample_every = "10s",
              job_timeout = "10m";
  app.add_option("--connection-string", o.connection_string, "Service connection string")
      ->required();
  app.add_option("--endpoint", o.endpoint, "Where REST goes, http://127.0.0.1:PORT")->required();
  app.add_option("--hub-pid", o.hub_pid, "iothubd's process id (RSS and descriptors)")->required();
  app.add_option("--devices", o.devices, "Devices registered (every job targets all of them)")
      ->required();
  app.add_option("--device-prefix", o.device_prefix)->capture_default_str();
  app.add_option("--duration", duration, "Load phase")->capture_default_str();
  app.add_option("--job-every", job_every, "A method job and a twin job this often")
      ->capture_default_str();
  app.add_option("--warmup", warmup, "RSS reference window: [warmup, 2 x warmup)")
      ->capture_default_str();
  app.add_option("--sample-every", sample_every)->capture_default_str();
  app.add_option("--job-timeout", job_timeout, "A job must end this long after scheduling")
      ->capture_default_str();
  app.add_option("--rest-rate", o.rest_rate, "REST calls per second")->capture_default_str();
  app.add_option("--rss-tolerance", o.rss_tolerance, "Allowed RSS growth over the reference")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  struct {
    const std::string& text;
    std::chrono::milliseconds& out;
    const char* name;
  } durations[] = {{duration, o.duration, "--duration"},
                   {job_every, o.job_every, "--job-every"},
                   {warmup, o.warmup, "--warmup"},
                   {sample_every, o.sample_every, "--sample-every"}};
  for (auto& d : durations) {
    auto parsed = fleetsim::parseDuration(d.text);
    if (!parsed || parsed->count() <= 0) {
      std::cerr << "soak_driver: bad " << d.name << " " << d.text << "\n";
      return 2;
    }
    d.out = *parsed;
  }
  auto timeout = fleetsim::parseDuration(job_timeout);
  if (!timeout || o.devices <= 0 || o.rest_rate <= 0) {
    std::cerr << "soak_driver: bad --job-timeout, --devices or --rest-rate\n";
    return 2;
  }
  o.job_timeout = std::chrono::duration_cast<std::chrono::seconds>(*timeout);
  ::signal(SIGINT, onSignal);
  ::signal(SIGTERM, onSignal);
  return run(o);
}
