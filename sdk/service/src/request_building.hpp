#pragma once

// Pure pieces of request construction, kept apart from the Beast code so they can be unit
// tested byte for byte.

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include "auth/connection_string.hpp"
#include "common/clock.hpp"
#include "common/random.hpp"
#include "common/status.hpp"
#include "iothub/service/http_transport.hpp"

namespace iothub::service::detail {

// Lifetime of every service token: the Node SDK signs each request with se = ceil(now)+3600.
inline constexpr std::int64_t kTokenLifetimeSeconds = 3600;

std::int64_t serviceTokenExpiry(SystemTime now);

// "SharedAccessSignature sr=<HostName>&sig=…&skn=<policy>&se=…" (docs/protocol.md §1.7: the
// service resource is the raw host name, not encoded). Errors: ArgumentInvalid when the
// key is not base64.
Result<std::string> serviceSasToken(const auth::ServiceConnectionString& connection_string,
                                    SystemTime now);

// A random (version 4) UUID in lowercase 8-4-4-4-12 form.
std::string newRequestId(Random& random);

// If-Match values are always double-quoted (Node's _ensureQuoted): * -> "*".
std::string quoteEtag(std::string_view etag);

// path + "?api-version=2021-04-12" [+ "&" + query].
std::string requestTarget(const HttpRequest& request);

// "/devices/" + strictly URL-encoded id.
std::string devicePath(std::string_view device_id);

// "/twins/" + strictly URL-encoded id.
std::string twinPath(std::string_view device_id);

// "30s" for whole seconds, else "1500ms"; for messages.
std::string durationText(std::chrono::milliseconds duration);

}  // namespace iothub::service::detail
