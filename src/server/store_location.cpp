#include "server/store_location.hpp"

#include <unistd.h>

#include <cctype>

#include "store/postgresql/pg_store.hpp"
#include "store/sqlite/sqlite_store.hpp"

namespace iothub::server {
namespace {

bool startsWith(std::string_view text, std::string_view prefix) {
  return text.substr(0, prefix.size()) == prefix;
}

bool isUri(std::string_view text) {
  return startsWith(text, "postgresql://") || startsWith(text, "postgres://");
}

// key=value form: the first non-space word is an identifier directly followed by '='.
bool isKeyValue(std::string_view text) {
  std::size_t i = 0;
  while (i < text.size() && std::isspace(static_cast<unsigned char>(text[i]))) ++i;
  const std::size_t start = i;
  while (i < text.size() && (std::isalnum(static_cast<unsigned char>(text[i])) || text[i] == '_'))
    ++i;
  return i > start && i < text.size() && text[i] == '=';
}

// Replaces the value after each "password=" (case-insensitive) up to the next `stop`
// character; a quoted key=value value ('...' with \' escapes) is replaced whole.
std::string redactParameter(std::string text, std::string_view stops) {
  std::string lower = text;
  for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  std::size_t from = 0;
  for (;;) {
    const std::size_t at = lower.find("password", from);
    if (at == std::string::npos) return text;
    std::size_t i = at + 8;
    while (i < text.size() && text[i] == ' ') ++i;
    const bool preceded_ok = at == 0 || !std::isalnum(static_cast<unsigned char>(text[at - 1]));
    if (!preceded_ok || i >= text.size() || text[i] != '=') {
      from = at + 8;
      continue;
    }
    ++i;
    while (i < text.size() && text[i] == ' ') ++i;
    std::size_t end = i;
    if (end < text.size() && text[end] == '\'') {
      ++end;
      while (end < text.size() && text[end] != '\'') end += text[end] == '\\' ? 2 : 1;
      end = std::min(end + 1, text.size());
    } else {
      while (end < text.size() && stops.find(text[end]) == std::string_view::npos) ++end;
    }
    text.replace(i, end - i, "***");
    lower.replace(i, end - i, "***");
    from = i + 3;
  }
}

// scheme://...: any URI, so that a wrong scheme given by mistake is redacted too.
bool hasScheme(std::string_view text) {
  const std::size_t colon = text.find("://");
  if (colon == std::string_view::npos || colon == 0) return false;
  for (char c : text.substr(0, colon)) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '+' && c != '-' && c != '.')
      return false;
  }
  return true;
}

}  // namespace

std::string redactConninfo(std::string_view conninfo) {
  std::string text(conninfo);
  if (!hasScheme(text)) return redactParameter(std::move(text), " \t\n");
  // postgresql://[user[:password]@]host...: the userinfo ends at the last '@' before the path.
  const std::size_t authority = text.find("://") + 3;
  std::size_t path = text.find_first_of("/?", authority);
  if (path == std::string::npos) path = text.size();
  const std::size_t at = text.rfind('@', path);
  if (at != std::string::npos && at >= authority) {
    const std::size_t colon = text.find(':', authority);
    if (colon != std::string::npos && colon < at) text.replace(colon + 1, at - colon - 1, "***");
  }
  return redactParameter(std::move(text), "&#");
}

Result<StoreLocation> parseStoreLocation(std::string_view store,
                                         const std::filesystem::path& data_dir) {
  StoreLocation location;
  if (store.empty()) {
    location.kind = StoreLocation::Kind::Sqlite;
    location.sqlite_file = data_dir / "iothub.db";
    location.description = "SQLite " + location.sqlite_file.string();
    return location;
  }
  if (isUri(store) || isKeyValue(store)) {
    location.kind = StoreLocation::Kind::Postgres;
    location.conninfo = std::string(store);
    location.description = "PostgreSQL " + redactConninfo(store);
    return location;
  }
  return Status(ErrorCode::ArgumentInvalid,
                "--store must be a PostgreSQL connection string (postgresql://user@host/db or "
                "host=... dbname=...), or absent for the embedded SQLite store; got '" +
                    redactConninfo(store) + "'");
}

Result<std::unique_ptr<store::Store>> openStore(const StoreLocation& location) {
  auto prefixed = [&](const Status& s) {
    return Status(s.code(), "cannot open the store (" + location.description + "): " + s.message());
  };
  if (location.kind == StoreLocation::Kind::Sqlite) {
    auto store = store::SqliteStore::open(location.sqlite_file, store::SqliteOptions{});
    if (!store) return prefixed(store.status());
    return std::unique_ptr<store::Store>(std::move(*store));
  }
  auto store = store::PostgresStore::open(location.conninfo, store::PostgresOptions{});
  if (!store) return prefixed(store.status());
  return std::unique_ptr<store::Store>(std::move(*store));
}

Result<std::unique_ptr<store::PgSessionLock>> lockSingleNode(const StoreLocation& location,
                                                             std::function<void(Status)> lost) {
  char host[256] = {};
  if (::gethostname(host, sizeof host - 1) != 0) host[0] = '\0';
  const std::string holder =
      "iothubd (single node) on " + std::string(host) + " pid " + std::to_string(::getpid());
  store::PgConnectSettings settings;
  settings.conninfo = location.conninfo;
  auto lock =
      store::PgSessionLock::acquire(settings, store::kPgSingleNodeLockKey, holder, std::move(lost));
  if (lock.code() == ErrorCode::InvalidOperation) {
    return Status(ErrorCode::InvalidOperation,
                  lock.status().message() + " (" + location.description +
                      "): two single-node hubs on one database would both run every job; "
                      "stop the other one first");
  }
  return lock;
}

std::int64_t nodeLockKey(std::string_view node_id) {
  std::uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : std::string("iothub-node:") + std::string(node_id)) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  return static_cast<std::int64_t>(h);
}

Result<std::vector<std::unique_ptr<store::PgSessionLock>>> lockClusterNode(
    const StoreLocation& location, const std::string& node_id, std::function<void(Status)> lost) {
  char host[256] = {};
  if (::gethostname(host, sizeof host - 1) != 0) host[0] = '\0';
  const std::string holder =
      "iothubd node " + node_id + " on " + std::string(host) + " pid " + std::to_string(::getpid());
  store::PgConnectSettings settings;
  settings.conninfo = location.conninfo;
  std::vector<std::unique_ptr<store::PgSessionLock>> locks;
  store::PgSessionLock::Options shared;
  shared.shared = true;
  shared.name = "the cluster's share of the single-node lock";
  auto cluster =
      store::PgSessionLock::acquire(settings, store::kPgSingleNodeLockKey, holder, lost, shared);
  if (cluster.code() == ErrorCode::InvalidOperation) {
    return Status(ErrorCode::InvalidOperation,
                  cluster.status().message() + " (" + location.description +
                      "): a single-node hub runs on this database; a cluster node cannot join it");
  }
  if (!cluster) return cluster.status();
  locks.push_back(std::move(*cluster));
  store::PgSessionLock::Options mine;
  mine.name = "the lock of node " + node_id;
  auto node = store::PgSessionLock::acquire(settings, nodeLockKey(node_id), holder, lost, mine);
  if (node.code() == ErrorCode::InvalidOperation) {
    return Status(ErrorCode::InvalidOperation, "node id '" + node_id +
                                                   "' is taken: " + node.status().message() +
                                                   "; give every node its own --node-id");
  }
  if (!node) return node.status();
  locks.push_back(std::move(*node));
  return locks;
}

}  // namespace iothub::server
