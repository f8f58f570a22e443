#pragma once

// Helpers shared by the twin module's tests (not part of the library).

#include <gtest/gtest.h>

#include <algorithm>
#include <cstddef>
#include <string>
#include <string_view>

#include "common/json.hpp"

namespace iothub::twin::test_support {

// Parses a JSON object literal written in a test; fails the test on bad input.
inline json::object obj(std::string_view text) {
  auto parsed = parseJson(text);
  EXPECT_TRUE(parsed.isOk()) << parsed.status().toString() << " in " << text;
  if (!parsed || !parsed->is_object()) {
    ADD_FAILURE() << "not a JSON object: " << text;
    return {};
  }
  return std::move(parsed).value().get_object();
}

// A valid section object whose twinSize() is exactly `size` (>= 4): members "k000",
// "k001", ... with ASCII strings of at most 4000 characters.
inline json::object documentOfSize(std::size_t size) {
  constexpr std::size_t kKey = 4;
  constexpr std::size_t kChunk = 4000;
  std::size_t count = (size + kKey + kChunk - 1) / (kKey + kChunk);
  std::size_t characters = size - kKey * count;
  json::object o;
  for (std::size_t i = 0; i < count; ++i) {
    std::string key = std::to_string(1000 + i).substr(1);
    std::size_t length = characters / (count - i);
    characters -= length;
    o["k" + key] = std::string(length, 'x');
  }
  return o;
}

}  // namespace iothub::twin::test_support
