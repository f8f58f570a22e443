#pragma once

#include "mqtt/packet_type.hpp"

namespace iothub::mqtt {

// PINGREQ (§3.12), client to server: "are you alive", also resets the keep-alive timer.
// It has no variable header and no payload: the remaining length is always 0.
struct PingReq {
  static constexpr PacketType kType = PacketType::PingReq;

  bool operator==(const PingReq&) const = default;
};

}  // namespace iothub::mqtt
