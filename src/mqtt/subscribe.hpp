#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.hpp"
#include "mqtt/packet_type.hpp"

namespace iothub::mqtt {

// One topic filter of a SUBSCRIBE with the maximum QoS the client asks for.
struct Subscription {
  std::string filter;  // a valid topic filter (see validateTopicFilter)
  QoS qos = QoS::AtMostOnce;

  bool operator==(const Subscription&) const = default;
};

// SUBSCRIBE (§3.8), client to server. Fixed-header flags are 0b0010 on the wire.
// Invariants checked by the encoder and decoder: packet_id non-zero, at least one
// subscription (§3.8.3), every filter valid, the reserved upper bits of each requested-QoS
// byte zero (§3.8.3.1).
struct Subscribe {
  static constexpr PacketType kType = PacketType::Subscribe;

  std::uint16_t packet_id = 0;
  std::vector<Subscription> subscriptions;

  bool operator==(const Subscribe&) const = default;
};

namespace detail {
Status checkEncodable(const Subscribe& packet);
std::size_t remainingLength(const Subscribe& packet);
inline std::uint8_t fixedHeaderFlags(const Subscribe&) { return 0b0010; }
void writeBody(const Subscribe& packet, std::string& out);
Result<Subscribe> decodeSubscribe(std::string_view body);
}  // namespace detail

}  // namespace iothub::mqtt
