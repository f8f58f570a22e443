#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "common/status.hpp"

namespace iothub::mqtt {

// Topic names and topic filters, MQTT 3.1.1 §4.7.

// Checks a topic name (what a PUBLISH is sent to, §4.7.3): at least one and at most 65535
// bytes, well-formed UTF-8 without U+0000 (see validateUtf8), and no wildcard character
// ('+' or '#'). Returns Ok or IotHubFormatError with the reason.
Status validateTopicName(std::string_view name);

// Checks a topic filter (what a SUBSCRIBE or UNSUBSCRIBE names, §4.7.1): the same length and
// UTF-8 rules as a name; '#' only as the whole last level ("#", "a/#"); '+' only as a whole
// level ("+", "a/+/b"). Returns Ok or IotHubFormatError with the reason.
Status validateTopicFilter(std::string_view filter);

// True when `topic` (a topic name) matches `filter` (a topic filter), per §4.7:
// levels are separated by '/', empty levels count; '+' matches exactly one level (possibly
// empty); a trailing '#' matches the parent level and any number of child levels ("a/#"
// matches "a", "a/b", "a/b/c"). Topics starting with '$' (such as "$iothub/twin/res/200")
// are never matched by a filter whose first level is a wildcard (§4.7.2): "#" and
// "+/twin/#" do not match them, "$iothub/#" does.
// Never fails: an invalid filter or name simply compares as written (callers validate first).
bool topicMatches(std::string_view filter, std::string_view topic);

// The value of property `name` in the part of `topic` after "/?", e.g. "$rid" in
// "$iothub/twin/GET/?$rid=42" (Azure's property bags, docs/protocol.md §3.2), or nullopt. Keys and
// values are URL-decoded, as Node's querystring.parse does; a key without "=" has the empty
// value; a pair with a malformed escape does not match.
std::optional<std::string> topicQueryValue(std::string_view topic, std::string_view name);

}  // namespace iothub::mqtt
