#pragma once

#include <cstdint>

#include "mqtt/packet_type.hpp"

namespace iothub::mqtt {

// PUBREC (§3.5), first answer to a QoS 2 PUBLISH, both directions.
// Body: the packet identifier only; it must be non-zero.
struct PubRec {
  static constexpr PacketType kType = PacketType::PubRec;

  std::uint16_t packet_id = 0;

  bool operator==(const PubRec&) const = default;
};

}  // namespace iothub::mqtt
