#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string_view>

#include "c2d/cloud_to_device.hpp"
#include "routing/connection_registry.hpp"

namespace iothub::c2d {

struct DeliveryCounters {
  std::atomic<std::uint64_t> published{0};     // messages sent to devices over MQTT
  std::atomic<std::uint64_t> acknowledged{0};  // PUBACKs that completed a message
  std::atomic<std::uint64_t> interrupted{0};   // connections that ended first (abandoned)
  std::atomic<std::uint64_t> store_errors{0};
};

// Pushes cloud-to-device messages to devices connected over MQTT on this node
// (docs/c2d.md §3): for a device whose link is subscribed to
// devices/{id}/messages/devicebound/#, it locks the device's next messages (at most `window`
// unacknowledged at a time, in queue order), publishes each at QoS 1, completes it on the
// device's PUBACK and abandons it when the connection ends first (it is delivered again on
// the next connection, with a higher delivery count).
//
// poke() starts a pass for the device; the hub calls it when the queue gains a message,
// when a device subscribes, and after every acknowledgement. One pass runs per device at a
// time; pokes during a pass make it look again. Thread-safe; store work runs on `blocking`.
class MqttDelivery {
 public:
  using Executor = std::function<void(std::function<void()>)>;

  MqttDelivery(CloudToDevice& c2d, routing::ConnectionRegistry& connections, Executor blocking,
               std::size_t window = 8);
  // Later pokes and acknowledgements do nothing (messages still locked are delivered again
  // once their lock passes). The executor must not run this object's work afterwards.
  ~MqttDelivery();
  MqttDelivery(const MqttDelivery&) = delete;
  MqttDelivery& operator=(const MqttDelivery&) = delete;

  void poke(std::string_view device_id);
  // Devices with a pass running or messages in flight (tests, metrics).
  std::size_t activeDevices() const;
  const DeliveryCounters& counters() const;

  struct State;  // shared with callbacks that may outlive this object

 private:
  std::shared_ptr<State> state_;
};

}  // namespace iothub::c2d
