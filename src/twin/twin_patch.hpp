#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

#include "common/json.hpp"
#include "common/status.hpp"
#include "store/records.hpp"
#include "twin/twin_document.hpp"

namespace iothub::twin {

// What clients send to change a twin, parsed and validated, and how each change turns a
// TwinRecord into the next one. Pure functions, no I/O, thread-safe.
//
// Version rules (docs/protocol.md §3.3, §6.2), with versions starting at 1 in a new twin:
// - A section is *written* when its patch is null (clear) or has at least one member; an
//   empty object `{}` leaves it alone. Writing counts as a change even when the values
//   end up equal (Azure bumps versions on such patches too).
// - Each write of desired bumps desired_version by 1; of reported, reported_version by 1.
// - Any write (tags, desired or reported) bumps the twin version by 1 once per patch,
//   which also changes the twin etag (twinEtag(version)).
// - A patch that writes nothing changes nothing, versions included.

// The change to one section.
struct SectionPatch {
  bool clear = false;    // remove every member first (the section was null)
  json::object members;  // then merge these (nulls delete)
  bool writes() const { return clear || !members.empty(); }
};

// A service-side change of tags and desired properties.
struct TwinPatch {
  SectionPatch tags;
  SectionPatch desired;
};

// A service-side replacement (PUT /twins/{id}): the new tags and desired properties, nulls
// already removed.
struct TwinReplacement {
  json::object tags;
  json::object desired;
};

// Parses a service twin patch (PATCH /twins/{id}, a job's updateTwin; docs/protocol.md §6.3).
// Accepted top-level members: "tags" (object or null), "properties" (object, or null for
// nothing) holding "desired" (object or null) and "reported" (only an empty object, which
// the Node job client sends). Read-only identity fields clients echo back (deviceId, etag,
// version, status, connectionState, ...) are ignored; "$metadata" and "$version" at the
// top of desired are ignored too (they come with a twin read back from the hub).
// Errors: IotHubFormatError when `body` is not an object; ArgumentInvalid for any other
// member (e.g. "desired" at the top level), wrong types, a non-empty reported section, and
// every rule of validateSectionPatch; MessageTooLarge when the patch alone exceeds its
// section's size limit.
Result<TwinPatch> parseServicePatch(const json::value& body);
Result<TwinPatch> parseServicePatch(const json::object& body);

// Parses a twin replacement (PUT /twins/{id}). Same members and rules as
// parseServicePatch, except that an absent or null "tags" / "properties.desired" means
// empty and "properties.reported" is ignored whatever it holds (a PUT body is usually a
// whole twin read back from the hub; reported stays device-owned).
Result<TwinReplacement> parseServiceReplacement(const json::value& body);

// Parses a device's reported-properties patch (MQTT $iothub/twin/PATCH/properties/reported,
// docs/protocol.md §3.4). Errors: IotHubFormatError when `body` is not an object; ArgumentInvalid
// for rule violations, including "$version" echoed back (Azure answers 400 too);
// MessageTooLarge when the patch alone exceeds 32 KB.
Result<SectionPatch> parseReportedPatch(const json::value& body);

// The result of a service-side change.
struct TwinChange {
  store::TwinRecord twin;
  // The desired notification payload (docs/protocol.md §3.6) when desired was written: the
  // change with explicit nulls for removed members, plus "$version" last.
  std::optional<json::object> desired_patch;
};

// Applies `patch` to `current`, stamping metadata with `timestamp`. For a cleared desired
// section the notification carries null for every member it had.
// Errors: MessageTooLarge when tags or desired would exceed their limit.
Result<TwinChange> applyServicePatch(const store::TwinRecord& current, const TwinPatch& patch,
                                     std::string_view timestamp);

// Replaces tags and desired. Desired is changed through the merge patch from the old to
// the new properties (createMergePatch), so metadata of unchanged members is kept and the
// notification holds exactly what changed (nulls for removed members). Both sections are
// always written: desired_version and version grow by 1 even when nothing differs.
// Errors: MessageTooLarge.
Result<TwinChange> applyReplacement(const store::TwinRecord& current,
                                    const TwinReplacement& replacement, std::string_view timestamp);

// Applies a device's reported patch. Errors: MessageTooLarge.
Result<store::TwinRecord> applyReportedPatch(const store::TwinRecord& current,
                                             const SectionPatch& patch, std::string_view timestamp);

}  // namespace iothub::twin
