#include "mqtt/wire.hpp"

#include "mqtt/utf8.hpp"

namespace iothub::mqtt {

std::size_t remainingLengthSize(std::size_t length) {
  if (length < 128) return 1;
  if (length < 16'384) return 2;
  if (length < 2'097'152) return 3;
  return 4;
}

void appendRemainingLength(std::size_t length, std::string& out) {
  IOTHUB_CHECK(length <= kMaxRemainingLength, "remaining length exceeds the MQTT maximum");
  do {
    auto digit = static_cast<std::uint8_t>(length % 128);
    length /= 128;
    if (length > 0) digit |= 0x80;
    out.push_back(static_cast<char>(digit));
  } while (length > 0);
}

Result<std::optional<RemainingLength>> decodeRemainingLength(std::string_view bytes) {
  std::size_t value = 0;
  std::size_t multiplier = 1;
  for (std::size_t i = 0; i < 4; ++i) {
    if (i >= bytes.size()) return std::optional<RemainingLength>{};
    const auto digit = static_cast<std::uint8_t>(bytes[i]);
    value += (digit & 0x7F) * multiplier;
    if ((digit & 0x80) == 0) return std::optional<RemainingLength>{RemainingLength{value, i + 1}};
    multiplier *= 128;
  }
  return Status(ErrorCode::IotHubFormatError,
                "remaining length: continuation bit set on the fourth byte (more than 4 bytes)");
}

namespace detail {

std::uint8_t requiredFlags(PacketType type) {
  switch (type) {
    case PacketType::PubRel:
    case PacketType::Subscribe:
    case PacketType::Unsubscribe:
      return 0b0010;
    default:
      return 0;
  }
}

Status malformed(PacketType type, std::string_view reason) {
  std::string message(packetTypeName(type));
  message += ": ";
  message += reason;
  return Status(ErrorCode::IotHubFormatError, std::move(message));
}

Status ByteReader::truncated(std::string_view field) const {
  return malformed(type_, std::string("truncated ") + std::string(field));
}

Result<std::uint8_t> ByteReader::readByte(std::string_view field) {
  if (remaining() < 1) return truncated(field);
  return static_cast<std::uint8_t>(body_[pos_++]);
}

Result<std::uint16_t> ByteReader::readUint16(std::string_view field) {
  if (remaining() < 2) return truncated(field);
  const auto high = static_cast<std::uint8_t>(body_[pos_]);
  const auto low = static_cast<std::uint8_t>(body_[pos_ + 1]);
  pos_ += 2;
  return static_cast<std::uint16_t>((high << 8) | low);
}

Result<std::uint16_t> ByteReader::readPacketId() {
  auto id = readUint16("packet identifier");
  if (!id) return id;
  if (*id == 0) return malformed(type_, "packet identifier must be non-zero");
  return id;
}

Result<std::string_view> ByteReader::readBinary(std::string_view field) {
  auto length = readUint16(field);
  if (!length) return length.status();
  if (remaining() < *length) return truncated(field);
  std::string_view data = body_.substr(pos_, *length);
  pos_ += *length;
  return data;
}

Result<std::string_view> ByteReader::readUtf8(std::string_view field) {
  auto data = readBinary(field);
  if (!data) return data;
  Status valid = validateUtf8(*data);
  if (!valid) return malformed(type_, std::string(field) + ": " + valid.message());
  return data;
}

std::string_view ByteReader::readRest() {
  std::string_view rest = body_.substr(pos_);
  pos_ = body_.size();
  return rest;
}

Status ByteReader::expectEnd() {
  if (atEnd()) return Status::ok();
  return malformed(type_, std::to_string(remaining()) + " unexpected trailing byte(s)");
}

Status checkEncodableString(PacketType type, std::string_view field, std::string_view value) {
  IOTHUB_RETURN_IF_ERROR(checkEncodableBinary(type, field, value));
  Status valid = validateUtf8(value);
  if (!valid) return malformed(type, std::string(field) + ": " + valid.message());
  return Status::ok();
}

Status checkEncodableBinary(PacketType type, std::string_view field, std::string_view value) {
  if (value.size() > kMaxStringLength) {
    return malformed(type, std::string(field) + " is longer than 65535 bytes");
  }
  return Status::ok();
}

Result<std::uint16_t> decodePacketIdOnly(PacketType type, std::string_view body) {
  if (body.size() != 2) {
    return malformed(type, "remaining length must be 2, got " + std::to_string(body.size()));
  }
  ByteReader reader(type, body);
  return reader.readPacketId();
}

Status checkEncodablePacketId(PacketType type, std::uint16_t packet_id) {
  if (packet_id == 0) return malformed(type, "packet identifier must be non-zero");
  return Status::ok();
}

}  // namespace detail
}  // namespace iothub::mqtt
