#pragma once

#include <cstdint>

#include "mqtt/packet_type.hpp"

namespace iothub::mqtt {

// PUBCOMP (§3.7), last step of the QoS 2 flow, both directions.
// Body: the packet identifier only; it must be non-zero.
struct PubComp {
  static constexpr PacketType kType = PacketType::PubComp;

  std::uint16_t packet_id = 0;

  bool operator==(const PubComp&) const = default;
};

}  // namespace iothub::mqtt
