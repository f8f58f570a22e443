#include "store/change_feed.hpp"

#include <algorithm>
#include <charconv>

namespace iothub::store {
namespace {

Status badCursor(std::string_view text) {
  return Status(ErrorCode::ArgumentInvalid,
                "not a change cursor (xmin:xmax:xip,...): '" + std::string(text) + "'");
}

// A whole decimal number, nothing else.
std::optional<std::uint64_t> parseNumber(std::string_view text) {
  std::uint64_t value = 0;
  auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || error != std::errc() || end != text.data() + text.size()) {
    return std::nullopt;
  }
  return value;
}

}  // namespace

Result<ChangeCursor> ChangeCursor::parse(std::string_view text) {
  std::size_t first = text.find(':');
  std::size_t second = first == std::string_view::npos ? first : text.find(':', first + 1);
  if (second == std::string_view::npos) return badCursor(text);
  auto xmin = parseNumber(text.substr(0, first));
  auto xmax = parseNumber(text.substr(first + 1, second - first - 1));
  if (!xmin || !xmax || *xmin > *xmax) return badCursor(text);
  ChangeCursor cursor{.xmin = *xmin, .xmax = *xmax, .in_progress = {}};
  std::string_view list = text.substr(second + 1);
  while (!list.empty()) {
    std::size_t comma = list.find(',');
    auto xid = parseNumber(list.substr(0, comma));
    if (!xid || *xid < cursor.xmin || *xid >= cursor.xmax ||
        (!cursor.in_progress.empty() && *xid <= cursor.in_progress.back())) {
      return badCursor(text);
    }
    cursor.in_progress.push_back(*xid);
    if (comma == std::string_view::npos) break;
    list.remove_prefix(comma + 1);
    if (list.empty()) return badCursor(text);  // a trailing comma
  }
  return cursor;
}

std::string ChangeCursor::toString() const {
  std::string text = std::to_string(xmin) + ":" + std::to_string(xmax) + ":";
  for (std::size_t i = 0; i < in_progress.size(); ++i) {
    if (i > 0) text += ',';
    text += std::to_string(in_progress[i]);
  }
  return text;
}

bool ChangeCursor::saw(std::uint64_t xid) const {
  if (xid < xmin) return true;
  if (xid >= xmax) return false;
  return !std::binary_search(in_progress.begin(), in_progress.end(), xid);
}

}  // namespace iothub::store
