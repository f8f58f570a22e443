#pragma once

#include <chrono>
#include <memory>
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

// A response body produced over time (a text/event-stream). The server writes the
// response's status and headers, then calls next() until it answers `done`: it sends `data`
// at once (chunked in HTTP/1.1, unframed in HTTP/1.0) and calls again after `wait`.
// next() runs on a worker thread (it may block on the store), never concurrently with
// itself. The server drops its reference when the body ends for any reason: done, the client
// gone, a write failed or timed out, the server stopping; next() is not called after that.
class HttpEventSource {
 public:
  struct Step {
    std::string data;                     // bytes to send now; empty = nothing
    bool done = false;                    // the body ends after `data`
    std::chrono::milliseconds wait{100};  // when not done: ask again after this long
  };
  virtual ~HttpEventSource() = default;
  virtual Step next(std::chrono::steady_clock::time_point now) = 0;
};

struct HttpResponse {
  int status = 200;
  HttpHeaders headers;
  std::string body;
  // When set, the body is streamed from it and `body` is ignored (see HttpEventSource).
  std::shared_ptr<HttpEventSource> stream;
};

}  // namespace iothub
