#pragma once

// A hub-shaped fixture for the index module's tests: a SQLite store behind IndexedStore,
// with the real registry and twin service writing through it.

#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "common/clock.hpp"
#include "common/json.hpp"
#include "common/random.hpp"
#include "index/indexed_store.hpp"
#include "index/twin_index.hpp"
#include "registry/device_registry.hpp"
#include "store/sqlite/sqlite_store.hpp"
#include "tests/support/temp_dir.hpp"
#include "twin/twin_service.hpp"

namespace iothub::index::test_support {

inline json::value parsed(std::string_view text) {
  auto v = parseJson(text);
  EXPECT_TRUE(v.isOk()) << text;
  return v ? *v : json::value();
}

class IndexedHub {
 public:
  IndexedHub() {
    auto opened = store::SqliteStore::open(dir_.path() / "hub.db",
                                           store::SqliteOptions{.synchronous_full = false});
    EXPECT_TRUE(opened.isOk()) << opened.status().toString();
    durable_ = std::move(opened).value();
    store_ = std::make_unique<IndexedStore>(*durable_, index_);
    registry_ = std::make_unique<registry::DeviceRegistry>(*store_, random_, clock_);
    twins_ = std::make_unique<twin::TwinService>(*store_, clock_, nullptr, nullptr);
  }

  void addDevice(const std::string& id, std::string_view tags = "") {
    auto created = registry_->create(id, registry::DeviceSpec{});
    ASSERT_TRUE(created.isOk()) << created.status().toString();
    if (!tags.empty()) patch(id, std::string(R"({"tags":)") + std::string(tags) + "}");
  }
  void patch(const std::string& id, const std::string& body) {
    auto r = twins_->patchTwin(id, parsed(body), "*");
    ASSERT_TRUE(r.isOk()) << r.status().toString();
  }

  TwinIndex& index() { return index_; }
  store::Store& durable() { return *durable_; }
  store::Store& store() { return *store_; }
  registry::DeviceRegistry& registry() { return *registry_; }
  twin::TwinService& twins() { return *twins_; }

 private:
  iothub::testing::TempDir dir_{"iothub-index-test"};
  FakeClock clock_;
  SeededRandom random_{7};
  TwinIndex index_;
  std::unique_ptr<store::SqliteStore> durable_;
  std::unique_ptr<IndexedStore> store_;
  std::unique_ptr<registry::DeviceRegistry> registry_;
  std::unique_ptr<twin::TwinService> twins_;
};

}  // namespace iothub::index::test_support
