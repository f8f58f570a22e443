#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "common/clock.hpp"
#include "common/status.hpp"

namespace iothub::auth {

// Bounds on an acceptable token. Azure's tokens are a few hundred bytes (a device token for a
// 128-character id under a long host name stays under 1 KB) with four fields; anything far
// beyond is refused before it can cost CPU (docs/limits.md).
inline constexpr std::size_t kMaxSasTokenLength = 4096;
inline constexpr std::size_t kMaxSasFields = 16;

// A parsed "SharedAccessSignature sr=…&sig=…&se=…[&skn=…]" token (docs/protocol.md §1.4).
// Fields may come in any order; each value runs from the field's first '=' to the next '&'.
// Parsing only checks syntax: no signature, expiry or resource checks.
struct SasToken {
  std::string resource_raw;             // `sr` exactly as received: this is what was signed
  std::string resource;                 // `sr` URL-decoded
  std::string signature;                // `sig` URL-decoded (base64 text)
  std::optional<std::string> key_name;  // `skn` URL-decoded
  std::int64_t expiry = 0;              // `se`, seconds since the Unix epoch

  // Refuses tokens longer than kMaxSasTokenLength or with more than kMaxSasFields fields.
  // Linear in the token's length. Requires the exact prefix "SharedAccessSignature " and non-empty
  // `sr`, `sig` and `se`. `se` must be a canonical non-negative decimal int64 (digits only, no
  // sign, no leading zeros) so that the signed text can be re-rendered from `expiry`. An empty
  // `skn` (the Azure C SDK writes "&skn=" on device-key tokens) means no key name. Unknown fields
  // are ignored. Errors: Unauthorized, message "Malformed SAS token: <reason>" for a missing
  // prefix, an empty field or name, a field without '=', a duplicate field (known or not), a
  // missing or empty required field, a bad percent escape in sr/sig/skn, or a bad `se`.
  // The message never contains the signature.
  static Result<SasToken> parse(std::string_view token);
};

// base64(HMAC-SHA256(base64decode(key), string_to_sign)). Errors: ArgumentInvalid when the
// key is not base64 or decodes to nothing (an empty key never signs anything).
Result<std::string> hmacSha256Base64(std::string_view key_base64, std::string_view string_to_sign);

// base64(HMAC-SHA256(key_bytes, string_to_sign)) with the key used as given, not decoded:
// Event Hubs clients sign with the UTF-8 bytes of the key text itself (docs/amqp.md §1.5).
// Errors: ArgumentInvalid for an empty key.
Result<std::string> hmacSha256Base64RawKey(std::string_view key_bytes,
                                           std::string_view string_to_sign);

// Builds a token exactly as the Node SDKs do: `sr` is written as given (callers pass the
// strictly URL-encoded resource for devices, the raw host for services); string-to-sign is
// `sr` + "\n" + `se`; `sig` and `skn` are strictly URL-encoded; fields in the order sr, sig,
// [skn,] se. Errors: as hmacSha256Base64, and ArgumentInvalid for a negative expiry.
Result<std::string> buildSasToken(std::string_view resource_as_written, std::string_view key_base64,
                                  std::optional<std::string_view> key_name, std::int64_t expiry);

// Builds a token as @azure/event-hubs does for `audience` (an sb:// address): `sr` is the
// audience strictly URL-encoded (the SDK's encodeURIComponent differs only on ! ' ( ) *,
// which hub addresses do not contain), signed with the key TEXT's bytes
// (hmacSha256Base64RawKey), fields in the order sr, sig, se, skn. Errors: as
// hmacSha256Base64RawKey, and ArgumentInvalid for a negative expiry.
Result<std::string> buildEventHubsToken(std::string_view audience, std::string_view key_text,
                                        std::string_view key_name, std::int64_t expiry);

// The resource of a device (or module) token as the Node device SDK writes it:
// urlEncodeStrict(host + "/devices/" + device_id [+ "/modules/" + module_id]).
std::string deviceResource(std::string_view host, std::string_view device_id,
                           std::optional<std::string_view> module_id = std::nullopt);

// Checks a token's signature against `key_base64` in constant time (HMAC over the raw `sr`
// text + "\n" + the decimal `se`). Does not check expiry or resource. False for a key that
// is empty or not base64.
bool signatureMatches(const SasToken& token, std::string_view key_base64);

// As signatureMatches, but the HMAC key is the key text's own bytes (Event Hubs style, see
// hmacSha256Base64RawKey). False for an empty key.
bool signatureMatchesRawKey(const SasToken& token, std::string_view key_text);

// True when the decoded token resource grants access to `target` (e.g. "host/devices/d1"):
// host compared case-insensitively, path by whole-segment prefix ("/a/b" covers "/a/b/c",
// not "/a/bc"); path segments are case-sensitive (device ids are). Trailing '/' characters are
// ignored. Never true when `target` has an empty host. Note that a device id containing '/'
// would make one device's resource a prefix of another's; the registry must reject those.
bool resourceCovers(std::string_view token_resource, std::string_view target);

}  // namespace iothub::auth
