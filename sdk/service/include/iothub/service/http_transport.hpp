#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "iothub/clock.hpp"
#include "iothub/connection_string.hpp"
#include "iothub/json.hpp"
#include "iothub/service/service_client_options.hpp"
#include "iothub/status.hpp"

namespace iothub::service {

// The api-version every request carries (docs/protocol.md §4.1).
inline constexpr std::string_view kApiVersion = "2021-04-12";
inline constexpr std::string_view kUserAgent = "iothub-cpp-sdk/0.1";

// One REST call, relative to the hub.
struct HttpRequest {
  std::string method = "GET";  // GET, PUT, POST, PATCH, DELETE
  // Already percent-encoded path, e.g. "/devices/d%201". Callers encode ids with
  // urlEncodeStrict (Node's encodeURIComponent, docs/protocol.md §4.3).
  std::string path;
  // Extra query parameters appended after "api-version=…", already encoded
  // (e.g. "jobStatus=running"); empty for none.
  std::string query;
  // Request body (JSON text). When set, Content-Type is application/json; charset=utf-8.
  std::optional<std::string> body;
  // Sent as If-Match, double-quoted unless it already is ("*" goes out as "\"*\"").
  std::optional<std::string> if_match;
  // Further headers, e.g. {"x-ms-continuation", token}, {"x-ms-max-item-count", "100"}.
  std::vector<std::pair<std::string, std::string>> headers;
  // Deadline for this request (connect, TLS handshake, sending and the whole response) in
  // place of ServiceClientOptions::timeout; for calls the hub may legitimately hold for
  // long, like direct methods (docs/protocol.md §7.2). nullopt = the transport's default.
  std::optional<std::chrono::milliseconds> timeout;
};

struct HttpResponse {
  int status = 0;
  std::vector<std::pair<std::string, std::string>> headers;  // names lower-cased
  std::string body;

  // The first header named `name` (case-insensitive), or nullopt.
  std::optional<std::string> header(std::string_view name) const;
};

// Transport failures (no HTTP response: connection refused, DNS, TLS verification, timeout,
// connection lost) are ServiceUnavailable whose message starts with this prefix, so callers
// can tell them from a hub that answered 503.
inline constexpr std::string_view kTransportFailurePrefix = "transport failure: ";
bool isTransportFailure(const Status& status);

// Maps a non-2xx hub response to a Status (docs/protocol.md §4.5): the code comes from the Azure
// error body ("ErrorCode:<Name>;<text>" in Message, or a nested {"errorCode":404103,…}),
// else the iothub-errorcode header, else the HTTP status. The message carries the hub's
// human text and the HTTP status.
Status statusFromErrorResponse(const HttpResponse& response);

// Shared REST plumbing of the service clients (registry today; twins, methods, queries and
// jobs reuse it): signs every request with a fresh service SAS token (sr = HostName,
// skn = policy, se = now + 3600, like the Node SDK), adds api-version, Request-Id, User-Agent
// and content headers, and keeps one persistent (keep-alive) HTTP/1.1 connection.
//
// Connection reuse: a request is re-sent at most once, and only when it went out on a
// reused connection that turned out to be closed by the server (detected before sending, or
// the connection failed before any byte of the response arrived). A fresh connection is
// never retried.
//
// TLS: the server certificate must chain to `ca_file` (or the system trust store) and name
// the HostName (DNS or IP SAN); SNI carries the HostName unless it is an IP address.
//
// Thread-safety: all methods may be called from any thread; requests are serialized by an
// internal mutex over the one connection (one call at a time). Use one transport per
// thread for parallel requests.
class HttpTransport {
 public:
  // Errors: ArgumentInvalid for an endpoint that is not an http(s) URL with an empty path,
  // or an unreadable CA file. `clock` feeds the SAS expiry (nullptr = the system clock).
  static Result<std::unique_ptr<HttpTransport>> create(
      auth::ServiceConnectionString connection_string, ServiceClientOptions options,
      std::shared_ptr<const Clock> clock = nullptr);
  ~HttpTransport();
  HttpTransport(const HttpTransport&) = delete;
  HttpTransport& operator=(const HttpTransport&) = delete;

  // Sends `request` and returns the response whatever its status. Errors: transport
  // failures (see kTransportFailurePrefix), and ArgumentInvalid for a request timeout that
  // is not positive.
  Result<HttpResponse> send(const HttpRequest& request);

  // Receives a streamed response body piece by piece as the bytes arrive (transfer
  // encoding removed). Returning false stops reading.
  using BodyHandler = std::function<bool(std::string_view data)>;

  // Sends `request` on a connection of its own, opened for this call and closed after it
  // (the shared connection and other calls are not held up, and `on_data` may use this
  // transport), and reads the response as it arrives, for long-lived responses such as
  // event streams. The request's timeout (or the default) bounds connecting, sending and
  // the response head; after that, reading fails only when no byte arrives for
  // `idle_timeout`. A 2xx response's body goes to `on_data` (the returned body is empty);
  // any other response's body is read whole into the returned response, `on_data` unused.
  // Returns once the body has ended or `on_data` returned false. Never re-sent.
  // Errors: transport failures, also after part of the body went to `on_data`;
  // ArgumentInvalid for a timeout that is not positive.
  Result<HttpResponse> sendStreaming(const HttpRequest& request, const BodyHandler& on_data,
                                     std::chrono::milliseconds idle_timeout);

  // Sends `request`; a status >= 300 becomes statusFromErrorResponse(). On success returns
  // the parsed body: null for an empty body. Errors besides the hub's: IotHubFormatError
  // when a non-empty body is not JSON or not labelled application/json.
  Result<json::value> sendJson(const HttpRequest& request);

  const std::string& hostName() const;
  // Where connections go, e.g. "https://myhub.example:443".
  const std::string& endpoint() const;

 private:
  class Impl;
  explicit HttpTransport(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace iothub::service
