#include "c2d/c2d_delivery.hpp"

#include <spdlog/spdlog.h>

#include <mutex>
#include <string>
#include <unordered_map>

#include "mqtt/azure_topics.hpp"

namespace iothub::c2d {

struct MqttDelivery::State : std::enable_shared_from_this<MqttDelivery::State> {
  State(CloudToDevice& queues, routing::ConnectionRegistry& links, Executor executor,
        std::size_t max_in_flight)
      : c2d(queues), connections(links), blocking(std::move(executor)), window(max_in_flight) {}

  struct Device {
    bool running = false;  // a pass is under way
    bool again = false;    // poked during the pass: look once more before stopping
    // The last pass stopped at a full window, so the queue may hold more: an
    // acknowledgement starts a pass. Otherwise the queue was empty and only a new message
    // (the queue observer) starts one, which saves a store write per acknowledgement.
    bool window_full = false;
    std::size_t in_flight = 0;
  };

  CloudToDevice& c2d;
  routing::ConnectionRegistry& connections;
  Executor blocking;
  const std::size_t window;
  DeliveryCounters counters;
  mutable std::mutex mutex;
  bool stopped = false;                             // guarded by mutex
  std::unordered_map<std::string, Device> devices;  // guarded by mutex

  void poke(std::string_view device_id) {
    {
      std::lock_guard lock(mutex);
      if (stopped) return;
      Device& d = devices[std::string(device_id)];
      if (d.running) {
        d.again = true;
        return;
      }
      d.running = true;
    }
    blocking([self = shared_from_this(), id = std::string(device_id)] { self->pass(id); });
  }

  // One pass: fills the device's window, then stops unless poked meanwhile.
  void pass(const std::string& device_id) {
    // Any topic of the devicebound family: the link must be subscribed to it.
    const std::string probe = mqtt::azure::c2dTopic(device_id) + "x";
    for (;;) {
      {
        std::lock_guard lock(mutex);
        Device& d = devices[device_id];
        d.again = false;
        if (stopped) {
          d.running = false;
          return;
        }
      }
      Fill fill;
      while ((fill = fillOne(device_id, probe)) == Fill::Sent) {
      }
      std::lock_guard lock(mutex);
      Device& d = devices[device_id];
      // After a refusal the abandon itself poked the device: looking again would only take
      // and give back the same message, raising its delivery count each time.
      if (d.again && !stopped && fill != Fill::Refused) continue;
      d.running = false;
      if (d.in_flight == 0) devices.erase(device_id);
      return;
    }
  }

  enum class Fill { Sent, Idle, WindowFull, Refused };

  // Sends one more message if the window and the link allow.
  Fill fillOne(const std::string& device_id, const std::string& probe) {
    {
      std::lock_guard lock(mutex);
      if (stopped) return Fill::Idle;
      Device& d = devices[device_id];
      d.window_full = d.in_flight >= window;
      if (d.window_full) return Fill::WindowFull;
    }
    auto link = connections.find(device_id);
    if (!link || !link->isSubscribed(probe)) return Fill::Idle;
    auto next = c2d.receive(device_id);
    if (!next) {
      counters.store_errors.fetch_add(1, std::memory_order_relaxed);
      spdlog::warn("c2d: cannot take the next message of {}: {}", device_id,
                   next.status().toString());
      return Fill::Idle;
    }
    if (!*next) return Fill::Idle;
    DeviceMessage message = std::move(**next);
    std::string token = message.lock_token;
    {
      std::lock_guard lock(mutex);
      ++devices[device_id].in_flight;
    }
    std::string topic = deviceboundTopic(message);
    std::weak_ptr<State> weak = shared_from_this();
    bool sent = link->publishReliable(std::move(topic), std::move(message.body),
                                      [weak, device_id, token](bool acknowledged) {
                                        auto self = weak.lock();
                                        if (!self) return;
                                        // On the connection's strand: the store is for the blocking
                                        // executor.
                                        self->blocking([self, device_id, token, acknowledged] {
                                          self->settle(device_id, token, acknowledged);
                                        });
                                      });
    if (sent) {
      counters.published.fetch_add(1, std::memory_order_relaxed);
      return Fill::Sent;
    }
    // The connection is closing or unsubscribed: give the message back at once.
    {
      std::lock_guard lock(mutex);
      --devices[device_id].in_flight;
    }
    Status back = c2d.abandon(device_id, token);
    if (!back) {
      spdlog::warn("c2d: cannot give back a message of {}: {}", device_id, back.toString());
    }
    return Fill::Refused;
  }

  void settle(const std::string& device_id, const std::string& token, bool acknowledged) {
    {
      // The hub stops: the message stays locked and is delivered again after its lock
      // passes (at least once, never lost).
      std::lock_guard lock(mutex);
      if (stopped) return;
    }
    Status settled = acknowledged ? c2d.complete(device_id, token) : c2d.abandon(device_id, token);
    (acknowledged ? counters.acknowledged : counters.interrupted)
        .fetch_add(1, std::memory_order_relaxed);
    if (!settled && settled.code() != ErrorCode::DeviceMessageLockLost) {
      counters.store_errors.fetch_add(1, std::memory_order_relaxed);
      spdlog::warn("c2d: cannot {} a message of {}: {}", acknowledged ? "complete" : "abandon",
                   device_id, settled.toString());
    } else if (!settled) {
      // The lock passed before the PUBACK (a device slower than lock_duration): the message
      // was or will be delivered again, as Azure does.
      spdlog::info("c2d: {} acknowledged a message after its lock passed", device_id);
    }
    // A free slot in a window that was full: the queue may hold more for the device.
    bool more = false;
    {
      std::lock_guard lock(mutex);
      auto it = devices.find(device_id);
      if (it != devices.end()) {
        if (it->second.in_flight > 0) --it->second.in_flight;
        more = it->second.window_full;
        if (!it->second.running && it->second.in_flight == 0) devices.erase(it);
      }
    }
    if (acknowledged && more) poke(device_id);
  }
};

MqttDelivery::MqttDelivery(CloudToDevice& c2d, routing::ConnectionRegistry& connections,
                           Executor blocking, std::size_t window)
    : state_(std::make_shared<State>(c2d, connections, std::move(blocking),
                                     window == 0 ? 1 : window)) {}

MqttDelivery::~MqttDelivery() {
  std::lock_guard lock(state_->mutex);
  state_->stopped = true;
}

void MqttDelivery::poke(std::string_view device_id) { state_->poke(device_id); }

std::size_t MqttDelivery::activeDevices() const {
  std::lock_guard lock(state_->mutex);
  return state_->devices.size();
}

const DeliveryCounters& MqttDelivery::counters() const { return state_->counters; }

}  // namespace iothub::c2d
