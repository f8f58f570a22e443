#pragma once

// Helpers shared by the service SDK's unit tests.
#include <gtest/gtest.h>

#include <string>
#include <string_view>

#include "common/json.hpp"

namespace iothub::service::testing {

// The connection string of the fake hub the client tests talk to.
inline constexpr std::string_view kConnectionString =
    "HostName=myhub.example;SharedAccessKeyName=iothubowner;"
    "SharedAccessKey=MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

// Parses JSON the test itself wrote or received; a parse failure fails the test.
inline json::value parse(std::string_view text) {
  auto v = parseJson(text);
  EXPECT_TRUE(v) << v.status().toString() << ": " << text;
  return v ? *v : json::value();
}

// An Azure error body of the registry/twin shape (docs/protocol.md §4.5, shape 1).
inline std::string azureError(std::string_view code, std::string_view text) {
  return R"({"Message":"ErrorCode:)" + std::string(code) + ";" + std::string(text) +
         R"(","ExceptionMessage":"Tracking ID:0123-G:0-TimeStamp:10/18/2022 20:50:39"})";
}

}  // namespace iothub::service::testing
