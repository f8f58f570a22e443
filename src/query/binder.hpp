#pragma once

#include <memory>
#include <string_view>

#include "common/status.hpp"
#include "query/ast.hpp"
#include "query/condition.hpp"
#include "query/parser.hpp"
#include "query/query.hpp"

namespace iothub::query {

// Stage 3: resolves an unbound statement against its collection and checks types.
// Paths get their canonical keys (identity fields in canonical case, "devices.jobs."
// stripped for FROM devices.jobs); operands, function arguments and the WHERE clause are
// type-checked where their types are known before evaluation (constants and function
// results; paths are "any"). Errors are ArgumentInvalid "Type error at line:col near ...",
// or "Syntax error ..." for an unsupported collection. `text` is the query text the byte
// ranges in the statement refer to.

Result<Query> bindSelect(std::string_view text, SelectStatement statement);

Result<Condition> bindCondition(std::string_view text, std::unique_ptr<Expr> expr,
                                Collection collection);

}  // namespace iothub::query
