#pragma once

#include <string>
#include <string_view>

namespace iothub::device {

// Where a DeviceClient's connection stands (modelled on the C# SDK's ConnectionStatus).
enum class ConnectionStatus {
  // CONNACK accepted and every wanted subscription acknowledged: methods, desired updates
  // and twin requests work.
  Connected,
  // Not connected, and the client is reconnecting by itself.
  DisconnectedRetrying,
  // Not connected, and the client will not reconnect until open() is called again.
  Disconnected,
};

// Why the status changed.
enum class ConnectionStatusReason {
  // With Connected.
  ConnectionOk,
  // With DisconnectedRetrying: a planned DISCONNECT to reconnect with a fresh SAS token
  // (docs/protocol.md §1.9); the client reconnects at once, without back-off.
  TokenRenewal,
  // With DisconnectedRetrying: the network, TLS, a timeout, a malformed packet from the
  // hub, CONNACK 3 (server unavailable) or a dropped connection.
  CommunicationError,
  // CONNACK refused the credentials or the client id (return code 1, 2, 4 or 5). With
  // Disconnected on the first connection of an open() (not retried); with
  // DisconnectedRetrying afterwards (retried with back-off). See DeviceClient::open().
  BadCredential,
  // With Disconnected: RetryPolicy::max_attempts consecutive attempts failed.
  RetryExpired,
  // With Disconnected: close() was called (or the client was destroyed).
  ClientClose,
};

// One change, as delivered to DeviceClient::onConnectionStatus callbacks.
struct ConnectionStatusChange {
  ConnectionStatus status = ConnectionStatus::Disconnected;
  ConnectionStatusReason reason = ConnectionStatusReason::ClientClose;
  std::string detail;  // human-readable cause, e.g. the socket error; empty when none
};

// "Connected", "DisconnectedRetrying", "Disconnected".
std::string_view toString(ConnectionStatus status);
// "ConnectionOk", "TokenRenewal", "CommunicationError", "BadCredential", "RetryExpired",
// "ClientClose".
std::string_view toString(ConnectionStatusReason reason);

}  // namespace iothub::device
