#include "twin/twin_document.hpp"

#include <algorithm>
#include <array>

#include "common/encoding.hpp"

namespace iothub::twin {
namespace {

Status invalid(std::string message) { return {ErrorCode::ArgumentInvalid, std::move(message)}; }

// Keeps one path string for error messages: segments are appended before descending and
// cut off after, so valid documents cost no allocation per member.
class PathBuilder {
 public:
  explicit PathBuilder(std::string_view root) : path_(root) {}
  std::size_t pushKey(std::string_view key) {
    std::size_t mark = path_.size();
    if (!path_.empty()) path_ += '.';
    path_.append(key);
    return mark;
  }
  std::size_t pushIndex(std::size_t index) {
    std::size_t mark = path_.size();
    path_ += '[';
    path_ += std::to_string(index);
    path_ += ']';
    return mark;
  }
  void pop(std::size_t mark) { path_.resize(mark); }
  const std::string& str() const { return path_; }
  std::string where() const { return path_.empty() ? std::string("the twin") : path_; }

 private:
  std::string path_;
};

// Describes the first character that is not allowed in a twin key, or returns empty.
std::string forbiddenKeyCharacter(std::string_view key) {
  for (std::size_t i = 0; i < key.size(); ++i) {
    auto c = static_cast<unsigned char>(key[i]);
    if (c == '$') return "'$'";
    if (c == '.') return "'.'";
    if (c == ' ') return "a space";
    if (c < 0x20 || c == 0x7F) return "a control character";
    // C1 controls U+0080..U+009F are encoded as C2 80..C2 9F.
    if (c == 0xC2 && i + 1 < key.size()) {
      auto next = static_cast<unsigned char>(key[i + 1]);
      if (next >= 0x80 && next <= 0x9F) return "a control character";
    }
  }
  return {};
}

Status validateKey(std::string_view key, const PathBuilder& parent) {
  if (key.empty()) return invalid(parent.where() + ": property names must not be empty");
  if (key.size() > kMaxKeyBytes) {
    return invalid(parent.where() + ": a property name is " + std::to_string(key.size()) +
                   " bytes long; at most " + std::to_string(kMaxKeyBytes) + " are allowed");
  }
  std::string bad = forbiddenKeyCharacter(key);
  if (!bad.empty()) {
    // Control characters would make the message unreadable, so only printable keys are shown.
    std::string shown =
        bad == "a control character" ? std::string() : " '" + std::string(key) + "'";
    return invalid(parent.where() + ": the property name" + shown + " contains " + bad +
                   "; names must not contain '$', '.', spaces or control characters");
  }
  return Status::ok();
}

Status validateValue(const json::value& value, PathBuilder& path, int depth);

Status validateObject(const json::object& object, PathBuilder& path, int depth) {
  for (const auto& member : object) {
    IOTHUB_RETURN_IF_ERROR(validateKey(member.key(), path));
    std::size_t mark = path.pushKey(member.key());
    IOTHUB_RETURN_IF_ERROR(validateValue(member.value(), path, depth));
    path.pop(mark);
  }
  return Status::ok();
}

// `depth` is the level of the container holding `value`.
Status validateValue(const json::value& value, PathBuilder& path, int depth) {
  switch (value.kind()) {
    case json::kind::string:
      if (value.get_string().size() > kMaxStringBytes) {
        return invalid(path.where() + ": the string is " +
                       std::to_string(value.get_string().size()) + " bytes long; at most " +
                       std::to_string(kMaxStringBytes) + " are allowed");
      }
      return Status::ok();
    case json::kind::int64:
      if (value.get_int64() < kMinInteger || value.get_int64() > kMaxInteger) {
        return invalid(path.where() + ": the integer is outside the supported range " +
                       std::to_string(kMinInteger) + " to " + std::to_string(kMaxInteger));
      }
      return Status::ok();
    case json::kind::uint64:
      if (value.get_uint64() > static_cast<std::uint64_t>(kMaxInteger)) {
        return invalid(path.where() + ": the integer is outside the supported range " +
                       std::to_string(kMinInteger) + " to " + std::to_string(kMaxInteger));
      }
      return Status::ok();
    case json::kind::object:
    case json::kind::array:
      if (depth + 1 > kMaxDepth) {
        return invalid(path.where() + ": nesting is deeper than the " + std::to_string(kMaxDepth) +
                       " levels allowed");
      }
      if (value.is_object()) return validateObject(value.get_object(), path, depth + 1);
      for (std::size_t i = 0; i < value.get_array().size(); ++i) {
        std::size_t mark = path.pushIndex(i);
        IOTHUB_RETURN_IF_ERROR(validateValue(value.get_array()[i], path, depth + 1));
        path.pop(mark);
      }
      return Status::ok();
    case json::kind::null:
    case json::kind::bool_:
    case json::kind::double_:
      return Status::ok();
  }
  return Status::ok();
}

// Unicode characters of UTF-8 text (already validated by the JSON parser), not counting
// C0, DEL and C1 control characters.
std::size_t countedCharacters(std::string_view text) {
  std::size_t count = 0;
  for (std::size_t i = 0; i < text.size(); ++i) {
    auto c = static_cast<unsigned char>(text[i]);
    if ((c & 0xC0) == 0x80) continue;  // continuation byte
    if (c < 0x20 || c == 0x7F) continue;
    if (c == 0xC2 && i + 1 < text.size()) {
      auto next = static_cast<unsigned char>(text[i + 1]);
      if (next >= 0x80 && next <= 0x9F) continue;
    }
    ++count;
  }
  return count;
}

std::size_t valueSize(const json::value& value);

std::size_t objectSize(const json::object& object) {
  std::size_t size = 0;
  for (const auto& member : object) {
    if (member.value().is_null()) continue;
    size += countedCharacters(member.key()) + valueSize(member.value());
  }
  return size;
}

std::size_t valueSize(const json::value& value) {
  switch (value.kind()) {
    case json::kind::string:
      return countedCharacters(value.get_string());
    case json::kind::int64:
    case json::kind::uint64:
    case json::kind::double_:
      return 8;
    case json::kind::bool_:
      return 4;
    case json::kind::null:
      return 0;
    case json::kind::object:
      return objectSize(value.get_object());
    case json::kind::array: {
      std::size_t size = 0;
      for (const auto& element : value.get_array()) size += valueSize(element);
      return size;
    }
  }
  return 0;
}

// Bytes of `text` as a JSON string, quotes included, escaped the way json::serialize does:
// '"' and '\\' and the short escapes \b \f \n \r \t take 2 bytes, other C0 controls 6
// (\u00XX), every other byte (UTF-8 included) 1.
std::size_t serializedStringSize(std::string_view text) {
  std::size_t size = 2;
  for (char ch : text) {
    auto c = static_cast<unsigned char>(ch);
    if (c == '"' || c == '\\' || c == '\b' || c == '\f' || c == '\n' || c == '\r' || c == '\t') {
      size += 2;
    } else if (c < 0x20) {
      size += 6;
    } else {
      size += 1;
    }
  }
  return size;
}

std::size_t decimalDigits(std::uint64_t n) {
  std::size_t digits = 1;
  while (n >= 10) {
    n /= 10;
    ++digits;
  }
  return digits;
}

std::size_t serializedValueSize(const json::value& value);

// `top` skips a "$metadata" member. Null members are skipped (merging deletes them); they
// never occur in a stored section.
std::size_t serializedObjectSize(const json::object& object, bool top) {
  std::size_t size = 2;
  std::size_t members = 0;
  for (const auto& member : object) {
    if (member.value().is_null() || (top && member.key() == kMetadataKey)) continue;
    size += serializedStringSize(member.key()) + 1 + serializedValueSize(member.value());
    ++members;
  }
  return members == 0 ? size : size + members - 1;
}

// Array elements are stored as they are, nulls included.
std::size_t serializedArrayElementSize(const json::value& value);

std::size_t serializedArraySize(const json::array& array) {
  std::size_t size = 2;
  for (const auto& element : array) size += serializedArrayElementSize(element);
  return array.empty() ? size : size + array.size() - 1;
}

std::size_t serializedScalarSize(const json::value& value) {
  switch (value.kind()) {
    case json::kind::string:
      return serializedStringSize(value.get_string());
    case json::kind::int64: {
      std::int64_t n = value.get_int64();
      // Negate in unsigned arithmetic: -INT64_MIN overflows int64.
      std::uint64_t magnitude =
          n < 0 ? ~static_cast<std::uint64_t>(n) + 1 : static_cast<std::uint64_t>(n);
      return decimalDigits(magnitude) + (n < 0 ? 1 : 0);
    }
    case json::kind::uint64:
      return decimalDigits(value.get_uint64());
    case json::kind::double_:
      return json::serialize(value).size();  // the shortest round-trip form, as stored
    case json::kind::bool_:
      return value.get_bool() ? 4 : 5;
    case json::kind::null:
      return 4;
    case json::kind::object:
    case json::kind::array:
      break;
  }
  return 0;
}

std::size_t serializedValueSize(const json::value& value) {
  if (const json::object* o = value.if_object()) return serializedObjectSize(*o, false);
  if (const json::array* a = value.if_array()) return serializedArraySize(*a);
  return serializedScalarSize(value);
}

// Inside an array nothing is merged: objects keep their null members.
std::size_t serializedStoredObjectSize(const json::object& object) {
  std::size_t size = 2;
  for (const auto& member : object) {
    size += serializedStringSize(member.key()) + 1 + serializedArrayElementSize(member.value());
  }
  return object.empty() ? size : size + object.size() - 1;
}

std::size_t serializedArrayElementSize(const json::value& value) {
  if (const json::object* o = value.if_object()) return serializedStoredObjectSize(*o);
  if (const json::array* a = value.if_array()) return serializedArraySize(*a);
  return serializedScalarSize(value);
}

json::object stampObject(const UpdateStamp& stamp) {
  json::object o;
  o[kLastUpdatedKey] = stamp.timestamp;
  if (stamp.version) o[kLastUpdatedVersionKey] = *stamp.version;
  return o;
}

void stampLevel(json::object& metadata, const UpdateStamp& stamp) {
  metadata[kLastUpdatedKey] = stamp.timestamp;
  if (stamp.version) metadata[kLastUpdatedVersionKey] = *stamp.version;
}

// Merges `patch` into `target` and keeps `metadata` (the metadata object of this level)
// in step. `target` and `metadata` are distinct objects, so a reference into one stays
// valid while the other grows.
void mergeLevel(json::object& target, json::object& metadata, const json::object& patch,
                const UpdateStamp& stamp) {
  stampLevel(metadata, stamp);
  for (const auto& member : patch) {
    const json::value& value = member.value();
    if (value.is_null()) {
      target.stable_erase(member.key());
      metadata.stable_erase(member.key());
      continue;
    }
    if (const json::object* sub = value.if_object()) {
      json::value& child = target[member.key()];
      json::value& child_metadata = metadata[member.key()];
      if (!child.is_object()) {
        // A scalar (or nothing) becomes an object: the old leaf metadata goes with it.
        child = json::object();
        child_metadata = json::object();
      }
      if (!child_metadata.is_object()) child_metadata = json::object();
      mergeLevel(child.get_object(), child_metadata.get_object(), *sub, stamp);
      continue;
    }
    target[member.key()] = value;
    metadata[member.key()] = stampObject(stamp);
  }
}

// Removes and returns the "$metadata" member of a stored section ({} when absent).
json::object takeMetadata(json::object& stored) {
  json::object metadata;
  auto it = stored.find(kMetadataKey);
  if (it == stored.end()) return metadata;
  if (json::object* o = it->value().if_object()) metadata = std::move(*o);
  stored.stable_erase(it);
  return metadata;
}

}  // namespace

std::string_view sectionPath(Section section) {
  switch (section) {
    case Section::Tags:
      return "tags";
    case Section::Desired:
      return "properties.desired";
    case Section::Reported:
      return "properties.reported";
  }
  return "tags";
}

std::size_t maxSectionSize(Section section) {
  switch (section) {
    case Section::Tags:
      return kMaxTagsSize;
    case Section::Desired:
      return kMaxDesiredSize;
    case Section::Reported:
      return kMaxReportedSize;
  }
  return kMaxTagsSize;
}

Status validateSectionPatch(const json::object& patch, std::string_view path) {
  PathBuilder builder(path);
  return validateObject(patch, builder, 0);
}

std::size_t azureSectionSize(const json::object& section) {
  std::size_t size = 0;
  for (const auto& member : section) {
    if (member.value().is_null() || member.key() == kMetadataKey) continue;
    size += countedCharacters(member.key()) + valueSize(member.value());
  }
  return size;
}

std::size_t serializedSectionSize(const json::object& section) {
  return serializedObjectSize(section, true);
}

std::size_t twinSize(const json::object& section) {
  return std::max(azureSectionSize(section), serializedSectionSize(section));
}

Status checkSectionSize(const json::object& content, Section section) {
  std::size_t size = twinSize(content);
  if (size <= maxSectionSize(section)) return Status::ok();
  return {ErrorCode::MessageTooLarge,
          std::string(sectionPath(section)) + " would be " + std::to_string(size) +
              " bytes; at most " + std::to_string(maxSectionSize(section)) +
              " are allowed (the larger of Azure's count of keys and values and the compact "
              "JSON size, without $metadata and $version)"};
}

void applyMergePatch(json::object& target, const json::object& patch) {
  for (const auto& member : patch) {
    const json::value& value = member.value();
    if (value.is_null()) {
      target.stable_erase(member.key());
    } else if (const json::object* sub = value.if_object()) {
      json::value& child = target[member.key()];
      if (!child.is_object()) child = json::object();
      applyMergePatch(child.get_object(), *sub);
    } else {
      target[member.key()] = value;
    }
  }
}

void applyPropertiesPatch(json::object& stored, const json::object& patch,
                          const UpdateStamp& stamp) {
  json::object metadata = takeMetadata(stored);
  mergeLevel(stored, metadata, patch, stamp);
  stored[kMetadataKey] = std::move(metadata);
}

void clearProperties(json::object& stored, const UpdateStamp& stamp) {
  stored.clear();
  stored[kMetadataKey] = stampObject(stamp);
}

json::object propertiesOf(const json::object& stored) {
  json::object properties;
  properties.reserve(stored.size());
  for (const auto& member : stored) {
    if (member.key() != kMetadataKey) properties.emplace(member.key(), member.value());
  }
  return properties;
}

json::object createMergePatch(const json::object& from, const json::object& to) {
  json::object patch;
  for (const auto& member : from) {
    if (!to.contains(member.key())) patch[member.key()] = nullptr;
  }
  for (const auto& member : to) {
    const json::value* old = findMember(from, member.key());
    if (old != nullptr && old->is_object() && member.value().is_object()) {
      json::object sub = createMergePatch(old->get_object(), member.value().get_object());
      if (!sub.empty()) patch[member.key()] = std::move(sub);
    } else if (old == nullptr || *old != member.value()) {
      patch[member.key()] = member.value();
    }
  }
  return patch;
}

json::object withoutNulls(const json::object& value) {
  json::object result;
  applyMergePatch(result, value);
  return result;
}

std::string twinEtag(std::int64_t version) {
  auto bits = static_cast<std::uint64_t>(version);
  std::array<char, 8> bytes{};
  for (int i = 7; i >= 0; --i) {
    bytes[static_cast<std::size_t>(i)] = static_cast<char>(bits & 0xFF);
    bits >>= 8;
  }
  return base64Encode(std::string_view(bytes.data(), bytes.size()));
}

std::string_view bareEtag(std::string_view if_match) {
  if (if_match.starts_with("W/")) if_match.remove_prefix(2);
  if (if_match.size() >= 2 && if_match.front() == '"' && if_match.back() == '"') {
    if_match = if_match.substr(1, if_match.size() - 2);
  }
  return if_match;
}

Status checkTwinEtag(const store::TwinRecord& twin, std::string_view if_match) {
  std::string_view etag = bareEtag(if_match);
  if (etag.empty() || etag == "*") return Status::ok();
  std::string current = twinEtag(twin.version);
  if (etag == current) return Status::ok();
  return {ErrorCode::PreconditionFailed,
          "The etag " + std::string(etag) + " does not match the twin's current etag " + current};
}

}  // namespace iothub::twin
