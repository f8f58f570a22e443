// Replays a fuzz target's seed corpus without libFuzzer: every file named on the command
// line, or found in a directory named there, is passed to LLVMFuzzerTestOneInput once.
//
// A corpus that is not there must fail the test rather than pass vacuously: a named path
// that does not exist, a directory without a single regular file, or a file that cannot
// be read is an error (exit status 2) naming the path. Files run in sorted order so a
// failure reproduces the same way on every machine.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <system_error>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);

namespace {

namespace fs = std::filesystem;

constexpr int kUsageError = 2;

// Appends the regular files of `dir` (recursively) to `files`; false when there are none.
bool collectDirectory(const fs::path& dir, std::vector<fs::path>& files) {
  std::error_code ec;
  std::vector<fs::path> found;
  for (fs::recursive_directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    if (it->is_regular_file(ec)) found.push_back(it->path());
  }
  if (ec) {
    std::fprintf(stderr, "replay: cannot list %s: %s\n", dir.c_str(), ec.message().c_str());
    return false;
  }
  if (found.empty()) {
    std::fprintf(stderr, "replay: corpus directory %s holds no files\n", dir.c_str());
    return false;
  }
  std::sort(found.begin(), found.end());
  files.insert(files.end(), found.begin(), found.end());
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s CORPUS_DIR_OR_FILE...\n", argv[0]);
    return kUsageError;
  }
  std::vector<fs::path> files;
  for (int i = 1; i < argc; ++i) {
    fs::path p = argv[i];
    std::error_code ec;
    fs::file_status status = fs::status(p, ec);
    if (status.type() == fs::file_type::not_found) {
      std::fprintf(stderr, "replay: corpus path %s does not exist\n", p.c_str());
      return kUsageError;
    }
    if (ec) {
      std::fprintf(stderr, "replay: cannot stat %s: %s\n", p.c_str(), ec.message().c_str());
      return kUsageError;
    }
    if (fs::is_directory(status)) {
      if (!collectDirectory(p, files)) return kUsageError;
    } else {
      files.push_back(p);
    }
  }
  for (const auto& file : files) {
    std::ifstream in(file, std::ios::binary);
    if (!in) {
      std::fprintf(stderr, "replay: cannot read %s\n", file.c_str());
      return kUsageError;
    }
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::fprintf(stderr, "replay: %s (%zu bytes)\n", file.c_str(), bytes.size());
    LLVMFuzzerTestOneInput(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size());
  }
  std::printf("replay: %zu inputs ran cleanly\n", files.size());
  return 0;
}
