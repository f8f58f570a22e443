// ActivityRecorder's throttle: one registry write per device per minute, and the memory of
// past writes pruned without rescanning it for every new device.
#include "device_api/activity.hpp"

#include <gtest/gtest.h>

#include <string>

#include "tests/support/sqlite_test_store.hpp"
#include "tests/support/temp_dir.hpp"

namespace iothub::device_api {
namespace {

using namespace std::chrono_literals;

class ActivityRecorderTest : public ::testing::Test {
 protected:
  testing::TempDir dir_;
  std::unique_ptr<store::SqliteStore> store_ = testing::openTestSqliteStore(dir_.path() / "a.db");
  FakeClock clock_;
  ActivityRecorder recorder_{*store_, clock_};
};

TEST_F(ActivityRecorderTest, ADeviceIsDueOncePerMinuteAndOnEveryConnectionChange) {
  EXPECT_TRUE(recorder_.due("d1"));
  EXPECT_FALSE(recorder_.due("d1"));
  clock_.advance(59s);
  EXPECT_FALSE(recorder_.due("d1"));
  EXPECT_TRUE(recorder_.due("d1", /*connection_change=*/true));
  clock_.advance(59s);
  EXPECT_FALSE(recorder_.due("d1"));  // the connection change restarted the minute
  clock_.advance(1s);
  EXPECT_TRUE(recorder_.due("d1"));
  recorder_.forget("d1");
  EXPECT_TRUE(recorder_.due("d1"));
}

TEST_F(ActivityRecorderTest, PruningForgetsIdleDevicesAndWaitsForTheMapToDouble) {
  const std::size_t n = ActivityRecorder::kPruneAbove;
  for (std::size_t i = 0; i <= n; ++i) ASSERT_TRUE(recorder_.due("storm-" + std::to_string(i)));
  // All were written within the minute: nothing to forget, and the next pruning waits until
  // the map has doubled instead of scanning it again for each new device.
  EXPECT_EQ(recorder_.remembered(), n + 1);
  clock_.advance(2min);
  for (std::size_t i = 0; i < n; ++i) ASSERT_TRUE(recorder_.due("late-" + std::to_string(i)));
  EXPECT_EQ(recorder_.remembered(), 2 * n + 1) << "pruned before the map doubled";
  // The map doubled: the storm's devices, idle for two minutes, are forgotten.
  ASSERT_TRUE(recorder_.due("late-" + std::to_string(n)));
  ASSERT_TRUE(recorder_.due("late-" + std::to_string(n + 1)));
  EXPECT_EQ(recorder_.remembered(), n + 2);
  EXPECT_FALSE(recorder_.due("late-0"));  // recent ones are remembered
}

}  // namespace
}  // namespace iothub::device_api
