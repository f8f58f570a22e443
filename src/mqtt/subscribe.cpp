#include "mqtt/subscribe.hpp"

#include "mqtt/topic.hpp"
#include "mqtt/wire.hpp"

namespace iothub::mqtt::detail {
namespace {
constexpr PacketType kType = PacketType::Subscribe;
}  // namespace

Status checkEncodable(const Subscribe& packet) {
  IOTHUB_RETURN_IF_ERROR(checkEncodablePacketId(kType, packet.packet_id));
  if (packet.subscriptions.empty())
    return malformed(kType, "at least one topic filter is required");
  for (const Subscription& subscription : packet.subscriptions) {
    Status valid = validateTopicFilter(subscription.filter);
    if (!valid) return malformed(kType, valid.message());
    if (static_cast<std::uint8_t>(subscription.qos) > 2) return malformed(kType, "requested QoS 3");
  }
  return Status::ok();
}

std::size_t remainingLength(const Subscribe& packet) {
  std::size_t size = 2;
  for (const Subscription& subscription : packet.subscriptions) {
    size += 3 + subscription.filter.size();
  }
  return size;
}

void writeBody(const Subscribe& packet, std::string& out) {
  appendUint16(packet.packet_id, out);
  for (const Subscription& subscription : packet.subscriptions) {
    appendLengthPrefixed(subscription.filter, out);
    appendByte(static_cast<std::uint8_t>(subscription.qos), out);
  }
}

Result<Subscribe> decodeSubscribe(std::string_view body) {
  ByteReader reader(kType, body);
  auto id = reader.readPacketId();
  if (!id) return id.status();
  Subscribe packet;
  packet.packet_id = *id;
  if (reader.atEnd()) return malformed(kType, "at least one topic filter is required");
  while (!reader.atEnd()) {
    auto filter = reader.readBinary("topic filter");
    if (!filter) return filter.status();
    Status valid = validateTopicFilter(*filter);
    if (!valid) return malformed(kType, valid.message());
    auto qos = reader.readByte("requested QoS");
    if (!qos) return qos.status();
    if ((*qos & 0xFC) != 0)
      return malformed(kType, "reserved bits of the requested QoS byte are set");
    if (*qos == 3) return malformed(kType, "requested QoS 3 is invalid");
    packet.subscriptions.push_back(Subscription{std::string(*filter), static_cast<QoS>(*qos)});
  }
  return packet;
}

}  // namespace iothub::mqtt::detail
