#include "telemetry/consumer_group.hpp"

#include <algorithm>

namespace iothub::telemetry {
namespace {

constexpr std::size_t kMaxNameLength = 50;

bool letterOrDigit(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

bool equalsIgnoringAsciiCase(std::string_view a, std::string_view b) {
  auto lower = [](char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; };
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(),
                                            [&](char x, char y) { return lower(x) == lower(y); });
}

}  // namespace

bool validConsumerGroupName(std::string_view name) {
  if (equalsIgnoringAsciiCase(name, "$Default")) return true;
  if (name.empty() || name.size() > kMaxNameLength) return false;
  if (!letterOrDigit(name.front()) || !letterOrDigit(name.back())) return false;
  return std::all_of(name.begin(), name.end(),
                     [](char c) { return letterOrDigit(c) || c == '.' || c == '-' || c == '_'; });
}

}  // namespace iothub::telemetry
