#include "service_api/route_table.hpp"

namespace iothub::service_api {

PathPattern::PathPattern(std::string_view pattern) : text_(pattern) {
  for (std::string& segment : pathSegments(pattern)) {
    Segment_ s;
    if (segment.size() >= 2 && segment.front() == '{' && segment.back() == '}') {
      s.parameter = true;
      s.rest = segment.ends_with("*}");
    } else {
      s.literal = std::move(segment);
    }
    segments_.push_back(std::move(s));
  }
}

std::vector<std::string> pathSegments(std::string_view path) {
  std::vector<std::string> out;
  while (!path.empty()) {
    if (path.front() == '/') path.remove_prefix(1);
    std::size_t end = path.find('/');
    out.emplace_back(path.substr(0, end));
    path = end == std::string_view::npos ? std::string_view() : path.substr(end);
  }
  if (!out.empty() && out.back().empty()) out.pop_back();
  return out;
}

}  // namespace iothub::service_api
