#include "mqtt/publish.hpp"

#include "mqtt/topic.hpp"
#include "mqtt/wire.hpp"

namespace iothub::mqtt::detail {
namespace {
constexpr PacketType kType = PacketType::Publish;
constexpr std::uint8_t kDupFlag = 0x08;
constexpr std::uint8_t kQoSMask = 0x06;
constexpr int kQoSShift = 1;
constexpr std::uint8_t kRetainFlag = 0x01;
}  // namespace

Status checkEncodable(const PublishView& packet) {
  Status topic = validateTopicName(packet.topic);
  if (!topic) return malformed(kType, topic.message());
  const auto qos = static_cast<std::uint8_t>(packet.qos);
  if (qos > 2) return malformed(kType, "QoS 3 is invalid");
  if (qos == 0) {
    if (packet.packet_id != 0) return malformed(kType, "QoS 0 has no packet identifier");
    if (packet.dup) return malformed(kType, "DUP must be 0 for QoS 0");
  } else if (packet.packet_id == 0) {
    return malformed(kType, "packet identifier must be non-zero");
  }
  return Status::ok();
}

std::size_t remainingLength(const PublishView& packet) {
  return 2 + packet.topic.size() + (packet.qos == QoS::AtMostOnce ? 0 : 2) + packet.payload.size();
}

std::uint8_t fixedHeaderFlags(const PublishView& packet) {
  std::uint8_t flags =
      static_cast<std::uint8_t>(static_cast<std::uint8_t>(packet.qos) << kQoSShift);
  if (packet.dup) flags |= kDupFlag;
  if (packet.retain) flags |= kRetainFlag;
  return flags;
}

void writeBody(const PublishView& packet, std::string& out) {
  appendLengthPrefixed(packet.topic, out);
  if (packet.qos != QoS::AtMostOnce) appendUint16(packet.packet_id, out);
  out.append(packet.payload);
}

Status checkPublishFlags(std::uint8_t flags) {
  const auto qos = static_cast<std::uint8_t>((flags & kQoSMask) >> kQoSShift);
  if (qos == 3) return malformed(kType, "QoS 3 is invalid");
  if (qos == 0 && (flags & kDupFlag) != 0) return malformed(kType, "DUP must be 0 for QoS 0");
  return Status::ok();
}

Result<Publish> decodePublish(std::uint8_t flags, std::string_view body) {
  IOTHUB_RETURN_IF_ERROR(checkPublishFlags(flags));
  ByteReader reader(kType, body);
  auto topic = reader.readBinary("topic name");
  if (!topic) return topic.status();
  Status topic_valid = validateTopicName(*topic);
  if (!topic_valid) return malformed(kType, topic_valid.message());
  Publish packet;
  packet.qos = static_cast<QoS>((flags & kQoSMask) >> kQoSShift);
  packet.dup = (flags & kDupFlag) != 0;
  packet.retain = (flags & kRetainFlag) != 0;
  if (packet.qos != QoS::AtMostOnce) {
    auto id = reader.readPacketId();
    if (!id) return id.status();
    packet.packet_id = *id;
  }
  packet.topic = *topic;
  packet.payload = reader.readRest();
  return packet;
}

}  // namespace iothub::mqtt::detail
