#include "index/query_runner.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <set>

#include "index/index_test_support.hpp"

namespace iothub::index {
namespace {

using test_support::IndexedHub;

class QueryRunnerTest : public ::testing::Test {
 protected:
  QueryRunnerTest() : runner_(hub_.index(), hub_.store().deviceJobs()) {}

  void addFleet(int n) {
    for (int i = 0; i < n; ++i) {
      hub_.addDevice(
          "dev" + std::to_string(1000 + i),
          R"({"floor":)" + std::to_string(i % 4) + R"(,"site":")" + (i % 2 ? "b" : "a") + "\"}");
    }
  }

  // Every row of every page, with the page sizes seen.
  json::array all(std::string_view text, std::size_t page_size,
                  std::vector<std::size_t>* sizes = nullptr) {
    json::array rows;
    std::optional<std::string> token;
    for (int guard = 0; guard < 10000; ++guard) {
      auto page = runner_.run(text, page_size, token);
      EXPECT_TRUE(page.isOk()) << page.status().toString();
      if (!page) break;
      if (sizes) sizes->push_back(page->rows.size());
      for (auto& r : page->rows) rows.push_back(r);
      if (!page->continuation) return rows;
      EXPECT_FALSE(page->continuation->empty());
      token = page->continuation;
    }
    ADD_FAILURE() << "paging did not end";
    return rows;
  }

  static std::vector<std::string> deviceIds(const json::array& rows) {
    std::vector<std::string> out;
    for (const auto& r : rows) out.emplace_back(r.at("deviceId").as_string());
    return out;
  }

  IndexedHub hub_;
  QueryRunner runner_;
};

TEST_F(QueryRunnerTest, PagesThroughTwinsWithoutGapsOrRepeats) {
  addFleet(23);
  std::vector<std::size_t> sizes;
  auto rows = all("SELECT * FROM devices WHERE tags.site = 'a'", 5, &sizes);
  EXPECT_EQ(sizes, (std::vector<std::size_t>{5, 5, 2}));
  auto ids = deviceIds(rows);
  ASSERT_EQ(ids.size(), 12u);
  EXPECT_TRUE(std::is_sorted(ids.begin(), ids.end()));
  EXPECT_EQ(std::set<std::string>(ids.begin(), ids.end()).size(), 12u);
  // Rows are full twins.
  EXPECT_EQ(rows[0].at("tags").at("site"), "a");
  EXPECT_TRUE(rows[0].at("properties").at("desired").as_object().contains("$metadata"));
}

TEST_F(QueryRunnerTest, AnExactlyFullLastPageHasNoContinuation) {
  addFleet(8);
  std::vector<std::size_t> sizes;
  all("SELECT * FROM devices", 4, &sizes);
  EXPECT_EQ(sizes, (std::vector<std::size_t>{4, 4}));
  auto page = runner_.run("SELECT * FROM devices WHERE tags.site = 'zzz'", 10, std::nullopt);
  ASSERT_TRUE(page.isOk());
  EXPECT_TRUE(page->rows.empty());
  EXPECT_FALSE(page->continuation);
  EXPECT_EQ(page->item_type, query::ItemType::Twin);
}

TEST_F(QueryRunnerTest, ChangesBetweenPagesNeitherRepeatNorSkipStableRows) {
  addFleet(20);
  const std::string q = "SELECT deviceId FROM devices WHERE tags.floor = 1";  // dev1001, 1005, ...
  auto first = runner_.run(q, 2, std::nullopt);
  ASSERT_TRUE(first.isOk());
  EXPECT_EQ(deviceIds(first->rows), (std::vector<std::string>{"dev1001", "dev1005"}));
  // Between pages: a row before the cursor starts matching, a row after it stops, a new
  // row appears after it, and an already returned row is deleted and one is modified.
  hub_.patch("dev1000", R"({"tags":{"floor":1}})");
  hub_.patch("dev1013", R"({"tags":{"floor":2}})");
  hub_.addDevice("dev1006x", R"({"floor":1})");
  ASSERT_TRUE(hub_.registry().remove("dev1001", "*").isOk());
  hub_.patch("dev1005", R"({"tags":{"note":"changed"}})");
  json::array rest;
  std::optional<std::string> token = first->continuation;
  while (token) {
    auto page = runner_.run(q, 2, token);
    ASSERT_TRUE(page.isOk());
    for (auto& r : page->rows) rest.push_back(r);
    token = page->continuation;
  }
  EXPECT_EQ(deviceIds(rest), (std::vector<std::string>{"dev1006x", "dev1009", "dev1017"}));
  EXPECT_EQ(runner_.run(q, 2, std::nullopt)->item_type, query::ItemType::Raw);
}

TEST_F(QueryRunnerTest, TopCountsAcrossPages) {
  addFleet(30);
  std::vector<std::size_t> sizes;
  auto rows = all("SELECT TOP 7 deviceId FROM devices", 3, &sizes);
  EXPECT_EQ(sizes, (std::vector<std::size_t>{3, 3, 1}));
  EXPECT_EQ(rows.size(), 7u);
  sizes.clear();
  all("SELECT TOP 6 * FROM devices", 3, &sizes);
  EXPECT_EQ(sizes, (std::vector<std::size_t>{3, 3}));  // no third, empty page
}

TEST_F(QueryRunnerTest, AggregatesAndGroupsPageByPosition) {
  addFleet(21);
  auto count = all("SELECT COUNT() AS n FROM devices WHERE tags.site = 'b'", 100);
  ASSERT_EQ(count.size(), 1u);
  EXPECT_EQ(count[0].at("n"), 10);
  std::vector<std::size_t> sizes;
  auto groups =
      all("SELECT tags.floor AS floor, COUNT() AS n FROM devices GROUP BY tags.floor", 3, &sizes);
  EXPECT_EQ(sizes, (std::vector<std::size_t>{3, 1}));
  std::int64_t total = 0;
  for (auto& g : groups) total += g.at("n").as_int64();
  EXPECT_EQ(total, 21);
  EXPECT_EQ(groups[0].at("floor"), 0);
  EXPECT_EQ(groups[0].at("n"), 6);
}

TEST_F(QueryRunnerTest, RejectsBadTokensPageSizesAndQueries) {
  addFleet(5);
  auto first = runner_.run("SELECT * FROM devices", 2, std::nullopt);
  ASSERT_TRUE(first.isOk() && first->continuation);
  auto other = runner_.run("SELECT deviceId FROM devices", 2, first->continuation);
  EXPECT_EQ(other.code(), ErrorCode::ArgumentInvalid);
  EXPECT_NE(other.status().message().find("continuation"), std::string::npos);
  for (std::string_view token : {"", "!!!", "e30=", "eyJxIjoxfQ=="}) {
    EXPECT_EQ(runner_.run("SELECT * FROM devices", 2, token).code(), ErrorCode::ArgumentInvalid)
        << token;
  }
  EXPECT_EQ(runner_.run("SELECT * FROM devices", 0, std::nullopt).code(),
            ErrorCode::ArgumentInvalid);
  EXPECT_EQ(runner_.run("SELECT * FROM devices", 1001, std::nullopt).code(),
            ErrorCode::ArgumentInvalid);
  auto bad = runner_.run("SELECT * FROM devices WHERE tags.a = = 1", 10, std::nullopt);
  EXPECT_EQ(bad.code(), ErrorCode::ArgumentInvalid);
  EXPECT_NE(bad.status().message().find("1:"), std::string::npos) << bad.status().message();
}

TEST_F(QueryRunnerTest, DeviceJobRowsPageByJobAndDevice) {
  std::vector<store::DeviceJobRecord> rows;
  for (std::string job : {"jobA", "jobB"}) {
    for (int i = 0; i < 5; ++i) {
      store::DeviceJobRecord r;
      r.job_id = job;
      r.device_id = "dev" + std::to_string(i);
      r.status = i % 2 ? "failed" : "completed";
      r.document = json::object{{"jobType", "scheduleDeviceMethod"},
                                {"outcome", json::object{{"deviceMethodResponse", nullptr}}}};
      rows.push_back(r);
    }
  }
  ASSERT_TRUE(hub_.store().deviceJobs().putDeviceJobs(rows).isOk());
  std::vector<std::size_t> sizes;
  auto everything = all("SELECT * FROM devices.jobs", 3, &sizes);
  EXPECT_EQ(sizes, (std::vector<std::size_t>{3, 3, 3, 1}));
  EXPECT_EQ(everything[9].at("jobId"), "jobB");
  EXPECT_EQ(everything[9].at("deviceId"), "dev4");
  EXPECT_EQ(everything[0].at("jobType"), "scheduleDeviceMethod");
  EXPECT_TRUE(everything[0].as_object().contains("lastUpdatedDateTimeUtc"));
  auto failed =
      all("SELECT * FROM devices.jobs WHERE devices.jobs.jobId = 'jobB' AND devices.jobs.status = "
          "'failed'",
          1);
  EXPECT_EQ(deviceIds(failed), (std::vector<std::string>{"dev1", "dev3"}));
  EXPECT_EQ(runner_.run("SELECT * FROM devices.jobs", 10, std::nullopt)->item_type,
            query::ItemType::DeviceJob);
}

// A clock that moves `step` forward every time it is read: a stand-in for a slow scan.
class SteppingClock final : public Clock {
 public:
  explicit SteppingClock(std::chrono::milliseconds step) : step_(step) {}
  SystemTime now() const override {
    return SystemTime{} + step_ * reads_.fetch_add(1, std::memory_order_relaxed);
  }
  int reads() const { return reads_.load(); }

 private:
  std::chrono::milliseconds step_;
  mutable std::atomic<int> reads_{0};
};

TEST_F(QueryRunnerTest, APageThatOutrunsItsTimeBudgetIsAClearError) {
  addFleet(5000);
  SteppingClock clock(std::chrono::milliseconds(1000));
  QueryRunner budgeted(hub_.index(), hub_.store().deviceJobs(), &clock,
                       std::chrono::milliseconds(5000));
  // An aggregate reads every twin: far more than 5 clock reads' worth of rows.
  auto slow = budgeted.run("SELECT COUNT() AS n FROM devices", 100, std::nullopt);
  ASSERT_FALSE(slow.isOk());
  EXPECT_EQ(slow.code(), ErrorCode::ArgumentInvalid);
  EXPECT_NE(slow.status().message().find("time budget of 5000 ms"), std::string::npos)
      << slow.status().message();
  // It stopped soon after the deadline instead of finishing the scan.
  EXPECT_LE(clock.reads(), 8);
  // A page that needs few rows is within budget on the same clock.
  auto fast = budgeted.run("SELECT * FROM devices", 10, std::nullopt);
  ASSERT_TRUE(fast.isOk()) << fast.status().toString();
  EXPECT_EQ(fast->rows.size(), 10u);
  auto jobs =
      budgeted.run("SELECT * FROM devices.jobs WHERE devices.jobs.status = 'x'", 10, std::nullopt);
  EXPECT_TRUE(jobs.isOk()) << jobs.status().toString();
}

}  // namespace
}  // namespace iothub::index

namespace iothub::index {
namespace {

// In cluster mode before_query is the change feed's catchUp: it runs before every page of
// a FROM devices query, its error is the query's, and devices.jobs (read from the store)
// does not wait for it.
TEST_F(QueryRunnerTest, BeforeQueryRunsBeforeEveryDevicesPageAndItsErrorIsTheQuerys) {
  addFleet(5);
  int calls = 0;
  Status outcome = Status::ok();
  QueryRunner hooked(hub_.index(), hub_.store().deviceJobs(), nullptr,
                     QueryRunner::kDefaultTimeBudget, [&]() -> Status {
                       ++calls;
                       return outcome;
                     });
  auto first = hooked.run("SELECT * FROM devices", 3, std::nullopt);
  ASSERT_TRUE(first.isOk()) << first.status().toString();
  EXPECT_EQ(calls, 1);
  ASSERT_TRUE(first->continuation.has_value());
  auto second = hooked.run("SELECT * FROM devices", 3, first->continuation);
  ASSERT_TRUE(second.isOk()) << second.status().toString();
  EXPECT_EQ(second->rows.size(), 2u);
  EXPECT_EQ(calls, 2);
  auto count = hooked.run("SELECT COUNT() AS n FROM devices", 3, std::nullopt);
  ASSERT_TRUE(count.isOk());
  EXPECT_EQ(calls, 3);

  auto jobs = hooked.run("SELECT * FROM devices.jobs", 3, std::nullopt);
  EXPECT_TRUE(jobs.isOk()) << jobs.status().toString();
  EXPECT_EQ(calls, 3);

  outcome = Status(ErrorCode::ServiceUnavailable, "the database is frozen");
  auto failed = hooked.run("SELECT * FROM devices", 3, std::nullopt);
  ASSERT_FALSE(failed.isOk());
  EXPECT_EQ(failed.code(), ErrorCode::ServiceUnavailable);
  EXPECT_EQ(failed.status().message(), "the database is frozen");
  // A query that does not parse is refused before the hook runs.
  EXPECT_EQ(hooked.run("SELECT * FROM", 3, std::nullopt).code(), ErrorCode::ArgumentInvalid);
  EXPECT_EQ(calls, 4);
}

}  // namespace
}  // namespace iothub::index
