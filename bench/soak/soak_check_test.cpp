#include "bench/soak/soak_check.hpp"

#include <gtest/gtest.h>

namespace iothub::soak {
namespace {

std::vector<RssSample> series(std::initializer_list<std::pair<double, std::int64_t>> points) {
  std::vector<RssSample> out;
  for (const auto& [at, kb] : points) out.push_back({at, kb});
  return out;
}

TEST(SoakRssTest, FlatAfterWarmUpPassesAndReportsTheBound) {
  // Warm-up growth (0–60 s) does not count; the reference is the highest sample in 60–120 s.
  auto v = checkRssFlat(
      series({{0, 100}, {30, 500}, {60, 1000}, {90, 1040}, {120, 1030}, {150, 1100}}), 60, 0.10);
  EXPECT_TRUE(v.ok) << v.why;
  EXPECT_EQ(v.reference_kb, 1040);
  EXPECT_EQ(v.bound_kb, 1144);
  EXPECT_EQ(v.max_after_kb, 1100);
}

TEST(SoakRssTest, GrowthBeyondTheBoundFails) {
  auto v = checkRssFlat(series({{60, 1000}, {90, 1000}, {120, 1050}, {150, 1101}}), 60, 0.10);
  EXPECT_FALSE(v.ok);
  EXPECT_NE(v.why.find("1101"), std::string::npos) << v.why;
  EXPECT_GT(v.slope_kb_per_min, 0);
}

TEST(SoakRssTest, ARunTooShortForAVerdictFails) {
  auto v = checkRssFlat(series({{0, 100}, {60, 100}, {90, 100}}), 60, 0.10);
  EXPECT_FALSE(v.ok);
  EXPECT_NE(v.why.find("too few samples"), std::string::npos);
}

JobOutcome exact(std::int64_t n) {
  JobOutcome job;
  job.job_id = "j";
  job.type = "scheduleDeviceMethod";
  job.status = "completed";
  job.device_count = n;
  job.succeeded = n;
  job.rows_by_status = {{"completed", n}};
  return job;
}

TEST(SoakJobTest, ExactStatisticsPass) { EXPECT_TRUE(checkJob(exact(100), 100, {}).empty()); }

TEST(SoakJobTest, EachKindOfMismatchIsReported) {
  auto missing_devices = exact(99);
  missing_devices.rows_by_status = {{"completed", 99}};
  EXPECT_EQ(checkJob(missing_devices, 100, {}).size(), 1u);

  auto rows_disagree = exact(100);
  rows_disagree.rows_by_status = {{"completed", 98}, {"failed", 2}};
  // Statistics say 100 completed / 0 failed, the rows 98 / 2: two lines, one per status.
  EXPECT_EQ(checkJob(rows_disagree, 100, {}).size(), 2u);

  auto left_running = exact(100);
  left_running.succeeded = 99;
  left_running.running = 1;
  left_running.rows_by_status = {{"completed", 99}, {"running", 1}};
  EXPECT_EQ(checkJob(left_running, 100, {}).size(), 1u);

  auto not_completed = exact(100);
  not_completed.status = "failed";
  EXPECT_EQ(checkJob(not_completed, 100, {}).size(), 1u);
}

TEST(SoakJobTest, OnlyExpectedFailureCodesAreAllowed) {
  auto job = exact(100);
  job.succeeded = 97;
  job.failed = 3;
  job.rows_by_status = {{"completed", 97}, {"failed", 3}};
  job.failure_codes = {{"GatewayTimeout", 2}, {"DeviceNotOnline", 1}};
  EXPECT_TRUE(checkJob(job, 100, {"GatewayTimeout", "DeviceNotOnline"}).empty());

  job.failure_codes = {{"GatewayTimeout", 2}, {"ServerError", 1}};
  auto problems = checkJob(job, 100, {"GatewayTimeout", "DeviceNotOnline"});
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_NE(problems[0].find("ServerError"), std::string::npos);

  job.failure_codes = {{"GatewayTimeout", 2}};  // a failed row went missing
  EXPECT_EQ(checkJob(job, 100, {"GatewayTimeout"}).size(), 1u);
}

}  // namespace
}  // namespace iothub::soak
