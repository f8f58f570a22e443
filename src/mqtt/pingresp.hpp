#pragma once

#include "mqtt/packet_type.hpp"

namespace iothub::mqtt {

// PINGRESP (§3.13), server to client: the answer to PINGREQ.
// It has no variable header and no payload: the remaining length is always 0.
struct PingResp {
  static constexpr PacketType kType = PacketType::PingResp;

  bool operator==(const PingResp&) const = default;
};

}  // namespace iothub::mqtt
