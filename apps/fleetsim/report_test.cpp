#include "apps/fleetsim/report.hpp"

#include <gtest/gtest.h>

namespace iothub::fleetsim {
namespace {

json::value doc(std::string_view text) { return *parseJson(text); }

TEST(ReportTest, FindsNumbersAtDottedPaths) {
  const auto d = doc(R"({"connect":{"rate":1500.5,"n":3,"ok":true},"x":"text"})");
  EXPECT_DOUBLE_EQ(*numberAt(d, "connect.rate"), 1500.5);
  EXPECT_DOUBLE_EQ(*numberAt(d, "connect.n"), 3);
  EXPECT_DOUBLE_EQ(*numberAt(d, "connect.ok"), 1);
  EXPECT_FALSE(numberAt(d, "connect.missing"));
  EXPECT_FALSE(numberAt(d, "x"));
  EXPECT_FALSE(numberAt(d, "connect..rate"));
}

TEST(ReportTest, ParsesRatioSpecs) {
  auto same = parseRatioSpec("rate=connect.rate");
  ASSERT_TRUE(same);
  EXPECT_EQ(same->hub_path, "connect.rate");
  EXPECT_EQ(same->peer_path, "connect.rate");
  auto split = parseRatioSpec("ops=method_job.ops/method_direct.ops");
  ASSERT_TRUE(split);
  EXPECT_EQ(split->name, "ops");
  EXPECT_EQ(split->hub_path, "method_job.ops");
  EXPECT_EQ(split->peer_path, "method_direct.ops");
  EXPECT_FALSE(parseRatioSpec("noequals"));
  EXPECT_FALSE(parseRatioSpec("=a"));
  EXPECT_FALSE(parseRatioSpec("a=b/"));
}

TEST(ReportTest, ParsesRequirements) {
  auto r = parseRequirement("hub.connect.failed==0");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->path, "hub.connect.failed");
  EXPECT_EQ(r->op, "==");
  EXPECT_EQ(r->threshold, 0);
  auto ge = parseRequirement("ratios.rate>=0.7");
  ASSERT_TRUE(ge);
  EXPECT_EQ(ge->op, ">=");
  EXPECT_DOUBLE_EQ(ge->threshold, 0.7);
  EXPECT_FALSE(parseRequirement("hub.x"));
  EXPECT_FALSE(parseRequirement("hub.x>abc"));
}

TEST(ReportTest, CombinesWithRatiosAndChecksRequirements) {
  const auto hub = doc(R"({"rate":800,"p99":2.0,"failed":0})");
  const auto peer = doc(R"({"rate":1000,"p99":0,"failed":0})");
  auto combined =
      combineResults("B1", hub, peer, {*parseRatioSpec("rate=rate"), *parseRatioSpec("p99=p99")});
  ASSERT_TRUE(combined);
  EXPECT_EQ(combined->at("scenario").as_string(), "B1");
  EXPECT_DOUBLE_EQ(combined->at("ratios").at("rate").as_double(), 0.8);
  EXPECT_TRUE(combined->at("ratios").at("p99").is_null());
  const json::value c = *combined;
  EXPECT_TRUE(
      checkRequirements(c, {*parseRequirement("hub.rate>0"), *parseRequirement("peer.failed==0")}));
  auto failing = checkRequirements(
      c, {*parseRequirement("ratios.rate>=0.9"), *parseRequirement("hub.nope>0")});
  ASSERT_FALSE(failing);
  EXPECT_NE(failing.message().find("ratios.rate"), std::string::npos);
  EXPECT_NE(failing.message().find("hub.nope"), std::string::npos);
  EXPECT_FALSE(combineResults("B1", hub, peer, {*parseRatioSpec("x=missing")}));
}

TEST(ReportTest, ParsesProcFiles) {
  EXPECT_EQ(parseVmRssKb("Name:\tx\nVmRSS:\t   12345 kB\nThreads: 3\n"), 12345);
  EXPECT_FALSE(parseVmRssKb("Name: x\n"));
  // The command name may contain spaces and parentheses; fields count after the last ')'.
  const std::string stat = "1234 (iot hub) d) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0";
  EXPECT_EQ(parseCpuTicks(stat), 300);
  EXPECT_FALSE(parseCpuTicks("1234 (x) S 1 2"));
}

}  // namespace
}  // namespace iothub::fleetsim
