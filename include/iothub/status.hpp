#pragma once

#include <cassert>
#include <string>
#include <utility>
#include <variant>

#include "iothub/error_code.hpp"

namespace iothub {

// The outcome of a fallible call: Ok, or an ErrorCode with a human-readable message.
// Messages are shown to API clients, so they must never contain secrets.
class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(ErrorCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status ok() { return {}; }

  bool isOk() const { return code_ == ErrorCode::Ok; }
  explicit operator bool() const { return isOk(); }
  ErrorCode code() const { return code_; }
  const std::string& message() const { return message_; }
  std::string toString() const;

 private:
  ErrorCode code_ = ErrorCode::Ok;
  std::string message_;
};

// A value or a failed Status; shaped like C++23 std::expected.
template <class T>
class [[nodiscard]] Result {
 public:
  Result(T value) : state_(std::in_place_index<0>, std::move(value)) {}  // NOLINT: implicit by design
  Result(Status status) : state_(std::in_place_index<1>, std::move(status)) {  // NOLINT
    assert(!std::get<1>(state_).isOk() && "a Result built from a Status must hold an error");
  }

  bool isOk() const { return state_.index() == 0; }
  explicit operator bool() const { return isOk(); }

  T& value() & { return std::get<0>(state_); }
  const T& value() const& { return std::get<0>(state_); }
  T&& value() && { return std::get<0>(std::move(state_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

  // The error; Status::ok() when the Result holds a value.
  Status status() const { return isOk() ? Status::ok() : std::get<1>(state_); }
  ErrorCode code() const { return isOk() ? ErrorCode::Ok : std::get<1>(state_).code(); }

 private:
  std::variant<T, Status> state_;
};

// Returns early from the enclosing function when `expr` (a Status) is an error.
#define IOTHUB_RETURN_IF_ERROR(expr)              \
  do {                                            \
    ::iothub::Status iothub_status_ = (expr);     \
    if (!iothub_status_.isOk()) return iothub_status_; \
  } while (false)

// Crashes with a message: only for states that mean corruption or a programming error,
// never for anything an untrusted peer can cause.
[[noreturn]] void checkFailed(const char* file, int line, const char* condition, const char* why);
#define IOTHUB_CHECK(cond, why) \
  ((cond) ? static_cast<void>(0) : ::iothub::checkFailed(__FILE__, __LINE__, #cond, why))

}  // namespace iothub
