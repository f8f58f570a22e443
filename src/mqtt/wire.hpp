#pragma once

// Primitive wire encodings shared by the packet codecs (MQTT 3.1.1 §1.5, §2.2.3).
// Internal to the mqtt module; exposed in a header so the tests can check them byte by byte.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "common/status.hpp"
#include "mqtt/packet_type.hpp"

namespace iothub::mqtt {

// The largest remaining length four variable-length bytes can express (§2.2.3).
inline constexpr std::size_t kMaxRemainingLength = 268'435'455;
// The largest fixed header: one type/flags byte and four remaining-length bytes.
inline constexpr std::size_t kMaxFixedHeaderSize = 5;

// How many bytes the variable-length encoding of `length` takes (1..4).
// Precondition: length <= kMaxRemainingLength.
std::size_t remainingLengthSize(std::size_t length);

// Appends the variable-length encoding of `length` to `out`.
// Precondition: length <= kMaxRemainingLength.
void appendRemainingLength(std::size_t length, std::string& out);

struct RemainingLength {
  std::size_t value = 0;
  std::size_t encoded_size = 0;  // bytes the encoding took (1..4)
};

// Decodes a remaining length from the bytes that follow the first fixed-header byte.
// Returns nullopt when `bytes` ends before the encoding does, and IotHubFormatError when a
// fourth byte still has its continuation bit set (a fifth length byte is never valid).
// Non-minimal encodings (e.g. 0x80 0x00 for 0) are accepted: MQTT 3.1.1 does not forbid them.
Result<std::optional<RemainingLength>> decodeRemainingLength(std::string_view bytes);

namespace detail {

// The fixed-header flag nibble that §2.2.2 requires for every packet type but PUBLISH.
std::uint8_t requiredFlags(PacketType type);

Status malformed(PacketType type, std::string_view reason);

// Reads big-endian fields from one packet body. Every read checks the bounds and reports a
// precise IotHubFormatError naming the packet and the field; views point into the body.
class ByteReader {
 public:
  ByteReader(PacketType type, std::string_view body) : type_(type), body_(body) {}

  std::size_t remaining() const { return body_.size() - pos_; }
  bool atEnd() const { return pos_ == body_.size(); }

  Result<std::uint8_t> readByte(std::string_view field);
  Result<std::uint16_t> readUint16(std::string_view field);
  // A non-zero packet identifier (§2.3.1).
  Result<std::uint16_t> readPacketId();
  // Two-byte length prefix followed by that many bytes, unchecked content.
  Result<std::string_view> readBinary(std::string_view field);
  // Two-byte length prefix followed by a well-formed MQTT UTF-8 string (§1.5.3).
  Result<std::string_view> readUtf8(std::string_view field);
  // Everything not read yet (the PUBLISH payload).
  std::string_view readRest();

  // IotHubFormatError when bytes are left over after the last field.
  Status expectEnd();

 private:
  Status truncated(std::string_view field) const;

  PacketType type_;
  std::string_view body_;
  std::size_t pos_ = 0;
};

inline void appendByte(std::uint8_t value, std::string& out) {
  out.push_back(static_cast<char>(value));
}

inline void appendUint16(std::uint16_t value, std::string& out) {
  out.push_back(static_cast<char>(value >> 8));
  out.push_back(static_cast<char>(value & 0xFF));
}

// Length-prefixed string or binary data. Precondition: data.size() <= 65535.
inline void appendLengthPrefixed(std::string_view data, std::string& out) {
  appendUint16(static_cast<std::uint16_t>(data.size()), out);
  out.append(data);
}

// Status for a string field that is too long or not valid MQTT UTF-8, for encoders.
Status checkEncodableString(PacketType type, std::string_view field, std::string_view value);
Status checkEncodableBinary(PacketType type, std::string_view field, std::string_view value);

// Shared codec for the packets whose whole body is one packet identifier:
// PUBACK, PUBREC, PUBREL, PUBCOMP and UNSUBACK.
Result<std::uint16_t> decodePacketIdOnly(PacketType type, std::string_view body);
Status checkEncodablePacketId(PacketType type, std::uint16_t packet_id);

}  // namespace detail
}  // namespace iothub::mqtt
