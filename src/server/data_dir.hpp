#pragma once

#include <cstdint>
#include <filesystem>

#include "common/status.hpp"

namespace iothub::server {

// The data directory of a running hub, held exclusively: a second iothubd on the same
// directory (which would run the jobs engine twice and fight over the store) is refused.
// The lock is an flock(2) on DIR/iothubd.lock, released by the kernel when the process
// exits however it exits, so a kill -9 never leaves a stale lock. Move-only.
class DataDirLock {
 public:
  // Takes the lock on the existing directory `dir` without waiting. Errors:
  // ServiceUnavailable naming the directory, with the pid of the holder when known.
  static Result<DataDirLock> acquire(const std::filesystem::path& dir);
  DataDirLock(DataDirLock&& other) noexcept;
  DataDirLock& operator=(DataDirLock&& other) noexcept;
  DataDirLock(const DataDirLock&) = delete;
  DataDirLock& operator=(const DataDirLock&) = delete;
  ~DataDirLock();

 private:
  explicit DataDirLock(int fd) : fd_(fd) {}
  int fd_ = -1;
};

// The data directory holds every key of the hub in plain text: sets the process umask to
// 077 so that everything created from now on (the directory itself when missing, SQLite's
// database, WAL and shared-memory files, certificates) is private, then narrows what exists:
// `dir` and directories below it to 0700, files to 0600. Returns how many existing entries
// had wider permissions. Errors: ServiceUnavailable when a
// permission cannot be changed.
Result<std::size_t> makePrivate(const std::filesystem::path& dir);

// Raises the soft limit of open files (RLIMIT_NOFILE) to the hard limit, as servers do:
// the default soft limit of 1024 is far below what a hub with thousands of connections needs.
struct FileLimit {
  std::uint64_t soft_before = 0;
  std::uint64_t soft = 0;  // in force now
  std::uint64_t hard = 0;
};
FileLimit raiseOpenFileLimit();

// The default --max-connections for a soft file limit: what remains after `kReservedFds`
// for the store, listeners, logs and the runtime (at least half the limit on tiny limits).
inline constexpr std::uint64_t kReservedFds = 256;
std::size_t defaultMaxConnections(std::uint64_t soft_file_limit);

}  // namespace iothub::server
