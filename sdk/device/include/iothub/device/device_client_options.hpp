#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include "iothub/device/retry_policy.hpp"

namespace iothub::device {

// How a DeviceClient reaches the hub and how it behaves on the wire. The connection string's
// HostName always names the hub: it is in the MQTT user name, the SAS resource, the TLS SNI
// and the name the server certificate must carry. GatewayHostName and `endpoint` only change
// where the TCP connection goes.
struct DeviceClientOptions {
  // PEM file of the CA(s) that sign the hub's certificate; empty = the system's default trust
  // store (OpenSSL default paths).
  std::string ca_file;
  // false: plain MQTT over TCP, for local tests only (the device key still never leaves the
  // device, but the SAS token travels in clear text).
  bool use_tls = true;
  // Where to connect, "host:port" ("[::1]:8883" for IPv6). Empty = the connection string's
  // GatewayHostName, else its HostName; the port defaults to 8883 (1883 without TLS).
  std::string endpoint;
  // Lifetime of each SAS token (its `se` is now + this) and how long before expiry the
  // client reconnects with a fresh one (docs/protocol.md §1.9: 3600 s and 900 s, like Node).
  // renew_before must be shorter than token_lifetime; a renewal happens every
  // token_lifetime - renew_before.
  std::chrono::seconds token_lifetime{3600};
  std::chrono::seconds renew_before{900};
  // MQTT keep-alive sent in CONNECT. The client sends PINGREQ after this long without
  // sending anything, and drops the connection (then reconnects) when a PINGRESP does not
  // arrive within another keep-alive period. 0 disables pings (not recommended).
  std::uint16_t keep_alive_seconds = 180;
  // Reconnection back-off.
  RetryPolicy retry;
  // Deadline of one twin request or telemetry message, from the call until the hub's answer
  // (or PUBACK), including any time spent waiting for a connection.
  std::chrono::milliseconds request_timeout{30'000};
  // Deadline of one connection attempt: name resolution, TCP, TLS, CONNECT/CONNACK and the
  // SUBACK of the re-established subscriptions.
  std::chrono::milliseconds connect_timeout{30'000};
};

}  // namespace iothub::device
