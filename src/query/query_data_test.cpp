// Data-file tests (DuckDB style): every testdata/*.json holds rows and cases
//
//   { "rows": [...] | "rowsFile": "rows/twins.json",
//     "idFields": ["deviceId"],               // optional: how "ids" names a row
//     "cases": [
//       {"query": "...", "rows": [...]},      // expected result rows, in order
//       {"query": "...", "ids": ["d1", ...]}, // or just the ids of the result rows
//       {"query": "...", "itemType": "Twin", "page": {"offset": 1, "limit": 2}, "hasMore": true,
//       ...},
//       {"condition": "...", "collection": "devices.jobs", "ids": [...]},  // rows it matches
//       {"query" | "condition": "...", "error": "substring", "position": "1:34"} ] }
//
// Numbers compare by value (2 == 2.0), objects by members regardless of order.
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "common/json.hpp"
#include "query/executor.hpp"
#include "query/query.hpp"
#include "query/value.hpp"

namespace iothub::query {
namespace {

namespace fs = std::filesystem;

const fs::path kDataDir = IOTHUB_QUERY_TESTDATA_DIR;

std::vector<std::string> dataFiles() {
  std::vector<std::string> files;
  for (const auto& entry : fs::directory_iterator(kDataDir)) {
    if (entry.is_regular_file() && entry.path().extension() == ".json") {
      files.push_back(entry.path().filename().string());
    }
  }
  std::sort(files.begin(), files.end());
  return files;
}

json::value loadJson(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  Result<json::value> parsed = parseJson(text);
  EXPECT_TRUE(parsed.isOk()) << path << ": " << parsed.status().message();
  return parsed ? *parsed : json::value();
}

bool sameJson(const json::value& a, const json::value& b) {
  if (a.is_number() && b.is_number()) return primitiveEquals(a, b);
  if (a.kind() != b.kind()) return false;
  if (a.is_object()) {
    const json::object& x = a.get_object();
    const json::object& y = b.get_object();
    if (x.size() != y.size()) return false;
    for (const auto& member : x) {
      auto it = y.find(member.key());
      if (it == y.end() || !sameJson(member.value(), it->value())) return false;
    }
    return true;
  }
  if (a.is_array()) {
    const json::array& x = a.get_array();
    const json::array& y = b.get_array();
    if (x.size() != y.size()) return false;
    for (std::size_t i = 0; i < x.size(); ++i) {
      if (!sameJson(x[i], y[i])) return false;
    }
    return true;
  }
  return a == b;
}

std::string rowId(const json::value& row, const json::array& id_fields) {
  std::string id;
  for (const json::value& field : id_fields) {
    if (!id.empty()) id += "/";
    const json::value* v =
        row.is_object() ? row.get_object().if_contains(field.get_string()) : nullptr;
    id += (v && v->is_string()) ? std::string(v->get_string()) : json::serialize(v ? *v : nullptr);
  }
  return id;
}

void checkError(const Status& status, const json::object& c) {
  ASSERT_FALSE(status.isOk()) << "expected an error";
  EXPECT_EQ(status.code(), ErrorCode::ArgumentInvalid);
  const std::string& message = status.message();
  EXPECT_NE(message.find(std::string(c.at("error").get_string())), std::string::npos)
      << "message: " << message;
  if (const json::value* position = c.if_contains("position")) {
    std::string where = "at " + std::string(position->get_string()) + " near";
    EXPECT_NE(message.find(where), std::string::npos) << "message: " << message;
  }
}

void checkRows(const json::array& actual, const json::object& c, const json::array& id_fields) {
  if (const json::value* expected = c.if_contains("rows")) {
    EXPECT_TRUE(sameJson(actual, *expected))
        << "actual:   " << json::serialize(actual) << "\nexpected: " << json::serialize(*expected);
  }
  if (const json::value* ids = c.if_contains("ids")) {
    json::array actual_ids;
    for (const json::value& row : actual) actual_ids.emplace_back(rowId(row, id_fields));
    EXPECT_EQ(json::serialize(actual_ids), json::serialize(*ids));
  }
  EXPECT_TRUE(c.contains("rows") || c.contains("ids")) << "case checks nothing";
}

class QueryDataTest : public ::testing::TestWithParam<std::string> {};

TEST_P(QueryDataTest, CasesGiveExpectedRowsOrErrors) {
  json::value file = loadJson(kDataDir / GetParam());
  ASSERT_TRUE(file.is_object());
  const json::object& spec = file.get_object();
  json::value rows_value = spec.contains("rowsFile")
                               ? loadJson(kDataDir / std::string(spec.at("rowsFile").get_string()))
                               : spec.at("rows");
  ASSERT_TRUE(rows_value.is_array());
  std::vector<const json::object*> rows;
  for (const json::value& row : rows_value.get_array()) rows.push_back(&row.get_object());
  json::array id_fields =
      spec.contains("idFields") ? spec.at("idFields").get_array() : json::array{"deviceId"};

  const json::array& cases = spec.at("cases").get_array();
  EXPECT_FALSE(cases.empty());
  for (const json::value& case_value : cases) {
    const json::object& c = case_value.get_object();
    SCOPED_TRACE(json::serialize(c.contains("query") ? c.at("query") : c.at("condition")));
    if (const json::value* text = c.if_contains("query")) {
      Result<Query> query = parseQuery(text->get_string());
      if (c.contains("error")) {
        checkError(query.status(), c);
        continue;
      }
      ASSERT_TRUE(query.isOk()) << query.status().message();
      Page page;
      if (const json::value* p = c.if_contains("page")) {
        page.offset = static_cast<std::size_t>(p->at("offset").to_number<std::int64_t>());
        page.limit = static_cast<std::size_t>(p->at("limit").to_number<std::int64_t>());
      }
      QueryResult result = execute(*query, rows, page);
      checkRows(result.rows, c, id_fields);
      if (const json::value* type = c.if_contains("itemType")) {
        EXPECT_EQ(itemTypeName(result.item_type), std::string_view(type->get_string()));
      }
      if (const json::value* more = c.if_contains("hasMore")) {
        EXPECT_EQ(result.has_more, more->get_bool());
      }
    } else {
      Collection collection = Collection::Devices;
      if (const json::value* name = c.if_contains("collection")) {
        collection =
            name->get_string() == "devices.jobs" ? Collection::DeviceJobs : Collection::Devices;
      }
      Result<Condition> condition = parseCondition(c.at("condition").get_string(), collection);
      if (c.contains("error")) {
        checkError(condition.status(), c);
        continue;
      }
      ASSERT_TRUE(condition.isOk()) << condition.status().message();
      json::array matched;
      for (const json::object* row : rows) {
        if (condition->matches(*row)) matched.emplace_back(*row);
      }
      checkRows(matched, c, id_fields);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Files, QueryDataTest, ::testing::ValuesIn(dataFiles()),
                         [](const ::testing::TestParamInfo<std::string>& param) {
                           std::string name = param.param;
                           for (char& ch : name) {
                             if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
                           }
                           return name;
                         });

}  // namespace
}  // namespace iothub::query
