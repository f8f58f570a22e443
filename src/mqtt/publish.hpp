#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/status.hpp"
#include "mqtt/packet_type.hpp"

namespace iothub::mqtt {

// A PUBLISH described by views, for encoding without first copying topic and payload into a
// Publish (e.g. a hub sending a method request, or a load generator re-sending one payload).
// The viewed bytes must stay alive for the duration of the encode call only.
struct PublishView {
  std::string_view topic;
  std::string_view payload;
  QoS qos = QoS::AtMostOnce;
  bool retain = false;
  bool dup = false;
  std::uint16_t packet_id = 0;
};

// PUBLISH (§3.3), both directions. Owns its topic and payload.
// Invariants checked by the encoder and the decoder: topic is a valid topic name (no
// wildcards, §3.3.2.1); packet_id is non-zero for QoS 1 and 2 and zero for QoS 0 (which
// has no packet identifier on the wire); dup is false for QoS 0 (§3.3.1.1).
// Azure closes the connection on QoS 2 publishes from devices (docs/protocol.md §2.4); the codec
// still represents them so that the session can make that decision.
struct Publish {
  static constexpr PacketType kType = PacketType::Publish;

  std::string topic;
  std::string payload;  // application message, binary, may be empty
  QoS qos = QoS::AtMostOnce;
  bool retain = false;
  bool dup = false;
  std::uint16_t packet_id = 0;

  PublishView view() const { return {topic, payload, qos, retain, dup, packet_id}; }

  bool operator==(const Publish&) const = default;
};

namespace detail {
Status checkEncodable(const PublishView& packet);
std::size_t remainingLength(const PublishView& packet);
std::uint8_t fixedHeaderFlags(const PublishView& packet);
void writeBody(const PublishView& packet, std::string& out);

inline Status checkEncodable(const Publish& packet) { return checkEncodable(packet.view()); }
inline std::size_t remainingLength(const Publish& packet) { return remainingLength(packet.view()); }
inline std::uint8_t fixedHeaderFlags(const Publish& packet) {
  return fixedHeaderFlags(packet.view());
}
inline void writeBody(const Publish& packet, std::string& out) { writeBody(packet.view(), out); }

// IotHubFormatError when the flags (QoS 3, DUP on QoS 0) or the body are malformed.
Status checkPublishFlags(std::uint8_t flags);
Result<Publish> decodePublish(std::uint8_t flags, std::string_view body);
}  // namespace detail

}  // namespace iothub::mqtt
