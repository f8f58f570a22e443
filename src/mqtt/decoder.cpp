#include "mqtt/decoder.hpp"

#include <algorithm>
#include <cstring>
#include <string>

namespace iothub::mqtt {
namespace {

// Keep up to this much buffer between packets; a larger one was grown for one big packet
// and is returned so idle connections stay small.
constexpr std::size_t kRetainedCapacity = 64 * 1024;
constexpr std::size_t kMinimumCapacity = 512;

template <class P>
Result<Packet> asPacket(Result<P> decoded) {
  if (!decoded) return decoded.status();
  return Packet(std::move(decoded).value());
}

template <class P>
Result<Packet> decodePacketIdOnly(std::string_view body) {
  auto id = detail::decodePacketIdOnly(P::kType, body);
  if (!id) return id.status();
  return Packet(P{*id});
}

template <class P>
Result<Packet> decodeEmpty(std::string_view body) {
  if (!body.empty()) {
    return detail::malformed(P::kType,
                             "remaining length must be 0, got " + std::to_string(body.size()));
  }
  return Packet(P{});
}

Status checkFirstByte(std::uint8_t first_byte) {
  const int type = first_byte >> 4;
  const std::uint8_t flags = first_byte & 0x0F;
  if (type == 0 || type == 15) {
    return Status(ErrorCode::IotHubFormatError,
                  "reserved control packet type " + std::to_string(type));
  }
  const auto packet_type = static_cast<PacketType>(type);
  if (packet_type == PacketType::Publish) return detail::checkPublishFlags(flags);
  if (flags != detail::requiredFlags(packet_type)) {
    return detail::malformed(packet_type,
                             "invalid fixed header flags " + std::to_string(flags) + " (must be " +
                                 std::to_string(detail::requiredFlags(packet_type)) + ")");
  }
  return Status::ok();
}

Result<Packet> decodeBody(std::uint8_t first_byte, std::string_view body) {
  const std::uint8_t flags = first_byte & 0x0F;
  switch (static_cast<PacketType>(first_byte >> 4)) {
    case PacketType::Connect:
      return asPacket(detail::decodeConnect(body));
    case PacketType::ConnAck:
      return asPacket(detail::decodeConnAck(body));
    case PacketType::Publish:
      return asPacket(detail::decodePublish(flags, body));
    case PacketType::PubAck:
      return decodePacketIdOnly<PubAck>(body);
    case PacketType::PubRec:
      return decodePacketIdOnly<PubRec>(body);
    case PacketType::PubRel:
      return decodePacketIdOnly<PubRel>(body);
    case PacketType::PubComp:
      return decodePacketIdOnly<PubComp>(body);
    case PacketType::Subscribe:
      return asPacket(detail::decodeSubscribe(body));
    case PacketType::SubAck:
      return asPacket(detail::decodeSubAck(body));
    case PacketType::Unsubscribe:
      return asPacket(detail::decodeUnsubscribe(body));
    case PacketType::UnsubAck:
      return decodePacketIdOnly<UnsubAck>(body);
    case PacketType::PingReq:
      return decodeEmpty<PingReq>(body);
    case PacketType::PingResp:
      return decodeEmpty<PingResp>(body);
    case PacketType::Disconnect:
      return decodeEmpty<Disconnect>(body);
  }
  return Status(ErrorCode::IotHubFormatError, "reserved control packet type");
}

}  // namespace

DecodeError decodeErrorOf(const Status& status) {
  switch (status.code()) {
    case ErrorCode::Ok:
      return DecodeError::None;
    case ErrorCode::MessageTooLarge:
      return DecodeError::PacketTooLarge;
    case ErrorCode::ArgumentInvalid:
      return DecodeError::UnsupportedProtocol;
    default:
      return DecodeError::Malformed;
  }
}

Decoder::Decoder(std::size_t max_packet_size)
    : max_packet_size_(std::clamp<std::size_t>(max_packet_size, 2, kMaxPacketSize)) {}

void Decoder::ensureWritable(std::size_t size) {
  if (capacity_ - end_ >= size) return;
  const std::size_t live = end_ - begin_;
  if (live + size <= capacity_) {
    std::memmove(data_.get(), data_.get() + begin_, live);
  } else {
    // Grow geometrically with the bytes actually received, never to a size a header merely
    // announced.
    const std::size_t capacity = std::max({live + size, capacity_ * 2, kMinimumCapacity});
    auto data = std::make_unique_for_overwrite<char[]>(capacity);
    if (live > 0) std::memcpy(data.get(), data_.get() + begin_, live);
    data_ = std::move(data);
    capacity_ = capacity;
  }
  begin_ = 0;
  end_ = live;
}

void Decoder::releaseIfIdle() {
  if (begin_ != end_) return;
  begin_ = 0;
  end_ = 0;
  if (capacity_ > kRetainedCapacity) {
    data_.reset();
    capacity_ = 0;
  }
}

void Decoder::shrinkToFit() {
  if (begin_ != end_) return;
  data_.reset();
  capacity_ = 0;
  begin_ = 0;
  end_ = 0;
}

void Decoder::feed(std::string_view bytes) {
  if (error_ != DecodeError::None || bytes.empty()) return;
  ensureWritable(bytes.size());
  std::memcpy(data_.get() + end_, bytes.data(), bytes.size());
  end_ += bytes.size();
}

std::span<char> Decoder::prepare(std::size_t size) {
  ensureWritable(size);
  return {data_.get() + end_, size};
}

void Decoder::commit(std::size_t size) {
  // After an error the buffer is gone; whatever was read into the prepared span is dropped.
  if (error_ != DecodeError::None) return;
  IOTHUB_CHECK(size <= capacity_ - end_, "Decoder::commit beyond the prepared span");
  end_ += size;
}

Status Decoder::fail(DecodeError error, Status status) {
  error_ = error;
  error_status_ = std::move(status);
  data_.reset();
  capacity_ = 0;
  begin_ = 0;
  end_ = 0;
  return error_status_;
}

Result<std::optional<Packet>> Decoder::next() {
  if (error_ != DecodeError::None) return error_status_;
  const std::size_t available = end_ - begin_;
  if (available == 0) return std::optional<Packet>{};
  const char* start = data_.get() + begin_;
  const auto first_byte = static_cast<std::uint8_t>(start[0]);
  // The first byte alone can be wrong (reserved type, flags, QoS 3): fail without waiting.
  Status first_byte_ok = checkFirstByte(first_byte);
  if (!first_byte_ok) return fail(DecodeError::Malformed, std::move(first_byte_ok));

  auto length = decodeRemainingLength(
      std::string_view(start + 1, std::min<std::size_t>(available - 1, kMaxFixedHeaderSize - 1)));
  if (!length) return fail(DecodeError::Malformed, length.status());
  if (!length->has_value()) return std::optional<Packet>{};
  const std::size_t header_size = 1 + (*length)->encoded_size;
  const std::size_t packet_size = header_size + (*length)->value;
  if (packet_size > max_packet_size_) {
    return fail(DecodeError::PacketTooLarge,
                Status(ErrorCode::MessageTooLarge,
                       std::string(packetTypeName(static_cast<PacketType>(first_byte >> 4))) +
                           ": packet of " + std::to_string(packet_size) +
                           " bytes exceeds the limit of " + std::to_string(max_packet_size_)));
  }
  if (available < packet_size) return std::optional<Packet>{};

  auto packet = decodeBody(first_byte, std::string_view(start + header_size, (*length)->value));
  if (!packet) {
    Status status = packet.status();
    const DecodeError error = decodeErrorOf(status);
    return fail(error, std::move(status));
  }
  begin_ += packet_size;
  releaseIfIdle();
  return std::optional<Packet>(std::move(packet).value());
}

Result<Packet> decodePacket(std::string_view bytes, std::size_t max_packet_size) {
  Decoder decoder(max_packet_size);
  decoder.feed(bytes);
  auto packet = decoder.next();
  if (!packet) return packet.status();
  if (!packet->has_value()) {
    return Status(ErrorCode::IotHubFormatError, "incomplete MQTT packet");
  }
  if (decoder.bufferedBytes() != 0) {
    return Status(ErrorCode::IotHubFormatError,
                  std::to_string(decoder.bufferedBytes()) + " byte(s) after the MQTT packet");
  }
  return std::move(**packet);
}

}  // namespace iothub::mqtt
