#include "console/console_assets.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace iothub::console {
namespace {

// Stands in for service_api::errorResponse: the status code and the failure's name.
HttpResponse fakeError(const Status& status) {
  HttpResponse response;
  response.status = errorInfo(status.code()).http_status;
  response.headers.set("Content-Type", "application/json; charset=utf-8");
  response.body = std::string(R"({"Message":"ErrorCode:)") +
                  std::string(errorInfo(status.code()).name) + ";" + status.message() + R"("})";
  return response;
}

HttpResponse get(std::string target, std::string method = "GET") {
  HttpRequest request;
  request.method = std::move(method);
  request.target = std::move(target);
  return serveConsole(request, fakeError);
}

std::string header(const HttpResponse& response, std::string_view name) {
  const std::string* value = response.headers.find(name);
  return value ? *value : "";
}

TEST(ConsoleAssetsTest, EmbedsTheFilesOfTheConsoleDirectory) {
  bool has_index = false;
  for (const auto& asset : embeddedAssets()) {
    EXPECT_FALSE(asset.content.empty()) << asset.path;
    if (asset.path == "index.html") {
      has_index = true;
      EXPECT_NE(asset.content.find("<!doctype html>"), std::string_view::npos);
    }
  }
  EXPECT_TRUE(has_index);
}

TEST(ConsoleAssetsTest, EmbedsEveryFileOfTheDirectoryAsItIs) {
  const std::filesystem::path root = IOTHUB_CONSOLE_DIR;
  std::vector<std::string> on_disk;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(root)) {
    const std::string name = entry.path().filename().string();
    // Editors' swap and backup files are not the console's.
    const bool scratch = name.starts_with('.') || name.ends_with('~') || name.ends_with(".swp");
    if (entry.is_regular_file() && !scratch) {
      on_disk.push_back(entry.path().lexically_relative(root).generic_string());
    }
  }
  std::vector<std::string> embedded;
  for (const auto& asset : embeddedAssets()) {
    embedded.emplace_back(asset.path);
    std::ifstream file(root / asset.path, std::ios::binary);
    std::stringstream bytes;
    bytes << file.rdbuf();
    EXPECT_EQ(bytes.str(), asset.content) << asset.path << " differs from its file";
  }
  std::sort(on_disk.begin(), on_disk.end());
  std::sort(embedded.begin(), embedded.end());
  EXPECT_EQ(embedded, on_disk) << "list every file of console/ in src/console/CMakeLists.txt";
}

TEST(ConsoleAssetsTest, RedirectsTheBarePrefixToTheDirectory) {
  HttpResponse response = get("/ui");
  EXPECT_EQ(response.status, 308);
  EXPECT_EQ(header(response, "Location"), "/ui/");
  EXPECT_EQ(header(get("/ui?a=b"), "Location"), "/ui/?a=b");
}

TEST(ConsoleAssetsTest, ServesIndexForTheDirectoryWithItsHeaders) {
  HttpResponse response = get("/ui/");
  ASSERT_EQ(response.status, 200);
  EXPECT_EQ(header(response, "Content-Type"), "text/html; charset=utf-8");
  EXPECT_EQ(header(response, "Cache-Control"), "no-cache");
  EXPECT_EQ(header(response, "X-Content-Type-Options"), "nosniff");
  EXPECT_EQ(header(response, "Content-Security-Policy"),
            "default-src 'self'; frame-ancestors 'none'");
  EXPECT_FALSE(header(response, "ETag").empty());
  EXPECT_EQ(response.body, get("/ui/index.html").body);
}

TEST(ConsoleAssetsTest, LabelsFilesByExtension) {
  EXPECT_EQ(header(get("/ui/app.js"), "Content-Type"), "text/javascript; charset=utf-8");
  EXPECT_EQ(header(get("/ui/pages/devices.js"), "Content-Type"), "text/javascript; charset=utf-8");
  EXPECT_EQ(header(get("/ui/app.css"), "Content-Type"), "text/css; charset=utf-8");
  EXPECT_EQ(header(get("/ui/favicon.svg"), "Content-Type"), "image/svg+xml");
}

TEST(ConsoleAssetsTest, EveryFileHasItsOwnEtagAndIfNoneMatchAnswers304) {
  HttpResponse first = get("/ui/app.js");
  HttpResponse other = get("/ui/app.css");
  ASSERT_EQ(first.status, 200);
  EXPECT_NE(header(first, "ETag"), header(other, "ETag"));
  EXPECT_EQ(header(first, "ETag"), header(get("/ui/app.js"), "ETag"));

  HttpRequest request;
  request.method = "GET";
  request.target = "/ui/app.js";
  request.headers.set("If-None-Match", "\"0000000000000000\", " + header(first, "ETag"));
  HttpResponse cached = serveConsole(request, fakeError);
  EXPECT_EQ(cached.status, 304);
  EXPECT_TRUE(cached.body.empty());
  EXPECT_EQ(header(cached, "ETag"), header(first, "ETag"));

  request.headers.set("If-None-Match", "W/" + header(first, "ETag"));
  EXPECT_EQ(serveConsole(request, fakeError).status, 304);
  request.headers.set("If-None-Match", header(other, "ETag"));
  EXPECT_EQ(serveConsole(request, fakeError).status, 200);
}

TEST(ConsoleAssetsTest, HeadAnswersHeadersWithoutBody) {
  HttpResponse response = get("/ui/app.js", "HEAD");
  EXPECT_EQ(response.status, 200);
  EXPECT_TRUE(response.body.empty());
  EXPECT_EQ(header(response, "Content-Type"), "text/javascript; charset=utf-8");
}

TEST(ConsoleAssetsTest, UnknownFilesAre404InTheHubsErrorShape) {
  for (const char* target :
       {"/ui/nope.js", "/ui/../service_api", "/ui/pages/", "/ui/index.html/"}) {
    HttpResponse response = get(target);
    EXPECT_EQ(response.status, 404) << target;
    EXPECT_NE(response.body.find("ErrorCode:NotFound"), std::string::npos) << target;
  }
}

TEST(ConsoleAssetsTest, OtherMethodsAre405WithAllow) {
  for (const char* method : {"POST", "PUT", "DELETE", "PATCH", "OPTIONS"}) {
    HttpResponse response = get("/ui/", method);
    EXPECT_EQ(response.status, 405) << method;
    EXPECT_EQ(header(response, "Allow"), "GET, HEAD") << method;
  }
}

}  // namespace
}  // namespace iothub::console
