#pragma once

// Internal to src/transport: the stream types shared by the HTTP, MQTT and AMQP servers, so an
// HTTPS connection that upgrades to WebSocket at /$iothub/websocket can be handed to the
// MQTT server (docs/protocol.md §2.5: MQTT over WebSocket on port 443) or to the AMQP server
// (docs/amqp.md §1.1, §3: subprotocol AMQPWSB10). Includes Beast: include it only from
// transport's .cpp files.
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

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

// The path Azure IoT Hub serves MQTT over WebSocket on, and AMQP over WebSocket too
// (docs/amqp.md §1.1): the subprotocol tells them apart.
inline constexpr std::string_view kMqttWebSocketPath = "/$iothub/websocket";
// The path Event Hubs clients use for AMQP over WebSocket.
inline constexpr std::string_view kServiceBusWebSocketPath = "/$servicebus/websocket";
inline constexpr std::string_view kAmqpWebSocketProtocol = "AMQPWSB10";
inline constexpr std::string_view kMqttWebSocketProtocol = "mqtt";

// Whether `request` asks for any WebSocket subprotocol at all.
inline bool hasWebSocketProtocols(const UpgradeRequest& request) {
  return request.find(boost::beast::http::field::sec_websocket_protocol) != request.end();
}

// The token of the request's Sec-WebSocket-Protocol list (one or several headers, tokens
// separated by commas) equal to `wanted` ignoring case, spelled as the client spelled it (the
// handshake response must echo one of the client's tokens exactly); nullopt when not listed.
inline std::optional<std::string> findWebSocketProtocol(const UpgradeRequest& request,
                                                        std::string_view wanted) {
  auto [first, last] = request.equal_range(boost::beast::http::field::sec_websocket_protocol);
  for (auto it = first; it != last; ++it) {
    std::string_view list = it->value();
    while (!list.empty()) {
      std::size_t comma = list.find(',');
      std::string_view token = list.substr(0, comma);
      list = comma == std::string_view::npos ? std::string_view() : list.substr(comma + 1);
      while (!token.empty() && (token.front() == ' ' || token.front() == '\t')) {
        token.remove_prefix(1);
      }
      while (!token.empty() && (token.back() == ' ' || token.back() == '\t')) {
        token.remove_suffix(1);
      }
      if (boost::beast::iequals(token, wanted)) return std::string(token);
    }
  }
  return std::nullopt;
}

}  // namespace iothub::transport
