#pragma once

// Test helper: write wire bytes as hex ("10 0C 00 04") so vectors read like the spec's tables.

#include <string>
#include <string_view>

#include "common/status.hpp"

namespace iothub::mqtt::testing {

inline std::string hex(std::string_view text) {
  std::string out;
  int high = -1;
  for (char c : text) {
    int value;
    if (c >= '0' && c <= '9') {
      value = c - '0';
    } else if (c >= 'A' && c <= 'F') {
      value = c - 'A' + 10;
    } else if (c >= 'a' && c <= 'f') {
      value = c - 'a' + 10;
    } else {
      continue;
    }
    if (high < 0) {
      high = value;
    } else {
      out.push_back(static_cast<char>((high << 4) | value));
      high = -1;
    }
  }
  IOTHUB_CHECK(high < 0, "odd number of hex digits in a test vector");
  return out;
}

}  // namespace iothub::mqtt::testing
