#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/clock.hpp"
#include "common/status.hpp"

namespace iothub::store {

// What the nodes of a cluster share besides the hub's data (docs/cluster.md, "Design of
// cluster mode"): which nodes are alive, and which node holds each device's connection.
// Only a backend several nodes can share implements it (PostgreSQL); Store::cluster()
// is null for the others. Every time here comes from the database's clock, so the nodes'
// clocks need not agree. Same threading contract as store.hpp: blocking, thread-safe.

// A node's lease: the node is alive until lease_until unless it renews.
struct NodeRecord {
  std::string node_id;
  std::string address;  // where other nodes and operators can reach it (host or IP)
  SystemTime started_time{};
  SystemTime lease_until{};

  bool operator==(const NodeRecord&) const = default;
};

// The connection of a device as the cluster knows it. `epoch` grows with every claim
// (cluster-wide), so the newest connection of a device always has the highest epoch.
struct PresenceRecord {
  std::string device_id;
  std::string node_id;
  std::int64_t epoch = 0;
  bool connected = false;
  SystemTime since{};  // when it connected or disconnected

  bool operator==(const PresenceRecord&) const = default;
};

// The result of a claim: the new epoch, and the presence it replaced (if the device had
// one), so that the claiming node can tell a previous node to close its connection.
struct PresenceClaim {
  PresenceRecord current;
  std::optional<PresenceRecord> previous;
};

// A connection a node holds, as its own registry knows it (ClusterStore::repairPresence).
struct HeldConnection {
  std::string device_id;
  std::int64_t epoch = 0;

  bool operator==(const HeldConnection&) const = default;
};

// What ClusterStore::repairPresence changed.
struct PresenceRepair {
  // Held connections whose presence said disconnected (the node was reaped while alive):
  // connected again, under the same epoch.
  std::vector<HeldConnection> reinstated;
  // Presence rows that named the node as connected for a connection it no longer holds
  // (a release lost to a store failure): now disconnected.
  std::size_t released = 0;
};

class ClusterStore {
 public:
  virtual ~ClusterStore() = default;

  // Registers the node, or renews its lease, until now + ttl on the database clock.
  // Returns the record as stored.
  virtual Result<NodeRecord> renewNode(std::string_view node_id, std::string_view address,
                                       std::chrono::milliseconds ttl) = 0;
  // A node starts: like renewNode (with a new started_time), and every device the node
  // held before (a previous run that crashed) is marked disconnected in the same
  // transaction. That two processes never run with one node id is the caller's job (the
  // server holds an advisory lock per node id).
  virtual Result<NodeRecord> joinNode(std::string_view node_id, std::string_view address,
                                      std::chrono::milliseconds ttl) = 0;
  // A node stops cleanly: its devices are marked disconnected and its row removed.
  virtual Status leaveNode(std::string_view node_id) = 0;
  // Nodes whose lease has not expired, ordered by id.
  virtual Result<std::vector<NodeRecord>> liveNodes() = 0;
  // Removes every node whose lease expired and marks its devices disconnected, in one
  // transaction; returns the ids removed. Safe to call from every node at once.
  virtual Result<std::vector<std::string>> reapExpiredNodes() = 0;

  // Records that `node_id` now holds the device's connection, under a new epoch.
  // Errors: DeviceNotFound.
  virtual Result<PresenceClaim> claimPresence(std::string_view device_id,
                                              std::string_view node_id) = 0;
  // Records that the connection of `epoch` ended; nothing changes when a newer claim
  // replaced it (a late disconnect never hides a newer connection). Returns whether it
  // was still the current one.
  virtual Result<bool> releasePresence(std::string_view device_id, std::int64_t epoch) = 0;
  // Makes the presence rows of `node_id` agree with the connections it holds (`held`, from
  // its own registry), in one transaction: a row of a held connection (same device and
  // epoch) that says disconnected is connected again (a newer claim elsewhere is never
  // overridden: its epoch differs); a row that says connected for a connection not in
  // `held` is released, unless it changed within `settle` (a claim whose connection the
  // registry may not list yet). Used after the node was reaped while alive, and after
  // releases that failed (docs/cluster.md, "What happens when something fails").
  virtual Result<PresenceRepair> repairPresence(std::string_view node_id,
                                                const std::vector<HeldConnection>& held,
                                                std::chrono::milliseconds settle) = 0;
  // Errors: none for a device that never connected (nullopt).
  virtual Result<std::optional<PresenceRecord>> getPresence(std::string_view device_id) = 0;
  // Devices connected anywhere in the cluster.
  virtual Result<std::int64_t> connectedDeviceCount() = 0;

  // A value every node must agree on (the shared development CA, docs/cluster.md
  // "Certificates"): stores `proposed` under `key` unless a value is already there, and
  // returns the stored value, so the first node to propose wins and every later one gets
  // its value. Values are never changed or removed here.
  virtual Result<std::string> shareValue(std::string_view key, std::string_view proposed) = 0;
};

}  // namespace iothub::store
