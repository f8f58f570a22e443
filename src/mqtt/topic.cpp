#include "mqtt/topic.hpp"

#include <string>

#include "common/encoding.hpp"
#include "mqtt/utf8.hpp"

namespace iothub::mqtt {
namespace {

Status formatError(std::string message) {
  return Status(ErrorCode::IotHubFormatError, std::move(message));
}

Status validateCommon(std::string_view text, std::string_view what) {
  if (text.empty()) return formatError(std::string(what) + " must not be empty");
  if (text.size() > kMaxStringLength) {
    return formatError(std::string(what) + " is longer than 65535 bytes");
  }
  Status utf8 = validateUtf8(text);
  if (!utf8) return formatError(std::string(what) + ": " + utf8.message());
  return Status::ok();
}

// Walks the '/'-separated levels of a topic name or filter. A string with k slashes has
// k + 1 levels, some possibly empty.
class LevelCursor {
 public:
  explicit LevelCursor(std::string_view text) : text_(text) {}

  bool done() const { return done_; }

  std::string_view next() {
    const std::size_t slash = text_.find('/', pos_);
    std::string_view level;
    if (slash == std::string_view::npos) {
      level = text_.substr(pos_);
      done_ = true;
    } else {
      level = text_.substr(pos_, slash - pos_);
      pos_ = slash + 1;
    }
    return level;
  }

 private:
  std::string_view text_;
  std::size_t pos_ = 0;
  bool done_ = false;
};

}  // namespace

Status validateTopicName(std::string_view name) {
  IOTHUB_RETURN_IF_ERROR(validateCommon(name, "topic name"));
  const std::size_t wildcard = name.find_first_of("+#");
  if (wildcard != std::string_view::npos) {
    return formatError("topic name contains the wildcard '" + std::string(1, name[wildcard]) +
                       "' at offset " + std::to_string(wildcard));
  }
  return Status::ok();
}

Status validateTopicFilter(std::string_view filter) {
  IOTHUB_RETURN_IF_ERROR(validateCommon(filter, "topic filter"));
  LevelCursor levels(filter);
  while (!levels.done()) {
    const std::string_view level = levels.next();
    if (level.find('#') != std::string_view::npos) {
      if (level != "#") return formatError("topic filter: '#' must occupy a whole level");
      if (!levels.done()) return formatError("topic filter: '#' must be the last level");
    } else if (level.find('+') != std::string_view::npos && level != "+") {
      return formatError("topic filter: '+' must occupy a whole level");
    }
  }
  return Status::ok();
}

bool topicMatches(std::string_view filter, std::string_view topic) {
  if (!topic.empty() && topic.front() == '$' && !filter.empty() &&
      (filter.front() == '+' || filter.front() == '#')) {
    return false;
  }
  LevelCursor filter_levels(filter);
  LevelCursor topic_levels(topic);
  while (!filter_levels.done()) {
    const std::string_view wanted = filter_levels.next();
    if (wanted == "#") return true;
    if (topic_levels.done()) return false;
    const std::string_view actual = topic_levels.next();
    if (wanted != "+" && wanted != actual) return false;
  }
  return topic_levels.done();
}

std::optional<std::string> topicQueryValue(std::string_view topic, std::string_view name) {
  auto start = topic.find("/?");
  if (start == std::string_view::npos) return std::nullopt;
  std::string_view query = topic.substr(start + 2);
  while (!query.empty()) {
    auto amp = query.find('&');
    std::string_view pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view{} : query.substr(amp + 1);
    auto eq = pair.find('=');
    auto key = urlDecode(pair.substr(0, eq));
    if (!key || *key != name) continue;
    if (eq == std::string_view::npos) return std::string();
    auto value = urlDecode(pair.substr(eq + 1));
    if (value) return value;
  }
  return std::nullopt;
}

}  // namespace iothub::mqtt
