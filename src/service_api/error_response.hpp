#pragma once

#include <string>

#include "common/clock.hpp"
#include "common/http_message.hpp"
#include "common/random.hpp"
#include "common/status.hpp"

namespace iothub::service_api {

// The JSON content type Azure sends; the Node SDK parses bodies only when the response
// carries it (docs/protocol.md §4.2).
inline constexpr const char* kJsonContentType = "application/json; charset=utf-8";

// An Azure-shaped error response for `status` (docs/protocol.md §4.5): HTTP status from the
// error table, header `iothub-errorcode: <Name>`, and
// - for DeviceNotOnline and GatewayTimeout (direct methods) the nested shape 2
//   {"Message":"{\"errorCode\":404103,...}","ExceptionMessage":""};
// - otherwise shape 1 {"Message":"ErrorCode:<Name>;<text>","ExceptionMessage":"Tracking ID:…"}.
// ';' in the human text is replaced, since the Node SDK cuts the message at the next ';'.
HttpResponse errorResponse(const Status& status, Random& random, SystemTime now);

// A 200 (or other 2xx) response with a JSON body.
HttpResponse jsonResponse(int http_status, std::string body);

}  // namespace iothub::service_api
