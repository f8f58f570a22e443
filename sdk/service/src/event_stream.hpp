#pragma once

// A text/event-stream (Server-Sent Events) parser: bytes in, events out. Pure, so it can be
// tested with any split of the stream into pieces.

#include <string>
#include <string_view>
#include <vector>

namespace iothub::service::detail {

struct ServerSentEvent {
  std::string type = "message";  // the "event:" field; "message" when absent
  std::string data;              // "data:" lines joined with '\n'
  std::string id;                // the last "id:" field seen
};

// Follows the WHATWG event-stream interpretation: lines end in "\n", "\r\n" or "\r";
// "field: value" drops one space after the colon; lines starting with ':' are comments
// (keep-alives); an empty line dispatches the event gathered so far (none when it has no
// data line); unknown fields are ignored. A leading UTF-8 BOM is skipped.
class EventStreamParser {
 public:
  // Consumes the next bytes of the stream and returns the events they completed, in order.
  std::vector<ServerSentEvent> feed(std::string_view bytes);

 private:
  void line(std::string_view text, std::vector<ServerSentEvent>& out);

  std::string pending_;    // an unfinished line
  bool after_cr_ = false;  // the last byte was '\r' ("\r\n" is one line end)
  bool started_ = false;   // past a possible BOM
  bool has_data_ = false;  // the current event has a data line
  ServerSentEvent current_;
  std::string last_id_;
};

}  // namespace iothub::service::detail
