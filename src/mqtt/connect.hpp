#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "common/status.hpp"
#include "mqtt/packet_type.hpp"

namespace iothub::mqtt {

// The only protocol this codec speaks: name "MQTT", level 4 (MQTT 3.1.1 §3.1.2.1-2).
inline constexpr std::string_view kProtocolName = "MQTT";
inline constexpr std::uint8_t kProtocolLevel = 4;

// The will message of a CONNECT (§3.1.2.5-7, §3.1.3.2-3).
struct Will {
  std::string topic;    // a topic name: non-empty, no wildcards
  std::string message;  // binary data, up to 65535 bytes
  QoS qos = QoS::AtMostOnce;
  bool retain = false;

  bool operator==(const Will&) const = default;
};

// CONNECT (§3.1), client to server. The protocol name and level are implied (always
// "MQTT"/4): a CONNECT with another level never decodes (see Decoder, which reports it as
// DecodeError::UnsupportedProtocol so the server can answer CONNACK 0x01).
// The Azure IoT Node SDK sends client_id "<deviceId>[/<moduleId>]", clean_session false,
// keep_alive 180, user_name "<host>/<clientId>/?api-version=...", password a SAS token
// (docs/protocol.md §2.1).
struct Connect {
  static constexpr PacketType kType = PacketType::Connect;

  std::string client_id;  // may be empty (§3.1.3.1); UTF-8
  bool clean_session = true;
  std::uint16_t keep_alive = 0;  // seconds; 0 disables the keep-alive mechanism
  std::optional<Will> will;
  std::optional<std::string> user_name;  // UTF-8
  std::optional<std::string> password;   // binary data; only allowed with a user name

  bool operator==(const Connect&) const = default;
};

namespace detail {
Status checkEncodable(const Connect& packet);
std::size_t remainingLength(const Connect& packet);
inline std::uint8_t fixedHeaderFlags(const Connect&) { return 0; }
void writeBody(const Connect& packet, std::string& out);
// IotHubFormatError for a malformed body; ArgumentInvalid when the protocol name is
// "MQTT" with a level other than 4, or "MQIsdp" (MQTT 3.1).
Result<Connect> decodeConnect(std::string_view body);
}  // namespace detail

}  // namespace iothub::mqtt
