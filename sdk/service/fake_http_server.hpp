#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

namespace iothub::service::testing {

// What the fake server saw.
struct RecordedRequest {
  std::string method;
  std::string target;
  std::vector<std::pair<std::string, std::string>> headers;  // names lower-cased
  std::string body;
  int connection = 0;  // 1-based index of the connection it arrived on

  std::optional<std::string> header(std::string_view name) const;
};

// What the fake server does with the next request.
struct CannedResponse {
  enum class Then {
    KeepOpen,              // answer and keep the connection
    CloseAfterResponse,    // answer, then close without "Connection: close" (idle drop)
    CloseWithoutResponse,  // read the request and close without answering
    Hang,                  // never answer; wait until the client goes away
    HoldUntilReleased,     // answer only once the test calls release()
  };
  int status = 200;
  std::string body;
  std::string content_type = "application/json; charset=utf-8";
  std::vector<std::pair<std::string, std::string>> headers;
  Then then = Then::KeepOpen;
  // When not empty, the body goes out with Transfer-Encoding: chunked instead of `body`,
  // one HTTP chunk per element, each written as soon as the previous one is.
  std::vector<std::string> chunks;
  // With chunks: before sending chunk number `hold_before_chunk` (0-based), wait for
  // release() (or the server's end). -1: no wait.
  int hold_before_chunk = -1;
  // With chunks: false closes the connection after the last chunk without the final
  // zero-length chunk, as a dropped stream.
  bool finish_chunks = true;
};

struct ServerTlsConfig {
  std::string cert_pem;
  std::string key_pem;
};

// A tiny HTTP/1.1 server on 127.0.0.1, port 0, run by one thread with a synchronous Beast
// loop: one connection at a time, requests answered with canned responses in order (a
// 500 when none is queued). Thread-safe accessors; waits take deadlines, never sleep.
class FakeHttpServer {
 public:
  explicit FakeHttpServer(std::optional<ServerTlsConfig> tls = std::nullopt);
  ~FakeHttpServer();
  FakeHttpServer(const FakeHttpServer&) = delete;
  FakeHttpServer& operator=(const FakeHttpServer&) = delete;

  std::uint16_t port() const;
  // "http://127.0.0.1:<port>" (or https).
  std::string endpoint() const;

  void reply(CannedResponse response);
  void reply(int status, std::string body = {});
  // Lets one HoldUntilReleased response (the current or the next) go out.
  void release();

  std::vector<RecordedRequest> requests() const;
  int connectionsAccepted() const;
  int connectionsClosed() const;
  // SNI the client sent on the last TLS connection ("" when none).
  std::string lastServerName() const;

  // Wait until the server has seen `n` requests / closed `n` connections; false on timeout.
  bool waitForRequests(std::size_t n, std::chrono::milliseconds timeout = std::chrono::seconds{10});
  bool waitForClosedConnections(int n,
                                std::chrono::milliseconds timeout = std::chrono::seconds{10});

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace iothub::service::testing
