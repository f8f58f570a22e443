#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string_view>

#include "common/status.hpp"
#include "mqtt/packet.hpp"
#include "mqtt/wire.hpp"

namespace iothub::mqtt {

// The largest packet MQTT 3.1.1 can express: a 5-byte fixed header and the maximum
// remaining length.
inline constexpr std::size_t kMaxPacketSize = kMaxFixedHeaderSize + kMaxRemainingLength;

// Why a Decoder stopped. Each maps to one ErrorCode of the Status that next() returned.
enum class DecodeError : std::uint8_t {
  None,
  // IotHubFormatError: the bytes break a rule of MQTT 3.1.1 (reserved type or flags, QoS 3,
  // a fifth remaining-length byte, a zero packet identifier, invalid UTF-8, a wildcard in a
  // topic name, an invalid topic filter, an empty SUBSCRIBE, inconsistent CONNECT flags, a
  // body longer or shorter than its fields, ...). The server closes the connection.
  Malformed,
  // MessageTooLarge: the fixed header announced a packet larger than max_packet_size.
  PacketTooLarge,
  // ArgumentInvalid: a CONNECT for another protocol level ("MQTT" with a level other than
  // 4, or MQTT 3.1's "MQIsdp"). The server answers CONNACK 0x01 and closes (§3.1.2.2).
  UnsupportedProtocol,
};

// Incremental MQTT 3.1.1 stream decoder, for either side of a connection: bytes go in as
// they arrive from the network (in chunks of any size), complete packets come out.
//
// Limits and memory: a packet larger than max_packet_size (whole packet, fixed header
// included) is rejected as soon as its fixed header is complete, before its body arrives.
// The buffer grows only with bytes actually received (a peer announcing a large packet
// without sending it costs nothing), so it holds at most one packet plus what was fed since
// the last next(); callers that drain next() after every feed() keep it within
// max_packet_size + one chunk. After a packet larger than 64 KiB is consumed, the buffer's
// memory is returned. Decoded packets own their data (one copy of topic and payload out of
// the buffer); nothing returned refers to the buffer.
//
// Errors are final: after next() fails, the stream is out of sync, so every later next()
// returns the same error, fed bytes are discarded and the buffer is freed.
// Not thread-safe; one Decoder per connection and direction.
class Decoder {
 public:
  // `max_packet_size` is clamped to [2, kMaxPacketSize].
  explicit Decoder(std::size_t max_packet_size = kMaxPacketSize);

  Decoder(Decoder&&) noexcept = default;
  Decoder& operator=(Decoder&&) noexcept = default;

  // Appends received bytes (copied).
  void feed(std::string_view bytes);

  // Frees the buffer when no bytes are buffered, so an idle connection holds none (a
  // server reading into a shared scratch buffer and feed()ing calls it after each read).
  void shrinkToFit();

  // Zero-copy alternative to feed(): returns `size` writable bytes at the end of the buffer
  // (e.g. for a socket read), then commit(n) appends the first n <= size of them. The span
  // is valid until the next call of any other member. After an error, committed bytes are
  // discarded, and commit() must not be given more than the last prepare() returned.
  std::span<char> prepare(std::size_t size);
  void commit(std::size_t size);

  // The next complete packet, nullopt when more bytes are needed, or an error (see
  // DecodeError for which ErrorCode means what). Call it until it returns nullopt.
  Result<std::optional<Packet>> next();

  // Why the last next() failed, or None.
  DecodeError lastError() const { return error_; }
  // Bytes received but not yet returned as packets.
  std::size_t bufferedBytes() const { return end_ - begin_; }
  std::size_t maxPacketSize() const { return max_packet_size_; }

 private:
  Status fail(DecodeError error, Status status);
  void ensureWritable(std::size_t size);
  void releaseIfIdle();

  std::size_t max_packet_size_;
  std::unique_ptr<char[]> data_;
  std::size_t capacity_ = 0;
  std::size_t begin_ = 0;  // first unconsumed byte
  std::size_t end_ = 0;    // one past the last received byte
  DecodeError error_ = DecodeError::None;
  Status error_status_;
};

// Decodes exactly one complete packet occupying all of `bytes`, e.g. for tests and tools.
// The Decoder's errors, plus IotHubFormatError when `bytes` is incomplete or has bytes after
// the packet.
Result<Packet> decodePacket(std::string_view bytes, std::size_t max_packet_size = kMaxPacketSize);

// Which DecodeError a decoding Status stands for (None for Ok).
DecodeError decodeErrorOf(const Status& status);

}  // namespace iothub::mqtt
