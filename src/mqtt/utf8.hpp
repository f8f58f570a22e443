#pragma once

#include <cstddef>
#include <string_view>

#include "common/status.hpp"

namespace iothub::mqtt {

// The longest string an MQTT "UTF-8 encoded string" can carry: its length is a 16-bit prefix.
inline constexpr std::size_t kMaxStringLength = 65535;

// Checks `text` against the rules of MQTT 3.1.1 §1.5.3 that make a receiver close the
// connection: it must be well-formed UTF-8 as defined by RFC 3629 (no overlong forms, no
// UTF-16 surrogate code points U+D800..U+DFFF, nothing above U+10FFFF, no truncated or stray
// continuation bytes) and must not contain U+0000. Control characters and non-characters are
// allowed (the specification only says a receiver MAY reject them). Does not check the length.
// Returns Ok, or IotHubFormatError naming the byte offset of the first invalid sequence.
Status validateUtf8(std::string_view text);

}  // namespace iothub::mqtt
