#pragma once

// Internal to src/transport: the stream types shared by the HTTP and MQTT servers, so an
// HTTPS connection that upgrades to WebSocket at /$iothub/websocket can be handed to the
// MQTT server (docs/protocol.md §2.5: MQTT over WebSocket on port 443). Includes Beast: include
// it only from transport's .cpp files.
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <functional>

#include "transport/connection_limiter.hpp"

namespace iothub::transport {

using PlainStream = boost::beast::tcp_stream;
using TlsStream = boost::beast::ssl_stream<boost::beast::tcp_stream>;
using UpgradeRequest = boost::beast::http::request<boost::beast::http::string_body>;

// Takes over a connection whose request asked to upgrade to WebSocket. Called on the
// connection's strand; the stream is already TLS-established (for TlsStream).
// The connection's slot of the hub-wide connection cap moves with it.
struct WebSocketAcceptor {
  std::function<void(TlsStream, UpgradeRequest, std::string remote, ConnectionLimiter::Slot)>
      accept_tls;
  std::function<void(PlainStream, UpgradeRequest, std::string remote, ConnectionLimiter::Slot)>
      accept_plain;
};

// The path Azure IoT Hub serves MQTT over WebSocket on.
inline constexpr std::string_view kMqttWebSocketPath = "/$iothub/websocket";

}  // namespace iothub::transport
