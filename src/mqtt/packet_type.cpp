#include "mqtt/packet_type.hpp"

namespace iothub::mqtt {

std::string_view packetTypeName(PacketType type) {
  switch (type) {
    case PacketType::Connect:
      return "CONNECT";
    case PacketType::ConnAck:
      return "CONNACK";
    case PacketType::Publish:
      return "PUBLISH";
    case PacketType::PubAck:
      return "PUBACK";
    case PacketType::PubRec:
      return "PUBREC";
    case PacketType::PubRel:
      return "PUBREL";
    case PacketType::PubComp:
      return "PUBCOMP";
    case PacketType::Subscribe:
      return "SUBSCRIBE";
    case PacketType::SubAck:
      return "SUBACK";
    case PacketType::Unsubscribe:
      return "UNSUBSCRIBE";
    case PacketType::UnsubAck:
      return "UNSUBACK";
    case PacketType::PingReq:
      return "PINGREQ";
    case PacketType::PingResp:
      return "PINGRESP";
    case PacketType::Disconnect:
      return "DISCONNECT";
  }
  return "RESERVED";
}

}  // namespace iothub::mqtt
