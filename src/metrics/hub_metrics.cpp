#include "metrics/hub_metrics.hpp"

#include <prometheus/metric_family.h>
#include <prometheus/text_serializer.h>

#include <array>
#include <limits>
#include <sstream>
#include <unordered_map>

namespace iothub::metrics {
namespace {

// Seconds: a REST call is a store round trip (~1 ms), a query or a bulk import up to
// seconds, a direct method up to its response timeout (at most 300 s).
constexpr std::array<double, 17> kRequestBuckets{
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300};

prometheus::ClientMetric sample(Sink::Labels labels) {
  prometheus::ClientMetric metric;
  for (const auto& [name, value] : labels) {
    metric.label.push_back({std::string(name), std::string(value)});
  }
  return metric;
}

}  // namespace

prometheus::MetricFamily& Sink::family(std::string_view name, std::string_view help,
                                       prometheus::MetricType type) {
  auto it = families_.find(name);
  if (it == families_.end()) {
    prometheus::MetricFamily family;
    family.name = std::string(name);
    family.help = std::string(help);
    family.type = type;
    it = families_.emplace(std::string(name), std::move(family)).first;
  }
  return it->second;
}

void Sink::counter(std::string_view name, std::string_view help, double value, Labels labels) {
  prometheus::ClientMetric metric = sample(labels);
  metric.counter.value = value;
  family(name, help, prometheus::MetricType::Counter).metric.push_back(std::move(metric));
}

void Sink::gauge(std::string_view name, std::string_view help, double value, Labels labels) {
  prometheus::ClientMetric metric = sample(labels);
  metric.gauge.value = value;
  family(name, help, prometheus::MetricType::Gauge).metric.push_back(std::move(metric));
}

void Sink::histogram(std::string_view name, std::string_view help, const AtomicHistogram& histogram,
                     Labels labels) {
  prometheus::ClientMetric metric = sample(labels);
  const auto snapshot = histogram.snapshot();
  const auto bounds = histogram.bounds();
  std::uint64_t cumulative = 0;
  for (std::size_t i = 0; i < snapshot.counts.size(); ++i) {
    cumulative += snapshot.counts[i];
    prometheus::ClientMetric::Bucket bucket;
    bucket.cumulative_count = cumulative;
    bucket.upper_bound = i < bounds.size() ? bounds[i] : std::numeric_limits<double>::infinity();
    metric.histogram.bucket.push_back(bucket);
  }
  metric.histogram.sample_count = cumulative;
  metric.histogram.sample_sum = snapshot.sum;
  family(name, help, prometheus::MetricType::Histogram).metric.push_back(std::move(metric));
}

std::vector<prometheus::MetricFamily> Sink::take() {
  std::vector<prometheus::MetricFamily> out;
  out.reserve(families_.size());
  for (auto& [name, family] : families_) out.push_back(std::move(family));
  families_.clear();
  return out;
}

struct HubMetrics::RequestSeries {
  std::atomic<std::uint64_t>* count;
  AtomicHistogram* seconds;
};

namespace {

std::atomic<std::uint64_t> next_instance{1};

// A thread's view of one HubMetrics' series: found by content (transparent lookup, so a
// lookup allocates nothing), pointing into the instance's maps.
struct SeriesKey {
  std::string route;
  std::string method;
  int status;
};
struct SeriesKeyView {
  std::string_view route;
  std::string_view method;
  int status;
};
struct SeriesHash {
  using is_transparent = void;
  std::size_t operator()(const SeriesKeyView& k) const {
    std::size_t h = std::hash<std::string_view>()(k.route);
    h = h * 31 + std::hash<std::string_view>()(k.method);
    return h * 31 + static_cast<std::size_t>(k.status);
  }
  std::size_t operator()(const SeriesKey& k) const {
    return (*this)(SeriesKeyView{k.route, k.method, k.status});
  }
};
struct SeriesEqual {
  using is_transparent = void;
  static SeriesKeyView view(const SeriesKey& k) { return {k.route, k.method, k.status}; }
  static SeriesKeyView view(const SeriesKeyView& k) { return k; }
  template <class A, class B>
  bool operator()(const A& a, const B& b) const {
    SeriesKeyView x = view(a), y = view(b);
    return x.status == y.status && x.route == y.route && x.method == y.method;
  }
};

}  // namespace

HubMetrics::HubMetrics() : id_(next_instance.fetch_add(1)) {}

HubMetrics::~HubMetrics() = default;

HubMetrics::RequestSeries& HubMetrics::series(std::string_view route, std::string_view method,
                                              int status) {
  thread_local std::uint64_t owner = 0;
  thread_local std::unordered_map<SeriesKey, RequestSeries, SeriesHash, SeriesEqual> cache;
  if (owner != id_) {
    cache.clear();
    owner = id_;
  }
  if (auto it = cache.find(SeriesKeyView{route, method, status}); it != cache.end()) {
    return it->second;
  }
  RequestSeries found{};
  {
    std::lock_guard lock(series_mutex_);
    auto& count = request_counts_[{std::string(route), std::string(method), status}];
    if (!count) count = std::make_unique<std::atomic<std::uint64_t>>(0);
    auto seconds = request_seconds_.find(route);
    if (seconds == request_seconds_.end()) {
      seconds =
          request_seconds_
              .emplace(std::string(route), std::make_unique<AtomicHistogram>(std::vector<double>(
                                               kRequestBuckets.begin(), kRequestBuckets.end())))
              .first;
    }
    found = RequestSeries{count.get(), seconds->second.get()};
  }
  return cache.emplace(SeriesKey{std::string(route), std::string(method), status}, found)
      .first->second;
}

void HubMetrics::observeRequest(std::string_view route, std::string_view method, int status,
                                std::chrono::nanoseconds elapsed) {
  RequestSeries& s = series(route, method, status);
  s.count->fetch_add(1, std::memory_order_relaxed);
  s.seconds->observe(elapsed);
}

void HubMetrics::collectRequests(Sink& sink) const {
  std::lock_guard lock(series_mutex_);
  for (const auto& [key, count] : request_counts_) {
    const auto& [route, method, status] = key;
    const std::string code = std::to_string(status);
    sink.counter("iothub_http_requests_total",
                 "Service REST requests answered, by route, method and status",
                 static_cast<double>(count->load(std::memory_order_relaxed)),
                 {{"code", code}, {"method", method}, {"route", route}});
  }
  for (const auto& [route, seconds] : request_seconds_) {
    sink.histogram("iothub_http_request_duration_seconds",
                   "Service REST requests, from parsed to answered, by route", *seconds,
                   {{"route", route}});
  }
}

void HubMetrics::addCollector(Collector collector) {
  std::lock_guard lock(mutex_);
  collectors_.push_back(std::move(collector));
}

std::string HubMetrics::render() const {
  Sink sink;
  collectRequests(sink);
  {
    std::lock_guard lock(mutex_);
    for (const auto& collect : collectors_) collect(sink);
  }
  std::vector<prometheus::MetricFamily> families = sink.take();
  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, families);
  return out.str();
}

}  // namespace iothub::metrics
