#pragma once

#include <boost/json.hpp>
#include <string>
#include <string_view>

#include "iothub/status.hpp"

namespace iothub {

namespace json = boost::json;

// Parses untrusted JSON text: never throws; a syntax error or excessive nesting becomes
// IotHubFormatError with the parser's message. `max_depth` bounds recursion.
Result<json::value> parseJson(std::string_view text, std::size_t max_depth = 64);

// Serializes compactly.
inline std::string toJson(const json::value& v) { return json::serialize(v); }

// Member lookup helpers that never throw. Return nullptr when absent or of another type.
const json::value* findMember(const json::object& o, std::string_view key);
const json::string* findString(const json::object& o, std::string_view key);
const json::object* findObject(const json::object& o, std::string_view key);

}  // namespace iothub
