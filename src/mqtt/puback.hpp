#pragma once

#include <cstdint>

#include "mqtt/packet_type.hpp"

namespace iothub::mqtt {

// PUBACK (§3.4), the answer to a QoS 1 PUBLISH, both directions.
// Body: the packet identifier only; it must be non-zero.
struct PubAck {
  static constexpr PacketType kType = PacketType::PubAck;

  std::uint16_t packet_id = 0;

  bool operator==(const PubAck&) const = default;
};

}  // namespace iothub::mqtt
