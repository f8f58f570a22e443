#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/encoding.hpp"

namespace iothub {

// A plain HTTP request/response, free of any I/O library, so that REST handlers are pure
// functions from request to response (style.md "Handlers are functions").
struct HttpHeaders {
  std::vector<std::pair<std::string, std::string>> fields;

  // The first value of `name` (case-insensitive), or nullptr.
  const std::string* find(std::string_view name) const {
    for (const auto& [k, v] : fields) {
      if (equalsIgnoreCase(k, name)) return &v;
    }
    return nullptr;
  }
  void set(std::string name, std::string value) {
    for (auto& [k, v] : fields) {
      if (equalsIgnoreCase(k, name)) {
        v = std::move(value);
        return;
      }
    }
    fields.emplace_back(std::move(name), std::move(value));
  }
};

struct HttpRequest {
  std::string method;  // "GET", "PUT", ...
  std::string target;  // origin-form: path and query, still percent-encoded
  HttpHeaders headers;
  std::string body;
  std::string remote_address;  // for logs
};

struct HttpResponse {
  int status = 200;
  HttpHeaders headers;
  std::string body;
};

}  // namespace iothub
