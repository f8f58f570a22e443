#include "mqtt/encoder.hpp"

#include <type_traits>

#include "mqtt/wire.hpp"

namespace iothub::mqtt {
namespace {

// The packets whose body is just a packet identifier, and those with no body at all, share
// one implementation each; the others have theirs next to their struct.
template <class P>
constexpr bool kHasPacketIdOnly =
    std::is_same_v<P, PubAck> || std::is_same_v<P, PubRec> || std::is_same_v<P, PubRel> ||
    std::is_same_v<P, PubComp> || std::is_same_v<P, UnsubAck>;
template <class P>
constexpr bool kHasNoBody =
    std::is_same_v<P, PingReq> || std::is_same_v<P, PingResp> || std::is_same_v<P, Disconnect>;

template <class P>
Status checkPacket(const P& packet) {
  if constexpr (kHasPacketIdOnly<P>) {
    return detail::checkEncodablePacketId(P::kType, packet.packet_id);
  } else if constexpr (kHasNoBody<P>) {
    return Status::ok();
  } else {
    return detail::checkEncodable(packet);
  }
}

template <class P>
std::size_t bodySize(const P& packet) {
  if constexpr (kHasPacketIdOnly<P>) {
    return 2;
  } else if constexpr (kHasNoBody<P>) {
    return 0;
  } else {
    return detail::remainingLength(packet);
  }
}

template <class P>
std::uint8_t headerFlags(const P& packet) {
  if constexpr (kHasPacketIdOnly<P> || kHasNoBody<P>) {
    return detail::requiredFlags(P::kType);
  } else {
    return detail::fixedHeaderFlags(packet);
  }
}

template <class P>
void writeBody(const P& packet, std::string& out) {
  if constexpr (kHasPacketIdOnly<P>) {
    detail::appendUint16(packet.packet_id, out);
  } else if constexpr (!kHasNoBody<P>) {
    detail::writeBody(packet, out);
  }
}

// `Type` is the wire type; P is a packet struct or PublishView.
template <class P>
Status encodeAs(PacketType type, const P& packet, std::string& out) {
  IOTHUB_RETURN_IF_ERROR(checkPacket(packet));
  const std::size_t body_size = bodySize(packet);
  if (body_size > kMaxRemainingLength) {
    return detail::malformed(type, "remaining length " + std::to_string(body_size) +
                                       " exceeds the MQTT maximum of 268435455");
  }
  const std::size_t start = out.size();
  out.reserve(start + 1 + remainingLengthSize(body_size) + body_size);
  detail::appendByte(
      static_cast<std::uint8_t>((static_cast<std::uint8_t>(type) << 4) | headerFlags(packet)), out);
  appendRemainingLength(body_size, out);
  writeBody(packet, out);
  IOTHUB_CHECK(out.size() - start == 1 + remainingLengthSize(body_size) + body_size,
               "MQTT encoder wrote a different size than it computed");
  return Status::ok();
}

}  // namespace

template <PacketStruct P>
Status encode(const P& packet, std::string& out) {
  return encodeAs(P::kType, packet, out);
}

Status encode(const Packet& packet, std::string& out) {
  return std::visit([&out](const auto& alternative) { return encode(alternative, out); }, packet);
}

Status encode(const PublishView& publish, std::string& out) {
  return encodeAs(PacketType::Publish, publish, out);
}

std::size_t encodedSize(const Packet& packet) {
  return std::visit(
      [](const auto& alternative) {
        const std::size_t body_size = bodySize(alternative);
        return 1 + remainingLengthSize(body_size) + body_size;
      },
      packet);
}

template Status encode(const Connect&, std::string&);
template Status encode(const ConnAck&, std::string&);
template Status encode(const Publish&, std::string&);
template Status encode(const PubAck&, std::string&);
template Status encode(const PubRec&, std::string&);
template Status encode(const PubRel&, std::string&);
template Status encode(const PubComp&, std::string&);
template Status encode(const Subscribe&, std::string&);
template Status encode(const SubAck&, std::string&);
template Status encode(const Unsubscribe&, std::string&);
template Status encode(const UnsubAck&, std::string&);
template Status encode(const PingReq&, std::string&);
template Status encode(const PingResp&, std::string&);
template Status encode(const Disconnect&, std::string&);

}  // namespace iothub::mqtt
