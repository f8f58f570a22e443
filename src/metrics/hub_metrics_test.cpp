#include "metrics/hub_metrics.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

namespace iothub::metrics {
namespace {

using namespace std::chrono_literals;

bool has(const std::string& text, const std::string& line) {
  return text.find(line) != std::string::npos;
}

TEST(HubMetricsTest, RequestsAreCountedByRouteMethodAndStatusWithTheirLatency) {
  HubMetrics metrics;
  metrics.observeRequest("/twins/{id}", "GET", 200, 2ms);
  metrics.observeRequest("/twins/{id}", "GET", 200, 40ms);
  metrics.observeRequest("/twins/{id}", "PATCH", 412, 1ms);
  std::string text = metrics.render();
  EXPECT_TRUE(has(text, "# TYPE iothub_http_requests_total counter")) << text;
  EXPECT_TRUE(
      has(text, "iothub_http_requests_total{code=\"200\",method=\"GET\",route=\"/twins/{id}\"} 2"))
      << text;
  EXPECT_TRUE(has(
      text, "iothub_http_requests_total{code=\"412\",method=\"PATCH\",route=\"/twins/{id}\"} 1"))
      << text;
  EXPECT_TRUE(has(text, "# TYPE iothub_http_request_duration_seconds histogram")) << text;
  EXPECT_TRUE(has(text, "iothub_http_request_duration_seconds_count{route=\"/twins/{id}\"} 3"))
      << text;
  // 1 ms and 2 ms fall at or below 0.0025 s, 40 ms only from 0.05 s on.
  EXPECT_TRUE(has(
      text, "iothub_http_request_duration_seconds_bucket{route=\"/twins/{id}\",le=\"0.0025\"} 2"))
      << text;
  EXPECT_TRUE(
      has(text, "iothub_http_request_duration_seconds_bucket{route=\"/twins/{id}\",le=\"0.05\"} 3"))
      << text;
}

TEST(HubMetricsTest, CollectorsAreReadAtEveryScrape) {
  HubMetrics metrics;
  std::atomic<int> connected{3};
  metrics.addCollector([&](Sink& sink) {
    sink.gauge("iothub_connected_devices", "Devices connected to this node", connected.load());
    sink.counter("iothub_connects_refused_total", "CONNECTs refused, by reason", 5,
                 {{"reason", "bad_credentials"}});
    sink.counter("iothub_connects_refused_total", "CONNECTs refused, by reason", 1,
                 {{"reason", "disabled"}});
  });
  std::string first = metrics.render();
  EXPECT_TRUE(has(first, "# TYPE iothub_connected_devices gauge")) << first;
  EXPECT_TRUE(has(first, "iothub_connected_devices 3")) << first;
  EXPECT_TRUE(has(first, "# HELP iothub_connects_refused_total CONNECTs refused, by reason"))
      << first;
  EXPECT_TRUE(has(first, "iothub_connects_refused_total{reason=\"bad_credentials\"} 5")) << first;
  EXPECT_TRUE(has(first, "iothub_connects_refused_total{reason=\"disabled\"} 1")) << first;
  connected = 7;
  std::string second = metrics.render();
  EXPECT_TRUE(has(second, "iothub_connected_devices 7")) << second;
  // One family per name, however many samples it has.
  std::size_t types = 0;
  for (std::size_t at = second.find("# TYPE iothub_connects_refused_total");
       at != std::string::npos; at = second.find("# TYPE iothub_connects_refused_total", at + 1)) {
    ++types;
  }
  EXPECT_EQ(types, 1u);
}

TEST(HubMetricsTest, HistogramsKeptByTheDataPathAreExposedCumulatively) {
  AtomicHistogram batch({1, 4, 16});
  for (double v : {1.0, 1.0, 3.0, 16.0, 100.0}) batch.observe(v);
  HubMetrics metrics;
  metrics.addCollector([&batch](Sink& sink) {
    sink.histogram("iothub_test_batch_operations", "Operations per batch", batch);
  });
  std::string text = metrics.render();
  for (const char* line :
       {"# TYPE iothub_test_batch_operations histogram",
        "iothub_test_batch_operations_bucket{le=\"1\"} 2",
        "iothub_test_batch_operations_bucket{le=\"4\"} 3",
        "iothub_test_batch_operations_bucket{le=\"16\"} 4",
        "iothub_test_batch_operations_bucket{le=\"+Inf\"} 5",
        "iothub_test_batch_operations_count 5", "iothub_test_batch_operations_sum 121"}) {
    EXPECT_TRUE(has(text, line)) << line << "\n" << text;
  }
}

TEST(AtomicHistogramTest, ConcurrentObservationsAreAllCounted) {
  AtomicHistogram h(AtomicHistogram::latencyBounds());
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&h] {
      for (int i = 0; i < 10000; ++i) h.observe(std::chrono::microseconds(i % 2000));
    });
  }
  for (auto& t : threads) t.join();
  auto s = h.snapshot();
  std::uint64_t total = 0;
  for (auto c : s.counts) total += c;
  EXPECT_EQ(total, 40000u);
  EXPECT_EQ(s.counts.size(), h.bounds().size() + 1);
  EXPECT_NEAR(s.sum, 4 * 5 * (1999.0 * 2000 / 2) * 1e-6, 1e-6);
}

TEST(HubMetricsTest, ObservingAndScrapingConcurrentlyLosesNothing) {
  HubMetrics metrics;
  constexpr int kThreads = 4, kEach = 2000;
  std::vector<std::thread> threads;
  std::atomic<bool> done{false};
  std::thread scraper([&] {
    while (!done) (void)metrics.render();
  });
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kEach; ++i) metrics.observeRequest("/devices", "GET", 200, 1ms);
    });
  }
  for (auto& t : threads) t.join();
  done = true;
  scraper.join();
  EXPECT_TRUE(
      has(metrics.render(),
          "iothub_http_requests_total{code=\"200\",method=\"GET\",route=\"/devices\"} 8000"));
}

}  // namespace
}  // namespace iothub::metrics
