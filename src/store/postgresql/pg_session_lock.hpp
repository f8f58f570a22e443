#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "common/status.hpp"
#include "store/postgresql/pg_connection.hpp"

namespace iothub::store {

// The advisory-lock key of a single node on PostgreSQL: an iothubd that runs on a database
// without cluster coordination holds it, so that a second one (which would run every job
// a second time) refuses to start.
inline constexpr std::int64_t kPgSingleNodeLockKey = 0x696f746875620002;  // "iothub" 0x0002

// A session-level advisory lock held on a connection of its own for the object's life.
// A thread checks the connection every `check_every`; when the connection is lost (the
// server restarted, a network cut), the lock went with it: the thread reconnects and takes
// the lock again, and calls `lost` if another session took it meanwhile (or it cannot get
// it back within `regain_within`).
class PgSessionLock {
 public:
  struct Options {
    std::chrono::milliseconds check_every{2000};
    std::chrono::milliseconds regain_within{30000};
    // A shared lock (pg_advisory_lock_shared): any number of shared holders, no exclusive
    // one. Cluster nodes share the single-node key, so a single node and a cluster never
    // run on one database together.
    bool shared = false;
    // What the lock is, for the log.
    std::string name = "the single-node lock";
  };

  // `holder` names this process in pg_stat_activity.application_name (and so in the error
  // another process gets). Errors: InvalidOperation naming the holder when another session
  // holds the lock; the connection's errors otherwise.
  static Result<std::unique_ptr<PgSessionLock>> acquire(const PgConnectSettings& settings,
                                                        std::int64_t key, std::string holder,
                                                        std::function<void(Status)> lost,
                                                        Options options);
  static Result<std::unique_ptr<PgSessionLock>> acquire(const PgConnectSettings& settings,
                                                        std::int64_t key, std::string holder,
                                                        std::function<void(Status)> lost) {
    return acquire(settings, key, std::move(holder), std::move(lost), Options{});
  }
  // Releases the lock (closing the connection releases it too).
  ~PgSessionLock();
  PgSessionLock(const PgSessionLock&) = delete;
  PgSessionLock& operator=(const PgSessionLock&) = delete;

 private:
  PgSessionLock(PgConnectSettings settings, std::int64_t key, std::string holder,
                std::function<void(Status)> lost, Options options,
                std::unique_ptr<PgConnection> connection);
  // Connects (with the holder as application_name) and tries the lock once.
  static Result<std::unique_ptr<PgConnection>> tryLock(const PgConnectSettings& settings,
                                                       std::int64_t key, const std::string& holder,
                                                       bool shared);
  void watch();

  const PgConnectSettings settings_;
  const std::int64_t key_;
  const std::string holder_;
  const std::function<void(Status)> lost_;
  const Options options_;
  std::unique_ptr<PgConnection> connection_;  // watch thread only, after construction
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;  // guarded by mutex_
  std::thread thread_;
};

}  // namespace iothub::store
