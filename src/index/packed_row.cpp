#include "index/packed_row.hpp"

#include <array>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <new>
#include <shared_mutex>
#include <string>
#include <unordered_map>
#include <vector>

namespace iothub::index {
namespace {

enum Tag : std::uint8_t {
  kNull = 0,
  kFalse = 1,
  kTrue = 2,
  kInt64 = 3,
  kUint64 = 4,
  kDouble = 5,
  kString = 6,
  kTimestamp = 7,
  kObject = 8,
  kArray = 9,
};

// Member names to dictionary ids, looked up by string_view without a copy.
struct NameHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using NameIds = std::unordered_map<std::string, std::uint32_t, NameHash, std::equal_to<>>;

// The process-wide dictionary of member names. Lookups by name take a shared lock; names
// by id are read without one (a slot is written once, before its id is published).
class KeyDictionary {
 public:
  static KeyDictionary& instance() {
    static KeyDictionary* dictionary =
        new KeyDictionary();  // never destroyed: rows outlive statics
    return *dictionary;
  }

  // The id of `name`, interning it while there is room; nullopt when it is not (and can no
  // longer be) in the dictionary.
  std::optional<std::uint32_t> intern(std::string_view name) {
    if (auto id = find(name)) return id;
    if (full_.load(std::memory_order_acquire)) return std::nullopt;
    std::unique_lock lock(mutex_);
    if (auto it = ids_.find(name); it != ids_.end()) return it->second;
    if (ids_.size() >= PackedRow::kMaxDictionaryKeys) return std::nullopt;
    auto id = static_cast<std::uint32_t>(ids_.size());
    auto stored = std::make_unique<const std::string>(name);
    ids_.emplace(*stored, id);
    names_[id].store(stored.release(), std::memory_order_release);
    if (ids_.size() == PackedRow::kMaxDictionaryKeys) full_.store(true, std::memory_order_release);
    return id;
  }

  std::optional<std::uint32_t> find(std::string_view name) const {
    std::shared_lock lock(mutex_);
    auto it = ids_.find(name);
    if (it == ids_.end()) return std::nullopt;
    return it->second;
  }

  std::string_view name(std::uint32_t id) const {
    return *names_[id].load(std::memory_order_acquire);
  }

  std::size_t size() const {
    std::shared_lock lock(mutex_);
    return ids_.size();
  }

 private:
  KeyDictionary() : names_(new std::atomic<const std::string*>[PackedRow::kMaxDictionaryKeys]) {}

  mutable std::shared_mutex mutex_;
  std::atomic<bool> full_{false};  // no name can be added any more
  NameIds ids_;
  std::unique_ptr<std::atomic<const std::string*>[]> names_;
};

// Each thread's copy of the ids it has looked up: ids never change once given, so the
// dictionary's lock is taken only for names a thread has not met yet (and for names that
// are not in it). Bounded by the dictionary's size.
class KeyCache {
 public:
  // The id of `name`; with `add`, interned while the dictionary has room.
  std::optional<std::uint32_t> id(std::string_view name, bool add) {
    if (auto it = ids_.find(name); it != ids_.end()) return it->second;
    KeyDictionary& dictionary = KeyDictionary::instance();
    auto found = add ? dictionary.intern(name) : dictionary.find(name);
    if (found) ids_.emplace(name, *found);
    return found;
  }

 private:
  NameIds ids_;
};

KeyCache& keyCache() {
  thread_local KeyCache cache;
  return cache;
}

// --- timestamps --------------------------------------------------------------------------

constexpr std::size_t kTimestampLength = 28;  // "YYYY-MM-DDThh:mm:ss.fffffffZ"
constexpr std::int64_t kTicksPerSecond = 10'000'000;

bool digitsAt(std::string_view s, std::size_t at, std::size_t count, int& out) {
  out = 0;
  for (std::size_t i = at; i < at + count; ++i) {
    if (s[i] < '0' || s[i] > '9') return false;
    out = out * 10 + (s[i] - '0');
  }
  return true;
}

// The ticks of a string in exactly the form formatTimestamp (common/time_format.hpp) writes,
// or nullopt: only such strings are stored as timestamps, so decoding gives the same text.
std::optional<std::int64_t> exactTimestamp(std::string_view s) {
  if (s.size() != kTimestampLength || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' ||
      s[16] != ':' || s[19] != '.' || s[27] != 'Z') {
    return std::nullopt;
  }
  int year = 0, month = 0, day = 0, hour = 0, minute = 0, second = 0, fraction = 0;
  if (!digitsAt(s, 0, 4, year) || !digitsAt(s, 5, 2, month) || !digitsAt(s, 8, 2, day) ||
      !digitsAt(s, 11, 2, hour) || !digitsAt(s, 14, 2, minute) || !digitsAt(s, 17, 2, second) ||
      !digitsAt(s, 20, 7, fraction)) {
    return std::nullopt;
  }
  if (year < 1 || hour > 23 || minute > 59 || second > 59) return std::nullopt;
  std::chrono::year_month_day date{std::chrono::year(year),
                                   std::chrono::month(static_cast<unsigned>(month)),
                                   std::chrono::day(static_cast<unsigned>(day))};
  if (!date.ok()) return std::nullopt;
  std::int64_t days = std::chrono::sys_days(date).time_since_epoch().count();
  return (days * 86400 + hour * 3600 + minute * 60 + second) * kTicksPerSecond + fraction;
}

void putDigits(char* at, std::size_t count, std::int64_t value) {
  for (std::size_t i = count; i-- > 0;) {
    at[i] = static_cast<char>('0' + value % 10);
    value /= 10;
  }
}

std::string formatTicks(std::int64_t ticks) {
  std::int64_t seconds = ticks / kTicksPerSecond;
  std::int64_t fraction = ticks % kTicksPerSecond;
  if (fraction < 0) {
    fraction += kTicksPerSecond;
    --seconds;
  }
  std::int64_t days = seconds / 86400;
  std::int64_t in_day = seconds % 86400;
  if (in_day < 0) {
    in_day += 86400;
    --days;
  }
  std::chrono::year_month_day date{std::chrono::sys_days(std::chrono::days(days))};
  std::string out(kTimestampLength, '\0');
  putDigits(&out[0], 4, static_cast<int>(date.year()));
  out[4] = '-';
  putDigits(&out[5], 2, static_cast<unsigned>(date.month()));
  out[7] = '-';
  putDigits(&out[8], 2, static_cast<unsigned>(date.day()));
  out[10] = 'T';
  putDigits(&out[11], 2, in_day / 3600);
  out[13] = ':';
  putDigits(&out[14], 2, in_day / 60 % 60);
  out[16] = ':';
  putDigits(&out[17], 2, in_day % 60);
  out[19] = '.';
  putDigits(&out[20], 7, fraction);
  out[27] = 'Z';
  return out;
}

// --- writing -----------------------------------------------------------------------------

void putVarint(std::string& out, std::uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}

void putFixed(std::string& out, std::uint64_t v) {
  char bytes[8];
  std::memcpy(bytes, &v, 8);
  out.append(bytes, 8);
}

std::uint64_t zigzag(std::int64_t v) {
  return (static_cast<std::uint64_t>(v) << 1) ^ static_cast<std::uint64_t>(v >> 63);
}
std::int64_t unzigzag(std::uint64_t v) {
  return static_cast<std::int64_t>(v >> 1) ^ -static_cast<std::int64_t>(v & 1);
}

// Writes values; objects and arrays are written into a scratch buffer per nesting level
// first, because their byte length comes before them.
class Encoder {
 public:
  void value(const json::value& v, std::string& out, std::size_t depth) {
    switch (v.kind()) {
      case json::kind::null:
        out.push_back(static_cast<char>(kNull));
        return;
      case json::kind::bool_:
        out.push_back(static_cast<char>(v.get_bool() ? kTrue : kFalse));
        return;
      case json::kind::int64:
        out.push_back(static_cast<char>(kInt64));
        putVarint(out, zigzag(v.get_int64()));
        return;
      case json::kind::uint64:
        out.push_back(static_cast<char>(kUint64));
        putVarint(out, v.get_uint64());
        return;
      case json::kind::double_: {
        out.push_back(static_cast<char>(kDouble));
        std::uint64_t bits = 0;
        double d = v.get_double();
        std::memcpy(&bits, &d, 8);
        putFixed(out, bits);
        return;
      }
      case json::kind::string: {
        std::string_view s = v.get_string();
        if (auto ticks = exactTimestamp(s)) {
          out.push_back(static_cast<char>(kTimestamp));
          putFixed(out, static_cast<std::uint64_t>(*ticks));
          return;
        }
        out.push_back(static_cast<char>(kString));
        putVarint(out, s.size());
        out.append(s);
        return;
      }
      case json::kind::object:
        object(v.get_object(), out, depth);
        return;
      case json::kind::array: {
        std::string& body = scratch(depth);
        putVarint(body, v.get_array().size());
        for (const json::value& element : v.get_array()) value(element, body, depth + 1);
        out.push_back(static_cast<char>(kArray));
        putVarint(out, body.size());
        out.append(body);
        return;
      }
    }
  }

  void object(const json::object& o, std::string& out, std::size_t depth) {
    std::string& body = scratch(depth);
    putVarint(body, o.size());
    for (const json::key_value_pair& member : o) {
      std::string_view key = member.key();
      if (auto id = keyCache().id(key, /*add=*/true)) {
        putVarint(body, std::uint64_t{*id} << 1);
      } else {
        putVarint(body, (std::uint64_t{key.size()} << 1) | 1);
        body.append(key);
      }
      value(member.value(), body, depth + 1);
    }
    out.push_back(static_cast<char>(kObject));
    putVarint(out, body.size());
    out.append(body);
  }

 private:
  std::string& scratch(std::size_t depth) {
    if (levels_.size() <= depth) levels_.resize(depth + 1);  // a deque: callers' buffers stay put
    levels_[depth].clear();
    return levels_[depth];
  }

  std::deque<std::string> levels_;
};

// --- reading -----------------------------------------------------------------------------

class Reader {
 public:
  explicit Reader(const std::uint8_t* at) : at_(at) {}

  const std::uint8_t* at() const { return at_; }
  std::uint8_t byte() { return *at_++; }

  std::uint64_t varint() {
    std::uint64_t v = 0;
    for (int shift = 0;; shift += 7) {
      std::uint8_t b = *at_++;
      v |= std::uint64_t{static_cast<std::uint8_t>(b & 0x7f)} << shift;
      if ((b & 0x80) == 0) return v;
    }
  }

  std::uint64_t fixed() {
    std::uint64_t v = 0;
    std::memcpy(&v, at_, 8);
    at_ += 8;
    return v;
  }

  std::string_view bytes(std::size_t n) {
    std::string_view s(reinterpret_cast<const char*>(at_), n);
    at_ += n;
    return s;
  }

  void skipValue() {
    switch (byte()) {
      case kInt64:
      case kUint64:
        varint();
        return;
      case kDouble:
      case kTimestamp:
        at_ += 8;
        return;
      case kString:
      case kObject:
      case kArray:
        at_ += varint();
        return;
      default:
        return;  // null, false, true
    }
  }

  // The member name of the key at the current position, resolving dictionary ids.
  std::string_view key() {
    std::uint64_t k = varint();
    if ((k & 1) == 0) return KeyDictionary::instance().name(static_cast<std::uint32_t>(k >> 1));
    return bytes(static_cast<std::size_t>(k >> 1));
  }

  json::value value() {
    switch (byte()) {
      case kNull:
        return nullptr;
      case kFalse:
        return false;
      case kTrue:
        return true;
      case kInt64:
        return unzigzag(varint());
      case kUint64:
        return varint();
      case kDouble: {
        std::uint64_t bits = fixed();
        double d = 0;
        std::memcpy(&d, &bits, 8);
        return d;
      }
      case kString: {
        auto n = static_cast<std::size_t>(varint());
        return json::string(bytes(n));
      }
      case kTimestamp:
        return json::string(formatTicks(static_cast<std::int64_t>(fixed())));
      case kObject:
        varint();
        return objectBody();
      case kArray: {
        varint();
        auto count = static_cast<std::size_t>(varint());
        json::array a;
        a.reserve(count);
        for (std::size_t i = 0; i < count; ++i) a.push_back(value());
        return a;
      }
      default:
        std::abort();  // not written by Encoder
    }
  }

  // After an object's byte length: its count and members.
  json::object objectBody() {
    auto count = static_cast<std::size_t>(varint());
    json::object o;
    o.reserve(count);
    for (std::size_t i = 0; i < count; ++i) {
      std::string_view name = key();
      o.emplace(name, value());
    }
    return o;
  }

 private:
  const std::uint8_t* at_;
};

// A path member name as the packed form spells it: a dictionary id, or inline bytes.
struct KeyMatch {
  std::optional<std::uint32_t> id;
  std::string_view name;

  bool matches(Reader& r) const {
    std::uint64_t k = r.varint();
    if ((k & 1) == 0) return id && *id == static_cast<std::uint32_t>(k >> 1);
    std::string_view inline_name = r.bytes(static_cast<std::size_t>(k >> 1));
    return !id && inline_name == name;
  }
};

}  // namespace

PackedRowPtr PackedRow::encode(const json::object& object) {
  thread_local Encoder encoder;
  thread_local std::string out;
  out.clear();
  encoder.object(object, out, 0);
  void* memory = std::malloc(sizeof(PackedRow) + out.size());
  if (memory == nullptr) throw std::bad_alloc();
  auto* row = new (memory) PackedRow();
  row->size_ = static_cast<std::uint32_t>(out.size());
  std::memcpy(static_cast<char*>(memory) + sizeof(PackedRow), out.data(), out.size());
  return PackedRowPtr(row);
}

void PackedRowPtr::release() {
  if (row_ != nullptr && row_->references_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
    row_->~PackedRow();
    std::free(row_);
  }
  row_ = nullptr;
}

json::object PackedRow::decode() const {
  Reader r(bytes());
  r.byte();    // kObject
  r.varint();  // byte length
  return r.objectBody();
}

query::Value PackedRow::resolve(const query::Path& path) const {
  Reader r(bytes());
  for (const std::string& name : path.keys) {
    if (*r.at() != kObject) return query::Value();
    r.byte();
    r.varint();
    auto count = static_cast<std::size_t>(r.varint());
    KeyMatch wanted{keyCache().id(name, /*add=*/false), name};
    bool found = false;
    for (std::size_t i = 0; i < count && !found; ++i) {
      if (wanted.matches(r)) {
        found = true;
      } else {
        r.skipValue();
      }
    }
    if (!found) return query::Value();
  }
  return query::Value::owned(r.value());
}

std::size_t PackedRow::dictionarySize() { return KeyDictionary::instance().size(); }

}  // namespace iothub::index
