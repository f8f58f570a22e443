#include "auth/sas_token.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <array>
#include <charconv>
#include <string>
#include <utility>
#include <vector>

#include "common/encoding.hpp"

namespace iothub::auth {
namespace {

constexpr std::string_view kPrefix = "SharedAccessSignature ";

Status malformed(std::string_view what) {
  return {ErrorCode::Unauthorized, "Malformed SAS token: " + std::string(what)};
}

// `se` must be the canonical decimal rendering of its value (no sign, no leading zeros,
// no junk): signatureMatches() re-renders the expiry, and that must reproduce the signed
// text byte for byte.
std::optional<std::int64_t> parseExpiry(std::string_view text) {
  if (text.empty() || (text.size() > 1 && text.front() == '0')) return std::nullopt;
  for (char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
  }
  std::int64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc{} || end != text.data() + text.size()) return std::nullopt;
  return value;
}

}  // namespace

Result<SasToken> SasToken::parse(std::string_view token) {
  if (!token.starts_with(kPrefix)) {
    return malformed("it does not start with 'SharedAccessSignature '");
  }
  // Checked before any other work: a hostile token costs at most this many bytes of
  // scanning and kMaxSasFields fields, so parsing is linear and bounded.
  if (token.size() > kMaxSasTokenLength) {
    return malformed("it is longer than " + std::to_string(kMaxSasTokenLength) + " characters");
  }
  std::string_view rest = token.substr(kPrefix.size());
  if (rest.empty()) return malformed("it has no fields");

  std::optional<std::string_view> sr, sig, se, skn;
  // Names of fields we do not know, only to reject their duplicates too. At most
  // kMaxSasFields of them, so the duplicate check stays a handful of comparisons.
  std::vector<std::string_view> other_names;
  std::size_t fields = 0;
  while (true) {
    if (++fields > kMaxSasFields) {
      return malformed("it has more than " + std::to_string(kMaxSasFields) + " fields");
    }
    std::size_t amp = rest.find('&');
    std::string_view field = rest.substr(0, amp);
    std::size_t eq = field.find('=');
    if (field.empty()) return malformed("it has an empty field");
    if (eq == std::string_view::npos) return malformed("a field has no '='");
    if (eq == 0) return malformed("a field has an empty name");
    std::string_view name = field.substr(0, eq);
    std::string_view value = field.substr(eq + 1);  // split at the FIRST '=': padding survives
    std::optional<std::string_view>* slot = nullptr;
    if (name == "sr")
      slot = &sr;
    else if (name == "sig")
      slot = &sig;
    else if (name == "se")
      slot = &se;
    else if (name == "skn")
      slot = &skn;
    if (slot != nullptr) {
      if (slot->has_value()) return malformed("duplicate '" + std::string(name) + "' field");
      *slot = value;
    } else {
      for (std::string_view seen : other_names) {
        if (seen == name) return malformed("duplicate field");
      }
      other_names.push_back(name);
    }
    if (amp == std::string_view::npos) break;
    rest.remove_prefix(amp + 1);
  }

  if (!sr) return malformed("missing 'sr'");
  if (!sig) return malformed("missing 'sig'");
  if (!se) return malformed("missing 'se'");
  if (sr->empty()) return malformed("'sr' is empty");
  if (sig->empty()) return malformed("'sig' is empty");

  SasToken out;
  out.resource_raw = std::string(*sr);
  auto resource = urlDecode(*sr);
  if (!resource) return malformed("'sr' has a bad percent escape");
  out.resource = std::move(*resource);
  auto signature = urlDecode(*sig);
  if (!signature) return malformed("'sig' has a bad percent escape");
  out.signature = std::move(*signature);
  // The C SDK writes "&skn=" with an empty value on device-key tokens; that means "no policy".
  if (skn && !skn->empty()) {
    auto key_name = urlDecode(*skn);
    if (!key_name) return malformed("'skn' has a bad percent escape");
    out.key_name = std::move(*key_name);
  }
  auto expiry = parseExpiry(*se);
  if (!expiry) return malformed("'se' is not a non-negative decimal integer");
  out.expiry = *expiry;
  return out;
}

namespace {

std::string hmacBase64(std::string_view key, std::string_view string_to_sign) {
  std::array<unsigned char, EVP_MAX_MD_SIZE> mac{};
  unsigned int mac_size = 0;
  unsigned char* done = HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
                             reinterpret_cast<const unsigned char*>(string_to_sign.data()),
                             string_to_sign.size(), mac.data(), &mac_size);
  IOTHUB_CHECK(done != nullptr, "OpenSSL HMAC-SHA256 failed");
  std::string out =
      base64Encode(std::string_view(reinterpret_cast<const char*>(mac.data()), mac_size));
  OPENSSL_cleanse(mac.data(), mac.size());
  return out;
}

std::string stringToSign(const SasToken& token) {
  std::string string_to_sign = token.resource_raw;
  string_to_sign += '\n';
  string_to_sign += std::to_string(token.expiry);
  return string_to_sign;
}

}  // namespace

Result<std::string> hmacSha256Base64(std::string_view key_base64, std::string_view string_to_sign) {
  auto key = base64Decode(key_base64);
  if (!key) return Status{ErrorCode::ArgumentInvalid, "Shared access key is not valid base64"};
  // An empty key is what a non-SAS identity stores; it must never sign (or verify) anything.
  if (key->empty()) return Status{ErrorCode::ArgumentInvalid, "Shared access key is empty"};
  std::string out = hmacBase64(*key, string_to_sign);
  OPENSSL_cleanse(key->data(), key->size());
  return out;
}

Result<std::string> hmacSha256Base64RawKey(std::string_view key_bytes,
                                           std::string_view string_to_sign) {
  if (key_bytes.empty()) return Status{ErrorCode::ArgumentInvalid, "Shared access key is empty"};
  return hmacBase64(key_bytes, string_to_sign);
}

Result<std::string> buildSasToken(std::string_view resource_as_written, std::string_view key_base64,
                                  std::optional<std::string_view> key_name, std::int64_t expiry) {
  if (expiry < 0) return Status{ErrorCode::ArgumentInvalid, "SAS token expiry is negative"};
  std::string se = std::to_string(expiry);
  std::string string_to_sign(resource_as_written);
  string_to_sign += '\n';
  string_to_sign += se;
  auto signature = hmacSha256Base64(key_base64, string_to_sign);
  if (!signature) return signature.status();
  std::string token(kPrefix);
  token += "sr=";
  token += resource_as_written;
  token += "&sig=";
  token += urlEncodeStrict(*signature);
  if (key_name) {
    token += "&skn=";
    token += urlEncodeStrict(*key_name);
  }
  token += "&se=";
  token += se;
  return token;
}

Result<std::string> buildEventHubsToken(std::string_view audience, std::string_view key_text,
                                        std::string_view key_name, std::int64_t expiry) {
  if (expiry < 0) return Status{ErrorCode::ArgumentInvalid, "SAS token expiry is negative"};
  std::string sr = urlEncodeStrict(audience);
  std::string se = std::to_string(expiry);
  auto signature = hmacSha256Base64RawKey(key_text, sr + "\n" + se);
  if (!signature) return signature.status();
  return std::string(kPrefix) + "sr=" + sr + "&sig=" + urlEncodeStrict(*signature) + "&se=" + se +
         "&skn=" + urlEncodeStrict(key_name);
}

std::string deviceResource(std::string_view host, std::string_view device_id,
                           std::optional<std::string_view> module_id) {
  std::string resource(host);
  resource += "/devices/";
  resource += device_id;
  if (module_id) {
    resource += "/modules/";
    resource += *module_id;
  }
  return urlEncodeStrict(resource);
}

bool signatureMatches(const SasToken& token, std::string_view key_base64) {
  auto expected = hmacSha256Base64(key_base64, stringToSign(token));
  if (!expected) return false;
  return constantTimeEquals(*expected, token.signature);
}

bool signatureMatchesRawKey(const SasToken& token, std::string_view key_text) {
  auto expected = hmacSha256Base64RawKey(key_text, stringToSign(token));
  if (!expected) return false;
  return constantTimeEquals(*expected, token.signature);
}

bool resourceCovers(std::string_view token_resource, std::string_view target) {
  auto trimSlashes = [](std::string_view s) {
    while (s.ends_with('/')) s.remove_suffix(1);
    return s;
  };
  auto splitHost = [](std::string_view s) -> std::pair<std::string_view, std::string_view> {
    std::size_t slash = s.find('/');
    if (slash == std::string_view::npos) return {s, {}};
    return {s.substr(0, slash), s.substr(slash)};
  };
  auto [token_host, token_path] = splitHost(trimSlashes(token_resource));
  auto [target_host, target_path] = splitHost(trimSlashes(target));
  // A hub without a host name is a misconfiguration; it must not turn "sr=/" into a key
  // to everything.
  if (target_host.empty() || !equalsIgnoreCase(token_host, target_host)) return false;
  if (!target_path.starts_with(token_path)) return false;
  return target_path.size() == token_path.size() || target_path[token_path.size()] == '/';
}

}  // namespace iothub::auth
