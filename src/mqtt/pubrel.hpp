#pragma once

#include <cstdint>

#include "mqtt/packet_type.hpp"

namespace iothub::mqtt {

// PUBREL (§3.6), second step of the QoS 2 flow, both directions.
// Body: the packet identifier only; it must be non-zero.
// Its fixed-header flags are 0b0010 on the wire (§3.6.1).
struct PubRel {
  static constexpr PacketType kType = PacketType::PubRel;

  std::uint16_t packet_id = 0;

  bool operator==(const PubRel&) const = default;
};

}  // namespace iothub::mqtt
