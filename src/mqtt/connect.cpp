#include "mqtt/connect.hpp"

#include "mqtt/topic.hpp"
#include "mqtt/wire.hpp"

namespace iothub::mqtt::detail {
namespace {

constexpr PacketType kType = PacketType::Connect;

// Connect flag bits, §3.1.2.3.
constexpr std::uint8_t kUserNameFlag = 0x80;
constexpr std::uint8_t kPasswordFlag = 0x40;
constexpr std::uint8_t kWillRetainFlag = 0x20;
constexpr std::uint8_t kWillQoSMask = 0x18;
constexpr int kWillQoSShift = 3;
constexpr std::uint8_t kWillFlag = 0x04;
constexpr std::uint8_t kCleanSessionFlag = 0x02;
constexpr std::uint8_t kReservedFlag = 0x01;

// Name (2 + 4), level (1), flags (1), keep-alive (2).
constexpr std::size_t kVariableHeaderSize = 10;

Status unsupportedProtocol(std::string message) {
  return Status(ErrorCode::ArgumentInvalid, "CONNECT: " + std::move(message));
}

}  // namespace

Status checkEncodable(const Connect& packet) {
  IOTHUB_RETURN_IF_ERROR(checkEncodableString(kType, "client identifier", packet.client_id));
  if (packet.will) {
    Status topic = validateTopicName(packet.will->topic);
    if (!topic) return malformed(kType, "will " + topic.message());
    IOTHUB_RETURN_IF_ERROR(checkEncodableBinary(kType, "will message", packet.will->message));
    if (static_cast<std::uint8_t>(packet.will->qos) > 2) return malformed(kType, "will QoS 3");
  }
  if (packet.user_name) {
    IOTHUB_RETURN_IF_ERROR(checkEncodableString(kType, "user name", *packet.user_name));
  }
  if (packet.password) {
    if (!packet.user_name) return malformed(kType, "password without a user name");
    IOTHUB_RETURN_IF_ERROR(checkEncodableBinary(kType, "password", *packet.password));
  }
  return Status::ok();
}

std::size_t remainingLength(const Connect& packet) {
  std::size_t size = kVariableHeaderSize + 2 + packet.client_id.size();
  if (packet.will) size += 4 + packet.will->topic.size() + packet.will->message.size();
  if (packet.user_name) size += 2 + packet.user_name->size();
  if (packet.password) size += 2 + packet.password->size();
  return size;
}

void writeBody(const Connect& packet, std::string& out) {
  appendLengthPrefixed(kProtocolName, out);
  appendByte(kProtocolLevel, out);
  std::uint8_t flags = 0;
  if (packet.user_name) flags |= kUserNameFlag;
  if (packet.password) flags |= kPasswordFlag;
  if (packet.will) {
    flags |= kWillFlag;
    flags |=
        static_cast<std::uint8_t>(static_cast<std::uint8_t>(packet.will->qos) << kWillQoSShift);
    if (packet.will->retain) flags |= kWillRetainFlag;
  }
  if (packet.clean_session) flags |= kCleanSessionFlag;
  appendByte(flags, out);
  appendUint16(packet.keep_alive, out);
  appendLengthPrefixed(packet.client_id, out);
  if (packet.will) {
    appendLengthPrefixed(packet.will->topic, out);
    appendLengthPrefixed(packet.will->message, out);
  }
  if (packet.user_name) appendLengthPrefixed(*packet.user_name, out);
  if (packet.password) appendLengthPrefixed(*packet.password, out);
}

Result<Connect> decodeConnect(std::string_view body) {
  ByteReader reader(kType, body);
  auto name = reader.readBinary("protocol name");
  if (!name) return name.status();
  if (*name == "MQIsdp")
    return unsupportedProtocol("MQTT 3.1 (protocol name MQIsdp) is not supported");
  if (*name != kProtocolName) return malformed(kType, "protocol name is not \"MQTT\"");
  auto level = reader.readByte("protocol level");
  if (!level) return level.status();
  if (*level != kProtocolLevel) {
    return unsupportedProtocol("unsupported protocol level " + std::to_string(*level) +
                               " (only 4, MQTT 3.1.1, is supported)");
  }
  auto flags = reader.readByte("connect flags");
  if (!flags) return flags.status();
  if ((*flags & kReservedFlag) != 0) return malformed(kType, "reserved connect flag is set");
  const bool has_will = (*flags & kWillFlag) != 0;
  const auto will_qos = static_cast<std::uint8_t>((*flags & kWillQoSMask) >> kWillQoSShift);
  const bool will_retain = (*flags & kWillRetainFlag) != 0;
  if (!has_will && (will_qos != 0 || will_retain)) {
    return malformed(kType, "will QoS or will retain set without the will flag");
  }
  if (will_qos == 3) return malformed(kType, "will QoS 3 is invalid");
  const bool has_user_name = (*flags & kUserNameFlag) != 0;
  const bool has_password = (*flags & kPasswordFlag) != 0;
  if (has_password && !has_user_name) {
    return malformed(kType, "password flag set without the user name flag");
  }
  auto keep_alive = reader.readUint16("keep alive");
  if (!keep_alive) return keep_alive.status();

  Connect packet;
  packet.clean_session = (*flags & kCleanSessionFlag) != 0;
  packet.keep_alive = *keep_alive;
  auto client_id = reader.readUtf8("client identifier");
  if (!client_id) return client_id.status();
  packet.client_id = *client_id;
  if (has_will) {
    auto topic = reader.readUtf8("will topic");
    if (!topic) return topic.status();
    Status topic_valid = validateTopicName(*topic);
    if (!topic_valid) return malformed(kType, "will " + topic_valid.message());
    auto message = reader.readBinary("will message");
    if (!message) return message.status();
    packet.will =
        Will{std::string(*topic), std::string(*message), static_cast<QoS>(will_qos), will_retain};
  }
  if (has_user_name) {
    auto user_name = reader.readUtf8("user name");
    if (!user_name) return user_name.status();
    packet.user_name.emplace(*user_name);
  }
  if (has_password) {
    auto password = reader.readBinary("password");
    if (!password) return password.status();
    packet.password.emplace(*password);
  }
  IOTHUB_RETURN_IF_ERROR(reader.expectEnd());
  return packet;
}

}  // namespace iothub::mqtt::detail
