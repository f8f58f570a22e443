#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "common/json.hpp"
#include "query/path.hpp"
#include "query/row.hpp"
#include "query/value.hpp"

namespace iothub::index {

class PackedRowPtr;

// A JSON object in a compact, immutable binary form: the twin index's row (decisions §86).
// A twin's service view as a Boost.JSON DOM cost ~6 KB for ~2 KB of JSON text (a node, a
// key copy and often a string allocation per member); packed, the same twin takes about a
// ninth of that (row header and index entry included), and a path is answered by walking the bytes, skipping whole sub-objects
// by their length, without building anything but the value found.
//
// The encoding:
//   value   := tag payload
//   tag 0 null, 1 false, 2 true
//   tag 3 int64: zigzag LEB128        tag 4 uint64 (above INT64_MAX): LEB128
//   tag 5 double: 8 bytes             tag 6 string: LEB128 length, bytes
//   tag 7 a timestamp string in Azure's exact form "YYYY-MM-DDThh:mm:ss.fffffffZ" (28
//         characters): its 100-ns ticks since 1970, 8 bytes; decoded to the same text
//   tag 8 object: LEB128 byte length of what follows, LEB128 count, count × (key, value)
//   tag 9 array:  LEB128 byte length of what follows, LEB128 count, count × value
//   key     := LEB128 (id << 1) for a name in the process-wide key dictionary, or
//              LEB128 (length << 1 | 1) followed by the name's bytes
// Member order is kept, so decode() gives back an object that serializes identically.
//
// Member names repeat across twins ("$lastUpdated" ~20 times in each), so they are interned
// in one dictionary for the process: at most kMaxDictionaryKeys names, first come first
// served, never removed; names beyond it are stored inline. A name therefore has one
// encoding for the life of the process.
//
// Reference-counted (PackedRowPtr); thread-safe to read from any number of threads.
class PackedRow {
 public:
  static constexpr std::size_t kMaxDictionaryKeys = 65536;

  // Encodes `object`. Throws std::bad_alloc only.
  static PackedRowPtr encode(const json::object& object);

  // The object back, equal to the one encoded.
  json::object decode() const;

  // The value at `path` (query/path.hpp semantics: undefined when a member is missing or an
  // intermediate value is not an object). Always owned: nothing in a packed row is JSON.
  query::Value resolve(const query::Path& path) const;

  // Bytes of the encoding (without the row's 8-byte header or the allocator's overhead).
  std::size_t size() const { return size_; }

  // Names in the key dictionary now (tests, metrics).
  static std::size_t dictionarySize();

 private:
  friend class PackedRowPtr;
  PackedRow() = default;
  const std::uint8_t* bytes() const { return reinterpret_cast<const std::uint8_t*>(this + 1); }

  mutable std::atomic<std::uint32_t> references_{0};
  std::uint32_t size_ = 0;
};
static_assert(sizeof(PackedRow) == 8);

// A shared reference to a PackedRow (one allocation per row: header and bytes together).
class PackedRowPtr {
 public:
  PackedRowPtr() = default;
  PackedRowPtr(std::nullptr_t) {}  // NOLINT(google-explicit-constructor)
  PackedRowPtr(const PackedRowPtr& other) : row_(other.row_) { retain(); }
  PackedRowPtr(PackedRowPtr&& other) noexcept : row_(other.row_) { other.row_ = nullptr; }
  PackedRowPtr& operator=(PackedRowPtr other) noexcept {
    std::swap(row_, other.row_);
    return *this;
  }
  ~PackedRowPtr() { release(); }

  const PackedRow* get() const { return row_; }
  const PackedRow& operator*() const { return *row_; }
  const PackedRow* operator->() const { return row_; }
  explicit operator bool() const { return row_ != nullptr; }
  bool operator==(std::nullptr_t) const { return row_ == nullptr; }

 private:
  friend class PackedRow;
  explicit PackedRowPtr(PackedRow* row) : row_(row) { retain(); }
  void retain() const {
    if (row_ != nullptr) row_->references_.fetch_add(1, std::memory_order_relaxed);
  }
  void release();

  PackedRow* row_ = nullptr;
};

// A packed row as the query evaluator reads it.
class PackedRowView final : public query::RowView {
 public:
  explicit PackedRowView(const PackedRow& row) : row_(row) {}
  query::Value resolve(const query::Path& path) const override { return row_.resolve(path); }
  json::object toObject() const override { return row_.decode(); }

 private:
  const PackedRow& row_;
};

}  // namespace iothub::index
