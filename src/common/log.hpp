#pragma once

#include <spdlog/spdlog.h>

#include <initializer_list>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace iothub::log {

// A named value attached to log records: the device or job a line is about. The text format
// leaves fields out (the message names them); the JSON format writes each as a member of the
// record ("deviceId", "jobId", "remote", ...; docs/operations.md, "Logs").
struct Field {
  std::string_view key;
  std::string_view value;
};

// Attaches fields to every record this thread logs while the object lives (spdlog's loggers
// here are synchronous, so a record is formatted on the thread that logs it). Nests: inner
// fields come after outer ones; a field with an empty value is left out. Not movable; create
// it on the stack.
class ScopedFields {
 public:
  ScopedFields(std::initializer_list<Field> fields);
  ~ScopedFields();
  ScopedFields(const ScopedFields&) = delete;
  ScopedFields& operator=(const ScopedFields&) = delete;

 private:
  std::size_t count_;
};

// Logs one record with `fields` attached.
template <class... Args>
void withFields(spdlog::level::level_enum level, std::initializer_list<Field> fields,
                spdlog::format_string_t<Args...> format, Args&&... args) {
  if (!spdlog::should_log(level)) return;
  ScopedFields scoped(fields);
  spdlog::log(level, format, std::forward<Args>(args)...);
}

// One JSON object a line: {"time":"2026-12-06T18:14:13.123Z","level":"info",
// "message":"…", fields…}. Strings are escaped as JSON requires; invalid UTF-8 is replaced.
std::unique_ptr<spdlog::formatter> jsonFormatter();

// The format of the default logger: "text" (the default) or "json".
void setFormat(std::string_view format);

}  // namespace iothub::log
