#pragma once

#include <functional>
#include <span>
#include <string_view>

#include "common/http_message.hpp"
#include "common/status.hpp"

namespace iothub::console {

// One file of the web console (console/ at the repository root), compiled into the binary.
struct EmbeddedAsset {
  std::string_view path;     // relative to console/, e.g. "index.html", "pages/devices.js"
  std::string_view content;  // the file's bytes, static storage
};

// Every embedded file, in the order src/console/CMakeLists.txt lists them. Generated at build
// time (embed_assets.cmake).
std::span<const EmbeddedAsset> embeddedAssets();

// Turns a failure into the hub's Azure-shaped error answer (service_api::errorResponse).
using ErrorResponder = std::function<HttpResponse(const Status&)>;

// Answers a request for the console (`/ui` or a path under `/ui/`: the service API's route
// `/ui/{path*}` sends them here), with no I/O and no authentication (the files hold no
// secrets; every API call the console makes is SAS-signed like any client's):
// - GET and HEAD only; anything else is 405 MethodNotAllowed with `Allow: GET, HEAD`;
// - `/ui` redirects (308) to `/ui/`, which serves index.html; `/ui/<file>` serves that file;
//   anything else is 404 NotFound; both errors come from `error`;
// - a file carries Content-Type by extension, a strong ETag over its bytes (If-None-Match
//   with it answers 304), `Cache-Control: no-cache`, `X-Content-Type-Options: nosniff` and
//   `Content-Security-Policy: default-src 'self'; frame-ancestors 'none'`, so the console
//   runs no inline script or style and cannot be framed. HEAD answers the headers only.
// The query string is ignored. Thread-safe.
HttpResponse serveConsole(const HttpRequest& request, const ErrorResponder& error);

}  // namespace iothub::console
