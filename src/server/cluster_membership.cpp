#include "server/cluster_membership.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>

namespace iothub::server {
namespace {

std::string idList(const std::vector<store::NodeRecord>& nodes) {
  std::string out;
  for (const auto& n : nodes) out += (out.empty() ? "" : ", ") + n.node_id + " (" + n.address + ")";
  return out.empty() ? "none" : out;
}

bool sameIds(const std::vector<store::NodeRecord>& a, const std::vector<store::NodeRecord>& b) {
  return std::equal(a.begin(), a.end(), b.begin(), b.end(),
                    [](const auto& x, const auto& y) { return x.node_id == y.node_id; });
}

}  // namespace

Result<std::unique_ptr<ClusterMembership>> ClusterMembership::join(store::ClusterStore& store,
                                                                   std::string node_id,
                                                                   std::string address,
                                                                   MembershipOptions options,
                                                                   Listener on_change,
                                                                   Repair repair) {
  const auto join_started = std::chrono::steady_clock::now();
  auto joined = store.joinNode(node_id, address, options.lease);
  if (!joined) {
    return Status(joined.code(), "cannot join the cluster as node '" + node_id +
                                     "': " + joined.status().message());
  }
  std::unique_ptr<ClusterMembership> membership(new ClusterMembership(
      store, std::move(node_id), std::move(address), options, std::move(on_change),
      std::move(repair)));
  membership->renew_started_ = join_started;
  membership->tick();  // the first list of nodes before join() returns
  membership->thread_ = std::thread([m = membership.get()] { m->run(); });
  return membership;
}

ClusterMembership::ClusterMembership(store::ClusterStore& store, std::string node_id,
                                     std::string address, MembershipOptions options,
                                     Listener on_change, Repair repair)
    : store_(store),
      node_id_(std::move(node_id)),
      address_(std::move(address)),
      options_(options),
      on_change_(std::move(on_change)),
      repair_(std::move(repair)),
      renewed_(std::chrono::steady_clock::now()),
      renew_started_(renewed_),
      repaired_(renewed_) {}

ClusterMembership::~ClusterMembership() { stopThread(); }

void ClusterMembership::stopThread() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

Status ClusterMembership::leave() {
  stopThread();
  Status left = store_.leaveNode(node_id_);
  if (left) spdlog::info("cluster: node {} left", node_id_);
  return left;
}

std::vector<store::NodeRecord> ClusterMembership::nodes() const {
  std::lock_guard lock(mutex_);
  return nodes_;
}

bool ClusterMembership::leaseHeld() const {
  std::lock_guard lock(mutex_);
  return std::chrono::steady_clock::now() - renewed_ < options_.lease;
}

void ClusterMembership::run() {
  for (;;) {
    {
      std::unique_lock lock(mutex_);
      if (wake_.wait_for(lock, options_.renew_every, [this] { return stopping_; })) return;
    }
    tick();
  }
}

void ClusterMembership::tick() {
  const auto started = std::chrono::steady_clock::now();
  auto renewed = store_.renewNode(node_id_, address_, options_.lease);
  if (!renewed) {
    if (!renew_failing_) {
      spdlog::warn("cluster: node {} cannot renew its lease: {}", node_id_,
                   renewed.status().toString());
    }
    renew_failing_ = true;
    if (!lease_lost_logged_ && !leaseHeld()) {
      lease_lost_logged_ = true;
      spdlog::error(
          "cluster: node {} has not renewed its lease for {} ms; the other nodes may "
          "consider it gone",
          node_id_, options_.lease.count());
    }
    return;
  }
  if (renew_failing_) spdlog::info("cluster: node {} renews its lease again", node_id_);
  renew_failing_ = false;
  lease_lost_logged_ = false;
  const auto now = std::chrono::steady_clock::now();
  // The previous renewal committed after it started, so its lease ran until at least
  // renew_started_ + lease; this one committed before now. Unless more than a lease lies
  // between the two, nobody could reap this node in between.
  const bool lapsed = now - renew_started_ >= options_.lease;
  renew_started_ = started;
  {
    std::lock_guard lock(mutex_);
    renewed_ = now;
  }
  if (repair_ && (lapsed || now - repaired_ >= options_.repair_every)) {
    if (lapsed) {
      spdlog::warn("cluster: node {} renewed its lease after a lapse; repairing its devices' presence",
                   node_id_);
    }
    repair_(lapsed);
    repaired_ = std::chrono::steady_clock::now();
  }
  if (auto reaped = store_.reapExpiredNodes(); reaped && !reaped->empty()) {
    for (const auto& id : *reaped) {
      spdlog::warn("cluster: node {} stopped renewing its lease; its devices are now disconnected",
                   id);
    }
  } else if (!reaped) {
    spdlog::warn("cluster: reaping expired nodes failed: {}", reaped.status().toString());
  }
  auto live = store_.liveNodes();
  if (!live) {
    spdlog::warn("cluster: reading the live nodes failed: {}", live.status().toString());
    return;
  }
  bool changed;
  {
    std::lock_guard lock(mutex_);
    changed = !sameIds(nodes_, *live) || nodes_.empty();
    nodes_ = *live;
  }
  if (changed) {
    spdlog::info("cluster: node {} sees {} node(s): {}", node_id_, live->size(), idList(*live));
    if (on_change_) on_change_(*live);
  }
}

}  // namespace iothub::server
