#pragma once

#include "common/json.hpp"
#include "query/path.hpp"
#include "query/value.hpp"

namespace iothub::query {

// One row as the evaluator and the executor read it. Rows come in more than one form: a
// JSON object (device-job rows, tests) or the twin index's packed encoding
// (index/packed_row.hpp), which answers paths without ever building the whole document.
class RowView {
 public:
  virtual ~RowView() = default;

  // The value at `path`: undefined when a member is missing or an intermediate value is
  // not an object. A borrowed value stays valid as long as the row does.
  virtual Value resolve(const Path& path) const = 0;

  // The whole row as a JSON object (what SELECT * returns).
  virtual json::object toObject() const = 0;
};

// A row that is a JSON object; borrows it.
class JsonRow final : public RowView {
 public:
  explicit JsonRow(const json::object& row) : row_(row) {}

  Value resolve(const Path& path) const override { return Value::borrowed(path.resolve(row_)); }
  json::object toObject() const override { return row_; }

 private:
  const json::object& row_;
};

}  // namespace iothub::query
