#include "output.hpp"

#include <gtest/gtest.h>

namespace iothub::ctl {
namespace {

json::value parse(std::string_view text) {
  auto v = parseJson(text);
  EXPECT_TRUE(v) << v.status().toString();
  return v ? *v : json::value();
}

TEST(FormatJsonPrettyTest, IndentsNestedValuesInDocumentOrder) {
  EXPECT_EQ(formatJsonPretty(parse(R"({"b":1,"a":[true,{"c":null}],"e":{},"f":[],"s":"x\"y"})")),
            "{\n"
            "  \"b\": 1,\n"
            "  \"a\": [\n"
            "    true,\n"
            "    {\n"
            "      \"c\": null\n"
            "    }\n"
            "  ],\n"
            "  \"e\": {},\n"
            "  \"f\": [],\n"
            "  \"s\": \"x\\\"y\"\n"
            "}\n");
}

TEST(FormatJsonPrettyTest, ScalarsStayOnOneLine) {
  EXPECT_EQ(formatJsonPretty(json::value(nullptr)), "null\n");
  EXPECT_EQ(formatJsonPretty(json::value("hi")), "\"hi\"\n");
  EXPECT_EQ(formatJsonPretty(json::value(42)), "42\n");
}

TEST(FormatMethodResponseTest, PrintsStatusThenPayload) {
  service::MethodResponse response;
  response.status = 200;
  response.payload = parse(R"({"ok":true})");
  EXPECT_EQ(formatMethodResponse(response), "status: 200\n{\n  \"ok\": true\n}\n");
  response.status = 404;
  response.payload = nullptr;
  EXPECT_EQ(formatMethodResponse(response), "status: 404\nnull\n");
}

}  // namespace
}  // namespace iothub::ctl
