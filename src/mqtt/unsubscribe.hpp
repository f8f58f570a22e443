#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.hpp"
#include "mqtt/packet_type.hpp"

namespace iothub::mqtt {

// UNSUBSCRIBE (§3.10), client to server. Fixed-header flags are 0b0010 on the wire.
// Invariants checked by the encoder and decoder: packet_id non-zero, at least one filter
// (§3.10.3), every filter a valid topic filter.
struct Unsubscribe {
  static constexpr PacketType kType = PacketType::Unsubscribe;

  std::uint16_t packet_id = 0;
  std::vector<std::string> filters;

  bool operator==(const Unsubscribe&) const = default;
};

namespace detail {
Status checkEncodable(const Unsubscribe& packet);
std::size_t remainingLength(const Unsubscribe& packet);
inline std::uint8_t fixedHeaderFlags(const Unsubscribe&) { return 0b0010; }
void writeBody(const Unsubscribe& packet, std::string& out);
Result<Unsubscribe> decodeUnsubscribe(std::string_view body);
}  // namespace detail

}  // namespace iothub::mqtt
