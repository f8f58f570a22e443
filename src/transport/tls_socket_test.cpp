// TlsSocket, the server side of MQTT/TLS, against Asio's TLS client over loopback: handshake,
// reads that fill the caller's buffer, writes larger than the socket takes at once, the
// peer's close, close_notify, and handshakes that fail.
#include "transport/tls_socket.hpp"

#include <gtest/gtest.h>

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <future>
#include <string>
#include <thread>

#include "tests/support/test_certificate.hpp"

namespace iothub::transport {
namespace {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using boost::system::error_code;
constexpr auto kAwaitTuple = asio::as_tuple(asio::use_awaitable);

std::string pattern(std::size_t size) {
  std::string out(size, '\0');
  for (std::size_t i = 0; i < size; ++i) out[i] = static_cast<char>('a' + (i * 7 + i / 251) % 26);
  return out;
}

class TlsSocketTest : public ::testing::Test {
 protected:
  TlsSocketTest() : acceptor_(io_, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)) {
    auto cert = iothub::testing::makeTestCertificate();
    server_tls_.use_certificate_chain(asio::buffer(cert.cert_pem));
    server_tls_.use_private_key(asio::buffer(cert.key_pem), asio::ssl::context::pem);
    client_tls_.add_certificate_authority(asio::buffer(cert.cert_pem));
    client_tls_.set_verify_mode(asio::ssl::verify_peer);
  }
  ~TlsSocketTest() override {
    work_.reset();
    io_.stop();
    if (thread_.joinable()) thread_.join();
  }

  // Runs `body` with the next accepted connection, on the server's thread.
  template <class Body>
  auto serve(Body body) {
    using R = decltype(body(std::declval<TlsSocket&>()))::value_type;
    auto result = asio::co_spawn(
        io_,
        [this, body]() -> asio::awaitable<R> {
          tcp::socket socket = co_await acceptor_.async_accept(asio::use_awaitable);
          TlsSocket tls(std::move(socket), server_tls_.native_handle());
          co_return co_await body(tls);
        },
        asio::use_future);
    if (!thread_.joinable()) thread_ = std::thread([this] { io_.run(); });
    return result;
  }

  // A connected TLS client (handshake done unless `handshake` is false).
  asio::ssl::stream<tcp::socket> connect(bool handshake = true) {
    asio::ssl::stream<tcp::socket> stream(client_io_, client_tls_);
    stream.next_layer().connect(acceptor_.local_endpoint());
    stream.set_verify_callback(asio::ssl::host_name_verification("localhost"));
    if (handshake) stream.handshake(asio::ssl::stream_base::client);
    return stream;
  }

  // Reads until `want` bytes arrived or the connection ended: what a server loop does.
  static asio::awaitable<std::pair<std::string, error_code>> readAll(TlsSocket& tls,
                                                                     std::size_t want,
                                                                     bool* filled = nullptr) {
    std::string got;
    while (got.size() < want) {
      if (error_code ec = co_await tls.waitToRead()) co_return std::pair{got, ec};
      std::array<char, 4096> buffer{};  // smaller than a record: readSome fills it
      error_code ec;
      std::size_t n = tls.readSome(buffer.data(), buffer.size(), ec);
      got.append(buffer.data(), n);
      if (ec) co_return std::pair{got, ec};
      if (n == buffer.size() && filled != nullptr) *filled = true;
    }
    co_return std::pair{got, error_code{}};
  }

  asio::io_context io_;
  asio::io_context client_io_;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work_{
      asio::make_work_guard(io_)};
  tcp::acceptor acceptor_;
  asio::ssl::context server_tls_{asio::ssl::context::tls_server};
  asio::ssl::context client_tls_{asio::ssl::context::tls_client};
  std::thread thread_;
};

TEST_F(TlsSocketTest, ReadsAndWritesMoreThanTheSocketTakesAtOnce) {
  const std::string up = pattern(1 << 20);
  const std::string down = pattern(8 << 20);
  bool filled = false;
  auto server = serve([&](TlsSocket& tls) -> asio::awaitable<std::string> {
    if (error_code ec = co_await tls.handshake()) co_return "handshake: " + ec.message();
    auto [got, ec] = co_await readAll(tls, up.size(), &filled);
    if (ec) co_return "read: " + ec.message();
    if (got != up) co_return "read other bytes than were sent";
    // 8 MiB back to a client that does not read yet: the write waits for the socket.
    if (error_code write_ec = co_await tls.write(down.data(), down.size())) {
      co_return "write: " + write_ec.message();
    }
    co_return "ok";
  });
  auto client = connect();
  asio::write(client, asio::buffer(up));
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // let the server's write stall
  std::string received(down.size(), '\0');
  asio::read(client, asio::buffer(received));
  EXPECT_EQ(received, down);
  EXPECT_EQ(server.get(), "ok");
  EXPECT_TRUE(filled) << "a 1 MiB upload should fill a 4 KiB read buffer";
}

// The client's first bytes may reach the server in the same segment as its last handshake
// message (Node's TLS does this), so OpenSSL reads them during the handshake: waitToRead()
// must not wait for the socket then. The client here runs OpenSSL over a memory BIO pair and
// sends its Finished and "hello" with one send().
TEST_F(TlsSocketTest, BytesArrivingWithTheLastHandshakeMessageAreRead) {
  auto server = serve([&](TlsSocket& tls) -> asio::awaitable<std::string> {
    if (error_code ec = co_await tls.handshake()) co_return "handshake: " + ec.message();
    auto [got, ec] = co_await readAll(tls, 5);
    co_return ec ? ec.message() : got;
  });
  tcp::socket socket(client_io_);
  socket.connect(acceptor_.local_endpoint());
  SSL* client = SSL_new(client_tls_.native_handle());
  BIO* inside = nullptr;
  BIO* network = nullptr;
  ASSERT_EQ(BIO_new_bio_pair(&inside, 0, &network, 0), 1);
  SSL_set_bio(client, inside, inside);
  SSL_set_connect_state(client);
  auto drain = [&] {  // what the client SSL wrote, as one send
    std::string out;
    std::array<char, 4096> chunk{};
    for (int n; (n = BIO_read(network, chunk.data(), chunk.size())) > 0;)
      out.append(chunk.data(), n);
    if (!out.empty()) asio::write(socket, asio::buffer(out));
  };
  int result = 0;
  while ((result = SSL_do_handshake(client)) != 1) {
    ASSERT_EQ(SSL_get_error(client, result), SSL_ERROR_WANT_READ);
    drain();
    std::array<char, 4096> chunk{};
    std::size_t n = socket.read_some(asio::buffer(chunk));
    ASSERT_EQ(BIO_write(network, chunk.data(), static_cast<int>(n)), static_cast<int>(n));
  }
  ASSERT_EQ(SSL_write(client, "hello", 5), 5);
  drain();  // the client's Finished and "hello" together
  ASSERT_EQ(server.wait_for(std::chrono::seconds(10)), std::future_status::ready)
      << "the server waited for bytes it already held";
  EXPECT_EQ(server.get(), "hello");
  SSL_free(client);
  BIO_free(network);
}

TEST_F(TlsSocketTest, BytesBeforeThePeersCloseAreReadThenEof) {
  auto server = serve([&](TlsSocket& tls) -> asio::awaitable<std::string> {
    if (error_code ec = co_await tls.handshake()) co_return "handshake: " + ec.message();
    auto [got, ec] = co_await readAll(tls, 1 << 20);
    co_return got + "|" + (ec == asio::error::eof ? "eof" : ec.message());
  });
  auto client = connect();
  asio::write(client, asio::buffer(std::string("last words")));
  error_code ignored;
  client.shutdown(ignored);  // close_notify
  client.next_layer().close();
  EXPECT_EQ(server.get(), "last words|eof");
}

TEST_F(TlsSocketTest, ATcpCloseWithoutCloseNotifyIsEof) {
  auto server = serve([&](TlsSocket& tls) -> asio::awaitable<std::string> {
    if (error_code ec = co_await tls.handshake()) co_return "handshake: " + ec.message();
    auto [got, ec] = co_await readAll(tls, 1 << 20);
    co_return got + "|" + (ec == asio::error::eof ? "eof" : ec.message());
  });
  auto client = connect();
  asio::write(client, asio::buffer(std::string("gone")));
  client.next_layer().close();
  EXPECT_EQ(server.get(), "gone|eof");
}

TEST_F(TlsSocketTest, CloseNotifyEndsTheClientsRead) {
  auto server = serve([&](TlsSocket& tls) -> asio::awaitable<std::string> {
    if (error_code ec = co_await tls.handshake()) co_return "handshake: " + ec.message();
    const std::string bye = "bye";
    if (error_code ec = co_await tls.write(bye.data(), bye.size())) co_return ec.message();
    tls.sendCloseNotify();
    co_return "ok";
  });
  auto client = connect();
  EXPECT_EQ(server.get(), "ok");
  std::string got;
  error_code ec;
  asio::read(client, asio::dynamic_buffer(got), ec);
  EXPECT_EQ(got, "bye");
  EXPECT_EQ(ec, asio::error::eof) << ec.message();
}

TEST_F(TlsSocketTest, PlainTextInsteadOfAHandshakeFails) {
  auto server = serve(
      [&](TlsSocket& tls) -> asio::awaitable<error_code> { co_return co_await tls.handshake(); });
  auto client = connect(/*handshake=*/false);
  asio::write(client.next_layer(), asio::buffer(std::string("GET / HTTP/1.1\r\n\r\n")));
  error_code ec = server.get();
  EXPECT_TRUE(ec);
  EXPECT_EQ(ec.category(), asio::error::get_ssl_category()) << ec.message();
}

TEST_F(TlsSocketTest, AClientLeavingMidHandshakeEndsIt) {
  auto server = serve(
      [&](TlsSocket& tls) -> asio::awaitable<error_code> { co_return co_await tls.handshake(); });
  auto client = connect(/*handshake=*/false);
  client.next_layer().close();
  EXPECT_EQ(server.get(), asio::error::eof);
}

TEST_F(TlsSocketTest, CancellingTheSocketEndsAWaitingHandshake) {
  auto server = serve([&](TlsSocket& tls) -> asio::awaitable<error_code> {
    asio::steady_timer deadline(tls.get_executor(), std::chrono::milliseconds(100));
    deadline.async_wait([&tls](error_code ec) {
      if (!ec) tls.socket().cancel();
    });
    co_return co_await tls.handshake();
  });
  auto client = connect(/*handshake=*/false);  // connects and says nothing
  EXPECT_EQ(server.get(), asio::error::operation_aborted);
}

}  // namespace
}  // namespace iothub::transport
