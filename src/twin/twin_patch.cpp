#include "twin/twin_patch.hpp"

#include <algorithm>
#include <array>

namespace iothub::twin {
namespace {

// Fields of the service twin (docs/protocol.md §6.1) that clients may echo back in a patch but
// cannot change through it.
constexpr auto kReadOnlyFields = std::to_array<std::string_view>({
    "deviceId",
    "moduleId",
    "etag",
    "deviceEtag",
    "version",
    "status",
    "statusReason",
    "statusUpdateTime",
    "statusUpdatedTime",
    "connectionState",
    "connectionStateUpdatedTime",
    "lastActivityTime",
    "cloudToDeviceMessageCount",
    "authenticationType",
    "x509Thumbprint",
    "capabilities",
    "modelId",
    "deviceScope",
    "parentScopes",
    "generationId",
    "configurations",
});

bool isReadOnlyField(std::string_view key) {
  return std::find(kReadOnlyFields.begin(), kReadOnlyFields.end(), key) != kReadOnlyFields.end();
}

Status invalid(std::string message) { return {ErrorCode::ArgumentInvalid, std::move(message)}; }

Status notAnObject() {
  return {ErrorCode::IotHubFormatError, "The twin patch must be a JSON object"};
}

// Reads a section that may be an object (merged) or null (cleared).
Result<SectionPatch> parseSection(const json::value& value, Section section) {
  SectionPatch patch;
  if (value.is_null()) {
    patch.clear = true;
    return patch;
  }
  const json::object* object = value.if_object();
  if (object == nullptr)
    return invalid(std::string(sectionPath(section)) + " must be an object or null");
  patch.members = *object;
  if (section == Section::Desired) {
    // A twin read back from the hub carries these; they are not properties.
    patch.members.stable_erase(kMetadataKey);
    patch.members.stable_erase(kVersionKey);
  }
  IOTHUB_RETURN_IF_ERROR(validateSectionPatch(patch.members, sectionPath(section)));
  IOTHUB_RETURN_IF_ERROR(checkSectionSize(patch.members, section));
  return patch;
}

// The shared walk over a service body. `replacing` selects PUT rules for reported.
struct ServiceSections {
  std::optional<SectionPatch> tags;
  std::optional<SectionPatch> desired;
};

Result<ServiceSections> parseServiceBody(const json::object& body, bool replacing) {
  ServiceSections sections;
  for (const auto& member : body) {
    std::string_view key = member.key();
    if (key == "tags") {
      auto tags = parseSection(member.value(), Section::Tags);
      if (!tags) return tags.status();
      sections.tags = std::move(*tags);
      continue;
    }
    if (key == "properties") {
      if (member.value().is_null()) continue;
      const json::object* properties = member.value().if_object();
      if (properties == nullptr) return invalid("properties must be an object");
      for (const auto& property : *properties) {
        if (property.key() == "desired") {
          auto desired = parseSection(property.value(), Section::Desired);
          if (!desired) return desired.status();
          sections.desired = std::move(*desired);
        } else if (property.key() == "reported") {
          if (replacing) continue;
          const json::object* reported = property.value().if_object();
          if (reported == nullptr || !reported->empty()) {
            return invalid(
                "properties.reported cannot be changed by the service: reported properties "
                "belong to the device (only an empty object is accepted)");
          }
        } else {
          return invalid("properties." + std::string(property.key()) +
                         " is not supported; properties may hold only desired and reported");
        }
      }
      continue;
    }
    if (isReadOnlyField(key)) continue;
    return invalid("'" + std::string(key) +
                   "' is not supported in a twin update; only tags and properties.desired can "
                   "be changed (desired properties go under properties.desired)");
  }
  return sections;
}

// The notification payload: the change, then "$version" (docs/protocol.md §3.6).
json::object withVersion(json::object patch, std::int64_t version) {
  patch[kVersionKey] = version;
  return patch;
}

}  // namespace

Result<TwinPatch> parseServicePatch(const json::object& body) {
  auto sections = parseServiceBody(body, false);
  if (!sections) return sections.status();
  TwinPatch patch;
  if (sections->tags) patch.tags = std::move(*sections->tags);
  if (sections->desired) patch.desired = std::move(*sections->desired);
  return patch;
}

Result<TwinPatch> parseServicePatch(const json::value& body) {
  const json::object* object = body.if_object();
  if (object == nullptr) return notAnObject();
  return parseServicePatch(*object);
}

Result<TwinReplacement> parseServiceReplacement(const json::value& body) {
  const json::object* object = body.if_object();
  if (object == nullptr)
    return Status(ErrorCode::IotHubFormatError, "The twin must be a JSON object");
  auto sections = parseServiceBody(*object, true);
  if (!sections) return sections.status();
  TwinReplacement replacement;
  if (sections->tags) replacement.tags = withoutNulls(sections->tags->members);
  if (sections->desired) replacement.desired = withoutNulls(sections->desired->members);
  return replacement;
}

Result<SectionPatch> parseReportedPatch(const json::value& body) {
  const json::object* object = body.if_object();
  if (object == nullptr) {
    return Status(ErrorCode::IotHubFormatError,
                  "The reported properties patch must be a JSON object");
  }
  SectionPatch patch;
  patch.members = *object;
  IOTHUB_RETURN_IF_ERROR(validateSectionPatch(patch.members, sectionPath(Section::Reported)));
  IOTHUB_RETURN_IF_ERROR(checkSectionSize(patch.members, Section::Reported));
  return patch;
}

Result<TwinChange> applyServicePatch(const store::TwinRecord& current, const TwinPatch& patch,
                                     std::string_view timestamp) {
  TwinChange change{current, std::nullopt};
  store::TwinRecord& next = change.twin;
  bool written = false;

  if (patch.tags.writes()) {
    if (patch.tags.clear) next.tags.clear();
    applyMergePatch(next.tags, patch.tags.members);
    IOTHUB_RETURN_IF_ERROR(checkSectionSize(next.tags, Section::Tags));
    written = true;
  }

  if (patch.desired.writes()) {
    ++next.desired_version;
    UpdateStamp stamp{std::string(timestamp), next.desired_version};
    json::object notification;
    if (patch.desired.clear) {
      // Merge-style devices (Node) only drop what the notification names (docs/protocol.md §3.6).
      for (const auto& member : current.desired) {
        if (member.key() != kMetadataKey) notification[member.key()] = nullptr;
      }
      clearProperties(next.desired, stamp);
    }
    if (!patch.desired.members.empty()) {
      for (const auto& member : patch.desired.members) notification[member.key()] = member.value();
      applyPropertiesPatch(next.desired, patch.desired.members, stamp);
    }
    IOTHUB_RETURN_IF_ERROR(checkSectionSize(next.desired, Section::Desired));
    change.desired_patch = withVersion(std::move(notification), next.desired_version);
    written = true;
  }

  if (written) ++next.version;
  return change;
}

Result<TwinChange> applyReplacement(const store::TwinRecord& current,
                                    const TwinReplacement& replacement,
                                    std::string_view timestamp) {
  TwinChange change{current, std::nullopt};
  store::TwinRecord& next = change.twin;
  next.tags = replacement.tags;
  IOTHUB_RETURN_IF_ERROR(checkSectionSize(next.tags, Section::Tags));

  ++next.desired_version;
  UpdateStamp stamp{std::string(timestamp), next.desired_version};
  json::object diff = createMergePatch(propertiesOf(current.desired), replacement.desired);
  applyPropertiesPatch(next.desired, diff, stamp);
  IOTHUB_RETURN_IF_ERROR(checkSectionSize(next.desired, Section::Desired));
  change.desired_patch = withVersion(std::move(diff), next.desired_version);

  ++next.version;
  return change;
}

Result<store::TwinRecord> applyReportedPatch(const store::TwinRecord& current,
                                             const SectionPatch& patch,
                                             std::string_view timestamp) {
  if (!patch.writes()) return current;
  store::TwinRecord next = current;
  ++next.reported_version;
  UpdateStamp stamp{std::string(timestamp), std::nullopt};
  if (patch.clear) clearProperties(next.reported, stamp);
  if (!patch.members.empty()) applyPropertiesPatch(next.reported, patch.members, stamp);
  IOTHUB_RETURN_IF_ERROR(checkSectionSize(next.reported, Section::Reported));
  ++next.version;
  return next;
}

}  // namespace iothub::twin
