#pragma once

#include "mqtt/packet_type.hpp"

namespace iothub::mqtt {

// DISCONNECT (§3.14), client to server: a clean close; the server discards the will.
// It has no variable header and no payload: the remaining length is always 0.
struct Disconnect {
  static constexpr PacketType kType = PacketType::Disconnect;

  bool operator==(const Disconnect&) const = default;
};

}  // namespace iothub::mqtt
