#include "common/json.hpp"

namespace iothub {

Result<json::value> parseJson(std::string_view text, std::size_t max_depth) {
  json::parse_options options;
  options.max_depth = max_depth;
  boost::system::error_code ec;
  json::value v = json::parse(text, ec, {}, options);
  if (ec) return Status(ErrorCode::IotHubFormatError, "Malformed JSON: " + ec.message());
  return v;
}

const json::value* findMember(const json::object& o, std::string_view key) {
  auto it = o.find(key);
  return it == o.end() ? nullptr : &it->value();
}

const json::string* findString(const json::object& o, std::string_view key) {
  const json::value* v = findMember(o, key);
  return v ? v->if_string() : nullptr;
}

const json::object* findObject(const json::object& o, std::string_view key) {
  const json::value* v = findMember(o, key);
  return v ? v->if_object() : nullptr;
}

}  // namespace iothub
