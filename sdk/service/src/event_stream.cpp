#include "event_stream.hpp"

namespace iothub::service::detail {

std::vector<ServerSentEvent> EventStreamParser::feed(std::string_view bytes) {
  std::vector<ServerSentEvent> out;
  for (char c : bytes) {
    if (!started_) {
      pending_.push_back(c);
      constexpr std::string_view kBom = "\xEF\xBB\xBF";
      if (kBom.substr(0, pending_.size()) == pending_) {
        if (pending_.size() < kBom.size()) continue;
        pending_.clear();
        started_ = true;
        continue;
      }
      // Not a BOM: replay what was held back as ordinary bytes.
      started_ = true;
      std::string held = std::move(pending_);
      pending_.clear();
      for (char h : held) {
        auto more = feed(std::string_view(&h, 1));
        out.insert(out.end(), more.begin(), more.end());
      }
      continue;
    }
    if (c == '\n' && after_cr_) {
      after_cr_ = false;  // the "\n" of "\r\n"
      continue;
    }
    after_cr_ = c == '\r';
    if (c == '\r' || c == '\n') {
      line(pending_, out);
      pending_.clear();
    } else {
      pending_.push_back(c);
    }
  }
  return out;
}

void EventStreamParser::line(std::string_view text, std::vector<ServerSentEvent>& out) {
  if (text.empty()) {
    if (has_data_) {
      current_.id = last_id_;
      if (current_.type.empty()) current_.type = "message";
      out.push_back(std::move(current_));
    }
    current_ = ServerSentEvent{};
    has_data_ = false;
    return;
  }
  if (text.front() == ':') return;  // a comment, e.g. ": keep-alive"
  std::string_view field = text;
  std::string_view value;
  if (auto colon = text.find(':'); colon != std::string_view::npos) {
    field = text.substr(0, colon);
    value = text.substr(colon + 1);
    if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
  }
  if (field == "event") {
    current_.type = std::string(value);
  } else if (field == "data") {
    if (has_data_) current_.data.push_back('\n');
    current_.data.append(value);
    has_data_ = true;
  } else if (field == "id") {
    if (value.find('\0') == std::string_view::npos) last_id_ = std::string(value);
  }
}

}  // namespace iothub::service::detail
