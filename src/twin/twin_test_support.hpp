#pragma once

// Helpers shared by the twin module's tests (not part of the library).

#include <gtest/gtest.h>

#include <algorithm>
#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

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

// A valid section object whose twinSize() is exactly `size` (>= 11), which is its compact
// JSON size: members "k000", "k001", ... with ASCII strings of at most 4000 characters.
// Azure's accounting of it is smaller (no quotes, colons, commas or braces).
inline json::object documentOfSize(std::size_t size) {
  constexpr std::size_t kMember = 10;  // "kNNN":"" and a comma (the braces make up for the last)
  constexpr std::size_t kChunk = 4000;
  std::size_t count = (size - 1 + kMember + kChunk - 1) / (kMember + kChunk);
  std::size_t characters = size - 1 - kMember * count;
  json::object o;
  for (std::size_t i = 0; i < count; ++i) {
    std::string key = std::to_string(1000 + i).substr(1);
    std::size_t length = characters / (count - i);
    characters -= length;
    o["k" + key] = std::string(length, 'x');
  }
  return o;
}

// A section {"<key>":[<element> x count]}: one array whose elements Azure's accounting alone
// would count as (nearly) nothing.
inline json::object arrayOf(std::string_view key, const json::value& element, std::size_t count) {
  json::array elements(count, element);
  return json::object{{key, std::move(elements)}};
}

}  // namespace iothub::twin::test_support
