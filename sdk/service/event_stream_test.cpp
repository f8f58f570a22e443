#include "event_stream.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace iothub::service::detail {
namespace {

std::vector<ServerSentEvent> feedAll(EventStreamParser& parser,
                                     const std::vector<std::string>& pieces) {
  std::vector<ServerSentEvent> events;
  for (const std::string& piece : pieces) {
    auto more = parser.feed(piece);
    events.insert(events.end(), more.begin(), more.end());
  }
  return events;
}

std::vector<std::string> typesAndData(const std::vector<ServerSentEvent>& events) {
  std::vector<std::string> out;
  for (const auto& e : events) out.push_back(e.type + "|" + e.data);
  return out;
}

constexpr std::string_view kStream =
    ": keep-alive\n\n"
    "event: job\ndata: {\"a\":1}\n\n"
    "data:no space\r\n\r\n"
    "event: job\rdata: line 1\rdata: line 2\r\r"
    "id: 7\nevent: job\ndata:  two spaces\nunknown: x\n\n"
    "event: job\n\n";  // no data line: nothing is dispatched

TEST(EventStreamParserTest, ParsesFieldsCommentsAndEveryLineEnd) {
  EventStreamParser parser;
  auto events = parser.feed(kStream);
  EXPECT_EQ(typesAndData(events),
            (std::vector<std::string>{"job|{\"a\":1}", "message|no space", "job|line 1\nline 2",
                                      "job| two spaces"}));
  ASSERT_EQ(events.size(), 4u);
  EXPECT_EQ(events[2].id, "");
  EXPECT_EQ(events[3].id, "7");
}

TEST(EventStreamParserTest, AnySplitOfTheBytesGivesTheSameEvents) {
  EventStreamParser whole;
  auto expected = typesAndData(whole.feed(kStream));
  for (std::size_t cut = 0; cut <= kStream.size(); ++cut) {
    EventStreamParser parser;
    auto events =
        feedAll(parser, {std::string(kStream.substr(0, cut)), std::string(kStream.substr(cut))});
    EXPECT_EQ(typesAndData(events), expected) << "cut at " << cut;
  }
  EventStreamParser bytewise;
  std::vector<std::string> bytes;
  for (char c : kStream) bytes.emplace_back(1, c);
  EXPECT_EQ(typesAndData(feedAll(bytewise, bytes)), expected);
}

TEST(EventStreamParserTest, AnEventIsOnlyDispatchedByItsBlankLine) {
  EventStreamParser parser;
  EXPECT_TRUE(parser.feed("event: job\ndata: {}\n").empty());
  auto events = parser.feed("\n");
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].data, "{}");
}

TEST(EventStreamParserTest, SkipsALeadingByteOrderMarkOnly) {
  EventStreamParser parser;
  auto events = feedAll(parser, {"\xEF\xBB",
                                 "\xBF"
                                 "data: x\n\n"});
  EXPECT_EQ(typesAndData(events), (std::vector<std::string>{"message|x"}));
  EventStreamParser plain;
  EXPECT_EQ(typesAndData(plain.feed("da")), (std::vector<std::string>{}));
  EXPECT_EQ(typesAndData(plain.feed("ta: y\n\n")), (std::vector<std::string>{"message|y"}));
}

}  // namespace
}  // namespace iothub::service::detail
