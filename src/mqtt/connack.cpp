#include "mqtt/connack.hpp"

#include "mqtt/wire.hpp"

namespace iothub::mqtt::detail {
namespace {
constexpr PacketType kType = PacketType::ConnAck;
constexpr std::uint8_t kSessionPresentFlag = 0x01;
constexpr std::uint8_t kMaxReturnCode = 5;
}  // namespace

Status checkEncodable(const ConnAck& packet) {
  const auto code = static_cast<std::uint8_t>(packet.return_code);
  if (code > kMaxReturnCode)
    return malformed(kType, "reserved return code " + std::to_string(code));
  if (packet.session_present && packet.return_code != ConnectReturnCode::Accepted) {
    return malformed(kType, "session present set on a refusal");
  }
  return Status::ok();
}

void writeBody(const ConnAck& packet, std::string& out) {
  appendByte(packet.session_present ? kSessionPresentFlag : 0, out);
  appendByte(static_cast<std::uint8_t>(packet.return_code), out);
}

Result<ConnAck> decodeConnAck(std::string_view body) {
  if (body.size() != 2) {
    return malformed(kType, "remaining length must be 2, got " + std::to_string(body.size()));
  }
  const auto acknowledge_flags = static_cast<std::uint8_t>(body[0]);
  const auto code = static_cast<std::uint8_t>(body[1]);
  if ((acknowledge_flags & ~kSessionPresentFlag) != 0) {
    return malformed(kType, "reserved connect acknowledge flags are set");
  }
  if (code > kMaxReturnCode)
    return malformed(kType, "reserved return code " + std::to_string(code));
  ConnAck packet{(acknowledge_flags & kSessionPresentFlag) != 0,
                 static_cast<ConnectReturnCode>(code)};
  if (packet.session_present && packet.return_code != ConnectReturnCode::Accepted) {
    return malformed(kType, "session present set on a refusal");
  }
  return packet;
}

}  // namespace iothub::mqtt::detail
