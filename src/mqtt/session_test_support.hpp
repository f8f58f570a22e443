#pragma once

// Test helper shared by the server and client session tests: the packet an action list sends.

#include <gtest/gtest.h>

#include <cstddef>
#include <variant>

#include "mqtt/server_session.hpp"  // SendPacket

namespace iothub::mqtt::testing {

// The packet of SendPacket action `index` of `actions` (Actions or ClientActions), checked to
// be of type P; a default P (with a test failure) otherwise.
template <class P, class ActionList>
P sentPacket(const ActionList& actions, std::size_t index = 0) {
  EXPECT_GT(actions.size(), index);
  if (actions.size() <= index) return P{};
  const auto* send = std::get_if<SendPacket>(&actions[index]);
  EXPECT_NE(send, nullptr) << "action " << index << " is not SendPacket";
  if (send == nullptr) return P{};
  const auto* packet = std::get_if<P>(&send->packet);
  EXPECT_NE(packet, nullptr) << "action " << index << " sends another packet type";
  return packet == nullptr ? P{} : *packet;
}

}  // namespace iothub::mqtt::testing
