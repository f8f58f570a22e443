#include "mqtt/topic.hpp"

#include <gtest/gtest.h>

#include <string>

namespace iothub::mqtt {
namespace {

struct MatchCase {
  const char* filter;
  const char* topic;
  bool matches;
};

TEST(TopicMatchesTest, Table) {
  const MatchCase cases[] = {
      // Exact names.
      {"a/b", "a/b", true},
      {"a/b", "a/b/", false},
      {"a/b/", "a/b", false},
      {"a//b", "a//b", true},
      {"a/b", "A/b", false},
      // Multi-level wildcard, examples of §4.7.1.2.
      {"sport/tennis/player1/#", "sport/tennis/player1", true},
      {"sport/tennis/player1/#", "sport/tennis/player1/ranking", true},
      {"sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", true},
      {"sport/#", "sport", true},
      {"sport/#", "sports", false},
      {"#", "sport/tennis", true},
      {"#", "/", true},
      // Single-level wildcard, examples of §4.7.1.3.
      {"sport/tennis/+", "sport/tennis/player1", true},
      {"sport/tennis/+", "sport/tennis/player2", true},
      {"sport/tennis/+", "sport/tennis/player1/ranking", false},
      {"sport/+", "sport", false},
      {"sport/+", "sport/", true},
      {"+/+", "/finance", true},
      {"/+", "/finance", true},
      {"+", "/finance", false},
      {"+/tennis/#", "sport/tennis/player1", true},
      {"a/+/b", "a//b", true},
      // Topics beginning with $, §4.7.2.
      {"#", "$SYS/monitor", false},
      {"+/monitor/Clients", "$SYS/monitor/Clients", false},
      {"$SYS/#", "$SYS/monitor", true},
      {"$SYS/monitor/+", "$SYS/monitor/Clients", true},
      // Azure IoT Hub topics (docs/protocol.md §3.1).
      {"$iothub/methods/POST/#", "$iothub/methods/POST/reboot/?$rid=1", true},
      {"$iothub/methods/POST/#", "$iothub/methods/POST", true},
      {"$iothub/methods/POST/#", "$iothub/methods/res/200/?$rid=1", false},
      {"$iothub/twin/res/#", "$iothub/twin/res/200/?$rid=1", true},
      {"$iothub/twin/res/#", "$iothub/twin/res/204/?$rid=0&$version=2", true},
      {"$iothub/twin/PATCH/properties/desired/#",
       "$iothub/twin/PATCH/properties/desired/?$version=15", true},
      {"$iothub/twin/PATCH/properties/desired/#", "$iothub/twin/PATCH/properties/reported/?$rid=1",
       false},
      {"$iothub/+/res/#", "$iothub/twin/res/200/?$rid=1", true},
      {"$iothub/twin/+/#", "$iothub/twin/res/200", true},
      {"+/twin/res/#", "$iothub/twin/res/200", false},
      {"#", "$iothub/twin/res/200/?$rid=1", false},
      {"+", "$iothub", false},
      {"devices/dev1/messages/devicebound/#", "devices/dev1/messages/devicebound/%24.mid=abc",
       true},
      {"devices/dev1/messages/devicebound/#", "devices/dev2/messages/devicebound/x", false},
      {"devices/+/messages/events/#", "devices/dev1/messages/events/", true},
      {"devices/+/messages/events/#", "devices/dev1/modules/m1/messages/events/", false},
      {"#", "devices/dev1/messages/events/", true},
  };
  for (const MatchCase& c : cases) {
    EXPECT_EQ(topicMatches(c.filter, c.topic), c.matches)
        << "filter " << c.filter << " topic " << c.topic;
  }
}

TEST(TopicFilterTest, AcceptsValidFilters) {
  for (const char* filter :
       {"#", "+", "a", "/", "a/#", "+/+", "/+", "+/#", "a//b", "a/+/b/#", "$iothub/methods/POST/#",
        "devices/dev1/messages/devicebound/#", "sport/tennis/+"}) {
    EXPECT_TRUE(validateTopicFilter(filter).isOk()) << filter;
  }
}

TEST(TopicFilterTest, RejectsInvalidFilters) {
  for (const char* filter :
       {"", "a#", "#a", "a/#/b", "a/b#", "#/a", "##", "a+", "+a/b", "a/++", "a/b+/c", "+#"}) {
    Status status = validateTopicFilter(filter);
    EXPECT_FALSE(status.isOk()) << filter;
    EXPECT_EQ(status.code(), ErrorCode::IotHubFormatError) << filter;
  }
  EXPECT_FALSE(validateTopicFilter(std::string(65536, 'a')).isOk());
  EXPECT_TRUE(validateTopicFilter(std::string(65535, 'a')).isOk());
  EXPECT_FALSE(validateTopicFilter(std::string("a\0", 2)).isOk());
  EXPECT_FALSE(validateTopicFilter("a/\xC0\x80").isOk());
}

TEST(TopicNameTest, AcceptsAzureTopics) {
  for (const char* name : {"$iothub/twin/GET/?$rid=1", "$iothub/methods/res/200/?$rid=1a", "/",
                           "devices/dev1/messages/events/%24.mid=m1&%24.ct=application%2Fjson",
                           "a b", "\xE2\x82\xAC"}) {
    EXPECT_TRUE(validateTopicName(name).isOk()) << name;
  }
}

TEST(TopicNameTest, RejectsWildcardsEmptyAndBadUtf8) {
  for (const char* name : {"", "+", "#", "a/+", "a/#", "a+b", "sport/tennis#"}) {
    EXPECT_FALSE(validateTopicName(name).isOk()) << name;
  }
  EXPECT_FALSE(validateTopicName(std::string("a\0b", 3)).isOk());
  EXPECT_FALSE(validateTopicName("\xED\xA0\x80").isOk());
  EXPECT_FALSE(validateTopicName(std::string(65536, 'a')).isOk());
}

TEST(TopicQueryValueTest, DecodesKeysAndValues) {
  EXPECT_EQ(topicQueryValue("a/?x=1&%24rid=a%20b", "$rid"), "a b");
  EXPECT_EQ(topicQueryValue("$iothub/twin/GET/?$rid=42", "$rid"), "42");
  EXPECT_EQ(topicQueryValue("a/?flag&x=1", "flag"), "");
  EXPECT_FALSE(topicQueryValue("a/?x=1", "y"));
  EXPECT_FALSE(topicQueryValue("a/x=1", "x"));
  EXPECT_FALSE(topicQueryValue("a/?rid=%zz", "rid"));
}

}  // namespace
}  // namespace iothub::mqtt
