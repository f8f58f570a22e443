#include "common/status.hpp"

#include <cstdio>
#include <cstdlib>

namespace iothub {

std::string Status::toString() const {
  if (isOk()) return "OK";
  return std::string(errorInfo(code_).name) + ": " + message_;
}

void checkFailed(const char* file, int line, const char* condition, const char* why) {
  std::fprintf(stderr, "iothub: check failed at %s:%d: %s (%s)\n", file, line, condition, why);
  std::abort();
}

}  // namespace iothub
