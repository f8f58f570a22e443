#pragma once

#include <cstddef>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "common/status.hpp"

struct sqlite3;
struct sqlite3_stmt;

namespace iothub::bench {

// A result set as text, row by row (SQL NULL becomes "").
using SqlRows = std::vector<std::vector<std::string>>;

// Produces row `i` of a bulk load: the device id and the twin's JSON text.
using RowSource = std::function<std::pair<std::string, std::string>(std::size_t i)>;

// The SQL engines the twin index is compared with. Each holds one table
//   twins(device_id TEXT PRIMARY KEY, twin <JSON>)
// with the same service-view JSON the index keeps. Not thread-safe.
class SqlEngine {
 public:
  virtual ~SqlEngine() = default;
  // Creates the table (dropping an old one) and inserts rows 0..count-1 of `source`.
  virtual Status load(std::size_t count, const RowSource& source) = 0;
  // Runs a statement without results (DDL, ANALYZE).
  virtual Status execute(const std::string& sql) = 0;
  // Runs a query; statements are prepared once per distinct text and reused.
  virtual Result<SqlRows> query(const std::string& sql) = 0;
  // Bytes the table and its indexes take.
  virtual Result<std::int64_t> tableBytes() = 0;
};

// SQLite (JSON as TEXT, queried with json_extract) in the file `path`, which it creates.
// The load runs without journal or fsync; queries read through a memory map of the whole
// file, so they measure JSON evaluation rather than disk I/O.
class SqliteEngine final : public SqlEngine {
 public:
  static Result<std::unique_ptr<SqliteEngine>> open(const std::filesystem::path& path);
  ~SqliteEngine() override;

  Status load(std::size_t count, const RowSource& source) override;
  Status execute(const std::string& sql) override;
  Result<SqlRows> query(const std::string& sql) override;
  Result<std::int64_t> tableBytes() override;

 private:
  explicit SqliteEngine(sqlite3* db, std::filesystem::path path)
      : db_(db), path_(std::move(path)) {}
  Status error(const std::string& what) const;

  sqlite3* db_;
  std::filesystem::path path_;
  std::map<std::string, sqlite3_stmt*> statements_;
};

// PostgreSQL (JSONB) through libpq, on a connection that runs every query with at most
// `parallel_workers` parallel workers (max_parallel_workers_per_gather). Errors:
// ServiceUnavailable with libpq's message when the server cannot be reached or the benchmark
// was built without libpq.
Result<std::unique_ptr<SqlEngine>> connectPostgres(const std::string& conninfo,
                                                   int parallel_workers);

// Whether this build has libpq.
bool postgresCompiledIn();

}  // namespace iothub::bench
