#include "store/postgresql/pg_session_lock.hpp"

#include <spdlog/spdlog.h>

#include <optional>

namespace iothub::store {

Result<std::unique_ptr<PgConnection>> PgSessionLock::tryLock(const PgConnectSettings& settings,
                                                             std::int64_t key,
                                                             const std::string& holder,
                                                             bool shared) {
  auto connection = PgConnection::connect(settings);
  if (!connection) return connection.status();
  PgConnection& c = **connection;
  auto named = c.query("SELECT set_config('application_name', $1, false)", PgParams().add(holder));
  if (!named) return named.status();
  auto locked =
      c.query(shared ? "SELECT pg_try_advisory_lock_shared($1)" : "SELECT pg_try_advisory_lock($1)",
              PgParams().add(key));
  if (!locked) return locked.status();
  if (locked->rows() == 1 && locked->row(0).flag(0)) return std::move(*connection);
  // Name the holder: the session that holds this advisory lock.
  std::string who = "another session";
  auto holder_row = c.query(
      "SELECT coalesce(nullif(a.application_name, ''), 'pid ' || a.pid::text) || "
      "coalesce(' from ' || host(a.client_addr), '') FROM pg_locks l JOIN pg_stat_activity a "
      "ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted AND "
      "((l.classid::bigint << 32) | l.objid::bigint) = $1 LIMIT 1",
      PgParams().add(key));
  if (holder_row && holder_row->rows() == 1) who = holder_row->row(0).text(0);
  return Status(ErrorCode::InvalidOperation, "the database is in use by " + who);
}

Result<std::unique_ptr<PgSessionLock>> PgSessionLock::acquire(const PgConnectSettings& settings,
                                                              std::int64_t key, std::string holder,
                                                              std::function<void(Status)> lost,
                                                              Options options) {
  auto connection = tryLock(settings, key, holder, options.shared);
  if (!connection) return connection.status();
  return std::unique_ptr<PgSessionLock>(new PgSessionLock(
      settings, key, std::move(holder), std::move(lost), options, std::move(*connection)));
}

PgSessionLock::PgSessionLock(PgConnectSettings settings, std::int64_t key, std::string holder,
                             std::function<void(Status)> lost, Options options,
                             std::unique_ptr<PgConnection> connection)
    : settings_(std::move(settings)),
      key_(key),
      holder_(std::move(holder)),
      lost_(std::move(lost)),
      options_(options),
      connection_(std::move(connection)) {
  thread_ = std::thread([this] { watch(); });
}

PgSessionLock::~PgSessionLock() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  thread_.join();
  if (connection_ && !connection_->broken())
    (void)connection_->query(
        options_.shared ? "SELECT pg_advisory_unlock_shared($1)" : "SELECT pg_advisory_unlock($1)",
        PgParams().add(key_));
}

void PgSessionLock::watch() {
  // Set while the lock is not held: since when.
  std::optional<std::chrono::steady_clock::time_point> lost_since;
  for (;;) {
    {
      std::unique_lock lock(mutex_);
      if (wake_.wait_for(lock, options_.check_every, [this] { return stopping_; })) return;
    }
    if (!lost_since) {
      auto alive = connection_->query("SELECT 1");
      if (alive) continue;
      spdlog::warn("store: the connection holding {} failed ({}); taking the lock again",
                   options_.name, alive.status().toString());
      connection_.reset();
      lost_since = std::chrono::steady_clock::now();
    }
    auto again = tryLock(settings_, key_, holder_, options_.shared);
    if (again) {
      connection_ = std::move(*again);
      lost_since.reset();
      spdlog::info("store: {} taken again", options_.name);
      continue;
    }
    // Someone else holds it now: that is final. Otherwise keep trying for a while.
    if (again.code() == ErrorCode::InvalidOperation ||
        std::chrono::steady_clock::now() - *lost_since >= options_.regain_within) {
      if (lost_) lost_(again.status());
      return;
    }
  }
}

}  // namespace iothub::store
