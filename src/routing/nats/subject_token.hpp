#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "common/status.hpp"

namespace iothub::routing {

// NATS subjects are tokens separated by '.'; a token equal to "*" matches any one token and
// a last token ">" matches the rest; whitespace ends a subject on the wire. Device ids may
// contain '.', '*', '>' and more (Azure allows `- . + % _ # * ? ! ( ) , = @ $ '`), so an id
// must be encoded before it becomes part of a subject (docs/cluster.md, "Subjects").

// Maps any byte string to one valid, non-empty subject token, reversibly: the bytes
// [A-Za-z0-9_-] stand for themselves, every other byte becomes '%' and two uppercase hex
// digits ("door.1" -> "door%2E1"), and the empty string becomes the lone token "%". The
// result never contains '.', '*', '>', whitespace or control characters, never starts
// with '$' (reserved for the server's own subjects), and distinct inputs give distinct
// tokens.
std::string encodeSubjectToken(std::string_view bytes);

// The inverse of encodeSubjectToken. Accepts exactly the tokens it produces (uppercase hex
// only), so every id has one encoding; nullopt for anything else.
std::optional<std::string> decodeSubjectToken(std::string_view token);

// Checks `subject` before it reaches the wire: non-empty, at most 4096 bytes, no empty
// token (leading, trailing or doubled '.'), no whitespace or control characters. With
// `wildcards` false (publishing) the tokens "*" and ">" are refused; with it true
// (subscribing) "*" may stand anywhere and ">" only as the last token. Errors are
// ArgumentInvalid naming the subject.
Status checkSubject(std::string_view subject, bool wildcards);

}  // namespace iothub::routing
