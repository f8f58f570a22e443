#include "metrics/hub_metrics.hpp"

#include <prometheus/counter.h>
#include <prometheus/histogram.h>
#include <prometheus/metric_family.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include <limits>
#include <sstream>

namespace iothub::metrics {
namespace {

// Seconds: a REST call is a store round trip (~1 ms), a query or a bulk import up to
// seconds, a direct method up to its response timeout (at most 300 s).
const prometheus::Histogram::BucketBoundaries kRequestBuckets{
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

HubMetrics::HubMetrics()
    : registry_(std::make_shared<prometheus::Registry>()),
      requests_(prometheus::BuildCounter()
                    .Name("iothub_http_requests_total")
                    .Help("Service REST requests answered, by route, method and status")
                    .Register(*registry_)),
      request_seconds_(prometheus::BuildHistogram()
                           .Name("iothub_http_request_duration_seconds")
                           .Help("Service REST requests, from parsed to answered, by route")
                           .Register(*registry_)) {}

HubMetrics::~HubMetrics() = default;

void HubMetrics::observeRequest(std::string_view route, std::string_view method, int status,
                                std::chrono::nanoseconds elapsed) {
  const std::string route_label(route);
  requests_
      .Add({{"route", route_label},
            {"method", std::string(method)},
            {"code", std::to_string(status)}})
      .Increment();
  request_seconds_.Add({{"route", route_label}}, kRequestBuckets)
      .Observe(std::chrono::duration<double>(elapsed).count());
}

void HubMetrics::addCollector(Collector collector) {
  std::lock_guard lock(mutex_);
  collectors_.push_back(std::move(collector));
}

std::string HubMetrics::render() const {
  std::vector<prometheus::MetricFamily> families = registry_->Collect();
  Sink sink;
  {
    std::lock_guard lock(mutex_);
    for (const auto& collect : collectors_) collect(sink);
  }
  for (auto& family : sink.take()) families.push_back(std::move(family));
  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, families);
  return out.str();
}

}  // namespace iothub::metrics
