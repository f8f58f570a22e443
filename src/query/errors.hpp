#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "common/status.hpp"

namespace iothub::query {

// The longest query (or job condition) text accepted, in characters (docs/protocol.md §8.5).
inline constexpr std::size_t kMaxQueryLength = 8192;

// "line:col" of byte `offset` in `text`; both 1-based, columns count characters (UTF-8
// code points), so the position matches what an editor shows.
std::string linePosition(std::string_view text, std::size_t offset);

// The ArgumentInvalid status every query error uses:
//   "<kind> error at <line>:<col> near '<snippet>': <message>"
// where the snippet is text[begin, end) (shortened, with control characters and invalid
// UTF-8 replaced so the message is safe to put in a JSON error body), or
//   "<kind> error at <line>:<col> near end of query: <message>"
// when `begin` is at the end of the text. `kind` is "Syntax" or "Type".
Status queryError(std::string_view kind, std::string_view text, std::size_t begin, std::size_t end,
                  std::string_view message);

}  // namespace iothub::query
