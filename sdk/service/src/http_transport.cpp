// The only translation unit of the service SDK that includes Asio and Beast.

#include "iothub/service/http_transport.hpp"

#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>
#include <poll.h>

#include <array>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/url/parse.hpp>
#include <cctype>
#include <mutex>

#include "common/random.hpp"
#include "iothub/sdk/tls_client.hpp"
#include "request_building.hpp"

namespace iothub::service {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using SteadyTime = std::chrono::steady_clock::time_point;

constexpr std::string_view kReadingBody = "reading the response body";

// Large enough for a full device list (Azure caps GET /devices/ at 1000 devices).
constexpr std::uint64_t kMaxResponseBodyBytes = 256ull << 20;

// Where to connect, parsed from ServiceClientOptions::endpoint.
struct ConnectTarget {
  bool tls = true;
  std::string host;  // IP literals without brackets
  std::string port;
  std::string text;  // "https://host:port", for messages
};

std::string lowerCase(std::string_view text) {
  std::string out(text);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// The host part of a HostName that may carry a port ("hub.example:8443", "[::1]:8443").
std::string hostWithoutPort(std::string_view host_name) {
  if (!host_name.empty() && host_name.front() == '[') {
    auto close = host_name.find(']');
    return std::string(
        host_name.substr(1, close == std::string_view::npos ? std::string_view::npos : close - 1));
  }
  auto colon = host_name.find(':');
  if (colon != std::string_view::npos && host_name.find(':', colon + 1) == std::string_view::npos) {
    return std::string(host_name.substr(0, colon));
  }
  return std::string(host_name);
}

bool hostNameHasPort(std::string_view host_name) {
  if (!host_name.empty() && host_name.front() == '[') {
    return host_name.find("]:") != std::string_view::npos;
  }
  return hostWithoutPort(host_name) != host_name;
}

Result<ConnectTarget> parseEndpoint(std::string_view endpoint) {
  auto invalid = [&](std::string_view why) {
    return Status(ErrorCode::ArgumentInvalid,
                  "Invalid endpoint '" + std::string(endpoint) + "': " + std::string(why));
  };
  auto parsed = boost::urls::parse_uri(endpoint);
  if (!parsed) return invalid("not an absolute URL");
  const auto& url = *parsed;
  ConnectTarget target;
  std::string scheme = lowerCase(url.scheme());
  if (scheme == "https") {
    target.tls = true;
  } else if (scheme == "http") {
    target.tls = false;
  } else {
    return invalid("scheme must be https or http");
  }
  if (!url.has_authority() || url.encoded_host().empty()) return invalid("no host");
  if (url.has_userinfo()) return invalid("user info is not supported");
  if (!(url.encoded_path().empty() || url.encoded_path() == "/") || url.has_query() ||
      url.has_fragment()) {
    return invalid("must not have a path, query or fragment");
  }
  target.host = url.host_address();
  target.port = url.has_port() && !url.port().empty() ? std::string(url.port())
                                                      : std::string(target.tls ? "443" : "80");
  bool ipv6 = url.host_type() == boost::urls::host_type::ipv6;
  target.text = scheme + "://" + (ipv6 ? "[" + target.host + "]" : target.host) + ":" + target.port;
  return target;
}

Status transportFailure(std::string what) {
  return Status(ErrorCode::ServiceUnavailable, std::string(kTransportFailurePrefix) + what);
}

// One HTTP/1.1 connection and the io_context that drives it.
struct Connection {
  asio::io_context ioc;
  // At most one of the two is engaged: the open connection.
  std::optional<beast::tcp_stream> plain;
  std::optional<beast::ssl_stream<beast::tcp_stream>> secure;
  beast::flat_buffer buffer;

  bool isOpen() const {
    if (secure) return beast::get_lowest_layer(*secure).socket().is_open();
    if (plain) return plain->socket().is_open();
    return false;
  }

  tcp::socket& socket() {
    return secure ? beast::get_lowest_layer(*secure).socket() : plain->socket();
  }

  beast::tcp_stream& lowest() { return secure ? beast::get_lowest_layer(*secure) : *plain; }

  // An idle keep-alive connection has nothing to read. If it is readable, the server has
  // closed it (or sent something unsolicited); either way it cannot carry a request.
  bool looksClosed() {
    if (buffer.size() > 0) return true;
    pollfd fd{};
    fd.fd = socket().native_handle();
    fd.events = POLLIN;
    int n = ::poll(&fd, 1, 0);
    return n != 0;
  }

  void close() {
    boost::system::error_code ignored;
    if (isOpen()) {
      socket().shutdown(tcp::socket::shutdown_both, ignored);
      socket().close(ignored);
    }
    secure.reset();
    plain.reset();
    buffer.clear();
  }

  // Runs the io_context until the operations just started have completed. Every stream
  // operation is bounded by the tcp_stream deadline, so this cannot hang past it.
  void runUntilIdle() {
    ioc.restart();
    ioc.run();
  }

  ~Connection() { close(); }
};

}  // namespace

class HttpTransport::Impl {
 public:
  Impl(auth::ServiceConnectionString connection_string, ServiceClientOptions options,
       ConnectTarget target, std::shared_ptr<const Clock> clock)
      : connection_string_(std::move(connection_string)),
        options_(std::move(options)),
        target_(std::move(target)),
        verify_host_(hostWithoutPort(connection_string_.host_name)),
        clock_(std::move(clock)) {}

  Status init() {
    if (!target_.tls) return Status::ok();
    auto context = sdk::makeClientTlsContext(options_.ca_file);
    if (!context) return context.status();
    tls_context_.emplace(std::move(*context));
    return Status::ok();
  }

  Result<HttpResponse> send(const HttpRequest& request) {
    std::chrono::milliseconds timeout = request.timeout.value_or(options_.timeout);
    if (timeout.count() <= 0) {
      return Status(ErrorCode::ArgumentInvalid, "The request timeout must be positive");
    }
    std::lock_guard lock(mutex_);
    auto req = buildRequest(request);
    if (!req) return req.status();

    // The deadline starts once the connection is ours: time spent waiting for the mutex
    // behind another caller's request does not count against this one.
    SteadyTime deadline = std::chrono::steady_clock::now() + timeout;
    Connection& conn = connection_;
    bool reused = conn.isOpen();
    if (reused && conn.looksClosed()) {
      conn.close();
      reused = false;
    }
    for (int attempt = 0;; ++attempt) {
      if (!conn.isOpen()) IOTHUB_RETURN_IF_ERROR(connect(conn, deadline));
      Exchange result = exchange(conn, *req, deadline);
      if (!result.error) {
        if (!result.keep_alive) conn.close();
        return std::move(result.response);
      }
      conn.close();
      bool timed_out =
          result.error == beast::error::timeout || std::chrono::steady_clock::now() >= deadline;
      // A keep-alive connection the server dropped while idle fails before any byte of a
      // response arrives; the request was not processed, so sending it again is safe.
      bool dropped_while_idle = reused && attempt == 0 && !result.got_response_bytes && !timed_out;
      if (!dropped_while_idle) {
        if (timed_out) {
          return transportFailure("no response from " + target_.text + " within " +
                                  detail::durationText(timeout));
        }
        return transportFailure("connection to " + target_.text + " failed while " + result.phase +
                                ": " + result.error.message());
      }
      reused = false;
    }
  }

  Result<HttpResponse> sendStreaming(const HttpRequest& request, const BodyHandler& on_data,
                                     std::chrono::milliseconds idle_timeout) {
    std::chrono::milliseconds timeout = request.timeout.value_or(options_.timeout);
    if (timeout.count() <= 0 || idle_timeout.count() <= 0) {
      return Status(ErrorCode::ArgumentInvalid, "The request and idle timeouts must be positive");
    }
    Result<http::request<http::string_body>> req = [&] {
      std::lock_guard lock(mutex_);  // random_
      return buildRequest(request);
    }();
    if (!req) return req.status();
    Connection conn;
    SteadyTime deadline = std::chrono::steady_clock::now() + timeout;
    IOTHUB_RETURN_IF_ERROR(connect(conn, deadline));
    auto failed = [&](std::string_view phase, boost::system::error_code ec) {
      if (ec != beast::error::timeout) {
        return transportFailure("connection to " + target_.text + " failed while " +
                                std::string(phase) + ": " + ec.message());
      }
      if (phase == kReadingBody) {
        return transportFailure("nothing from " + target_.text + " for " +
                                detail::durationText(idle_timeout));
      }
      return transportFailure("no response from " + target_.text + " within " +
                              detail::durationText(timeout));
    };

    boost::system::error_code ec;
    conn.lowest().expires_at(deadline);
    auto write = [&](auto& stream) {
      http::async_write(stream, *req, [&](boost::system::error_code e, std::size_t) { ec = e; });
    };
    conn.secure ? write(*conn.secure) : write(*conn.plain);
    conn.runUntilIdle();
    if (ec) return failed("sending the request", ec);

    http::response_parser<http::buffer_body> parser;
    parser.body_limit(boost::none);
    auto read_header = [&](auto& stream) {
      http::async_read_header(stream, conn.buffer, parser,
                              [&](boost::system::error_code e, std::size_t) { ec = e; });
    };
    conn.secure ? read_header(*conn.secure) : read_header(*conn.plain);
    conn.runUntilIdle();
    if (ec) return failed("reading the response", ec);

    HttpResponse response;
    const auto& head = parser.get();
    response.status = static_cast<int>(head.result_int());
    for (const auto& field : head) {
      response.headers.emplace_back(lowerCase(field.name_string()), std::string(field.value()));
    }
    const bool deliver = response.status >= 200 && response.status < 300;
    std::array<char, 16 * 1024> chunk{};
    while (!parser.is_done()) {
      parser.get().body().data = chunk.data();
      parser.get().body().size = chunk.size();
      // A silent server fails the read after idle_timeout; any byte restarts the clock.
      conn.lowest().expires_after(deliver ? std::chrono::steady_clock::duration(idle_timeout)
                                          : deadline - std::chrono::steady_clock::now());
      auto read_some = [&](auto& stream) {
        http::async_read_some(stream, conn.buffer, parser,
                              [&](boost::system::error_code e, std::size_t) { ec = e; });
      };
      conn.secure ? read_some(*conn.secure) : read_some(*conn.plain);
      conn.runUntilIdle();
      if (ec == http::error::need_buffer) ec = {};
      std::size_t n = chunk.size() - parser.get().body().size;
      if (n > 0) {
        if (deliver) {
          if (!on_data(std::string_view(chunk.data(), n))) return response;
        } else if (response.body.size() + n <= kMaxResponseBodyBytes) {
          response.body.append(chunk.data(), n);
        }
      }
      if (ec) return failed(deliver ? kReadingBody : "reading the response", ec);
    }
    return response;
  }

  const std::string& hostName() const { return connection_string_.host_name; }
  const std::string& endpoint() const { return target_.text; }

 private:
  struct Exchange {
    boost::system::error_code error;
    std::string phase;  // "sending the request" / "reading the response"
    bool got_response_bytes = false;
    bool keep_alive = true;
    HttpResponse response;
  };

  // Called with mutex_ held (random_).
  Result<http::request<http::string_body>> buildRequest(const HttpRequest& request) {
    auto token = detail::serviceSasToken(connection_string_, clock_->now());
    if (!token) return token.status();
    http::request<http::string_body> req;
    req.method_string(request.method);
    req.target(detail::requestTarget(request));
    req.version(11);
    req.set(http::field::host, connection_string_.host_name);
    req.set(http::field::authorization, *token);
    req.set("Request-Id", detail::newRequestId(random_));
    req.set(http::field::user_agent, kUserAgent);
    req.set(http::field::connection, "keep-alive");
    if (request.if_match) req.set(http::field::if_match, detail::quoteEtag(*request.if_match));
    for (const auto& [name, value] : request.headers) req.set(name, value);
    if (request.body) {
      req.set(http::field::content_type, "application/json; charset=utf-8");
      req.body() = *request.body;
    }
    req.prepare_payload();
    return req;
  }

  Status connect(Connection& conn, SteadyTime deadline) {
    conn.close();
    // Name resolution is synchronous and bounded by the system resolver's own timeouts.
    tcp::resolver resolver(conn.ioc);
    boost::system::error_code ec;
    auto endpoints = resolver.resolve(target_.host, target_.port, ec);
    if (ec) return transportFailure("cannot resolve " + target_.host + ": " + ec.message());

    if (target_.tls) {
      conn.secure.emplace(conn.ioc, *tls_context_);
    } else {
      conn.plain.emplace(conn.ioc);
    }
    beast::tcp_stream& lowest = conn.lowest();
    lowest.expires_at(deadline);
    lowest.async_connect(endpoints,
                         [&](boost::system::error_code e, const tcp::endpoint&) { ec = e; });
    conn.runUntilIdle();
    if (ec) {
      conn.close();
      if (ec == beast::error::timeout) {
        return transportFailure("timed out connecting to " + target_.text);
      }
      return transportFailure("cannot connect to " + target_.text + ": " + ec.message());
    }
    if (!target_.tls) return Status::ok();

    SSL* ssl_handle = conn.secure->native_handle();
    sdk::expectServerName(ssl_handle, verify_host_);
    conn.secure->async_handshake(ssl::stream_base::client,
                                 [&](boost::system::error_code e) { ec = e; });
    conn.runUntilIdle();
    if (ec) {
      std::string reason = sdk::handshakeFailureReason(ssl_handle, ec);
      conn.close();
      if (ec == beast::error::timeout) {
        return transportFailure("timed out in the TLS handshake with " + target_.text);
      }
      return transportFailure("TLS handshake with " + target_.text + " failed: " + reason);
    }
    return Status::ok();
  }

  Exchange exchange(Connection& conn, http::request<http::string_body>& req, SteadyTime deadline) {
    return conn.secure ? exchange(conn, *conn.secure, req, deadline)
                       : exchange(conn, *conn.plain, req, deadline);
  }

  template <class Stream>
  Exchange exchange(Connection& conn, Stream& stream, http::request<http::string_body>& req,
                    SteadyTime deadline) {
    Exchange out;
    beast::get_lowest_layer(stream).expires_at(deadline);
    http::async_write(stream, req,
                      [&](boost::system::error_code e, std::size_t) { out.error = e; });
    conn.runUntilIdle();
    if (out.error) {
      out.phase = "sending the request";
      return out;
    }
    http::response_parser<http::string_body> parser;
    parser.body_limit(kMaxResponseBodyBytes);
    http::async_read(stream, conn.buffer, parser,
                     [&](boost::system::error_code e, std::size_t) { out.error = e; });
    conn.runUntilIdle();
    out.got_response_bytes = parser.got_some() || conn.buffer.size() > 0;
    if (out.error) {
      out.phase = "reading the response";
      return out;
    }
    const auto& res = parser.get();
    out.keep_alive = res.keep_alive();
    out.response.status = static_cast<int>(res.result_int());
    for (const auto& field : res) {
      out.response.headers.emplace_back(lowerCase(field.name_string()), std::string(field.value()));
    }
    out.response.body = res.body();
    return out;
  }

  const auth::ServiceConnectionString connection_string_;
  const ServiceClientOptions options_;
  const ConnectTarget target_;
  const std::string verify_host_;
  const std::shared_ptr<const Clock> clock_;
  // Set up once by init(); OpenSSL contexts may then create connections from any thread.
  std::optional<ssl::context> tls_context_;

  std::mutex mutex_;
  // Guarded by mutex_.
  SecureRandom random_;
  Connection connection_;  // the shared keep-alive connection
};

Result<std::unique_ptr<HttpTransport>> HttpTransport::create(
    auth::ServiceConnectionString connection_string, ServiceClientOptions options,
    std::shared_ptr<const Clock> clock) {
  if (connection_string.host_name.empty()) {
    return Status(ErrorCode::ArgumentInvalid, "The connection string has no HostName");
  }
  if (options.timeout.count() <= 0) {
    return Status(ErrorCode::ArgumentInvalid, "The request timeout must be positive");
  }
  std::string endpoint = options.endpoint;
  if (endpoint.empty()) {
    endpoint = "https://" + connection_string.host_name +
               (hostNameHasPort(connection_string.host_name) ? "" : ":443");
  }
  auto target = parseEndpoint(endpoint);
  if (!target) return target.status();
  if (!clock) clock = std::make_shared<SystemClock>();
  // Sign once now so that a key that is not base64 fails here, not on the first request.
  auto probe = detail::serviceSasToken(connection_string, clock->now());
  if (!probe) return probe.status();
  auto impl = std::make_unique<Impl>(std::move(connection_string), std::move(options),
                                     std::move(*target), std::move(clock));
  IOTHUB_RETURN_IF_ERROR(impl->init());
  return std::unique_ptr<HttpTransport>(new HttpTransport(std::move(impl)));
}

HttpTransport::HttpTransport(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
HttpTransport::~HttpTransport() = default;

Result<HttpResponse> HttpTransport::send(const HttpRequest& request) {
  return impl_->send(request);
}

Result<HttpResponse> HttpTransport::sendStreaming(const HttpRequest& request,
                                                  const BodyHandler& on_data,
                                                  std::chrono::milliseconds idle_timeout) {
  return impl_->sendStreaming(request, on_data, idle_timeout);
}

Result<json::value> HttpTransport::sendJson(const HttpRequest& request) {
  auto response = send(request);
  if (!response) return response.status();
  if (response->status >= 300) return statusFromErrorResponse(*response);
  if (response->body.empty()) return json::value(nullptr);
  std::string content_type = lowerCase(response->header("content-type").value_or(""));
  if (content_type.find("application/json") == std::string::npos) {
    return Status(ErrorCode::IotHubFormatError, "The hub answered " + request.method + " " +
                                                    request.path +
                                                    " with a body of Content-Type '" +
                                                    content_type + "', expected application/json");
  }
  auto parsed = parseJson(response->body);
  if (!parsed) {
    return Status(ErrorCode::IotHubFormatError,
                  "The hub answered " + request.method + " " + request.path +
                      " with malformed JSON: " + parsed.status().message());
  }
  return std::move(*parsed);
}

const std::string& HttpTransport::hostName() const { return impl_->hostName(); }
const std::string& HttpTransport::endpoint() const { return impl_->endpoint(); }

}  // namespace iothub::service
