#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/status.hpp"
#include "mqtt/packet_type.hpp"

namespace iothub::mqtt {

// CONNACK (§3.2), server to client. A refusal (return_code != Accepted) never has
// session_present set (§3.2.2.2); the encoder and decoder both reject that combination.
// Azure answers bad credentials with NotAuthorized or BadUserNameOrPassword
// (docs/protocol.md §2.3).
struct ConnAck {
  static constexpr PacketType kType = PacketType::ConnAck;

  bool session_present = false;
  ConnectReturnCode return_code = ConnectReturnCode::Accepted;

  bool operator==(const ConnAck&) const = default;
};

namespace detail {
Status checkEncodable(const ConnAck& packet);
inline std::size_t remainingLength(const ConnAck&) { return 2; }
inline std::uint8_t fixedHeaderFlags(const ConnAck&) { return 0; }
void writeBody(const ConnAck& packet, std::string& out);
Result<ConnAck> decodeConnAck(std::string_view body);
}  // namespace detail

}  // namespace iothub::mqtt
