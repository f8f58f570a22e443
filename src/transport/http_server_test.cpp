// Streamed response bodies of the HTTP server (HttpResponse::stream) over a real socket:
// chunks reach the client as the source produces them, a client that leaves stops the
// source, the cap of open streams answers 503, and stop() ends open streams.
#include "transport/http_server.hpp"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/thread_pool.hpp>
#include <chrono>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "common/error_code.hpp"

namespace iothub::transport {
namespace {

using namespace std::chrono_literals;

bool waitFor(const std::function<bool()>& condition, std::chrono::milliseconds limit = 10s) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    if (condition()) return true;
    std::this_thread::sleep_for(5ms);
  }
  return condition();
}

// Sends "event <n>\n" while the test allows it, then ends; counts its calls.
class CountingSource final : public HttpEventSource {
 public:
  explicit CountingSource(int events) : events_(events) {}
  Step next(std::chrono::steady_clock::time_point) override {
    ++calls;
    if (sent_ < allowed.load()) {
      std::string data = "event " + std::to_string(sent_++) + "\n";
      return Step{std::move(data), sent_ == events_, 10ms};
    }
    return Step{{}, false, 10ms};
  }
  std::atomic<int> allowed{0};
  std::atomic<int> calls{0};

 private:
  const int events_;
  int sent_ = 0;
};

// A client socket on 127.0.0.1 with a receive timeout.
class Client {
 public:
  explicit Client(std::uint16_t port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
    timeval tv{10, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  }
  ~Client() { close(); }
  bool connected() const { return connected_; }
  void send(const std::string& bytes) {
    ASSERT_EQ(::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL),
              static_cast<ssize_t>(bytes.size()));
  }
  void get(const std::string& version = "1.1") {
    send("GET /stream HTTP/" + version + "\r\nHost: localhost\r\n\r\n");
  }
  // Reads until `text` was received (true) or the connection closes or times out (false).
  bool readUntil(std::string_view text) {
    while (received.find(text) == std::string::npos) {
      if (!readSome()) return false;
    }
    return true;
  }
  // Reads until the server closes the connection; false on timeout.
  bool readToEnd() {
    for (;;) {
      char buf[4096];
      auto n = ::recv(fd_, buf, sizeof buf, 0);
      if (n == 0) return true;
      if (n < 0) return false;
      received.append(buf, static_cast<std::size_t>(n));
    }
  }
  void close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  // The response's body after the header, with chunked framing removed; nullopt when the
  // framing is broken or the final chunk is missing.
  std::optional<std::string> dechunkedBody() const {
    auto start = received.find("\r\n\r\n");
    if (start == std::string::npos) return std::nullopt;
    std::string body;
    std::size_t at = start + 4;
    for (;;) {
      auto line_end = received.find("\r\n", at);
      if (line_end == std::string::npos) return std::nullopt;
      std::size_t size = std::stoul(received.substr(at, line_end - at), nullptr, 16);
      at = line_end + 2;
      if (size == 0)
        return received.compare(at, 2, "\r\n") == 0 ? std::optional(body) : std::nullopt;
      if (at + size + 2 > received.size()) return std::nullopt;
      body += received.substr(at, size);
      at += size + 2;
    }
  }
  // The bodies of the next `count` responses (Content-Length framed), fewer if the
  // connection closes or times out first.
  std::vector<std::string> bodies(std::size_t count) {
    std::vector<std::string> out;
    std::size_t at = 0;
    while (out.size() < count) {
      auto header_end = received.find("\r\n\r\n", at);
      auto length_at = received.find("Content-Length: ", at);
      if (header_end != std::string::npos && length_at != std::string::npos &&
          length_at < header_end) {
        std::size_t length = std::stoul(received.substr(length_at + 16));
        if (received.size() >= header_end + 4 + length) {
          out.push_back(received.substr(header_end + 4, length));
          at = header_end + 4 + length;
          continue;
        }
      }
      if (!readSome()) break;
    }
    return out;
  }
  std::string received;

 private:
  bool readSome() {
    char buf[4096];
    auto n = ::recv(fd_, buf, sizeof buf, 0);
    if (n <= 0) return false;
    received.append(buf, static_cast<std::size_t>(n));
    return true;
  }
  int fd_ = -1;
  bool connected_ = false;
};

// A server on 127.0.0.1 with its I/O thread and two workers, stopped at the end.
class HttpServerFixture : public ::testing::Test {
 protected:
  void serve(HttpServerOptions options, HttpHandler handler, HttpErrorResponder error_responder) {
    options.bind_address = "127.0.0.1";
    auto server = HttpServer::create(io_, workers_, std::move(options), std::move(handler),
                                     std::move(error_responder));
    ASSERT_TRUE(server.isOk()) << server.status().toString();
    server_ = std::move(*server);
    server_->start();
    io_thread_ = std::thread([this] { io_.run(); });
  }
  void TearDown() override {
    if (server_) {
      server_->stop();
      EXPECT_TRUE(waitFor([&] { return server_->connectionCount() == 0; }));
    }
    if (io_thread_.joinable()) io_thread_.join();  // run() returns once nothing is left
    workers_.join();
  }

  boost::asio::io_context io_;
  boost::asio::thread_pool workers_{2};
  std::unique_ptr<HttpServer> server_;
  std::thread io_thread_;
};

class HttpServerStreamTest : public HttpServerFixture {
 protected:
  void start(std::size_t max_streams = 256) {
    HttpServerOptions options;
    options.max_event_streams = max_streams;
    serve(
        options,
        [this](const HttpRequest&, HttpResponder respond) {
          auto source = std::make_shared<CountingSource>(3);
          {
            std::lock_guard lock(mutex_);
            sources_.push_back(source);
          }
          HttpResponse r;
          r.headers.set("Content-Type", "text/event-stream");
          r.stream = source;
          respond(std::move(r));
        },
        [](const Status& s) {
          HttpResponse r;
          r.status = errorInfo(s.code()).http_status;
          r.headers.set("Content-Type", "application/json");
          r.body = R"({"Message":")" + std::string(errorInfo(s.code()).name) + ";" + s.message() +
                   R"("})";
          return r;
        });
  }
  std::shared_ptr<CountingSource> source(std::size_t i) {
    std::lock_guard lock(mutex_);
    return i < sources_.size() ? sources_[i] : nullptr;
  }
  // The i-th source, once the handler made it (null if it never did).
  std::shared_ptr<CountingSource> awaitSource(std::size_t i) {
    waitFor([&] { return source(i) != nullptr; });
    return source(i);
  }

  std::mutex mutex_;
  std::vector<std::shared_ptr<CountingSource>> sources_;
};

TEST_F(HttpServerStreamTest, ChunksArriveAsTheSourceProducesThemThenTheFinalChunkAndClose) {
  start();
  Client client(server_->port());
  ASSERT_TRUE(client.connected());
  client.get();
  auto source = awaitSource(0);
  ASSERT_NE(source, nullptr);
  ASSERT_TRUE(client.readUntil("\r\n\r\n"));
  EXPECT_NE(client.received.find("HTTP/1.1 200 OK\r\n"), std::string::npos) << client.received;
  EXPECT_NE(client.received.find("Content-Type: text/event-stream\r\n"), std::string::npos);
  EXPECT_NE(client.received.find("Transfer-Encoding: chunked\r\n"), std::string::npos);
  EXPECT_NE(client.received.find("Connection: close\r\n"), std::string::npos);
  EXPECT_EQ(server_->eventStreamCount(), 1u);

  source->allowed = 1;
  ASSERT_TRUE(client.readUntil("event 0\n"));
  std::this_thread::sleep_for(100ms);  // polled about ten times meanwhile, nothing to send
  EXPECT_GE(source->calls.load(), 3);
  EXPECT_EQ(client.received.find("event 1"), std::string::npos);
  source->allowed = 2;
  ASSERT_TRUE(client.readUntil("event 1\n"));
  EXPECT_EQ(client.received.find("event 2"), std::string::npos);
  source->allowed = 3;
  ASSERT_TRUE(client.readToEnd()) << "the server closes after the final chunk";
  EXPECT_EQ(client.dechunkedBody(), "event 0\nevent 1\nevent 2\n") << client.received;
  std::weak_ptr<CountingSource> weak = source;
  source.reset();
  {
    std::lock_guard lock(mutex_);
    sources_.clear();
  }
  EXPECT_TRUE(waitFor([&] { return weak.expired() && server_->eventStreamCount() == 0; }));
}

TEST_F(HttpServerStreamTest, AnHttp10ClientGetsTheBodyUnframedUntilClose) {
  start();
  Client client(server_->port());
  client.get("1.0");
  auto source = awaitSource(0);
  ASSERT_NE(source, nullptr);
  source->allowed = 3;
  ASSERT_TRUE(client.readToEnd());
  auto body = client.received.find("\r\n\r\n");
  ASSERT_NE(body, std::string::npos);
  EXPECT_EQ(client.received.find("chunked"), std::string::npos) << client.received;
  EXPECT_EQ(client.received.substr(body + 4), "event 0\nevent 1\nevent 2\n");
}

TEST_F(HttpServerStreamTest, AClientThatLeavesStopsItsSource) {
  start();
  Client client(server_->port());
  client.get();
  std::weak_ptr<CountingSource> weak = awaitSource(0);
  ASSERT_FALSE(weak.expired());
  if (auto held = weak.lock()) held->allowed.store(1);
  ASSERT_TRUE(client.readUntil("event 0\n"));
  client.close();
  {
    std::lock_guard lock(mutex_);
    sources_.clear();
  }
  // Nothing is written meanwhile, so only the pending read can notice the client leaving.
  EXPECT_TRUE(waitFor([&] { return weak.expired(); }, 2s)) << "the server released the source";
  EXPECT_TRUE(waitFor([&] { return server_->eventStreamCount() == 0; }, 2s));
  EXPECT_TRUE(waitFor([&] { return server_->connectionCount() == 0; }, 2s));
}

TEST_F(HttpServerStreamTest, StreamsBeyondTheCapAre503UntilOneEnds) {
  start(1);
  Client first(server_->port());
  first.get();
  auto held = awaitSource(0);
  ASSERT_NE(held, nullptr);
  ASSERT_TRUE(first.readUntil("\r\n\r\n"));

  Client second(server_->port());
  second.get();
  ASSERT_TRUE(second.readToEnd());
  EXPECT_EQ(second.received.rfind("HTTP/1.1 503", 0), 0u) << second.received;
  EXPECT_NE(second.received.find(R"({"Message":"ServiceUnavailable;This server already has 1 )"
                                 R"(event streams open, its limit)"),
            std::string::npos)
      << second.received;
  EXPECT_NE(second.received.find("Retry-After: 10\r\n"), std::string::npos);
  EXPECT_EQ(server_->eventStreamCount(), 1u);

  held->allowed = 3;  // the first stream ends; its place is free again
  ASSERT_TRUE(first.readToEnd());
  ASSERT_TRUE(waitFor([&] { return server_->eventStreamCount() == 0; }));
  Client third(server_->port());
  third.get();
  auto third_source = awaitSource(2);
  ASSERT_NE(third_source, nullptr);
  ASSERT_TRUE(third.readUntil("\r\n\r\n"));
  EXPECT_EQ(third.received.rfind("HTTP/1.1 200", 0), 0u) << third.received;
  third_source->allowed = 3;
  ASSERT_TRUE(third.readToEnd());
  EXPECT_EQ(third.dechunkedBody(), "event 0\nevent 1\nevent 2\n");
  EXPECT_EQ(source(1)->calls.load(), 0) << "a refused stream's source is never asked";
}

TEST_F(HttpServerStreamTest, StopEndsOpenStreamsWithTheFinalChunk) {
  start();
  Client client(server_->port());
  client.get();
  std::weak_ptr<CountingSource> weak = awaitSource(0);
  if (auto held = weak.lock()) held->allowed.store(1);
  ASSERT_TRUE(client.readUntil("event 0\n"));
  {
    std::lock_guard lock(mutex_);
    sources_.clear();
  }
  auto stopped = std::chrono::steady_clock::now();
  server_->stop();
  ASSERT_TRUE(client.readToEnd());
  EXPECT_LT(std::chrono::steady_clock::now() - stopped, 2s);
  EXPECT_EQ(client.dechunkedBody(), "event 0\n") << client.received;
  EXPECT_TRUE(waitFor([&] { return weak.expired() && server_->connectionCount() == 0; }, 2s));
}

// Requests an inline handler takes are answered without a worker, in order with the
// others on the same connection, whether it answers within the call or later from another
// thread; a request it declines goes to the workers; a throw is a 500.
class HttpServerInlineTest : public HttpServerFixture {
 protected:
  void SetUp() override {
    HttpServerOptions options;
    options.inline_handler = [this](const HttpRequest& r, const HttpResponder& respond) {
      inline_thread_ = std::this_thread::get_id();
      if (r.target == "/inline/now") {
        respond(text("inline now"));
        return true;
      }
      if (r.target == "/inline/later") {
        std::thread([respond] {
          std::this_thread::sleep_for(20ms);  // an answer that comes after the call
          respond(text("inline later"));
        }).detach();
        return true;
      }
      if (r.target == "/inline/throw") throw std::runtime_error("boom");
      return false;
    };
    serve(
        options,
        [this](const HttpRequest& r, HttpResponder respond) {
          worker_calls_.fetch_add(1);
          respond(text("worker " + r.target));
        },
        [](const Status& s) {
          HttpResponse r = text(std::string(errorInfo(s.code()).name));
          r.status = errorInfo(s.code()).http_status;
          return r;
        });
  }
  static HttpResponse text(std::string body) {
    HttpResponse r;
    r.status = 200;
    r.headers.set("Content-Type", "text/plain");
    r.body = std::move(body);
    return r;
  }

  std::thread::id inline_thread_;
  std::atomic<int> worker_calls_{0};
};

TEST_F(HttpServerInlineTest, InlineAnswersNowOrLaterAndDeclinedRequestsGoToTheWorkers) {
  Client client(server_->port());
  ASSERT_TRUE(client.connected());
  const std::string paths[] = {"/inline/now", "/other", "/inline/later", "/inline/throw",
                               "/inline/now"};
  for (const auto& path : paths) {
    client.send("GET " + path + " HTTP/1.1\r\nHost: localhost\r\n\r\n");
  }
  // Five responses, in the order asked.
  EXPECT_EQ(client.bodies(5),
            (std::vector<std::string>{"inline now", "worker /other", "inline later", "ServerError",
                                      "inline now"}));
  EXPECT_EQ(worker_calls_.load(), 1);
  EXPECT_EQ(inline_thread_, io_thread_.get_id());
}

}  // namespace
}  // namespace iothub::transport
