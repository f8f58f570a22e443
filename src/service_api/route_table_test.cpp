#include "service_api/route_table.hpp"

#include <gtest/gtest.h>

namespace iothub::service_api {
namespace {

std::vector<std::string> path(std::initializer_list<const char*> segments) {
  return {segments.begin(), segments.end()};
}

TEST(PathPatternTest, MatchesLiteralsAndParameters) {
  PathPattern p("/twins/{id}/methods");
  EXPECT_TRUE(p.matches(path({"twins", "door-1", "methods"})));
  std::vector<std::string> params;
  p.extract(path({"twins", "door-1", "methods"}), &params);
  EXPECT_EQ(params, std::vector<std::string>{"door-1"});
  EXPECT_FALSE(p.matches(path({"twins", "door-1"})));
  EXPECT_FALSE(p.matches(path({"twins", "door-1", "methods", "x"})));
  EXPECT_FALSE(p.matches(path({"devices", "door-1", "methods"})));
  // Views of the raw path match as decoded strings do.
  std::vector<std::string_view> views{"twins", "door-1", "methods"};
  EXPECT_TRUE(p.matches(views));
  EXPECT_EQ(p.text(), "/twins/{id}/methods");
}

TEST(PathPatternTest, RestParameterTakesZeroOrMoreSegments) {
  PathPattern p("/ui/{path*}");
  EXPECT_TRUE(p.matches(path({"ui"})));
  EXPECT_TRUE(p.matches(path({"ui", "js", "app.js"})));
  std::vector<std::string> params;
  p.extract(path({"ui"}), &params);
  p.extract(path({"ui", "js", "app.js"}), &params);
  EXPECT_EQ(params, (std::vector<std::string>{"", "js/app.js"}));
  EXPECT_FALSE(p.matches(path({"uix"})));
  EXPECT_FALSE(p.matches(path({})));
  EXPECT_FALSE(PathPattern("/").matches(path({"ui"})));
  EXPECT_TRUE(PathPattern("/").matches(path({})));
}

TEST(RouteTableTest, FindsTheRouteOrTellsNotFoundFromMethodNotAllowed) {
  RouteTable<int> t;
  t.add("GET", "/jobs/v2/query", 1);
  t.add("GET", "/jobs/v2/{id}", 2);
  t.add("PUT", "/jobs/v2/{id}", 3);
  auto get = t.find("GET", path({"jobs", "v2", "query"}));
  ASSERT_NE(get.route, nullptr);
  EXPECT_EQ(get.route->handler, 1);
  auto put = t.find("PUT", path({"jobs", "v2", "j1"}));
  ASSERT_NE(put.route, nullptr);
  EXPECT_EQ(put.route->handler, 3);
  EXPECT_EQ(put.params, std::vector<std::string>{"j1"});
  // "/jobs/v2/query" claims its path: PUT does not fall through to "/jobs/v2/{id}".
  auto put_query = t.find("PUT", path({"jobs", "v2", "query"}));
  EXPECT_EQ(put_query.route, nullptr);
  EXPECT_EQ(put_query.allow, "GET");
  auto post = t.find("POST", path({"jobs", "v2", "j1"}));
  EXPECT_EQ(post.route, nullptr);
  EXPECT_EQ(post.allow, "GET, PUT");
  auto none = t.find("GET", path({"jobs"}));
  EXPECT_EQ(none.route, nullptr);
  EXPECT_TRUE(none.allow.empty());
  EXPECT_EQ(t.patternOf(path({"jobs", "v2", "j1"})), "/jobs/v2/{id}");
  EXPECT_EQ(t.patternOf(path({"nothing"})), "");
}

TEST(RouteTableTest, ARouteThatDoesNotClaimItsPathLetsOtherMethodsFallThrough) {
  RouteTable<int> t;
  t.add("POST", "/devices/query", 1, /*claims_path=*/false);
  t.add("GET", "/devices/{id}", 2);
  t.add("DELETE", "/devices/{id}", 3);
  auto post = t.find("POST", path({"devices", "query"}));
  ASSERT_NE(post.route, nullptr);
  EXPECT_EQ(post.route->handler, 1);
  auto get = t.find("GET", path({"devices", "query"}));
  ASSERT_NE(get.route, nullptr);
  EXPECT_EQ(get.route->handler, 2);
  EXPECT_EQ(get.params, std::vector<std::string>{"query"});
  auto patch = t.find("PATCH", path({"devices", "query"}));
  EXPECT_EQ(patch.route, nullptr);
  EXPECT_EQ(patch.allow, "POST, GET, DELETE");
}

}  // namespace
}  // namespace iothub::service_api
