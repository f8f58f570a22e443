#include "index/twin_index.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <new>
#include <optional>

#include "query/value.hpp"
#include "twin/twin_json.hpp"

namespace iothub::index {
namespace {

constexpr std::size_t kLoadPage = 1000;

Row makeRow(const json::object& view) { return PackedRow::encode(view); }

// One page of the store's devices with their twins, in id order.
struct LoadPage {
  std::vector<std::pair<store::DeviceRecord, store::TwinRecord>> entries;
  std::string last_id;  // the last device id read (entries may skip a device deleted meanwhile)
  bool more = false;    // a full page: there may be more after last_id
};

// The devices (and their twins) after `after` in id order, at most kLoadPage of them.
Result<LoadPage> readPage(store::Store& store, const std::string& after) {
  LoadPage result;
  auto& page = result.entries;
  auto devices = store.registry().listDevices(after, kLoadPage);
  if (!devices) return devices.status();
  if (devices->empty()) return result;
  result.last_id = devices->back().device_id;
  result.more = devices->size() >= kLoadPage;
  // Twins and devices share their ids and are created and deleted together, so the same
  // page of twins lines up with the page of devices.
  auto twins = store.twins().listTwins(after, kLoadPage);
  if (!twins) return twins.status();
  page.reserve(devices->size());
  std::size_t t = 0;
  for (auto& device : *devices) {
    while (t < twins->size() && (*twins)[t].device_id < device.device_id) ++t;
    if (t == twins->size() || (*twins)[t].device_id != device.device_id) {
      // The pages drifted apart: the device was created or deleted between the two reads.
      auto twin = store.twins().getTwin(device.device_id);
      if (!twin && twin.status().code() == ErrorCode::DeviceNotFound) continue;  // deleted
      if (!twin) return twin.status();
      page.emplace_back(std::move(device), std::move(*twin));
    } else {
      page.emplace_back(std::move(device), std::move((*twins)[t]));
    }
  }
  return result;
}

bool isDeviceIdPath(const query::Path& path) {
  return path.keys.size() == 1 && path.keys[0] == "deviceId";
}

}  // namespace

Status TwinIndex::load(store::Store& store,
                       const std::function<bool(std::string_view)>& is_connected) {
  auto started = std::chrono::steady_clock::now();
  Rows rows;
  std::unordered_set<std::string> connected_ids;
  std::string after;
  for (;;) {
    auto page = readPage(store, after);
    if (!page) return page.status();
    for (auto& [device, twin] : page->entries) {
      bool connected = is_connected && is_connected(device.device_id);
      if (connected) connected_ids.insert(device.device_id);
      rows.emplace(device.device_id,
                   Entry{makeRow(twin::serviceTwinJson(device, twin, connected)), twin.version});
    }
    if (!page->more) break;
    after = page->last_id;
  }
  // A reload while queries run (the change feed's, twin_index_feed.hpp) frees every node
  // the path indexes point to: it waits for an index build to finish (build_mutex_) and
  // for scans reading candidate sets (index_life_), in the order buildPathIndex takes them.
  std::vector<std::string> changed;  // every device of the new content, when observed
  {
    std::shared_lock observed(observer_mutex_);
    if (observer_) {
      changed.reserve(rows.size());
      for (const auto& [id, entry] : rows) changed.push_back(id);
    }
  }
  std::size_t loaded = rows.size();
  {
    std::lock_guard build(build_mutex_);
    std::unique_lock life(index_life_);
    std::unique_lock lock(mutex_);
    rows_ = std::move(rows);
    connected_ = std::move(connected_ids);
    path_indexes_.clear();
  }
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                                  started);
  spdlog::info("twin index: {} twins loaded in {} ms", loaded, ms.count());
  for (const auto& id : changed) notify(id);
  return Status::ok();
}

TwinIndex::~TwinIndex() {
  stop_loading_ = true;
  if (loader_.joinable()) loader_.join();
}

void TwinIndex::startLoading(store::Store& store, std::function<void(const Status&)> on_failure) {
  {
    std::unique_lock lock(mutex_);
    loading_ = true;
  }
  loader_ = std::thread(
      [this, &store, on_failure = std::move(on_failure)] { runLoad(store, on_failure); });
}

void TwinIndex::waitLoaded() const {
  std::shared_lock lock(mutex_);
  loaded_.wait(lock, [this] { return !loading_; });
}

void TwinIndex::runLoad(store::Store& store, const std::function<void(const Status&)>& on_failure) {
  auto started = std::chrono::steady_clock::now();
  std::size_t loaded = 0;
  Status status = loadPages(store, loaded);
  if (status) status = reloadWrittenDevices(store, loaded);
  {
    std::unique_lock lock(mutex_);
    loading_ = false;
    written_.clear();
  }
  loaded_.notify_all();
  if (!status) {
    spdlog::error("twin index: loading failed after {} twins: {}", loaded, status.toString());
    if (on_failure) on_failure(status);
    return;
  }
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                                  started);
  spdlog::info("twin index: {} twins loaded in {} ms{}", loaded, ms.count(),
               stop_loading_ ? " (stopped)" : "");
}

Status TwinIndex::loadPages(store::Store& store, std::size_t& loaded) {
  std::string after;
  while (!stop_loading_) {
    auto page = readPage(store, after);
    if (!page) return page.status();
    // Rows are built outside the lock as disconnected; the few devices that connect
    // during the load get theirs rebuilt under it.
    const auto& entries = page->entries;
    std::vector<Row> built;
    built.reserve(entries.size());
    for (const auto& [device, twin] : entries) {
      built.push_back(makeRow(twin::serviceTwinJson(device, twin, false)));
    }
    {
      std::unique_lock lock(mutex_);
      for (std::size_t i = 0; i < entries.size(); ++i) {
        const auto& [device, twin] = entries[i];
        // A device written meanwhile is read again at the end.
        if (written_.contains(device.device_id)) continue;
        if (insertLoaded(device, twin, std::move(built[i]))) ++loaded;
      }
    }
    if (!page->more) break;
    after = page->last_id;
  }
  return Status::ok();
}

Status TwinIndex::reloadWrittenDevices(store::Store& store, std::size_t& loaded) {
  // Devices written while their rows were not loaded yet: their rows are read again, until
  // a round finds none (a device written again during its read waits for the next round).
  while (!stop_loading_) {
    std::vector<std::pair<std::string, std::uint64_t>> pending;
    {
      std::unique_lock lock(mutex_);
      for (auto it = written_.begin(); it != written_.end();) {
        if (rows_.contains(it->first)) {
          it = written_.erase(it);  // its row is the writer's: current
        } else {
          pending.emplace_back(it->first, it->second);
          ++it;
        }
      }
      if (pending.empty()) return Status::ok();
    }
    for (const auto& [id, write] : pending) {
      auto device = store.registry().getDevice(id);
      std::optional<store::TwinRecord> twin;
      if (device) {
        auto read = store.twins().getTwin(id);
        if (!read && read.status().code() != ErrorCode::DeviceNotFound) return read.status();
        if (read) twin = std::move(*read);
      } else if (device.status().code() != ErrorCode::DeviceNotFound) {
        return device.status();
      }
      bool inserted = false;
      {
        std::unique_lock lock(mutex_);
        auto it = written_.find(id);
        if (it == written_.end() || it->second != write) continue;  // written again: next round
        written_.erase(it);
        if (device && twin) inserted = insertLoaded(*device, *twin, std::nullopt);
      }
      if (inserted) {
        ++loaded;
        notify(id);
      }
    }
  }
  return Status::ok();
}

bool TwinIndex::insertLoaded(const store::DeviceRecord& device, const store::TwinRecord& twin,
                             std::optional<Row> built) {
  if (rows_.contains(device.device_id)) return false;
  bool connected = connected_.contains(device.device_id);
  Row row = built && !connected ? std::move(*built)
                                : makeRow(twin::serviceTwinJson(device, twin, connected));
  auto it = rows_.emplace(device.device_id, Entry{std::move(row), twin.version}).first;
  indexRow(*it, *it->second.row, true);
  return true;
}

void TwinIndex::markWritten(std::string_view device_id) {
  if (loading_) written_[std::string(device_id)] = ++write_clock_;
}

void TwinIndex::setChangeObserver(ChangeObserver observer) {
  std::unique_lock lock(observer_mutex_);
  observer_ = std::move(observer);
}

void TwinIndex::notify(std::string_view device_id) const {
  std::shared_lock lock(observer_mutex_);
  if (observer_) observer_(device_id);
}

void TwinIndex::putDevice(const store::DeviceRecord& device, const store::TwinRecord& twin) {
  {
    std::unique_lock lock(mutex_);
    putDeviceLocked(device, twin);
  }
  notify(device.device_id);
}

void TwinIndex::putDevice(const store::DeviceRecord& device, const store::TwinRecord& twin,
                          bool connected) {
  {
    std::unique_lock lock(mutex_);
    if (connected) {
      connected_.insert(device.device_id);
    } else {
      connected_.erase(device.device_id);
    }
    putDeviceLocked(device, twin);
  }
  notify(device.device_id);
}

void TwinIndex::putDeviceLocked(const store::DeviceRecord& device, const store::TwinRecord& twin) {
  markWritten(device.device_id);
  bool connected = connected_.contains(device.device_id);
  Row row = makeRow(twin::serviceTwinJson(device, twin, connected));
  auto it = rows_.find(device.device_id);
  if (it == rows_.end()) {
    it = rows_.emplace(device.device_id, Entry{nullptr, twin.version}).first;
    it->second.row = row;
    indexRow(*it, *row, true);
    return;
  }
  it->second.version = twin.version;
  replaceRow(it, std::move(row));
}

void TwinIndex::updateDevice(const store::DeviceRecord& device) {
  {
    std::unique_lock lock(mutex_);
    markWritten(device.device_id);
    auto it = rows_.find(device.device_id);
    if (it == rows_.end()) return;
    json::object view = it->second.row->decode();
    twin::setDeviceFields(view, device, connected_.contains(device.device_id));
    replaceRow(it, makeRow(view));
  }
  notify(device.device_id);
}

void TwinIndex::updateTwin(const store::TwinRecord& twin) {
  {
    std::unique_lock lock(mutex_);
    markWritten(twin.device_id);
    auto it = rows_.find(twin.device_id);
    if (it == rows_.end() || twin.version < it->second.version) return;
    json::object view = it->second.row->decode();
    twin::setTwinFields(view, twin);
    it->second.version = twin.version;
    replaceRow(it, makeRow(view));
  }
  notify(twin.device_id);
}

void TwinIndex::removeDevice(std::string_view device_id) {
  {
    std::unique_lock lock(mutex_);
    markWritten(device_id);
    auto it = rows_.find(device_id);
    if (it == rows_.end()) return;
    indexRow(*it, *it->second.row, false);
    rows_.erase(it);
  }
  notify(device_id);
}

void TwinIndex::setConnected(std::string_view device_id, bool connected) {
  {
    std::unique_lock lock(mutex_);
    if (connected) {
      connected_.emplace(device_id);
    } else {
      connected_.erase(std::string(device_id));
    }
    auto it = rows_.find(device_id);
    if (it == rows_.end()) return;
    json::object view = it->second.row->decode();
    twin::setConnectionState(view, connected);
    replaceRow(it, makeRow(view));
  }
  notify(device_id);
}

std::size_t TwinIndex::size() const {
  std::shared_lock lock(mutex_);
  return rows_.size();
}

std::shared_ptr<const json::object> TwinIndex::find(std::string_view device_id) const {
  waitLoaded();
  Row row;
  {
    std::shared_lock lock(mutex_);
    auto it = rows_.find(device_id);
    if (it == rows_.end()) return nullptr;
    row = it->second.row;
  }
  return std::make_shared<const json::object>(row->decode());
}

void TwinIndex::replaceRow(Rows::iterator it, Row row) {
  indexRow(*it, *it->second.row, false);
  indexRow(*it, *row, true);
  it->second.row = std::move(row);
}

void TwinIndex::indexInto(PathIndex& index, const Rows::value_type& node, const PackedRow& row,
                          bool add) {
  query::Value resolved = row.resolve(index.path);
  const json::value* v = resolved.getIf();
  if (v == nullptr || !query::isPrimitive(*v)) return;
  std::string key = query::valueKey(*v);
  if (add) {
    index.nodes[key].insert(&node);
    return;
  }
  auto found = index.nodes.find(key);
  if (found == index.nodes.end()) return;
  found->second.erase(&node);
  if (found->second.empty()) index.nodes.erase(found);
}

void TwinIndex::indexRow(const Rows::value_type& node, const PackedRow& row, bool add) {
  for (auto& index : path_indexes_) indexInto(*index, node, row, add);
  // Rows the build has not reached yet are indexed when it gets there.
  if (building_ != nullptr && node.first <= build_cursor_) indexInto(*building_, node, row, add);
}

TwinIndex::PathIndex* TwinIndex::pathIndexFor(const query::Path& path) const {
  for (auto& index : path_indexes_) {
    if (index->path == path) {
      index->last_used.store(++use_clock_, std::memory_order_relaxed);
      return index.get();
    }
  }
  return nullptr;
}

void TwinIndex::buildPathIndex(const query::Path& path) const {
  std::lock_guard build(build_mutex_);
  {
    std::shared_lock lock(mutex_);
    if (pathIndexFor(path) != nullptr) return;  // another query built it meanwhile
  }
  auto started = std::chrono::steady_clock::now();
  auto index = std::make_unique<PathIndex>();
  index->path = path;
  {
    std::unique_lock lock(mutex_);
    building_ = index.get();
    build_cursor_.clear();
  }
  for (;;) {
    std::shared_lock lock(mutex_);
    auto it = rows_.upper_bound(build_cursor_);
    for (std::size_t n = 0; n < kScanChunk && it != rows_.end(); ++n, ++it) {
      indexInto(*index, *it, *it->second.row, true);
    }
    if (it == rows_.end()) break;
    build_cursor_ = std::prev(it)->first;
  }
  std::unique_lock life(index_life_);
  std::unique_lock lock(mutex_);
  // Rows added after the last chunk was read are indexed before the index goes live.
  for (auto it = rows_.upper_bound(build_cursor_); it != rows_.end(); ++it) {
    indexInto(*index, *it, *it->second.row, true);
  }
  building_ = nullptr;
  build_cursor_.clear();
  index->last_used.store(++use_clock_, std::memory_order_relaxed);
  if (path_indexes_.size() >= kMaxPathIndexes) {
    auto lru = std::min_element(
        path_indexes_.begin(), path_indexes_.end(),
        [](const auto& a, const auto& b) { return a->last_used.load() < b->last_used.load(); });
    spdlog::info("twin index: dropping the index on {}", (*lru)->path.toString());
    path_indexes_.erase(lru);
  }
  path_indexes_.push_back(std::move(index));
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                                  started);
  spdlog::info("twin index: built an index on {} over {} twins in {} ms", path.toString(),
               rows_.size(), ms.count());
}

void TwinIndex::scanCandidates(
    const std::vector<const NodeSet*>& candidates, const query::Condition& condition,
    std::string_view after,
    const std::function<bool(const std::string&, const query::RowView&)>& visit) const {
  // A k-way merge of the sorted sets, resumed after the last id seen at every chunk (the
  // sets may change while the lock is released). Callers hold no lock; `candidates` point
  // into an index that only changes under the exclusive lock.
  std::string cursor(after);
  std::vector<NodeSet::const_iterator> at(candidates.size());
  for (;;) {
    std::shared_lock lock(mutex_);
    for (std::size_t i = 0; i < candidates.size(); ++i)
      at[i] = candidates[i]->upper_bound(std::string_view(cursor));
    for (std::size_t n = 0; n < kScanChunk; ++n) {
      std::size_t best = candidates.size();
      for (std::size_t i = 0; i < candidates.size(); ++i) {
        if (at[i] != candidates[i]->end() &&
            (best == candidates.size() || (*at[i])->first < (*at[best])->first)) {
          best = i;
        }
      }
      if (best == candidates.size()) return;
      Node node = *at[best]++;
      cursor = node->first;
      PackedRowView row(*node->second.row);
      if (!condition.matches(row)) continue;
      if (!visit(node->first, row)) return;
    }
  }
}

void TwinIndex::scan(
    const query::Condition& condition, std::string_view after,
    const std::function<bool(const std::string&, const query::RowView&)>& visit) const {
  waitLoaded();
  auto lookup = condition.indexableLookup();
  if (lookup && isDeviceIdPath(lookup->first)) {
    std::vector<std::string> ids;
    for (const auto& constant : lookup->second) {
      if (const json::string* s = constant.if_string();
          s != nullptr && std::string_view(*s) > after) {
        ids.emplace_back(*s);
      }
    }
    std::sort(ids.begin(), ids.end());
    ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
    std::shared_lock lock(mutex_);
    for (const auto& id : ids) {
      auto it = rows_.find(id);
      if (it == rows_.end()) continue;
      PackedRowView row(*it->second.row);
      if (!condition.matches(row)) continue;
      if (!visit(it->first, row)) return;
    }
    return;
  }
  if (lookup) {
    {
      std::shared_lock lock(mutex_);
      if (pathIndexFor(lookup->first) == nullptr) {
        lock.unlock();
        buildPathIndex(lookup->first);
      }
    }
    std::vector<const NodeSet*> candidates;
    bool selective = false;
    std::shared_lock life(index_life_);
    {
      std::shared_lock lock(mutex_);
      if (const PathIndex* index = pathIndexFor(lookup->first)) {
        std::vector<std::string> keys;
        for (const auto& constant : lookup->second) {
          if (query::isPrimitive(constant)) keys.push_back(query::valueKey(constant));
        }
        std::sort(keys.begin(), keys.end());
        keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
        std::size_t total = 0;
        for (const auto& key : keys) {
          auto found = index->nodes.find(key);
          if (found == index->nodes.end()) continue;
          candidates.push_back(&found->second);
          total += found->second.size();
        }
        // A value most rows share is read faster by a plain scan.
        selective = total <= std::max<std::size_t>(kScanChunk, rows_.size() / 8);
      }
    }
    if (selective) {
      scanCandidates(candidates, condition, after, visit);  // `life` keeps the index alive
      return;
    }
  }
  std::string cursor(after);
  for (;;) {
    std::shared_lock lock(mutex_);
    auto it = rows_.upper_bound(cursor);  // device ids are never empty
    if (it == rows_.end()) return;
    for (std::size_t n = 0; n < kScanChunk && it != rows_.end(); ++n, ++it) {
      PackedRowView row(*it->second.row);
      if (condition.matchesAll() || condition.matches(row)) {
        if (!visit(it->first, row)) return;
      }
    }
    if (it == rows_.end()) return;
    cursor = std::prev(it)->first;
  }
}

std::vector<std::string> TwinIndex::select(const query::Condition& condition) const {
  std::vector<std::string> ids;
  scan(condition, {}, [&ids](const std::string& id, const query::RowView&) {
    ids.push_back(id);
    return true;
  });
  return ids;
}

std::size_t TwinIndex::pathIndexCount() const {
  std::shared_lock lock(mutex_);
  return path_indexes_.size();
}

}  // namespace iothub::index
