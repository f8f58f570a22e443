#pragma once

#include <charconv>
#include <optional>
#include <string>
#include <string_view>

namespace iothub {

// Standard base64 with padding (RFC 4648 §4).
std::string base64Encode(std::string_view bytes);
// Decodes standard base64; nullopt on any character outside the alphabet, bad padding
// or a length that is not a multiple of 4. Whitespace is not accepted.
std::optional<std::string> base64Decode(std::string_view text);

std::string hexEncode(std::string_view bytes);

// Percent-encodes every byte outside RFC 3986 "unreserved" (ALPHA DIGIT - . _ ~) with
// uppercase hex: JavaScript's encodeURIComponent plus ! ' ( ) *, which is what the Azure
// SDKs call "strict" encoding (docs/protocol.md §1.5).
std::string urlEncodeStrict(std::string_view text);
// Decodes %XX escapes (and nothing else: '+' stays '+'); nullopt on a malformed escape.
std::optional<std::string> urlDecode(std::string_view text);

// Constant-time equality for secrets (signatures): the time taken depends only on the
// lengths, never on where the inputs differ.
bool constantTimeEquals(std::string_view a, std::string_view b);

// Case-insensitive ASCII comparison.
bool equalsIgnoreCase(std::string_view a, std::string_view b);

// FNV-1a (64 bits) of `bytes` as 16 lowercase hex digits: a fingerprint that only has to
// change when the bytes do (not a cryptographic hash).
std::string fnv1aHex(std::string_view bytes);

// The whole of `text` as a decimal integer of type Int; nullopt when empty, not a number, with
// trailing characters, or out of Int's range.
template <class Int>
std::optional<Int> parseDecimal(std::string_view text) {
  Int value{};
  if (text.empty()) return std::nullopt;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc{} || end != text.data() + text.size()) return std::nullopt;
  return value;
}

}  // namespace iothub
