// The query benchmark of issue 4 (docs/benchmarks.md): the in-memory TwinIndex against
// SQLite (json_extract over TEXT) and PostgreSQL (JSONB) on the same synthetic twins, the
// same predicates, in one process. Every engine's answer is cross-checked; a disagreement
// fails the run (exit 1), so a wrong index cannot produce a good-looking figure.
//
//   query_bench [--twins N] [--runs R] [--seed S] [--json] [--dir DIR]
//               [--postgres CONNINFO | --no-postgres] [--pg-parallel W]
//
// The human-readable table goes to stdout; with --json, one JSON object per measurement
// goes to stdout instead and the table to stderr. bench/query/run starts a throw-away
// PostgreSQL server and runs the full benchmark.

#include <malloc.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <sqlite3.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/json.hpp"
#include "index/query_runner.hpp"
#include "index/twin_index.hpp"
#include "query/query.hpp"
#include "sql_engine.hpp"
#include "synthetic_twins.hpp"
#include "twin/twin_json.hpp"

namespace iothub::bench {
namespace {

using Clock = std::chrono::steady_clock;

struct Options {
  std::size_t twins = 100000;
  int runs = 5;
  std::uint64_t seed = 42;
  bool json = false;
  std::optional<std::string> postgres;  // conninfo
  bool no_postgres = false;
  int pg_parallel = 0;
  std::optional<std::filesystem::path> dir;
};

[[noreturn]] void usage(const std::string& problem) {
  std::cerr << "query_bench: " << problem << "\n"
            << "usage: query_bench [--twins N] [--runs R] [--seed S] [--json] [--dir DIR]\n"
            << "                   [--postgres CONNINFO | --no-postgres] [--pg-parallel W]\n";
  std::exit(2);
}

Options parseOptions(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) usage(arg + " needs a value");
      return argv[++i];
    };
    auto number = [&](const std::string& text) -> std::uint64_t {
      try {
        std::size_t used = 0;
        std::uint64_t n = std::stoull(text, &used);
        if (used == text.size()) return n;
      } catch (const std::exception&) {
      }
      usage(arg + ": not a number: " + text);
    };
    if (arg == "--twins") {
      o.twins = number(next());
    } else if (arg == "--runs") {
      o.runs = static_cast<int>(number(next()));
    } else if (arg == "--seed") {
      o.seed = number(next());
    } else if (arg == "--json") {
      o.json = true;
    } else if (arg == "--postgres") {
      o.postgres = next();
    } else if (arg == "--no-postgres") {
      o.no_postgres = true;
    } else if (arg == "--pg-parallel") {
      o.pg_parallel = static_cast<int>(number(next()));
    } else if (arg == "--dir") {
      o.dir = next();
    } else {
      usage("unknown argument " + arg);
    }
  }
  if (o.twins < 10 || o.twins > 10000000) usage("--twins must be 10..10000000");
  if (o.runs < 1) usage("--runs must be at least 1");
  return o;
}

void progress(const std::string& text) { std::cerr << "[query_bench] " << text << std::endl; }

double msSince(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

// Process memory, for the index's cost per twin.
struct MemorySample {
  std::int64_t rss = 0;     // resident bytes (/proc/self/statm)
  std::int64_t malloc = 0;  // bytes handed out by malloc (arenas and mmapped chunks)
};

MemorySample sampleMemory() {
  MemorySample m;
  std::ifstream statm("/proc/self/statm");
  std::int64_t pages = 0;
  std::int64_t resident = 0;
  statm >> pages >> resident;
  m.rss = resident * sysconf(_SC_PAGESIZE);
  struct mallinfo2 info = mallinfo2();
  m.malloc = static_cast<std::int64_t>(info.uordblks + info.hblkhd);
  return m;
}

// The same question for every engine. `where` is query-language text (a condition, or a
// whole query for the aggregate); the SQL forms must select exactly the same rows.
struct Predicate {
  std::string name;
  std::string kind;  // what the predicate is meant to exercise, for the table
  std::string where;
  std::string sqlite_where;
  std::string postgres_where;
  bool group_by = false;            // GROUP BY tags.mode with COUNT(); the where fields are unused
  bool expression_indexed = false;  // phase 2 re-runs it with SQL expression indexes
};

std::vector<Predicate> predicates(std::size_t twins) {
  const std::string serial = syntheticSerial(twins / 3);
  std::vector<Predicate> p;
  p.push_back({"serial_eq", "selective tag equality (1 row)", "tags.serial = '" + serial + "'",
               "json_extract(twin, '$.tags.serial') = '" + serial + "'",
               "twin->'tags'->>'serial' = '" + serial + "'", false, true});
  p.push_back({"building_floor", "selective nested tags, AND (~0.1%)",
               "tags.location.building = 'b17' AND tags.location.floor = 3",
               "json_extract(twin, '$.tags.location.building') = 'b17' AND "
               "json_extract(twin, '$.tags.location.floor') = 3",
               "twin->'tags'->'location'->>'building' = 'b17' AND "
               "twin->'tags'->'location'->'floor' = '3'::jsonb",
               false, true});
  p.push_back({"temp_gt", "non-selective range, full scan (~40%)",
               "properties.reported.temp > 30.5",
               "json_extract(twin, '$.properties.reported.temp') > 30.5",
               "(twin->'properties'->'reported'->>'temp')::float8 > 30.5"});
  p.push_back({"customer_in", "IN on a tag (3 of 100 customers, ~3%)",
               "tags.customer IN ['cust-007', 'cust-042', 'cust-099']",
               "json_extract(twin, '$.tags.customer') IN ('cust-007', 'cust-042', 'cust-099')",
               "twin->'tags'->>'customer' IN ('cust-007', 'cust-042', 'cust-099')", false, true});
  p.push_back({"count_by_mode", "COUNT() GROUP BY tags.mode, full scan",
               "SELECT tags.mode, COUNT() AS n FROM devices GROUP BY tags.mode", "", "", true});
  p.push_back({"serial_range", "selective but not indexable (range), full scan",
               "tags.serial >= '" + serial + "' AND tags.serial <= '" + serial + "'",
               "json_extract(twin, '$.tags.serial') >= '" + serial +
                   "' AND json_extract(twin, '$.tags.serial') <= '" + serial + "'",
               "twin->'tags'->>'serial' >= '" + serial + "' AND twin->'tags'->>'serial' <= '" +
                   serial + "'",
               false, true});
  p.push_back({"online_low_battery", "low-selectivity equality (80%) AND range (~16%)",
               "properties.reported.online = true AND properties.reported.battery < 20",
               "json_type(twin, '$.properties.reported.online') = 'true' AND "
               "json_extract(twin, '$.properties.reported.battery') < 20",
               "twin->'properties'->'reported'->'online' = 'true'::jsonb AND "
               "(twin->'properties'->'reported'->>'battery')::float8 < 20"});
  return p;
}

// One way of answering a predicate. `run` returns a fingerprint of the answer: variants of
// the same `check` class must return identical fingerprints.
struct Variant {
  std::string engine;   // index, sqlite, postgres
  std::string variant;  // count, page100, ...
  std::string check;    // "count" or "page": which answers must agree
  std::function<Result<std::string>()> run;
};

struct Measurement {
  std::string predicate;
  std::string engine;
  std::string variant;
  std::string check;
  std::string matches;
  double median_ms = 0;
  double min_ms = 0;
  int runs = 0;
  std::optional<double> ratio_sqlite{};
  std::optional<double> ratio_postgres{};
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  std::size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

std::string countFingerprint(std::size_t n) { return std::to_string(n); }

// Fingerprint of GROUP BY (mode, count) pairs, in key order.
std::string groupFingerprint(std::vector<std::pair<std::string, std::int64_t>> groups) {
  std::sort(groups.begin(), groups.end());
  std::string out;
  for (const auto& [key, count] : groups) out += key + "=" + std::to_string(count) + " ";
  if (!out.empty()) out.pop_back();
  return out;
}

// Fingerprint of a page: its row count and ids.
std::string pageFingerprint(const std::vector<std::string>& ids) {
  std::string out = std::to_string(ids.size()) + " rows";
  for (const auto& id : ids) out += " " + id;
  return out;
}

// What is shown in the matches column.
std::string matchesOf(const std::string& fingerprint, const std::string& check) {
  if (check == "page") return fingerprint.substr(0, fingerprint.find(" rows")) + " rows";
  return fingerprint.size() > 40 ? fingerprint.substr(0, 37) + "..." : fingerprint;
}

// The QueryRunner needs a device-job store; the benchmark has no jobs.
class NoDeviceJobs final : public store::DeviceJobStore {
 public:
  Status putDeviceJobs(const std::vector<store::DeviceJobRecord>&) override { return Status::ok(); }
  Result<std::vector<store::DeviceJobRecord>> listDeviceJobs(std::string_view,
                                                             std::optional<std::string_view>,
                                                             std::string_view,
                                                             std::size_t) override {
    return std::vector<store::DeviceJobRecord>{};
  }
  Result<std::vector<store::DeviceJobRecord>> listAllDeviceJobs(std::string_view, std::string_view,
                                                                std::size_t) override {
    return std::vector<store::DeviceJobRecord>{};
  }
};

std::string serviceJsonText(std::uint64_t seed, std::size_t i) {
  SyntheticTwin t = makeSyntheticTwin(seed, i);
  return json::serialize(twin::serviceTwinJson(t.device, t.twin, false));
}

Result<std::string> sqlCount(SqlEngine& engine, const std::string& sql) {
  auto rows = engine.query(sql);
  if (!rows) return rows.status();
  if (rows->size() != 1 || rows->at(0).size() != 1) {
    return Status(ErrorCode::ServerError, "unexpected result shape of " + sql);
  }
  return rows->at(0).at(0);
}

Result<std::string> sqlGroups(SqlEngine& engine, const std::string& sql) {
  auto rows = engine.query(sql);
  if (!rows) return rows.status();
  std::vector<std::pair<std::string, std::int64_t>> groups;
  for (const auto& row : *rows) groups.emplace_back(row.at(0), std::stoll(row.at(1)));
  return groupFingerprint(std::move(groups));
}

Result<std::string> sqlPage(SqlEngine& engine, const std::string& sql) {
  auto rows = engine.query(sql);
  if (!rows) return rows.status();
  std::vector<std::string> ids;
  for (const auto& row : *rows) ids.push_back(row.at(0));
  return pageFingerprint(ids);
}

// Variants of one SQL engine for `p`: the count (full scan while no expression index
// exists) and the first page of 100 full rows in device-id order.
void addSqlVariants(std::vector<Variant>& out, SqlEngine& engine, const std::string& name,
                    const std::string& where, const Predicate& p, const std::string& count_variant,
                    bool with_page) {
  if (p.group_by) {
    std::string sql =
        name == "sqlite"
            ? "SELECT json_extract(twin, '$.tags.mode'), COUNT(*) FROM twins GROUP BY 1"
            : "SELECT twin->'tags'->>'mode', COUNT(*) FROM twins GROUP BY 1";
    out.push_back(
        {name, count_variant, "count", [&engine, sql] { return sqlGroups(engine, sql); }});
    return;
  }
  std::string count = "SELECT COUNT(*) FROM twins WHERE " + where;
  out.push_back(
      {name, count_variant, "count", [&engine, count] { return sqlCount(engine, count); }});
  if (with_page) {
    std::string page =
        "SELECT device_id, twin FROM twins WHERE " + where + " ORDER BY device_id LIMIT 100";
    out.push_back({name, "page100", "page", [&engine, page] { return sqlPage(engine, page); }});
  }
}

class QueryBench {
 public:
  explicit QueryBench(Options options) : o_(std::move(options)) {}
  ~QueryBench() {
    sqlite_.reset();
    postgres_.reset();
    if (temp_dir_) {
      std::error_code ec;
      std::filesystem::remove_all(*temp_dir_, ec);
    }
  }
  QueryBench(const QueryBench&) = delete;
  QueryBench& operator=(const QueryBench&) = delete;

  int run() {
    if (!setUp()) return 1;
    auto all = predicates(o_.twins);
    progress("phase 1: every engine without SQL indexes");
    for (const auto& p : all) {
      if (!measurePredicate(p, variantsFor(p, false))) return 1;
    }
    if (!createSqlIndexes()) return 1;
    progress("phase 2: SQL engines with expression indexes (extra information)");
    for (const auto& p : all) {
      if (!p.expression_indexed) continue;
      if (!measurePredicate(p, variantsFor(p, true))) return 1;
    }
    computeRatios();
    report();
    if (!mismatches_.empty()) {
      for (const auto& m : mismatches_) std::cerr << "MISMATCH: " << m << "\n";
      return 1;
    }
    return 0;
  }

 private:
  bool setUp() {
    std::filesystem::path dir;
    if (o_.dir) {
      dir = *o_.dir;
      std::filesystem::create_directories(dir);
    } else {
      std::string pattern =
          (std::filesystem::temp_directory_path() / "query-bench-XXXXXX").string();
      if (mkdtemp(pattern.data()) == nullptr) {
        std::cerr << "query_bench: mkdtemp failed\n";
        return false;
      }
      dir = pattern;
      temp_dir_ = dir;
    }

    // The index first, alone in the process, so its memory is measured cleanly.
    progress("loading " + std::to_string(o_.twins) + " twins into the index");
    MemorySample before = sampleMemory();
    auto started = Clock::now();
    for (std::size_t i = 0; i < o_.twins; ++i) {
      SyntheticTwin t = makeSyntheticTwin(o_.seed, i);
      index_.putDevice(t.device, t.twin);
    }
    index_load_ms_ = msSince(started);
    malloc_trim(0);
    MemorySample after = sampleMemory();
    rss_per_twin_ = static_cast<double>(after.rss - before.rss) / static_cast<double>(o_.twins);
    malloc_per_twin_ =
        static_cast<double>(after.malloc - before.malloc) / static_cast<double>(o_.twins);

    // Generation alone, on a sample, so load times can be read without it.
    std::size_t sample = std::min<std::size_t>(o_.twins, 20000);
    started = Clock::now();
    std::size_t bytes = 0;
    for (std::size_t i = 0; i < sample; ++i) bytes += serviceJsonText(o_.seed, i).size();
    generate_us_per_twin_ = msSince(started) * 1000.0 / static_cast<double>(sample);
    json_bytes_per_twin_ = static_cast<double>(bytes) / static_cast<double>(sample);

    auto source = [this](std::size_t i) {
      return std::pair{syntheticDeviceId(i), serviceJsonText(o_.seed, i)};
    };
    progress("loading SQLite");
    auto sqlite = SqliteEngine::open(dir / "twins.db");
    if (!sqlite) return fail(sqlite.status());
    sqlite_ = std::move(*sqlite);
    started = Clock::now();
    if (Status s = sqlite_->load(o_.twins, source); !s) return fail(s);
    sqlite_load_ms_ = msSince(started);

    if (o_.no_postgres) {
      postgres_note_ = "not run (--no-postgres)";
    } else if (!o_.postgres) {
      postgres_note_ = "not available (no --postgres CONNINFO; bench/query/run starts a server)";
    } else {
      auto pg = connectPostgres(*o_.postgres, o_.pg_parallel);
      if (!pg) {
        postgres_note_ = "not available: " + pg.status().message();
      } else {
        progress("loading PostgreSQL");
        postgres_ = std::move(*pg);
        started = Clock::now();
        if (Status s = postgres_->load(o_.twins, source); !s) return fail(s);
        postgres_load_ms_ = msSince(started);
        auto version = postgres_->query("SHOW server_version");
        postgres_note_ = "PostgreSQL " + (version ? version->at(0).at(0) : std::string("?")) +
                         ", max_parallel_workers_per_gather=" + std::to_string(o_.pg_parallel);
      }
    }
    if (postgres_note_.rfind("not", 0) == 0) progress("PostgreSQL " + postgres_note_);
    return true;
  }

  bool fail(const Status& s) {
    std::cerr << "query_bench: " << s.toString() << "\n";
    return false;
  }

  std::vector<Variant> variantsFor(const Predicate& p, bool indexed_phase) {
    std::vector<Variant> v;
    if (indexed_phase) {
      addSqlVariants(v, *sqlite_, "sqlite", p.sqlite_where, p, "count+exprindex", false);
      if (postgres_)
        addSqlVariants(v, *postgres_, "postgres", p.postgres_where, p, "count+exprindex", false);
      return v;
    }
    if (p.group_by) {
      std::string text = p.where;
      v.push_back({"index", "count (QueryRunner)", "count", [this, text]() -> Result<std::string> {
                     auto page = runner_.run(text, index::QueryRunner::kMaxPageSize, std::nullopt);
                     if (!page) return page.status();
                     std::vector<std::pair<std::string, std::int64_t>> groups;
                     for (const auto& row : page->rows) {
                       const json::object& o = row.as_object();
                       groups.emplace_back(std::string(o.at("mode").as_string()),
                                           o.at("n").to_number<std::int64_t>());
                     }
                     return groupFingerprint(std::move(groups));
                   }});
    } else {
      auto condition = query::parseCondition(p.where);
      if (!condition) {
        v.push_back({"index", "count", "count",
                     [s = condition.status()]() -> Result<std::string> { return s; }});
      } else {
        query::Condition c = *condition;
        v.push_back({"index", "count", "count", [this, c]() -> Result<std::string> {
                       std::size_t n = 0;
                       index_.scan(c, {}, [&n](const std::string&, const query::RowView&) {
                         ++n;
                         return true;
                       });
                       return countFingerprint(n);
                     }});
        std::string text = "SELECT * FROM devices WHERE " + p.where;
        v.push_back({"index", "page100", "page", [this, text]() -> Result<std::string> {
                       auto page = runner_.run(text, 100, std::nullopt);
                       if (!page) return page.status();
                       std::vector<std::string> ids;
                       for (const auto& row : page->rows)
                         ids.emplace_back(row.as_object().at("deviceId").as_string());
                       return pageFingerprint(ids);
                     }});
      }
    }
    addSqlVariants(v, *sqlite_, "sqlite", p.sqlite_where, p, "count", true);
    if (postgres_) addSqlVariants(v, *postgres_, "postgres", p.postgres_where, p, "count", true);
    return v;
  }

  // Warm-up (each variant once; the index's first query on a path is reported on its own
  // because it builds the path's hash index), then `runs` rounds over all variants in turn,
  // so load from other processes on the box hits every engine alike.
  bool measurePredicate(const Predicate& p, std::vector<Variant> variants) {
    progress("predicate " + p.name + " (" + std::to_string(variants.size()) + " variants)");
    std::vector<std::vector<double>> times(variants.size());
    std::vector<std::string> fingerprints(variants.size());
    for (std::size_t k = 0; k < variants.size(); ++k) {
      std::size_t paths_before = index_.pathIndexCount();
      MemorySample before = sampleMemory();
      auto started = Clock::now();
      auto answer = variants[k].run();
      double ms = msSince(started);
      if (!answer) return fail(answer.status());
      fingerprints[k] = *answer;
      if (variants[k].engine == "index" && index_.pathIndexCount() > paths_before) {
        MemorySample after = sampleMemory();
        Measurement m{p.name,
                      "index",
                      "first query (builds hash index)",
                      variants[k].check,
                      matchesOf(*answer, variants[k].check),
                      ms,
                      ms,
                      1};
        results_.push_back(m);
        path_index_bytes_.emplace_back(p.name, static_cast<double>(after.malloc - before.malloc) /
                                                   static_cast<double>(o_.twins));
      }
    }
    for (int r = 0; r < o_.runs; ++r) {
      for (std::size_t k = 0; k < variants.size(); ++k) {
        auto started = Clock::now();
        auto answer = variants[k].run();
        times[k].push_back(msSince(started));
        if (!answer) return fail(answer.status());
        if (*answer != fingerprints[k]) {
          mismatches_.push_back(p.name + ": " + variants[k].engine + " " + variants[k].variant +
                                " changed its answer between runs");
        }
      }
    }
    for (std::size_t k = 0; k < variants.size(); ++k) {
      const Variant& v = variants[k];
      results_.push_back({p.name, v.engine, v.variant, v.check, matchesOf(fingerprints[k], v.check),
                          median(times[k]), *std::min_element(times[k].begin(), times[k].end()),
                          o_.runs});
      // Every answer of a class must equal the index's (phase 1) answer.
      std::string key = p.name + "/" + v.check;
      auto [it, first] = reference_.try_emplace(key, fingerprints[k], v.engine + " " + v.variant);
      if (!first && it->second.first != fingerprints[k]) {
        mismatches_.push_back(p.name + ": " + v.engine + " " + v.variant + " answered [" +
                              fingerprints[k] + "] but " + it->second.second + " answered [" +
                              it->second.first + "]");
      }
    }
    return true;
  }

  bool createSqlIndexes() {
    progress("creating SQL expression indexes");
    const std::vector<std::string> sqlite_indexes = {
        "CREATE INDEX twins_serial ON twins(json_extract(twin, '$.tags.serial'))",
        "CREATE INDEX twins_building ON twins(json_extract(twin, '$.tags.location.building'))",
        "CREATE INDEX twins_customer ON twins(json_extract(twin, '$.tags.customer'))", "ANALYZE"};
    auto started = Clock::now();
    for (const auto& sql : sqlite_indexes) {
      if (Status s = sqlite_->execute(sql); !s) return fail(s);
    }
    double ms = msSince(started);
    results_.push_back({"(3 expression indexes)", "sqlite", "create indexes", "", "", ms, ms, 1});
    if (!postgres_) return true;
    const std::vector<std::string> pg_indexes = {
        "CREATE INDEX twins_serial ON twins((twin->'tags'->>'serial'))",
        "CREATE INDEX twins_building ON twins((twin->'tags'->'location'->>'building'))",
        "CREATE INDEX twins_customer ON twins((twin->'tags'->>'customer'))", "ANALYZE twins"};
    started = Clock::now();
    for (const auto& sql : pg_indexes) {
      if (Status s = postgres_->execute(sql); !s) return fail(s);
    }
    ms = msSince(started);
    results_.push_back({"(3 expression indexes)", "postgres", "create indexes", "", "", ms, ms, 1});
    return true;
  }

  // Each measurement against the SQL engine's phase-1 answer to the same question (the
  // count by full scan, or the first page).
  void computeRatios() {
    auto baseline = [this](const std::string& predicate, const std::string& engine,
                           const std::string& check) -> std::optional<double> {
      for (const auto& m : results_) {
        if (m.predicate == predicate && m.engine == engine && m.check == check &&
            (m.variant == "count" || m.variant == "page100")) {
          return m.median_ms;
        }
      }
      return std::nullopt;
    };
    for (auto& m : results_) {
      if (m.check.empty()) continue;
      std::string check = m.check;
      if (auto s = baseline(m.predicate, "sqlite", check); s && *s > 0)
        m.ratio_sqlite = m.median_ms / *s;
      if (auto pg = baseline(m.predicate, "postgres", check); pg && *pg > 0) {
        m.ratio_postgres = m.median_ms / *pg;
      }
    }
  }

  static std::string fixed(double v, int decimals) {
    char buffer[64];
    std::snprintf(buffer, sizeof buffer, "%.*f", decimals, v);
    return buffer;
  }

  static std::string milliseconds(double ms) {
    if (ms < 1) return fixed(ms, 4);
    if (ms < 100) return fixed(ms, 2);
    return fixed(ms, 0);
  }

  static std::string ratio(const std::optional<double>& r) {
    if (!r) return "-";
    return *r < 0.01 ? fixed(*r, 5) : fixed(*r, 3);
  }

  void report() {
    std::ostream& table = o_.json ? std::cerr : std::cout;
    table << "\nquery_bench: " << o_.twins << " twins, seed " << o_.seed << ", median of "
          << o_.runs << " runs after one warm-up\n"
          << "  twin JSON (service view): " << fixed(json_bytes_per_twin_, 0)
          << " bytes/twin; generating one: " << fixed(generate_us_per_twin_, 1) << " us\n"
          << "  index: load " << fixed(index_load_ms_ / 1000, 1)
          << " s (generation included); memory " << fixed(rss_per_twin_, 0) << " B/twin RSS, "
          << fixed(malloc_per_twin_, 0) << " B/twin malloc'd\n";
    for (const auto& [predicate, bytes] : path_index_bytes_) {
      table << "    + hash index built by " << predicate << ": " << fixed(bytes, 1)
            << " B/twin malloc'd\n";
    }
    auto sqlite_bytes = sqlite_->tableBytes();
    table << "  sqlite " << sqlite3_libversion() << ": load " << fixed(sqlite_load_ms_ / 1000, 1)
          << " s; file "
          << (sqlite_bytes ? fixed(static_cast<double>(*sqlite_bytes) / 1048576.0, 0)
                           : std::string("?"))
          << " MiB (mmap'd, warm)\n";
    table << "  postgres: " << postgres_note_;
    if (postgres_) {
      auto pg_bytes = postgres_->tableBytes();
      table << "; load " << fixed(postgres_load_ms_ / 1000, 1) << " s; table+indexes "
            << (pg_bytes ? fixed(static_cast<double>(*pg_bytes) / 1048576.0, 0) : std::string("?"))
            << " MiB";
    }
    table << "\n\n";
    char line[512];
    std::snprintf(line, sizeof line, "%-20s %-9s %-32s %-14s %12s %12s %9s %9s\n", "predicate",
                  "engine", "variant", "matches", "median ms", "min ms", "/sqlite", "/postgres");
    table << line;
    std::string last;
    for (const auto& m : results_) {
      if (m.predicate != last && !last.empty()) table << "\n";
      last = m.predicate;
      std::snprintf(line, sizeof line, "%-20s %-9s %-32s %-14s %12s %12s %9s %9s\n",
                    m.predicate.c_str(), m.engine.c_str(), m.variant.c_str(), m.matches.c_str(),
                    milliseconds(m.median_ms).c_str(), milliseconds(m.min_ms).c_str(),
                    ratio(m.ratio_sqlite).c_str(), ratio(m.ratio_postgres).c_str());
      table << line;
    }
    table << "\n/sqlite, /postgres: this median over that engine's full-scan count (count rows) or "
             "first page "
             "(page100 rows) of the same predicate, without SQL indexes.\n";
    table << (mismatches_.empty() ? "cross-check: every engine agreed on every answer\n"
                                  : "cross-check: MISMATCHES (see below)\n");

    if (!o_.json) return;
    json::object memory{{"bench", "query"},
                        {"twins", o_.twins},
                        {"measurement", "memory"},
                        {"index_rss_bytes_per_twin", rss_per_twin_},
                        {"index_malloc_bytes_per_twin", malloc_per_twin_},
                        {"twin_json_bytes", json_bytes_per_twin_},
                        {"index_load_ms", index_load_ms_},
                        {"sqlite_load_ms", sqlite_load_ms_},
                        {"postgres", postgres_note_}};
    if (postgres_) memory["postgres_load_ms"] = postgres_load_ms_;
    for (const auto& [predicate, bytes] : path_index_bytes_) {
      memory["hash_index_malloc_bytes_per_twin_" + predicate] = bytes;
    }
    std::cout << json::serialize(memory) << "\n";
    for (const auto& m : results_) {
      json::object o{{"bench", "query"},         {"twins", o_.twins},    {"predicate", m.predicate},
                     {"engine", m.engine},       {"variant", m.variant}, {"matches", m.matches},
                     {"median_ms", m.median_ms}, {"min_ms", m.min_ms},   {"runs", m.runs}};
      o["ratio_vs_sqlite"] = m.ratio_sqlite ? json::value(*m.ratio_sqlite) : json::value(nullptr);
      o["ratio_vs_postgres"] =
          m.ratio_postgres ? json::value(*m.ratio_postgres) : json::value(nullptr);
      std::cout << json::serialize(o) << "\n";
    }
    std::cout << json::serialize(json::object{{"bench", "query"},
                                              {"twins", o_.twins},
                                              {"measurement", "cross-check"},
                                              {"mismatches", mismatches_.size()}})
              << "\n";
  }

 private:
  Options o_;
  index::TwinIndex index_;
  NoDeviceJobs no_jobs_;
  index::QueryRunner runner_{index_, no_jobs_};
  std::unique_ptr<SqliteEngine> sqlite_;
  std::unique_ptr<SqlEngine> postgres_;
  std::string postgres_note_;
  std::optional<std::filesystem::path> temp_dir_;

  double index_load_ms_ = 0;
  double sqlite_load_ms_ = 0;
  double postgres_load_ms_ = 0;
  double rss_per_twin_ = 0;
  double malloc_per_twin_ = 0;
  double json_bytes_per_twin_ = 0;
  double generate_us_per_twin_ = 0;

  std::vector<Measurement> results_;
  std::vector<std::pair<std::string, double>> path_index_bytes_;
  // predicate/check -> (the first answer, who gave it)
  std::map<std::string, std::pair<std::string, std::string>> reference_;
  std::vector<std::string> mismatches_;
};

}  // namespace
}  // namespace iothub::bench

int main(int argc, char** argv) {
  // The index logs its load and hash-index builds; stdout is reserved for results.
  spdlog::set_default_logger(spdlog::stderr_color_mt("query_bench"));
  iothub::bench::QueryBench bench(iothub::bench::parseOptions(argc, argv));
  return bench.run();
}
