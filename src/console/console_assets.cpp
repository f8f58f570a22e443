#include "console/console_assets.hpp"

#include <array>
#include <string>
#include <vector>

#include "common/encoding.hpp"

namespace iothub::console {
namespace {

constexpr std::string_view kPrefix = "/ui";
constexpr std::string_view kContentSecurityPolicy = "default-src 'self'; frame-ancestors 'none'";

struct ContentType {
  std::string_view extension;
  std::string_view type;
};
constexpr std::array<ContentType, 9> kContentTypes{{
    {".html", "text/html; charset=utf-8"},
    {".js", "text/javascript; charset=utf-8"},
    {".css", "text/css; charset=utf-8"},
    {".svg", "image/svg+xml"},
    {".json", "application/json; charset=utf-8"},
    {".png", "image/png"},
    {".ico", "image/x-icon"},
    {".txt", "text/plain; charset=utf-8"},
    {".woff2", "font/woff2"},
}};

std::string_view contentType(std::string_view path) {
  for (const auto& [extension, type] : kContentTypes) {
    if (path.ends_with(extension)) return type;
  }
  return "application/octet-stream";
}

// The ETag only has to change when the bytes do.
std::string etagOf(std::string_view content) { return "\"" + fnv1aHex(content) + "\""; }

struct ServedAsset {
  const EmbeddedAsset* asset;
  std::string etag;
};

// Computed once: the files never change while the process runs.
const std::vector<ServedAsset>& servedAssets() {
  static const std::vector<ServedAsset> served = [] {
    std::vector<ServedAsset> all;
    for (const auto& asset : embeddedAssets()) all.push_back({&asset, etagOf(asset.content)});
    return all;
  }();
  return served;
}

std::string_view pathOf(std::string_view target) {
  return target.substr(0, target.find_first_of("?#"));
}

// True when one entity tag of an If-None-Match list (or `*`) is `etag`; weak tags compare
// by their opaque part (RFC 9110 §13.1.2 uses the weak comparison).
bool noneMatchHits(std::string_view header, std::string_view etag) {
  while (!header.empty()) {
    std::size_t comma = header.find(',');
    std::string_view tag = header.substr(0, comma);
    header = comma == std::string_view::npos ? std::string_view{} : header.substr(comma + 1);
    while (!tag.empty() && (tag.front() == ' ' || tag.front() == '\t')) tag.remove_prefix(1);
    while (!tag.empty() && (tag.back() == ' ' || tag.back() == '\t')) tag.remove_suffix(1);
    if (tag.starts_with("W/")) tag.remove_prefix(2);
    if (tag == "*" || tag == etag) return true;
  }
  return false;
}

void addSecurityHeaders(HttpResponse& response) {
  response.headers.set("Cache-Control", "no-cache");
  response.headers.set("X-Content-Type-Options", "nosniff");
  response.headers.set("Content-Security-Policy", std::string(kContentSecurityPolicy));
  response.headers.set("Referrer-Policy", "no-referrer");
}

}  // namespace

HttpResponse serveConsole(const HttpRequest& request, const ErrorResponder& error) {
  if (request.method != "GET" && request.method != "HEAD") {
    HttpResponse response =
        error(Status(ErrorCode::MethodNotAllowed, "The web console answers GET and HEAD only"));
    response.headers.set("Allow", "GET, HEAD");
    return response;
  }
  std::string_view path = pathOf(request.target);
  if (path == kPrefix) {
    HttpResponse response;
    response.status = 308;
    std::string location = "/ui/";
    if (std::size_t query = request.target.find('?'); query != std::string::npos) {
      location += request.target.substr(query);
    }
    response.headers.set("Location", location);
    addSecurityHeaders(response);
    return response;
  }
  std::string_view file = path.substr(kPrefix.size() + 1);  // after "/ui/"
  if (file.empty()) file = "index.html";
  for (const auto& served : servedAssets()) {
    if (served.asset->path != file) continue;
    HttpResponse response;
    response.headers.set("ETag", served.etag);
    addSecurityHeaders(response);
    const std::string* if_none_match = request.headers.find("If-None-Match");
    if (if_none_match && noneMatchHits(*if_none_match, served.etag)) {
      response.status = 304;
      return response;
    }
    response.headers.set("Content-Type", std::string(contentType(file)));
    if (request.method == "GET") response.body.assign(served.asset->content);
    return response;
  }
  return error(Status(ErrorCode::NotFound, "The web console has no file " + std::string(path)));
}

}  // namespace iothub::console
