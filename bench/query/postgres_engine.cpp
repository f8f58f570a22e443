#include "sql_engine.hpp"

#if IOTHUB_BENCH_HAVE_LIBPQ
#include <libpq-fe.h>
#endif

namespace iothub::bench {

#if IOTHUB_BENCH_HAVE_LIBPQ
namespace {

class PostgresEngine final : public SqlEngine {
 public:
  explicit PostgresEngine(PGconn* connection) : connection_(connection) {}
  ~PostgresEngine() override { PQfinish(connection_); }

  Status load(std::size_t count, const RowSource& source) override {
    IOTHUB_RETURN_IF_ERROR(
        execute("DROP TABLE IF EXISTS twins; CREATE TABLE twins(device_id TEXT PRIMARY KEY, twin "
                "JSONB NOT NULL)"));
    PGresult* started = PQexec(connection_, "COPY twins(device_id, twin) FROM STDIN");
    bool copying = PQresultStatus(started) == PGRES_COPY_IN;
    PQclear(started);
    if (!copying) return error("COPY");
    std::string buffer;
    for (std::size_t i = 0; i < count; ++i) {
      auto [id, twin] = source(i);
      appendCopyField(buffer, id);
      buffer.push_back('\t');
      appendCopyField(buffer, twin);
      buffer.push_back('\n');
      if (buffer.size() >= (1u << 20) || i + 1 == count) {
        if (PQputCopyData(connection_, buffer.data(), static_cast<int>(buffer.size())) != 1) {
          return error("COPY data");
        }
        buffer.clear();
      }
    }
    if (PQputCopyEnd(connection_, nullptr) != 1) return error("COPY end");
    for (PGresult* result = PQgetResult(connection_); result != nullptr;
         result = PQgetResult(connection_)) {
      bool ok = PQresultStatus(result) == PGRES_COMMAND_OK;
      std::string message = PQresultErrorMessage(result);
      PQclear(result);
      if (!ok) return Status(ErrorCode::ServerError, "postgres: COPY: " + message);
    }
    // Sets hint bits and the visibility map, so the first timed scan does not write.
    return execute("VACUUM (FREEZE, ANALYZE) twins");
  }

  Status execute(const std::string& sql) override {
    PGresult* result = PQexec(connection_, sql.c_str());
    ExecStatusType status = PQresultStatus(result);
    std::string message = PQresultErrorMessage(result);
    PQclear(result);
    if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) {
      return Status(ErrorCode::ServerError, "postgres: " + sql + ": " + message);
    }
    return Status::ok();
  }

  Result<SqlRows> query(const std::string& sql) override {
    auto [it, inserted] = statements_.try_emplace(sql, "q" + std::to_string(statements_.size()));
    if (inserted) {
      PGresult* prepared = PQprepare(connection_, it->second.c_str(), sql.c_str(), 0, nullptr);
      bool ok = PQresultStatus(prepared) == PGRES_COMMAND_OK;
      std::string message = PQresultErrorMessage(prepared);
      PQclear(prepared);
      if (!ok) {
        statements_.erase(it);
        return Status(ErrorCode::ServerError, "postgres: prepare " + sql + ": " + message);
      }
    }
    PGresult* result =
        PQexecPrepared(connection_, it->second.c_str(), 0, nullptr, nullptr, nullptr, 0);
    if (PQresultStatus(result) != PGRES_TUPLES_OK) {
      std::string message = PQresultErrorMessage(result);
      PQclear(result);
      return Status(ErrorCode::ServerError, "postgres: " + sql + ": " + message);
    }
    SqlRows rows(static_cast<std::size_t>(PQntuples(result)));
    int columns = PQnfields(result);
    for (std::size_t r = 0; r < rows.size(); ++r) {
      rows[r].reserve(columns);
      for (int c = 0; c < columns; ++c) {
        int row = static_cast<int>(r);
        rows[r].emplace_back(PQgetvalue(result, row, c),
                             static_cast<std::size_t>(PQgetlength(result, row, c)));
      }
    }
    PQclear(result);
    return rows;
  }

  Result<std::int64_t> tableBytes() override {
    auto rows = query("SELECT pg_total_relation_size('twins')");
    if (!rows) return rows.status();
    return std::stoll(rows->at(0).at(0));
  }

 private:
  // COPY's text format: backslash, tab, newline and carriage return are escaped.
  static void appendCopyField(std::string& out, const std::string& field) {
    for (char c : field) {
      switch (c) {
        case '\\':
          out += "\\\\";
          break;
        case '\t':
          out += "\\t";
          break;
        case '\n':
          out += "\\n";
          break;
        case '\r':
          out += "\\r";
          break;
        default:
          out.push_back(c);
      }
    }
  }

  Status error(const std::string& what) const {
    return Status(ErrorCode::ServerError, "postgres: " + what + ": " + PQerrorMessage(connection_));
  }

  PGconn* connection_;
  std::map<std::string, std::string> statements_;  // SQL text -> prepared statement name
};

}  // namespace

bool postgresCompiledIn() { return true; }

Result<std::unique_ptr<SqlEngine>> connectPostgres(const std::string& conninfo,
                                                   int parallel_workers) {
  PGconn* connection = PQconnectdb(conninfo.c_str());
  if (PQstatus(connection) != CONNECTION_OK) {
    std::string message = PQerrorMessage(connection);
    PQfinish(connection);
    while (!message.empty() && (message.back() == '\n' || message.back() == ' '))
      message.pop_back();
    return Status(ErrorCode::ServiceUnavailable, message);
  }
  auto engine = std::make_unique<PostgresEngine>(connection);
  IOTHUB_RETURN_IF_ERROR(
      engine->execute("SET max_parallel_workers_per_gather = " + std::to_string(parallel_workers)));
  return std::unique_ptr<SqlEngine>(std::move(engine));
}

#else

bool postgresCompiledIn() { return false; }

Result<std::unique_ptr<SqlEngine>> connectPostgres(const std::string&, int) {
  return Status(ErrorCode::ServiceUnavailable, "built without libpq");
}

#endif

}  // namespace iothub::bench
