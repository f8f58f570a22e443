#include "server/data_dir.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <utility>

namespace iothub::server {
namespace fs = std::filesystem;

namespace {

constexpr const char* kLockFile = "iothubd.lock";

std::string errnoText() { return std::strerror(errno); }

// Narrows `path` to `mode` if any permission beyond it is set. True when it changed.
Result<bool> narrow(const fs::path& path, fs::perms mode) {
  std::error_code ec;
  auto status = fs::symlink_status(path, ec);
  if (ec)
    return Status(ErrorCode::ServiceUnavailable,
                  "cannot stat " + path.string() + ": " + ec.message());
  if (fs::is_symlink(status)) return false;  // links carry no permissions of their own
  if ((status.permissions() & ~mode) == fs::perms::none) return false;
  fs::permissions(path, status.permissions() & mode, fs::perm_options::replace, ec);
  if (ec) {
    return Status(ErrorCode::ServiceUnavailable,
                  "cannot restrict the permissions of " + path.string() + ": " + ec.message());
  }
  return true;
}

}  // namespace

Result<DataDirLock> DataDirLock::acquire(const fs::path& dir) {
  fs::path file = dir / kLockFile;
  int fd = ::open(file.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0)
    return Status(ErrorCode::ServiceUnavailable,
                  "cannot open " + file.string() + ": " + errnoText());
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    int error = errno;
    std::string holder;
    char buffer[32] = {};
    ssize_t n = ::pread(fd, buffer, sizeof buffer - 1, 0);
    if (n > 0) holder = std::string(buffer, static_cast<std::size_t>(n));
    while (!holder.empty() && (holder.back() == '\n' || holder.back() == ' ')) holder.pop_back();
    ::close(fd);
    if (error == EWOULDBLOCK) {
      return Status(ErrorCode::ServiceUnavailable,
                    "the data directory " + dir.string() + " is in use by another iothubd" +
                        (holder.empty() ? std::string() : " (pid " + holder + ")") +
                        "; one directory serves one hub process");
    }
    return Status(ErrorCode::ServiceUnavailable,
                  "cannot lock " + file.string() + ": " + std::strerror(error));
  }
  // The holder's pid, for the message above; informational only (the flock is the lock).
  std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, pid.data(), pid.size(), 0) < 0) {
    // Not fatal: the lock is held either way.
  }
  return DataDirLock(fd);
}

DataDirLock::DataDirLock(DataDirLock&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}

DataDirLock& DataDirLock::operator=(DataDirLock&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = std::exchange(other.fd_, -1);
  }
  return *this;
}

DataDirLock::~DataDirLock() {
  if (fd_ >= 0) ::close(fd_);  // releases the flock
}

Result<std::size_t> makePrivate(const fs::path& dir) {
  ::umask(077);
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) {
    return Status(ErrorCode::ServiceUnavailable,
                  "cannot create data directory " + dir.string() + ": " + ec.message());
  }
  std::size_t changed = 0;
  auto dir_changed = narrow(dir, fs::perms::owner_all);
  if (!dir_changed) return dir_changed.status();
  changed += *dir_changed ? 1 : 0;
  for (auto it = fs::recursive_directory_iterator(dir, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    const auto& entry = *it;
    bool is_dir = entry.is_directory(ec) && !entry.is_symlink(ec);
    auto done = narrow(entry.path(), is_dir ? fs::perms::owner_all
                                            : fs::perms::owner_read | fs::perms::owner_write);
    if (!done) return done.status();
    changed += *done ? 1 : 0;
  }
  if (ec) {
    return Status(ErrorCode::ServiceUnavailable,
                  "cannot list " + dir.string() + ": " + ec.message());
  }
  return changed;
}

FileLimit raiseOpenFileLimit() {
  FileLimit out;
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0) return out;
  out.soft_before = limit.rlim_cur;
  out.hard = limit.rlim_max;
  if (limit.rlim_cur < limit.rlim_max) {
    rlimit raised = limit;
    raised.rlim_cur = limit.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &raised) == 0) limit = raised;
  }
  out.soft = limit.rlim_cur;
  return out;
}

std::size_t defaultMaxConnections(std::uint64_t soft_file_limit) {
  if (soft_file_limit == RLIM_INFINITY) return 1'000'000;
  if (soft_file_limit < 2 * kReservedFds) return static_cast<std::size_t>(soft_file_limit / 2);
  return static_cast<std::size_t>(soft_file_limit - kReservedFds);
}

}  // namespace iothub::server
