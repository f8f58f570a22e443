#include "mqtt/unsubscribe.hpp"

#include "mqtt/topic.hpp"
#include "mqtt/wire.hpp"

namespace iothub::mqtt::detail {
namespace {
constexpr PacketType kType = PacketType::Unsubscribe;
}  // namespace

Status checkEncodable(const Unsubscribe& packet) {
  IOTHUB_RETURN_IF_ERROR(checkEncodablePacketId(kType, packet.packet_id));
  if (packet.filters.empty()) return malformed(kType, "at least one topic filter is required");
  for (const std::string& filter : packet.filters) {
    Status valid = validateTopicFilter(filter);
    if (!valid) return malformed(kType, valid.message());
  }
  return Status::ok();
}

std::size_t remainingLength(const Unsubscribe& packet) {
  std::size_t size = 2;
  for (const std::string& filter : packet.filters) size += 2 + filter.size();
  return size;
}

void writeBody(const Unsubscribe& packet, std::string& out) {
  appendUint16(packet.packet_id, out);
  for (const std::string& filter : packet.filters) appendLengthPrefixed(filter, out);
}

Result<Unsubscribe> decodeUnsubscribe(std::string_view body) {
  ByteReader reader(kType, body);
  auto id = reader.readPacketId();
  if (!id) return id.status();
  if (reader.atEnd()) return malformed(kType, "at least one topic filter is required");
  Unsubscribe packet;
  packet.packet_id = *id;
  while (!reader.atEnd()) {
    auto filter = reader.readBinary("topic filter");
    if (!filter) return filter.status();
    Status valid = validateTopicFilter(*filter);
    if (!valid) return malformed(kType, valid.message());
    packet.filters.emplace_back(*filter);
  }
  return packet;
}

}  // namespace iothub::mqtt::detail
