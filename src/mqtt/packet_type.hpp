#pragma once

#include <cstdint>
#include <string_view>

namespace iothub::mqtt {

// MQTT 3.1.1 control packet types: the high nibble of the first fixed-header byte
// (OASIS MQTT 3.1.1 §2.2.1). Values 0 and 15 are reserved and never valid on the wire.
enum class PacketType : std::uint8_t {
  Connect = 1,
  ConnAck = 2,
  Publish = 3,
  PubAck = 4,
  PubRec = 5,
  PubRel = 6,
  PubComp = 7,
  Subscribe = 8,
  SubAck = 9,
  Unsubscribe = 10,
  UnsubAck = 11,
  PingReq = 12,
  PingResp = 13,
  Disconnect = 14,
};

// The upper-case name used by the specification ("CONNECT", "SUBACK", ...), for messages.
std::string_view packetTypeName(PacketType type);

// Quality of service of a PUBLISH or a subscription (§4.3). The wire value 3 is invalid and
// never representable by a decoded packet.
enum class QoS : std::uint8_t {
  AtMostOnce = 0,
  AtLeastOnce = 1,
  ExactlyOnce = 2,
};

// CONNACK return codes (§3.2.2.3). Values 6..255 are reserved.
enum class ConnectReturnCode : std::uint8_t {
  Accepted = 0,
  UnacceptableProtocolVersion = 1,
  IdentifierRejected = 2,
  ServerUnavailable = 3,
  BadUserNameOrPassword = 4,
  NotAuthorized = 5,
};

// SUBACK return codes (§3.9.3): the granted maximum QoS, or Failure (0x80).
enum class SubAckReturnCode : std::uint8_t {
  MaxQoS0 = 0x00,
  MaxQoS1 = 0x01,
  MaxQoS2 = 0x02,
  Failure = 0x80,
};

// The success SUBACK code that grants `qos`.
constexpr SubAckReturnCode grantedQoS(QoS qos) {
  return static_cast<SubAckReturnCode>(static_cast<std::uint8_t>(qos));
}

}  // namespace iothub::mqtt
