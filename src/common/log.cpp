#include "common/log.hpp"

#include <spdlog/pattern_formatter.h>

#include <boost/json.hpp>
#include <chrono>
#include <cstdint>
#include <ctime>

namespace iothub::log {
namespace {

struct OwnedField {
  std::string key;
  std::string value;
};

thread_local std::vector<OwnedField> t_fields;

// `text` with every byte that does not start a well-formed UTF-8 sequence (RFC 3629: no
// overlong forms, no surrogates, nothing above U+10FFFF) replaced by U+FFFD, so that each
// line stays valid JSON whatever a peer sent.
std::string validUtf8(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  std::size_t i = 0;
  while (i < text.size()) {
    const auto b = static_cast<unsigned char>(text[i]);
    std::size_t len = b < 0x80           ? 1
                      : (b >> 5) == 0x6  ? 2
                      : (b >> 4) == 0xE  ? 3
                      : (b >> 3) == 0x1E ? 4
                                         : 0;
    bool ok = len != 0 && i + len <= text.size();
    std::uint32_t cp = len == 1 ? b : len == 2 ? (b & 0x1F) : len == 3 ? (b & 0x0F) : (b & 0x07);
    for (std::size_t k = 1; ok && k < len; ++k) {
      const auto c = static_cast<unsigned char>(text[i + k]);
      ok = (c & 0xC0) == 0x80;
      cp = (cp << 6) | (c & 0x3F);
    }
    if (ok) {
      static constexpr std::uint32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
      ok = cp >= kMin[len] && cp <= 0x10FFFF && (cp < 0xD800 || cp > 0xDFFF);
    }
    if (ok) {
      out.append(text.substr(i, len));
      i += len;
    } else {
      out.append("\xEF\xBF\xBD");
      ++i;
    }
  }
  return out;
}

void appendTime(spdlog::log_clock::time_point time, spdlog::memory_buf_t& out) {
  const auto since_epoch = time.time_since_epoch();
  const auto seconds = std::chrono::duration_cast<std::chrono::seconds>(since_epoch);
  const auto millis =
      std::chrono::duration_cast<std::chrono::milliseconds>(since_epoch - seconds).count();
  const std::time_t t = static_cast<std::time_t>(seconds.count());
  std::tm tm{};
  gmtime_r(&t, &tm);
  char text[40];
  std::size_t n = std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%S", &tm);
  fmt::format_to(std::back_inserter(out), "{}.{:03}Z", std::string_view(text, n), millis);
}

class JsonFormatter final : public spdlog::formatter {
 public:
  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    boost::json::object record;
    spdlog::memory_buf_t time;
    appendTime(msg.time, time);
    record["time"] = std::string_view(time.data(), time.size());
    const auto level = spdlog::level::to_string_view(msg.level);
    record["level"] = std::string_view(level.data(), level.size());
    record["message"] = validUtf8(std::string_view(msg.payload.data(), msg.payload.size()));
    for (const OwnedField& f : t_fields) record[f.key] = validUtf8(f.value);
    // boost::json escapes quotes, backslashes and control characters.
    const std::string line = boost::json::serialize(record);
    dest.append(line.data(), line.data() + line.size());
    dest.push_back('\n');
  }
  std::unique_ptr<spdlog::formatter> clone() const override {
    return std::make_unique<JsonFormatter>();
  }
};

}  // namespace

ScopedFields::ScopedFields(std::initializer_list<Field> fields) : count_(0) {
  for (const Field& f : fields) {
    if (f.value.empty()) continue;
    t_fields.push_back({std::string(f.key), std::string(f.value)});
    ++count_;
  }
}

ScopedFields::~ScopedFields() { t_fields.resize(t_fields.size() - count_); }

std::unique_ptr<spdlog::formatter> jsonFormatter() { return std::make_unique<JsonFormatter>(); }

void setFormat(std::string_view format) {
  if (format == "json") {
    spdlog::set_formatter(jsonFormatter());
  } else {
    spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%eZ %^%l%$ %v", spdlog::pattern_time_type::utc);
  }
}

}  // namespace iothub::log
