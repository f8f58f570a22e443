#include "fake_http_server.hpp"

#include <openssl/ssl.h>
#include <sys/socket.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cctype>

#include "common/encoding.hpp"

namespace iothub::service::testing {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;

std::optional<std::string> RecordedRequest::header(std::string_view name) const {
  for (const auto& [key, value] : headers) {
    if (equalsIgnoreCase(key, name)) return value;
  }
  return std::nullopt;
}

struct FakeHttpServer::Impl {
  asio::io_context ioc;
  tcp::acceptor acceptor{ioc};
  std::optional<ssl::context> tls;
  std::thread thread;
  std::uint16_t port = 0;

  mutable std::mutex mutex;
  std::condition_variable changed;
  // Guarded by mutex.
  bool stopping = false;
  int current_fd = -1;
  std::deque<CannedResponse> canned;
  std::vector<RecordedRequest> recorded;
  int accepted = 0;
  int closed = 0;
  int releases = 0;  // release() calls not yet used by a HoldUntilReleased response
  std::string server_name;

  void run() {
    for (;;) {
      tcp::socket socket(ioc);
      boost::system::error_code ec;
      acceptor.accept(socket, ec);
      int index = 0;
      {
        std::lock_guard lock(mutex);
        if (stopping) return;
        if (ec) continue;
        index = ++accepted;
        current_fd = socket.native_handle();
      }
      if (tls) {
        ssl::stream<tcp::socket&> stream(socket, *tls);
        stream.handshake(ssl::stream_base::server, ec);
        if (!ec) {
          const char* sni = SSL_get_servername(stream.native_handle(), TLSEXT_NAMETYPE_host_name);
          {
            std::lock_guard lock(mutex);
            server_name = sni ? sni : "";
          }
          serve(stream, index);
        }
      } else {
        serve(socket, index);
      }
      {
        std::lock_guard lock(mutex);
        current_fd = -1;
      }
      socket.shutdown(tcp::socket::shutdown_both, ec);
      socket.close(ec);
      {
        std::lock_guard lock(mutex);
        ++closed;
      }
      changed.notify_all();
    }
  }

  // Writes a chunked response; false when the connection must close afterwards.
  template <class Stream>
  bool writeChunked(Stream& stream, const CannedResponse& canned_response) {
    http::response<http::empty_body> res;
    res.version(11);
    res.result(static_cast<unsigned>(canned_response.status));
    res.set(http::field::content_type, canned_response.content_type);
    for (const auto& [name, value] : canned_response.headers) res.set(name, value);
    res.chunked(true);
    http::response_serializer<http::empty_body> serializer(res);
    boost::system::error_code ec;
    http::write_header(stream, serializer, ec);
    if (ec) return false;
    for (std::size_t i = 0; i < canned_response.chunks.size(); ++i) {
      if (static_cast<int>(i) == canned_response.hold_before_chunk) {
        std::unique_lock lock(mutex);
        changed.wait(lock, [&] { return stopping || releases > 0; });
        if (stopping) return false;
        --releases;
      }
      asio::write(stream, http::make_chunk(asio::buffer(canned_response.chunks[i])), ec);
      if (ec) return false;
    }
    if (!canned_response.finish_chunks) return false;
    asio::write(stream, http::make_chunk_last(), ec);
    return !ec && canned_response.then == CannedResponse::Then::KeepOpen;
  }

  template <class Stream>
  void serve(Stream& stream, int connection) {
    beast::flat_buffer buffer;
    for (;;) {
      http::request<http::string_body> req;
      boost::system::error_code ec;
      http::read(stream, buffer, req, ec);
      if (ec) return;
      RecordedRequest record;
      record.method = std::string(req.method_string());
      record.target = std::string(req.target());
      for (const auto& field : req) {
        std::string name(field.name_string());
        for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        record.headers.emplace_back(std::move(name), std::string(field.value()));
      }
      record.body = req.body();
      record.connection = connection;
      CannedResponse canned_response;
      {
        std::lock_guard lock(mutex);
        recorded.push_back(std::move(record));
        if (canned.empty()) {
          canned_response.status = 500;
          canned_response.body =
              R"({"Message":"ErrorCode:ServerError;no canned response","ExceptionMessage":""})";
        } else {
          canned_response = std::move(canned.front());
          canned.pop_front();
        }
      }
      changed.notify_all();

      using Then = CannedResponse::Then;
      if (canned_response.then == Then::CloseWithoutResponse) return;
      if (canned_response.then == Then::Hang) {
        // Blocks until the client closes (or the server stops).
        http::request<http::string_body> ignored;
        http::read(stream, buffer, ignored, ec);
        return;
      }
      if (canned_response.then == Then::HoldUntilReleased) {
        std::unique_lock lock(mutex);
        changed.wait(lock, [&] { return stopping || releases > 0; });
        if (stopping) return;
        --releases;
      }
      if (!canned_response.chunks.empty()) {
        if (!writeChunked(stream, canned_response)) return;
        continue;
      }
      http::response<http::string_body> res;
      res.version(11);
      res.result(static_cast<unsigned>(canned_response.status));
      if (!canned_response.body.empty()) {
        res.set(http::field::content_type, canned_response.content_type);
      }
      for (const auto& [name, value] : canned_response.headers) res.set(name, value);
      res.body() = canned_response.body;
      res.prepare_payload();
      http::write(stream, res, ec);
      if (ec || canned_response.then == Then::CloseAfterResponse || !res.keep_alive() ||
          !req.keep_alive()) {
        return;
      }
    }
  }
};

FakeHttpServer::FakeHttpServer(std::optional<ServerTlsConfig> tls)
    : impl_(std::make_unique<Impl>()) {
  if (tls) {
    impl_->tls.emplace(ssl::context::tls_server);
    impl_->tls->use_certificate_chain(asio::buffer(tls->cert_pem));
    impl_->tls->use_private_key(asio::buffer(tls->key_pem), ssl::context::pem);
  }
  tcp::endpoint local(asio::ip::make_address("127.0.0.1"), 0);
  impl_->acceptor.open(local.protocol());
  impl_->acceptor.set_option(tcp::acceptor::reuse_address(true));
  impl_->acceptor.bind(local);
  impl_->acceptor.listen();
  impl_->port = impl_->acceptor.local_endpoint().port();
  impl_->thread = std::thread([impl = impl_.get()] { impl->run(); });
}

FakeHttpServer::~FakeHttpServer() {
  {
    std::lock_guard lock(impl_->mutex);
    impl_->stopping = true;
    // Unblocks a read on the current connection; the wake-up connection below unblocks accept.
    if (impl_->current_fd >= 0) ::shutdown(impl_->current_fd, SHUT_RDWR);
  }
  impl_->changed.notify_all();  // wakes a HoldUntilReleased response
  {
    asio::io_context ioc;
    tcp::socket wake(ioc);
    boost::system::error_code ec;
    wake.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port()), ec);
    impl_->thread.join();
  }
}

std::uint16_t FakeHttpServer::port() const { return impl_->port; }

std::string FakeHttpServer::endpoint() const {
  return std::string(impl_->tls ? "https" : "http") + "://127.0.0.1:" + std::to_string(port());
}

void FakeHttpServer::reply(CannedResponse response) {
  std::lock_guard lock(impl_->mutex);
  impl_->canned.push_back(std::move(response));
}

void FakeHttpServer::reply(int status, std::string body) {
  CannedResponse response;
  response.status = status;
  response.body = std::move(body);
  reply(std::move(response));
}

void FakeHttpServer::release() {
  {
    std::lock_guard lock(impl_->mutex);
    ++impl_->releases;
  }
  impl_->changed.notify_all();
}

std::vector<RecordedRequest> FakeHttpServer::requests() const {
  std::lock_guard lock(impl_->mutex);
  return impl_->recorded;
}

int FakeHttpServer::connectionsAccepted() const {
  std::lock_guard lock(impl_->mutex);
  return impl_->accepted;
}

int FakeHttpServer::connectionsClosed() const {
  std::lock_guard lock(impl_->mutex);
  return impl_->closed;
}

std::string FakeHttpServer::lastServerName() const {
  std::lock_guard lock(impl_->mutex);
  return impl_->server_name;
}

bool FakeHttpServer::waitForRequests(std::size_t n, std::chrono::milliseconds timeout) {
  std::unique_lock lock(impl_->mutex);
  return impl_->changed.wait_for(lock, timeout, [&] { return impl_->recorded.size() >= n; });
}

bool FakeHttpServer::waitForClosedConnections(int n, std::chrono::milliseconds timeout) {
  std::unique_lock lock(impl_->mutex);
  return impl_->changed.wait_for(lock, timeout, [&] { return impl_->closed >= n; });
}

}  // namespace iothub::service::testing
