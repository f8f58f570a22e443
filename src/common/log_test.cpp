#include "common/log.hpp"

#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>

#include <boost/json.hpp>
#include <sstream>

namespace iothub::log {
namespace {

class JsonLogTest : public ::testing::Test {
 protected:
  JsonLogTest() : sink_(std::make_shared<spdlog::sinks::ostream_sink_st>(out_)) {
    auto logger = std::make_shared<spdlog::logger>("json-test", sink_);
    logger->set_formatter(jsonFormatter());
    previous_ = spdlog::default_logger();
    spdlog::set_default_logger(logger);
  }
  ~JsonLogTest() override { spdlog::set_default_logger(previous_); }

  std::vector<boost::json::object> records() {
    std::vector<boost::json::object> out;
    std::istringstream lines(out_.str());
    for (std::string line; std::getline(lines, line);) {
      boost::system::error_code ec;
      auto v = boost::json::parse(line, ec);
      EXPECT_FALSE(ec) << "not JSON: " << line;
      if (!ec) out.push_back(v.as_object());
    }
    return out;
  }

  std::ostringstream out_;
  std::shared_ptr<spdlog::sinks::ostream_sink_st> sink_;
  std::shared_ptr<spdlog::logger> previous_;
};

TEST_F(JsonLogTest, OneObjectPerLineWithStableNamesAndTheFieldsInScope) {
  spdlog::info("hub {} serving", "h1");
  {
    ScopedFields job{{"jobId", "job-7"}};
    withFields(spdlog::level::warn, {{"deviceId", "door-1"}}, "device {} failed: {}", "door-1",
               "GatewayTimeout");
  }
  spdlog::error("after");
  auto r = records();
  ASSERT_EQ(r.size(), 3u);
  EXPECT_EQ(r[0].at("level"), "info");
  EXPECT_EQ(r[0].at("message"), "hub h1 serving");
  EXPECT_EQ(r[0].size(), 3u) << "time, level, message and nothing else";
  const std::string time(r[0].at("time").as_string());
  EXPECT_EQ(time.size(), 24u) << time;  // 2026-12-06T18:14:13.123Z
  EXPECT_EQ(time.back(), 'Z');
  EXPECT_EQ(r[1].at("level"), "warning");
  EXPECT_EQ(r[1].at("jobId"), "job-7");
  EXPECT_EQ(r[1].at("deviceId"), "door-1");
  EXPECT_EQ(r[1].at("message"), "device door-1 failed: GatewayTimeout");
  EXPECT_FALSE(r[2].contains("jobId")) << "fields end with their scope";
  EXPECT_FALSE(r[2].contains("deviceId"));
}

TEST_F(JsonLogTest, QuotesControlCharactersAndInvalidUtf8StayValidJson) {
  withFields(spdlog::level::info, {{"remote", "1.2.3.4:5\xff"}}, "said \"{}\"\n\t{}", "hi",
             std::string("\xc0\xaf bad \xed\xa0\x80 \xe2\x82\xac ok"));
  auto r = records();
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].at("message"),
            "said \"hi\"\n\t\xef\xbf\xbd\xef\xbf\xbd bad \xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd "
            "\xe2\x82\xac ok");
  EXPECT_EQ(r[0].at("remote"), "1.2.3.4:5\xef\xbf\xbd");
}

}  // namespace
}  // namespace iothub::log
