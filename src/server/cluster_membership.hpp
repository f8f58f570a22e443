#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/status.hpp"
#include "store/cluster_store.hpp"

namespace iothub::server {

struct MembershipOptions {
  // How often the node renews its lease, reaps expired nodes and reads the live ones.
  std::chrono::milliseconds renew_every{2000};
  // How long a lease lasts without renewal: the time after which other nodes consider a
  // silent node dead and mark its devices disconnected (docs/cluster.md).
  std::chrono::milliseconds lease{10000};
  // How often the presence repair runs besides after a lapse of the lease (below).
  std::chrono::milliseconds repair_every{60000};
};

// A node's membership of the cluster (docs/cluster.md "Where each device is: presence"): joins
// (marking the devices of a previous run of this node disconnected), renews its lease on
// a thread of its own, reaps nodes whose lease expired (their devices go disconnected),
// and keeps the list of live nodes, logging every change. Thread-safe.
class ClusterMembership {
 public:
  // Called with the live nodes whenever the set changes: first inside join(), then on the
  // membership's thread.
  using Listener = std::function<void(const std::vector<store::NodeRecord>& nodes)>;
  // Makes the store's presence rows of this node agree with the connections it holds
  // (ClusterStore::repairPresence). Called on the membership's thread: at the first renewal
  // that follows a lapse of the lease (renewals failed, or did not run, for a lease's
  // length: the other nodes may have reaped this one and marked its devices disconnected
  // although they are still connected here), and every `repair_every` (releases that a
  // store failure lost). `lapsed` says which.
  using Repair = std::function<void(bool lapsed)>;

  // Joins and starts renewing. Errors: the store's (the node does not start then).
  static Result<std::unique_ptr<ClusterMembership>> join(store::ClusterStore& store,
                                                         std::string node_id, std::string address,
                                                         MembershipOptions options,
                                                         Listener on_change = nullptr,
                                                         Repair repair = nullptr);
  // Stops renewing without leaving: to the others, the node is gone once its lease runs
  // out (what a crash looks like). Call leave() first for a clean stop.
  ~ClusterMembership();
  ClusterMembership(const ClusterMembership&) = delete;
  ClusterMembership& operator=(const ClusterMembership&) = delete;

  // Stops renewing and leaves: the node's devices are marked disconnected and the others
  // stop seeing it at their next read.
  Status leave();

  const std::string& nodeId() const { return node_id_; }
  // The live nodes as last read (this one included).
  std::vector<store::NodeRecord> nodes() const;
  // False once renewals have failed for longer than the lease: the other nodes may have
  // reaped this one.
  bool leaseHeld() const;

 private:
  ClusterMembership(store::ClusterStore& store, std::string node_id, std::string address,
                    MembershipOptions options, Listener on_change, Repair repair);
  void run();
  void tick();
  void stopThread();

  store::ClusterStore& store_;
  const std::string node_id_;
  const std::string address_;
  const MembershipOptions options_;
  const Listener on_change_;
  const Repair repair_;

  mutable std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;                          // guarded by mutex_
  std::vector<store::NodeRecord> nodes_;           // guarded by mutex_
  std::chrono::steady_clock::time_point renewed_;  // guarded by mutex_
  bool renew_failing_ = false;                     // membership thread only
  bool lease_lost_logged_ = false;                 // membership thread only
  std::chrono::steady_clock::time_point renew_started_;  // membership thread only
  std::chrono::steady_clock::time_point repaired_;       // membership thread only
  std::thread thread_;
};

}  // namespace iothub::server
