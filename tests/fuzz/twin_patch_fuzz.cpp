// Fuzz target for twin patches (src/twin): the input is JSON text, used as a service twin
// patch (PATCH /twins/{id}), as a twin replacement (PUT /twins/{id}), as a device's
// reported patch, and wrapped as the tags and the desired section of a service patch.
// Every accepted patch is applied to a twin that already has tags, desired and reported
// properties. Properties checked on any input:
//   1. Parsing and applying never crash and fail only with the documented error codes.
//   2. What an accepted patch produces passes the section's own rules again
//      (validateSectionPatch, checkSectionSize) and, as twin_document.hpp promises, is at
//      most the section's limit in compact JSON.
//   3. Versions move as twin_patch.hpp says: +1 per written section, +1 twin version per
//      patch that writes anything, nothing for a patch that writes nothing.
//   4. The desired notification, merged into the old desired properties, gives the new ones.
//   5. "$metadata" mirrors the property tree: every property at every level has an entry.
//   6. Merge patches are idempotent and createMergePatch inverts applyMergePatch.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "common/json.hpp"
#include "twin/twin_document.hpp"
#include "twin/twin_patch.hpp"

namespace {

using namespace iothub;
using namespace iothub::twin;

constexpr std::string_view kTimestamp = "2024-03-01T10:00:00.0000000Z";

void require(bool condition, const char* what) {
  if (!condition) {
    std::fprintf(stderr, "twin_patch_fuzz: property violated: %s\n", what);
    std::abort();
  }
}

void requireCode(const Status& status, std::initializer_list<ErrorCode> allowed, const char* what) {
  for (ErrorCode code : allowed) {
    if (status.code() == code) return;
  }
  std::fprintf(stderr, "twin_patch_fuzz: %s: unexpected error %s\n", what,
               status.toString().c_str());
  std::abort();
}

// The twin every patch is applied to, built through the module's own functions so that its
// metadata is what the hub would store.
const store::TwinRecord& baseTwin() {
  static const store::TwinRecord twin = [] {
    store::TwinRecord t;
    t.device_id = "fuzz-1";
    auto patch = parseServicePatch(json::parse(R"({
      "tags": {"site": {"building": 43, "floor": 3}, "labels": ["a", "b"], "owner": "ops"},
      "properties": {"desired": {"interval": 30, "config": {"mode": "eco",
                                 "limits": {"max": 10, "min": -5}}, "list": [1, 2, 3]}}})"));
    require(patch.isOk(), "the base patch parses");
    auto change = applyServicePatch(t, *patch, kTimestamp);
    require(change.isOk(), "the base patch applies");
    auto reported = parseReportedPatch(
        json::parse(R"({"firmware": "1.0", "temp": 21.5, "battery": {"level": 80}})"));
    require(reported.isOk(), "the base reported patch parses");
    auto next = applyReportedPatch(change->twin, *reported, kTimestamp);
    require(next.isOk(), "the base reported patch applies");
    return *next;
  }();
  return twin;
}

// Property 2 for one section of a stored twin.
void checkSection(const json::object& properties, Section section) {
  require(validateSectionPatch(properties, sectionPath(section)).isOk(),
          "a stored section passes validateSectionPatch");
  require(checkSectionSize(properties, section).isOk(), "a stored section passes checkSectionSize");
  require(serializedSectionSize(properties) <= maxSectionSize(section),
          "a stored section is at most its limit in compact JSON");
  require(json::serialize(properties).size() <= maxSectionSize(section),
          "toJson of a stored section is at most its limit");
}

// Property 5: every property of `properties` has an object in `metadata` carrying
// "$lastUpdated", recursively through object values.
void checkMetadataMirrors(const json::object& properties, const json::object& metadata) {
  for (const auto& member : properties) {
    const json::value* entry = metadata.if_contains(member.key());
    require(entry != nullptr && entry->is_object(), "every property has metadata");
    require(entry->as_object().contains(kLastUpdatedKey), "property metadata has $lastUpdated");
    if (const json::object* child = member.value().if_object()) {
      checkMetadataMirrors(*child, entry->as_object());
    }
  }
}

void checkStoredProperties(const json::object& stored, Section section) {
  json::object properties = propertiesOf(stored);
  checkSection(properties, section);
  if (properties.empty()) return;
  const json::value* metadata = stored.if_contains(kMetadataKey);
  require(metadata != nullptr && metadata->is_object(), "a written section has $metadata");
  require(metadata->as_object().contains(kLastUpdatedKey), "the section metadata has $lastUpdated");
  checkMetadataMirrors(properties, metadata->as_object());
}

void checkTwin(const store::TwinRecord& twin) {
  checkSection(twin.tags, Section::Tags);
  checkStoredProperties(twin.desired, Section::Desired);
  checkStoredProperties(twin.reported, Section::Reported);
}

void fuzzServicePatch(const json::value& body) {
  auto patch = parseServicePatch(body);
  if (!patch) {
    requireCode(patch.status(),
                {ErrorCode::IotHubFormatError, ErrorCode::ArgumentInvalid, ErrorCode::MessageTooLarge},
                "parseServicePatch");
    return;
  }
  const store::TwinRecord& current = baseTwin();
  auto change = applyServicePatch(current, *patch, kTimestamp);
  if (!change) {
    requireCode(change.status(), {ErrorCode::MessageTooLarge}, "applyServicePatch");
    return;
  }
  const store::TwinRecord& next = change->twin;
  checkTwin(next);

  const bool writes = patch->tags.writes() || patch->desired.writes();
  require(next.version == current.version + (writes ? 1 : 0), "twin version +1 per writing patch");
  require(next.desired_version == current.desired_version + (patch->desired.writes() ? 1 : 0),
          "desired version +1 per desired write");
  require(next.reported_version == current.reported_version, "a service patch leaves reported alone");
  require(next.reported == current.reported, "a service patch leaves reported alone");
  if (!patch->tags.writes()) require(next.tags == current.tags, "unwritten tags stay");
  if (!patch->desired.writes()) {
    require(next.desired == current.desired, "unwritten desired stays");
    require(!change->desired_patch.has_value(), "no notification without a desired write");
    return;
  }

  require(change->desired_patch.has_value(), "a desired write has a notification");
  json::object notification = *change->desired_patch;
  const json::value* version = notification.if_contains(kVersionKey);
  require(version != nullptr && version->is_int64() && version->as_int64() == next.desired_version,
          "the notification carries the new $version");
  notification.erase(kVersionKey);
  json::object replayed = propertiesOf(current.desired);
  applyMergePatch(replayed, notification);
  require(replayed == propertiesOf(next.desired),
          "the notification turns the old desired properties into the new ones");
}

void fuzzReplacement(const json::value& body) {
  auto replacement = parseServiceReplacement(body);
  if (!replacement) {
    requireCode(replacement.status(),
                {ErrorCode::IotHubFormatError, ErrorCode::ArgumentInvalid, ErrorCode::MessageTooLarge},
                "parseServiceReplacement");
    return;
  }
  const store::TwinRecord& current = baseTwin();
  auto change = applyReplacement(current, *replacement, kTimestamp);
  if (!change) {
    requireCode(change.status(), {ErrorCode::MessageTooLarge}, "applyReplacement");
    return;
  }
  const store::TwinRecord& next = change->twin;
  checkTwin(next);
  require(next.tags == replacement->tags, "a replacement stores its tags");
  require(propertiesOf(next.desired) == replacement->desired, "a replacement stores its desired");
  require(next.version == current.version + 1, "a replacement bumps the twin version");
  require(next.desired_version == current.desired_version + 1, "a replacement bumps desired");
  require(next.reported == current.reported, "a replacement leaves reported alone");
}

void fuzzReportedPatch(const json::value& body) {
  auto patch = parseReportedPatch(body);
  if (!patch) {
    requireCode(patch.status(),
                {ErrorCode::IotHubFormatError, ErrorCode::ArgumentInvalid, ErrorCode::MessageTooLarge},
                "parseReportedPatch");
    return;
  }
  const store::TwinRecord& current = baseTwin();
  auto next = applyReportedPatch(current, *patch, kTimestamp);
  if (!next) {
    requireCode(next.status(), {ErrorCode::MessageTooLarge}, "applyReportedPatch");
    return;
  }
  checkTwin(*next);
  require(next->reported_version == current.reported_version + (patch->writes() ? 1 : 0),
          "reported version +1 per write");
  require(next->version == current.version + (patch->writes() ? 1 : 0), "twin version +1 per write");
  require(next->tags == current.tags && next->desired == current.desired,
          "a reported patch leaves tags and desired alone");
  json::object expected = propertiesOf(current.reported);
  applyMergePatch(expected, patch->members);
  require(propertiesOf(next->reported) == expected, "a reported patch merges like RFC 7386");
}

// Property 6, on any object whatever the section rules say.
void fuzzMergeAlgebra(const json::object& patch) {
  (void)validateSectionPatch(patch, "fuzz");
  (void)twinSize(patch);
  json::object once = propertiesOf(baseTwin().desired);
  applyMergePatch(once, patch);
  json::object twice = once;
  applyMergePatch(twice, patch);
  require(once == twice, "a merge patch is idempotent");

  const json::object from = propertiesOf(baseTwin().desired);
  const json::object to = withoutNulls(patch);
  json::object rebuilt = from;
  applyMergePatch(rebuilt, createMergePatch(from, to));
  require(rebuilt == to, "createMergePatch(from, to) turns from into to");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto parsed = parseJson(text);
  if (!parsed) return 0;
  const json::value& body = *parsed;
  fuzzServicePatch(body);
  fuzzReplacement(body);
  fuzzReportedPatch(body);
  fuzzServicePatch(json::object{{"tags", body}});
  fuzzServicePatch(json::object{{"properties", json::object{{"desired", body}}}});
  if (const json::object* object = body.if_object()) fuzzMergeAlgebra(*object);
  return 0;
}
