// The AMQP TLS shell on 127.0.0.1 with a self-signed certificate made here, driven by a Proton
// client connection_driver over an Asio TLS client socket; and AMQP over WebSocket through the
// HTTPS listener (subprotocol AMQPWSB10, Beast WebSocket client), beside MQTT's upgrades.
#include "transport/amqp_server.hpp"

#include <gtest/gtest.h>

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/beast/websocket.hpp>
#include <functional>
#include <mutex>
#include <thread>

#include "amqp/test_client.hpp"
#include "tests/support/test_certificate.hpp"
#include "transport/connection_limiter.hpp"
#include "transport/http_server.hpp"
#include "transport/stream_types.hpp"

namespace iothub::transport {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
using tcp = asio::ip::tcp;
using amqp::testing::TestClient;
using iothub::testing::makeTestCertificate;
using iothub::testing::TestCertificate;

class GoodTokenAuthenticator : public amqp::Authenticator {
 public:
  amqp::TokenVerdict verify(std::string_view token, std::string_view audience,
                            std::string_view) override {
    if (token != "SharedAccessSignature good") return {401, "bad token", std::nullopt};
    amqp::Claim claim;
    claim.audience = std::string(audience);
    claim.scopes = {"*"};
    return {200, "OK", claim};
  }
};

// Shared with the server's I/O thread.
struct Seen {
  std::mutex mutex;
  std::vector<std::string> attached;
  std::vector<std::string> remotes;
};

class RecordingHandler : public amqp::LinkHandler {
 public:
  explicit RecordingHandler(Seen& seen) : seen_(seen) {}
  std::optional<amqp::ErrorCondition> onAttach(const amqp::LinkRequest& request) override {
    std::lock_guard lock(seen_.mutex);
    seen_.attached.push_back(request.address);
    return std::nullopt;
  }
  amqp::Outcome onMessage(amqp::LinkId, amqp::DeliveryId, const amqp::Message&) override {
    return amqp::Outcome::accepted();
  }
  void onDetach(amqp::LinkId) override {}

 private:
  Seen& seen_;
};

// A Proton client pumped from the test thread over some client socket.
class PumpedClient {
 public:
  virtual ~PumpedClient() = default;

  TestClient amqp;
  bool eof = false;

  // Pumps until `done()` holds or 5 s pass.
  bool until(const std::function<bool()>& done) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (std::chrono::steady_clock::now() < deadline) {
      if (done()) return true;
      if (!writing_ && !eof) {
        std::vector<std::uint8_t> out = amqp.takeOutput();
        if (!out.empty()) {
          writing_ = true;
          out_ = std::move(out);
          startWrite();
        }
      }
      io_.run_for(std::chrono::milliseconds(5));
      if (io_.stopped()) io_.restart();
    }
    return done();
  }

 protected:
  // Writes out_, then clears writing_.
  virtual void startWrite() = 0;

  void inputEnded() {
    eof = true;
    amqp.driver().read_close();
    amqp.dispatch();
  }

  asio::io_context io_;
  std::vector<std::uint8_t> out_;
  bool writing_ = false;
};

// A TLS client socket with a Proton client on top.
class TlsClient : public PumpedClient {
 public:
  TlsClient(std::uint16_t port, const std::string& ca_pem)
      : ssl_(asio::ssl::context::tls_client), stream_(io_, ssl_) {
    ssl_.add_certificate_authority(asio::buffer(ca_pem));
    ssl_.set_verify_mode(asio::ssl::verify_peer);
    stream_.set_verify_callback(asio::ssl::host_name_verification("localhost"));
    stream_.lowest_layer().connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
    SSL_set_tlsext_host_name(stream_.native_handle(), "localhost");
    stream_.handshake(asio::ssl::stream_base::client);
    readMore();
  }

 private:
  void startWrite() override {
    asio::async_write(stream_, asio::buffer(out_),
                      [this](boost::system::error_code, std::size_t) { writing_ = false; });
  }

  void readMore() {
    stream_.async_read_some(asio::buffer(in_), [this](boost::system::error_code ec, std::size_t n) {
      if (ec) {
        inputEnded();
        return;
      }
      amqp.feed(std::span<const std::uint8_t>(in_.data(), n));
      readMore();
    });
  }

  asio::ssl::context ssl_;
  asio::ssl::stream<tcp::socket> stream_;
  std::array<std::uint8_t, 16384> in_{};
};

// A WebSocket over TLS (Beast) to the HTTPS listener, with a Proton client on top once the
// handshake succeeded: the AMQP bytes travel in binary messages, as azure-iothub's AmqpWs.
class WsClient : public PumpedClient {
 public:
  WsClient(std::uint16_t port, const std::string& ca_pem, std::string protocol,
           const std::string& target = "/$iothub/websocket")
      : ssl_(asio::ssl::context::tls_client), ws_(io_, ssl_) {
    ssl_.add_certificate_authority(asio::buffer(ca_pem));
    ssl_.set_verify_mode(asio::ssl::verify_peer);
    auto& tls = ws_.next_layer();
    tls.set_verify_callback(asio::ssl::host_name_verification("localhost"));
    beast::get_lowest_layer(ws_).connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
    SSL_set_tlsext_host_name(tls.native_handle(), "localhost");
    tls.handshake(asio::ssl::stream_base::client);
    if (!protocol.empty()) {
      ws_.set_option(
          websocket::stream_base::decorator([protocol](websocket::request_type& request) {
            request.set(beast::http::field::sec_websocket_protocol, protocol);
          }));
    }
    ws_.handshake(response, "localhost", target, handshake_error);
    if (handshake_error) return;
    ws_.binary(true);
    readMore();
  }

  websocket::response_type response;  // the server's answer to the upgrade
  boost::system::error_code handshake_error;
  std::size_t messages_received = 0;

  // Closes the WebSocket without an AMQP Close (a WebSocket close frame, then TCP).
  void closeWebSocket() {
    boost::system::error_code ignored;
    ws_.close(websocket::close_code::normal, ignored);
  }

 private:
  void startWrite() override {
    ws_.async_write(asio::buffer(out_),
                    [this](boost::system::error_code, std::size_t) { writing_ = false; });
  }

  void readMore() {
    ws_.async_read(in_, [this](boost::system::error_code ec, std::size_t) {
      if (ec) {
        inputEnded();
        return;
      }
      ++messages_received;
      EXPECT_TRUE(ws_.got_binary());
      auto data = in_.cdata();
      amqp.feed(std::span<const std::uint8_t>(static_cast<const std::uint8_t*>(data.data()),
                                              data.size()));
      in_.consume(in_.size());
      readMore();
    });
  }

  asio::ssl::context ssl_;
  websocket::stream<beast::ssl_stream<beast::tcp_stream>> ws_;
  beast::flat_buffer in_;
};

struct AmqpServerTest : ::testing::Test {
  void SetUp() override {
    cert = makeTestCertificate();
    tls.use_certificate_chain(asio::buffer(cert.cert_pem));
    tls.use_private_key(asio::buffer(cert.key_pem), asio::ssl::context::pem);
    AmqpServerOptions options;
    options.bind_address = "127.0.0.1";
    options.port = 0;
    options.tls = &tls;
    auto created = AmqpServer::create(io, options, auth,
                                      [this](const std::string& remote, AmqpConnectionPost) {
                                        {
                                          std::lock_guard lock(seen.mutex);
                                          seen.remotes.push_back(remote);
                                        }
                                        return std::make_unique<RecordingHandler>(seen);
                                      });
    ASSERT_TRUE(created.isOk()) << created.status().message();
    server = std::move(created.value());
    server->start();
    thread = std::thread([this] { io.run(); });
  }
  void TearDown() override {
    if (server) server->stop();
    work.reset();
    io.stop();
    if (thread.joinable()) thread.join();
    server.reset();
  }

  TestCertificate cert;
  asio::ssl::context tls{asio::ssl::context::tls_server};
  GoodTokenAuthenticator auth;
  Seen seen;
  asio::io_context io;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work{io.get_executor()};
  std::unique_ptr<AmqpServer> server;
  std::thread thread;
};

TEST_F(AmqpServerTest, PutTokenOverTlsThenAttachIsAccepted) {
  TlsClient client(server->port(), cert.cert_pem);
  ASSERT_TRUE(client.until([&] { return client.amqp.open; }));
  client.amqp.openCbs();
  client.amqp.putToken("tls-1", "myhub.azure-devices.net", "SharedAccessSignature good");
  ASSERT_TRUE(client.until([&] { return !client.amqp.cbs_replies.empty(); }));
  EXPECT_EQ(client.amqp.cbs_replies[0].status_code, 200);
  EXPECT_EQ(client.amqp.cbs_replies[0].correlation_id, "tls-1");
  client.amqp.attachSender("/messages/devicebound", "c2d");
  ASSERT_TRUE(client.until([&] { return client.amqp.links_open.count("c2d") > 0; }));
  EXPECT_TRUE(client.amqp.links_open["c2d"]);
  std::lock_guard lock(seen.mutex);
  ASSERT_EQ(seen.attached.size(), 1u);
  EXPECT_EQ(seen.attached[0], "/messages/devicebound");
  ASSERT_EQ(seen.remotes.size(), 1u);
  EXPECT_TRUE(seen.remotes[0].starts_with("127.0.0.1:"));
  EXPECT_EQ(server->connectionCount(), 1u);
}

TEST_F(AmqpServerTest, BadTokenOverTlsGets401AndTheLinkIsRefused) {
  TlsClient client(server->port(), cert.cert_pem);
  client.amqp.openCbs();
  client.amqp.putToken("tls-2", "myhub.azure-devices.net", "SharedAccessSignature nope");
  ASSERT_TRUE(client.until([&] { return !client.amqp.cbs_replies.empty(); }));
  EXPECT_EQ(client.amqp.cbs_replies[0].status_code, 401);
  client.amqp.attachSender("/messages/devicebound", "c2d");
  ASSERT_TRUE(client.until([&] { return client.amqp.link_errors.count("c2d") > 0; }));
  EXPECT_EQ(client.amqp.link_errors["c2d"].name(), "amqp:unauthorized-access");
}

TEST_F(AmqpServerTest, StopClosesOpenConnectionsWithConnectionForced) {
  TlsClient client(server->port(), cert.cert_pem);
  ASSERT_TRUE(client.until([&] { return client.amqp.open; }));
  server->stop();
  ASSERT_TRUE(client.until([&] { return client.amqp.connection_error.has_value(); }));
  EXPECT_EQ(client.amqp.connection_error->name(), "amqp:connection:forced");
  // The server then closes the socket.
  EXPECT_TRUE(client.until([&] { return client.eof; }));
  EXPECT_TRUE(client.until([&] { return server->connectionCount() == 0; }));
}

TEST_F(AmqpServerTest, PeerClosingTheSocketEndsTheConnection) {
  {
    TlsClient client(server->port(), cert.cert_pem);
    ASSERT_TRUE(client.until([&] { return client.amqp.open; }));
    EXPECT_EQ(server->connectionCount(), 1u);
  }  // the socket closes without an AMQP Close
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (server->connectionCount() != 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(server->connectionCount(), 0u);
}

TEST_F(AmqpServerTest, NonTlsBytesFailTheHandshakeAndClose) {
  asio::io_context cio;
  tcp::socket socket(cio);
  socket.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), server->port()));
  asio::write(socket, asio::buffer(std::string("AMQP\x00\x01\x00\x00", 8)));
  std::array<char, 64> buf{};
  boost::system::error_code ec;
  for (int i = 0; i < 10 && !ec; ++i) socket.read_some(asio::buffer(buf), ec);
  EXPECT_TRUE(ec);  // the server hung up
}

// The HTTPS listener in front, as iothubd wires it: AMQP upgrades to the AMQP server, MQTT
// upgrades to a stand-in for the MQTT server that accepts with subprotocol `mqtt` and
// records what it got. Everything shares one connection limiter.
struct AmqpWebSocketTest : AmqpServerTest {
  void SetUp() override {
    limiter = std::make_shared<ConnectionLimiter>(0);
    AmqpServerTest::SetUp();
    if (HasFatalFailure()) return;
    auto mqtt = std::make_shared<WebSocketAcceptor>();
    mqtt->accept_tls = [this](TlsStream stream, UpgradeRequest request, std::string,
                              ConnectionLimiter::Slot slot) {
      {
        std::lock_guard lock(seen.mutex);
        mqtt_upgrades.push_back(std::string(request[beast::http::field::sec_websocket_protocol]));
      }
      auto ws = std::make_shared<websocket::stream<TlsStream>>(std::move(stream));
      ws->set_option(websocket::stream_base::decorator([](websocket::response_type& response) {
        response.set(beast::http::field::sec_websocket_protocol, "mqtt");
      }));
      auto held = std::make_shared<ConnectionLimiter::Slot>(std::move(slot));
      ws->async_accept(request, [ws, held](boost::system::error_code) {});
    };
    mqtt->accept_plain = [](PlainStream, UpgradeRequest, std::string, ConnectionLimiter::Slot) {};
    HttpServerOptions options;
    options.name = "HTTPS";
    options.bind_address = "127.0.0.1";
    options.tls = &tls;
    options.limiter = limiter;
    options.websocket = mqtt;
    options.amqp_websocket = server->webSocketAcceptor();
    auto created = HttpServer::create(
        io, workers, options,
        [](const HttpRequest&, HttpResponder respond) {
          HttpResponse response;
          response.status = 404;
          response.body = "no such route";
          respond(std::move(response));
        },
        [](const Status&) {
          HttpResponse response;
          response.status = 400;
          return response;
        });
    ASSERT_TRUE(created.isOk()) << created.status().message();
    https = std::move(created.value());
    https->start();
  }
  void TearDown() override {
    if (https) https->stop();
    AmqpServerTest::TearDown();
    https.reset();
    workers.join();
  }

  // Waits up to 5 s for `done`, polled from the test thread.
  static bool eventually(const std::function<bool()>& done) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (!done() && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return done();
  }

  std::shared_ptr<ConnectionLimiter> limiter;
  asio::thread_pool workers{1};
  std::unique_ptr<HttpServer> https;
  std::vector<std::string> mqtt_upgrades;  // guarded by seen.mutex
};

TEST_F(AmqpWebSocketTest, PutTokenThenAttachOverWebSocketWithAmqpwsb10) {
  WsClient client(https->port(), cert.cert_pem, "AMQPWSB10");
  ASSERT_FALSE(client.handshake_error) << client.handshake_error.message();
  EXPECT_EQ(client.response[beast::http::field::sec_websocket_protocol], "AMQPWSB10");
  ASSERT_TRUE(client.until([&] { return client.amqp.open; }));
  client.amqp.openCbs();
  client.amqp.putToken("ws-1", "myhub.azure-devices.net", "SharedAccessSignature good");
  ASSERT_TRUE(client.until([&] { return !client.amqp.cbs_replies.empty(); }));
  EXPECT_EQ(client.amqp.cbs_replies[0].status_code, 200);
  EXPECT_EQ(client.amqp.cbs_replies[0].correlation_id, "ws-1");
  client.amqp.attachSender("/messages/devicebound", "c2d");
  ASSERT_TRUE(client.until([&] { return client.amqp.links_open.count("c2d") > 0; }));
  EXPECT_TRUE(client.amqp.links_open["c2d"]);
  EXPECT_GT(client.messages_received, 0u);
  {
    std::lock_guard lock(seen.mutex);
    ASSERT_EQ(seen.attached.size(), 1u);
    EXPECT_EQ(seen.attached[0], "/messages/devicebound");
    ASSERT_EQ(seen.remotes.size(), 1u);
    EXPECT_TRUE(seen.remotes[0].starts_with("127.0.0.1:"));
    EXPECT_TRUE(mqtt_upgrades.empty());
  }
  // The connection moved from the HTTPS listener to the AMQP server with its slot.
  EXPECT_EQ(server->connectionCount(), 1u);
  EXPECT_TRUE(eventually([&] { return https->connectionCount() == 0; }));
  EXPECT_EQ(limiter->open(), 1u);
}

TEST_F(AmqpWebSocketTest, TheClientsSpellingOfTheSubprotocolIsEchoedAndServiceBusPathWorks) {
  WsClient client(https->port(), cert.cert_pem, "foo, amqpwsb10", "/$servicebus/websocket");
  ASSERT_FALSE(client.handshake_error) << client.handshake_error.message();
  EXPECT_EQ(client.response[beast::http::field::sec_websocket_protocol], "amqpwsb10");
  ASSERT_TRUE(client.until([&] { return client.amqp.open; }));
  EXPECT_EQ(server->connectionCount(), 1u);
}

TEST_F(AmqpWebSocketTest, StopClosesWebSocketConnectionsWithConnectionForced) {
  WsClient client(https->port(), cert.cert_pem, "AMQPWSB10");
  ASSERT_FALSE(client.handshake_error) << client.handshake_error.message();
  ASSERT_TRUE(client.until([&] { return client.amqp.open; }));
  ASSERT_EQ(server->connectionCount(), 1u);
  server->stop();
  ASSERT_TRUE(client.until([&] { return client.amqp.connection_error.has_value(); }));
  EXPECT_EQ(client.amqp.connection_error->name(), "amqp:connection:forced");
  // Then the WebSocket close handshake, and the socket closes.
  EXPECT_TRUE(client.until([&] { return client.eof; }));
  EXPECT_TRUE(client.until([&] { return server->connectionCount() == 0; }));
  EXPECT_TRUE(eventually([&] { return limiter->open() == 0; }));
  // Upgrades after stop() are dropped.
  WsClient late(https->port(), cert.cert_pem, "AMQPWSB10");
  EXPECT_TRUE(late.handshake_error);
  EXPECT_EQ(server->connectionCount(), 0u);
}

TEST_F(AmqpWebSocketTest, AWebSocketCloseFromThePeerEndsTheConnection) {
  WsClient client(https->port(), cert.cert_pem, "AMQPWSB10");
  ASSERT_FALSE(client.handshake_error) << client.handshake_error.message();
  ASSERT_TRUE(client.until([&] { return client.amqp.open; }));
  ASSERT_EQ(server->connectionCount(), 1u);
  client.closeWebSocket();
  EXPECT_TRUE(eventually([&] { return server->connectionCount() == 0; }));
  EXPECT_TRUE(eventually([&] { return limiter->open() == 0; }));
}

TEST_F(AmqpWebSocketTest, MqttUpgradesOnTheSamePathStillReachMqtt) {
  {
    WsClient client(https->port(), cert.cert_pem, "mqtt");
    ASSERT_FALSE(client.handshake_error) << client.handshake_error.message();
    EXPECT_EQ(client.response[beast::http::field::sec_websocket_protocol], "mqtt");
  }
  {
    WsClient client(https->port(), cert.cert_pem, "");  // no subprotocol: MQTT, as before
    ASSERT_FALSE(client.handshake_error) << client.handshake_error.message();
  }
  std::lock_guard lock(seen.mutex);
  ASSERT_EQ(mqtt_upgrades.size(), 2u);
  EXPECT_EQ(mqtt_upgrades[0], "mqtt");
  EXPECT_EQ(mqtt_upgrades[1], "");
  EXPECT_TRUE(seen.remotes.empty());  // the AMQP server saw neither
  EXPECT_EQ(server->connectionCount(), 0u);
}

TEST_F(AmqpWebSocketTest, UnknownSubprotocolsAndMqttOnTheServiceBusPathAre404) {
  for (auto [protocol, target] :
       {std::pair{"xmpp", "/$iothub/websocket"}, std::pair{"mqtt", "/$servicebus/websocket"},
        std::pair{"", "/$servicebus/websocket"}}) {
    WsClient client(https->port(), cert.cert_pem, protocol, target);
    EXPECT_EQ(client.handshake_error, websocket::error::upgrade_declined) << protocol << target;
    EXPECT_EQ(client.response.result_int(), 404u) << protocol << target;
  }
  std::lock_guard lock(seen.mutex);
  EXPECT_TRUE(mqtt_upgrades.empty());
  EXPECT_TRUE(seen.remotes.empty());
}

}  // namespace
}  // namespace iothub::transport
