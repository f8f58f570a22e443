#pragma once

#include <prometheus/metric_family.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

#include "common/histogram.hpp"

namespace iothub::metrics {

// What a scrape reads from counters and sizes kept elsewhere (the device endpoint's
// atomics, the connection registry, the twin index...): each collector adds its samples
// here at every scrape, so the data path pays nothing for them.
class Sink {
 public:
  using Labels = std::initializer_list<std::pair<std::string_view, std::string_view>>;
  // A monotonic count (name ends in _total).
  void counter(std::string_view name, std::string_view help, double value, Labels labels = {});
  // A value that goes up and down.
  void gauge(std::string_view name, std::string_view help, double value, Labels labels = {});
  // A distribution kept by the data path (its buckets' counts and sum as of now).
  void histogram(std::string_view name, std::string_view help, const AtomicHistogram& histogram,
                 Labels labels = {});

  std::vector<prometheus::MetricFamily> take();

 private:
  prometheus::MetricFamily& family(std::string_view name, std::string_view help,
                                   prometheus::MetricType type);
  std::map<std::string, prometheus::MetricFamily, std::less<>> families_;
};

// The hub's Prometheus metrics (docs/operations.md): REST requests and their latency,
// observed as they are answered, and collectors run at every scrape. render() gives the text
// exposition format 0.0.4 (prometheus-cpp's serializer). Thread-safe. A request costs a
// lookup in a cache of the calling thread (no lock, no allocation once the thread has seen
// its route, method and status) and three relaxed atomic operations.
class HubMetrics {
 public:
  using Collector = std::function<void(Sink&)>;

  HubMetrics();
  ~HubMetrics();
  HubMetrics(const HubMetrics&) = delete;
  HubMetrics& operator=(const HubMetrics&) = delete;

  // One service REST request: `route` is a template of bounded cardinality
  // (service_api::routeTemplate), `status` the HTTP status answered.
  void observeRequest(std::string_view route, std::string_view method, int status,
                      std::chrono::nanoseconds elapsed);

  void addCollector(Collector collector);

  // Every family, in the Prometheus text format (Content-Type kContentType).
  std::string render() const;
  static constexpr std::string_view kContentType = "text/plain; version=0.0.4; charset=utf-8";

 private:
  struct RequestSeries;
  // The series of one (route, method, status), created on its first request.
  RequestSeries& series(std::string_view route, std::string_view method, int status);
  void collectRequests(Sink& sink) const;

  const std::uint64_t id_;  // tells this instance's entries apart in the threads' caches
  mutable std::mutex mutex_;
  std::vector<Collector> collectors_;  // guarded by mutex_
  // Request counters by (route, method, status) and latency histograms by route; entries
  // are never removed, so the threads' caches may keep pointers to them.
  mutable std::mutex series_mutex_;
  std::map<std::tuple<std::string, std::string, int>, std::unique_ptr<std::atomic<std::uint64_t>>>
      request_counts_;  // guarded by series_mutex_
  std::map<std::string, std::unique_ptr<AtomicHistogram>, std::less<>>
      request_seconds_;  // guarded by series_mutex_
};

}  // namespace iothub::metrics
