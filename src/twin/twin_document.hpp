#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "common/json.hpp"
#include "common/status.hpp"
#include "store/records.hpp"

namespace iothub::twin {

// The rules of one twin section (tags, desired or reported) as JSON documents: validation,
// size accounting, merge patch, metadata and etags. Pure functions, no I/O, thread-safe.
//
// Stored shape (what store::TwinRecord holds): `tags` is a plain object; `desired` and
// `reported` hold their properties plus one member "$metadata" that mirrors the property
// tree (docs/protocol.md §6.1):
//   {"a":{"b":1},"$metadata":{"$lastUpdated":T,"$lastUpdatedVersion":V,
//                             "a":{"$lastUpdated":T,"$lastUpdatedVersion":V,
//                                  "b":{"$lastUpdated":T,"$lastUpdatedVersion":V}}}}
// Reported metadata has no "$lastUpdatedVersion". "$version" is never stored inside the
// object; it lives in TwinRecord::desired_version / reported_version. A twin that was never
// written has no "$metadata" at all (the registry creates twins with empty objects).

// Limits of docs/protocol.md §10.1.
inline constexpr std::size_t kMaxTagsSize = 8 * 1024;
inline constexpr std::size_t kMaxDesiredSize = 32 * 1024;
inline constexpr std::size_t kMaxReportedSize = 32 * 1024;
// Nesting depth: the section object itself is level 0 and every object or array value
// one level below its container, so {"l1":{"l2":...{"l10":{"leaf":1}}}} (ten nested
// objects, the example the Azure docs call valid) is the deepest allowed. Scalars do not
// add a level. Arrays count like objects, which is at least as strict as Azure.
inline constexpr int kMaxDepth = 10;
inline constexpr std::size_t kMaxKeyBytes = 1024;     // UTF-8 bytes
inline constexpr std::size_t kMaxStringBytes = 4096;  // UTF-8 bytes
// The documented integer range (docs/protocol.md §10.1): JavaScript's safe 53-bit two's complement.
inline constexpr std::int64_t kMinInteger = -4503599627370496;
inline constexpr std::int64_t kMaxInteger = 4503599627370495;

inline constexpr std::string_view kMetadataKey = "$metadata";
inline constexpr std::string_view kVersionKey = "$version";
inline constexpr std::string_view kLastUpdatedKey = "$lastUpdated";
inline constexpr std::string_view kLastUpdatedVersionKey = "$lastUpdatedVersion";

enum class Section { Tags, Desired, Reported };

// "tags", "properties.desired" or "properties.reported": the path used in error messages.
std::string_view sectionPath(Section section);
std::size_t maxSectionSize(Section section);

// Checks every key and value of `patch` (a patch of, or a whole, section object):
// keys are 1..kMaxKeyBytes bytes without '$', '.', space or control characters (C0, DEL,
// C1); strings at most kMaxStringBytes bytes; integers within [kMinInteger, kMaxInteger];
// nesting at most kMaxDepth (see above). Nulls are allowed anywhere (they delete).
// `path` prefixes the messages ("properties.desired"). Errors: ArgumentInvalid naming the
// offending path.
Status validateSectionPatch(const json::object& patch, std::string_view path);

// Size of a section, the number every size limit is checked against: the larger of
// azureSectionSize and serializedSectionSize. Azure's accounting alone counts arrays of
// nulls, empty strings, empty objects and control characters as (nearly) nothing, so a
// section it calls small could be megabytes of JSON; taking the larger of the two keeps
// Azure's limits for ordinary twins and bounds what the hub stores and sends: a section
// that passes checkSectionSize is at most its limit in compact JSON (without
// "$metadata"). Members that are null in an object count nothing in either measure (a
// merge deletes them), so the size of a patch never exceeds the size of the section it
// produces; nulls inside arrays are values and count. A top-level "$metadata" member is
// not counted.
std::size_t twinSize(const json::object& section);

// Size of a section as Azure accounts it (docs/protocol.md §10.1): the sum over members of
// the key's length plus the value's size, where strings (keys too) count their Unicode
// characters except control characters, numbers 8, booleans 4, objects and arrays the sum of
// their contents. Null members are skipped (key included). A top-level "$metadata" member is
// not counted.
std::size_t azureSectionSize(const json::object& section);

// Bytes of the section as compact JSON (what toJson() writes: quotes, escapes, colons,
// commas and brackets included) after dropping null members of objects, recursively
// (what merging it into an empty section leaves), and a top-level "$metadata" member.
// For a stored section, which has no null members, that is toJson() of its properties.
std::size_t serializedSectionSize(const json::object& section);

// Errors: MessageTooLarge (413001) when twinSize(content) exceeds the section's limit.
// Size is the one limit reported with its own code, so that callers can choose: the MQTT
// twin endpoint answers 413/413001 (docs/protocol.md §3.5), REST adapters may map it to 400.
// Every path that writes a section (service patch and replacement, job update, device
// reported patch) checks the section it would store, so patches cannot add up past the
// limit.
Status checkSectionSize(const json::object& content, Section section);

// RFC 7386 JSON merge patch into `target`: objects merge recursively, a null member
// deletes, any other value (arrays included) replaces. Key order of untouched members is
// kept. No metadata (used for tags).
void applyMergePatch(json::object& target, const json::object& patch);

// When and at which section version a change was made, for "$metadata".
struct UpdateStamp {
  std::string timestamp;                // formatTimestamp() of the update
  std::optional<std::int64_t> version;  // the new desired "$version"; nullopt for reported
};

// applyMergePatch on a stored desired/reported object (which may carry "$metadata") that
// also maintains the metadata: the root, every object level the patch walks through and
// every member it sets get "$lastUpdated" (and "$lastUpdatedVersion" when the stamp has a
// version); deleted members lose their metadata; a member whose value is replaced by an
// object gets fresh metadata for the whole new subtree. "$metadata" ends up last.
// `patch` must have passed validateSectionPatch (no '$' keys).
void applyPropertiesPatch(json::object& stored, const json::object& patch,
                          const UpdateStamp& stamp);

// Removes every property of a stored desired/reported object; its metadata becomes just
// the root stamp.
void clearProperties(json::object& stored, const UpdateStamp& stamp);

// The properties of a stored desired/reported object, without "$metadata".
json::object propertiesOf(const json::object& stored);

// The merge patch that turns `from` into `to` (neither containing nulls): members of
// `from` missing in `to` become null, changed members carry their new value, objects on
// both sides are diffed recursively and left out when equal.
json::object createMergePatch(const json::object& from, const json::object& to);

// Removes null members recursively (what merging `value` into nothing leaves).
json::object withoutNulls(const json::object& value);

// The twin etag: base64 of `version` as 8 big-endian bytes ("AAAAAAAAAAE=" for 1).
std::string twinEtag(std::int64_t version);

// An If-Match value without surrounding quotes and an optional "W/" prefix.
std::string_view bareEtag(std::string_view if_match);

// Ok when `if_match` (bare or quoted) is empty, "*" or the twin's current etag.
// Errors: PreconditionFailed.
Status checkTwinEtag(const store::TwinRecord& twin, std::string_view if_match);

}  // namespace iothub::twin
