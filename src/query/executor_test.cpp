#include "query/executor.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <vector>

namespace iothub::query {
namespace {

std::vector<json::object> makeTwins(int n) {
  std::vector<json::object> rows;
  rows.reserve(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) {
    json::object twin;
    twin["deviceId"] = "d" + std::to_string(i);
    twin["status"] = i % 2 == 0 ? "enabled" : "disabled";
    twin["tags"] = json::object{{"group", i % 10}};
    twin["properties"] = json::object{{"desired", json::object{{"$version", 1}}},
                                      {"reported", json::object{{"$version", 1}}}};
    rows.push_back(std::move(twin));
  }
  return rows;
}

std::vector<const json::object*> pointers(const std::vector<json::object>& rows) {
  std::vector<const json::object*> out;
  for (const json::object& r : rows) out.push_back(&r);
  return out;
}

Query parsed(std::string_view text) {
  Result<Query> q = parseQuery(text);
  EXPECT_TRUE(q.isOk()) << q.status().message();
  return std::move(q).value();
}

TEST(QueryExecutionTest, StopsAskingForRowsOnceTopIsReached) {
  std::vector<json::object> rows = makeTwins(100);
  Query q = parsed("SELECT TOP 3 deviceId FROM devices WHERE status = 'enabled'");
  QueryExecution execution(q);
  std::size_t offered = 0;
  for (const json::object& r : rows) {
    ++offered;
    if (!execution.offer(r)) break;
  }
  EXPECT_EQ(offered, 7u) << "rows 0, 2, 4 fill TOP 3; row 6 proves nothing more is needed";
  QueryResult result = execution.finish();
  EXPECT_EQ(json::serialize(result.rows),
            R"([{"deviceId":"d0"},{"deviceId":"d2"},{"deviceId":"d4"}])");
  EXPECT_FALSE(result.has_more);
}

TEST(QueryExecutionTest, PageStopsAfterOneExtraMatch) {
  std::vector<json::object> rows = makeTwins(100);
  Query q = parsed("SELECT * FROM devices");
  QueryExecution execution(q, Page{10, 5});
  std::size_t offered = 0;
  for (const json::object& r : rows) {
    ++offered;
    if (!execution.offer(r)) break;
  }
  EXPECT_EQ(offered, 16u);
  QueryResult result = execution.finish();
  EXPECT_EQ(result.item_type, ItemType::Twin);
  ASSERT_EQ(result.rows.size(), 5u);
  EXPECT_EQ(result.rows[0].at("deviceId"), "d10");
  EXPECT_EQ(result.rows[0], json::value(rows[10])) << "SELECT * returns the row itself";
  EXPECT_TRUE(result.has_more);
}

TEST(QueryExecutionTest, PagesConcatenateToTheWholeResult) {
  std::vector<json::object> rows = makeTwins(23);
  std::vector<const json::object*> ptrs = pointers(rows);
  Query q = parsed("SELECT TOP 17 deviceId FROM devices WHERE tags.group != 3");
  QueryResult all = execute(q, ptrs);
  json::array pages;
  std::size_t offset = 0;
  while (true) {
    QueryResult page = execute(q, ptrs, Page{offset, 4});
    for (auto& row : page.rows) pages.push_back(row);
    offset += 4;
    if (!page.has_more) break;
  }
  EXPECT_EQ(all.rows.size(), 17u);
  EXPECT_EQ(pages, all.rows);
}

TEST(QueryExecutionTest, CountOverNoRows) {
  Query q = parsed("SELECT COUNT() AS n FROM devices");
  QueryResult result = execute(q, {});
  EXPECT_EQ(json::serialize(result.rows), R"([{"n":0}])");
  EXPECT_EQ(result.item_type, ItemType::Raw);
}

TEST(QueryExecutionTest, GroupsInOrderOfFirstAppearance) {
  std::vector<json::object> rows = makeTwins(1000);
  Query q = parsed(
      "SELECT tags.group AS g, COUNT() AS n FROM devices WHERE status = 'disabled' GROUP BY "
      "tags.group");
  QueryResult result = execute(q, pointers(rows));
  EXPECT_EQ(json::serialize(result.rows),
            R"([{"g":1,"n":100},{"g":3,"n":100},{"g":5,"n":100},{"g":7,"n":100},{"g":9,"n":100}])");
}

TEST(QueryExecutionTest, SumStaysExactForIntegersAndFallsBackOnOverflow) {
  std::vector<json::object> rows = {json::object{{"v", 9007199254740993}}, json::object{{"v", 1}}};
  QueryResult exact = execute(parsed("SELECT SUM(v) AS s FROM devices"), pointers(rows));
  EXPECT_EQ(exact.rows[0].at("s"), json::value(9007199254740994));
  rows.push_back(json::object{{"v", INT64_MAX}});
  QueryResult overflow = execute(parsed("SELECT SUM(v) AS s FROM devices"), pointers(rows));
  EXPECT_TRUE(overflow.rows[0].at("s").is_double());
}

// A smoke check of the scan cost the in-memory index relies on; generous so it holds under
// sanitizers on a shared machine.
TEST(QueryExecutionTest, ScansQuickly) {
  std::vector<json::object> rows = makeTwins(100000);
  std::vector<const json::object*> ptrs = pointers(rows);
  Query q = parsed("SELECT COUNT() AS n FROM devices WHERE tags.group = 3 AND status = 'disabled'");
  auto start = std::chrono::steady_clock::now();
  QueryResult result = execute(q, ptrs);
  auto elapsed = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(json::serialize(result.rows), R"([{"n":10000}])");
  EXPECT_LT(elapsed, std::chrono::seconds(5));
}

}  // namespace
}  // namespace iothub::query
