#pragma once

#include <cstdint>

#include "mqtt/packet_type.hpp"

namespace iothub::mqtt {

// UNSUBACK (§3.11), server to client, the answer to an UNSUBSCRIBE.
// Body: the packet identifier only; it must be non-zero.
struct UnsubAck {
  static constexpr PacketType kType = PacketType::UnsubAck;

  std::uint16_t packet_id = 0;

  bool operator==(const UnsubAck&) const = default;
};

}  // namespace iothub::mqtt
