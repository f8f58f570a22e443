#include "mqtt/suback.hpp"

#include "mqtt/wire.hpp"

namespace iothub::mqtt::detail {
namespace {
constexpr PacketType kType = PacketType::SubAck;

bool isValidReturnCode(std::uint8_t code) { return code <= 2 || code == 0x80; }
}  // namespace

Status checkEncodable(const SubAck& packet) {
  IOTHUB_RETURN_IF_ERROR(checkEncodablePacketId(kType, packet.packet_id));
  if (packet.return_codes.empty()) return malformed(kType, "at least one return code is required");
  for (SubAckReturnCode code : packet.return_codes) {
    if (!isValidReturnCode(static_cast<std::uint8_t>(code))) {
      return malformed(kType, "invalid return code " + std::to_string(static_cast<int>(code)));
    }
  }
  return Status::ok();
}

void writeBody(const SubAck& packet, std::string& out) {
  appendUint16(packet.packet_id, out);
  for (SubAckReturnCode code : packet.return_codes)
    appendByte(static_cast<std::uint8_t>(code), out);
}

Result<SubAck> decodeSubAck(std::string_view body) {
  ByteReader reader(kType, body);
  auto id = reader.readPacketId();
  if (!id) return id.status();
  if (reader.atEnd()) return malformed(kType, "at least one return code is required");
  SubAck packet;
  packet.packet_id = *id;
  packet.return_codes.reserve(reader.remaining());
  for (char byte : reader.readRest()) {
    const auto code = static_cast<std::uint8_t>(byte);
    if (!isValidReturnCode(code)) {
      return malformed(kType, "invalid return code " + std::to_string(code));
    }
    packet.return_codes.push_back(static_cast<SubAckReturnCode>(code));
  }
  return packet;
}

}  // namespace iothub::mqtt::detail
