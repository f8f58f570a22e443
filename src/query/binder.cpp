#include "query/binder.hpp"

#include <algorithm>
#include <array>
#include <set>

#include "query/errors.hpp"
#include "query/functions.hpp"
#include "query/lexer.hpp"

namespace iothub::query {
namespace {

// Top-level twin members (docs/protocol.md §6.1, §8.2), matched case-insensitively.
constexpr std::array<std::string_view, 20> kTwinFields = {
    "deviceId",
    "moduleId",
    "etag",
    "deviceEtag",
    "status",
    "statusReason",
    "statusUpdateTime",
    "connectionState",
    "connectionStateUpdatedTime",
    "lastActivityTime",
    "cloudToDeviceMessageCount",
    "authenticationType",
    "x509Thumbprint",
    "capabilities",
    "deviceScope",
    "parentScopes",
    "modelId",
    "version",
    "tags",
    "properties",
};

// Members of a device-job row (docs/protocol.md §9.8) as `devices.jobs.<field>` addresses them.
constexpr std::array<std::string_view, 10> kDeviceJobFields = {
    "deviceId",       "jobId",        "jobType",    "status",
    "createdTimeUtc", "startTimeUtc", "endTimeUtc", "lastUpdatedTimeUtc",
    "outcome",        "error",
};

template <std::size_t N>
void canonicalize(std::string& key, const std::array<std::string_view, N>& names) {
  for (std::string_view name : names) {
    if (equalsIgnoreCase(key, name)) {
      key = std::string(name);
      return;
    }
  }
}

bool isConcrete(ValueType t) { return t != ValueType::Any && t != ValueType::Undefined; }

ValueType constantType(const json::value& v) {
  switch (v.kind()) {
    case json::kind::null:
      return ValueType::Null;
    case json::kind::bool_:
      return ValueType::Bool;
    case json::kind::int64:
    case json::kind::uint64:
    case json::kind::double_:
      return ValueType::Number;
    case json::kind::string:
      return ValueType::String;
    case json::kind::array:
      return ValueType::Array;
    case json::kind::object:
      return ValueType::Object;
  }
  return ValueType::Any;
}

std::string_view projectionName(ProjectionKind kind) {
  switch (kind) {
    case ProjectionKind::Path:
      return "";
    case ProjectionKind::Count:
      return "COUNT";
    case ProjectionKind::Avg:
      return "AVG";
    case ProjectionKind::Sum:
      return "SUM";
    case ProjectionKind::Min:
      return "MIN";
    case ProjectionKind::Max:
      return "MAX";
  }
  return "";
}

ProjectionKind projectionKind(AggregateKind kind) {
  switch (kind) {
    case AggregateKind::Count:
      return ProjectionKind::Count;
    case AggregateKind::Avg:
      return ProjectionKind::Avg;
    case AggregateKind::Sum:
      return ProjectionKind::Sum;
    case AggregateKind::Min:
      return ProjectionKind::Min;
    case AggregateKind::Max:
      return ProjectionKind::Max;
  }
  return ProjectionKind::Count;
}

class Binder {
 public:
  Binder(std::string_view text, Collection collection) : text_(text), collection_(collection) {}

  Status typeError(const Expr& e, std::string_view message) const {
    return queryError("Type", text_, e.begin, e.end, message);
  }

  Status bindPath(Expr& e) const {
    std::vector<std::string>& keys = e.path.keys;
    bool jobs_prefix = keys.size() >= 2 && equalsIgnoreCase(keys[0], "devices") &&
                       equalsIgnoreCase(keys[1], "jobs");
    if (collection_ == Collection::DeviceJobs) {
      if (!jobs_prefix || keys.size() < 3) {
        return typeError(e,
                         "paths in a devices.jobs query start with 'devices.jobs.' "
                         "(for example devices.jobs.status)");
      }
      keys.erase(keys.begin(), keys.begin() + 2);
      canonicalize(keys[0], kDeviceJobFields);
      return Status::ok();
    }
    if (jobs_prefix) {
      return typeError(e, "devices.jobs paths can only be used in queries FROM devices.jobs");
    }
    if (keys.size() >= 2 && equalsIgnoreCase(keys[0], "devices") &&
        equalsIgnoreCase(keys[1], "modules")) {
      return typeError(e, "module twins (devices.modules) are not supported");
    }
    // C# registry samples filter on `id`, which Azure accepts for deviceId (docs/protocol.md §8.3).
    if (equalsIgnoreCase(keys[0], "id")) keys[0] = "deviceId";
    canonicalize(keys[0], kTwinFields);
    if (keys.size() >= 2) {
      if (keys[0] == "properties") {
        if (equalsIgnoreCase(keys[1], "desired")) {
          keys[1] = "desired";
        } else if (equalsIgnoreCase(keys[1], "reported")) {
          keys[1] = "reported";
        } else {
          return typeError(e, "expected properties.desired or properties.reported");
        }
      } else if (keys[0] == "capabilities") {
        canonicalize(keys[1], std::array<std::string_view, 1>{"iotEdge"});
      } else if (keys[0] == "x509Thumbprint") {
        canonicalize(keys[1],
                     std::array<std::string_view, 2>{"primaryThumbprint", "secondaryThumbprint"});
      }
    }
    return Status::ok();
  }

  // Binds `e` in an expression context (WHERE, arguments); returns its static type.
  Result<ValueType> bind(Expr& e) const {
    switch (e.kind) {
      case ExprKind::Constant:
        return constantType(e.constant);
      case ExprKind::Undefined:
        return ValueType::Undefined;
      case ExprKind::Path: {
        IOTHUB_RETURN_IF_ERROR(bindPath(e));
        return ValueType::Any;
      }
      case ExprKind::Negate:
      case ExprKind::UnaryPlus: {
        Result<ValueType> t = bind(*e.children[0]);
        if (!t) return t;
        if (isConcrete(*t) && *t != ValueType::Number) {
          return typeError(e, "unary " + std::string(e.kind == ExprKind::Negate ? "-" : "+") +
                                  " needs a number, not " + std::string(valueTypeName(*t)));
        }
        return ValueType::Number;
      }
      case ExprKind::Arithmetic: {
        for (auto& child : e.children) {
          Result<ValueType> t = bind(*child);
          if (!t) return t;
          if (isConcrete(*t) && *t != ValueType::Number) {
            return typeError(e, "operator '" + std::string(arithmeticOpName(e.arithmetic_op)) +
                                    "' needs numbers, not " + std::string(valueTypeName(*t)));
          }
        }
        return ValueType::Number;
      }
      case ExprKind::Comparison: {
        for (auto& child : e.children) {
          Result<ValueType> t = bind(*child);
          if (!t) return t;
          if (*t == ValueType::Array || *t == ValueType::Object) {
            return typeError(
                e, "comparisons need primitive values, not " + std::string(valueTypeName(*t)));
          }
        }
        return ValueType::Bool;
      }
      case ExprKind::And:
      case ExprKind::Or:
      case ExprKind::Not: {
        std::string_view op =
            e.kind == ExprKind::And ? "AND" : (e.kind == ExprKind::Or ? "OR" : "NOT");
        for (auto& child : e.children) {
          Result<ValueType> t = bind(*child);
          if (!t) return t;
          if (isConcrete(*t) && *t != ValueType::Bool) {
            return typeError(*child, std::string(op) + " needs boolean operands, not " +
                                         std::string(valueTypeName(*t)));
          }
        }
        return ValueType::Bool;
      }
      case ExprKind::In:
      case ExprKind::NotIn: {
        Result<ValueType> t = bind(*e.children[0]);
        if (!t) return t;
        if (*t == ValueType::Array || *t == ValueType::Object) {
          return typeError(
              e, "IN needs a primitive value on its left, not " + std::string(valueTypeName(*t)));
        }
        return ValueType::Bool;
      }
      case ExprKind::Function:
        return bindFunction(e);
      case ExprKind::Aggregate:
        return typeError(
            e, std::string(aggregateName(e.aggregate)) + " can only be used as a SELECT item");
    }
    return ValueType::Any;
  }

  Result<ValueType> bindFunction(Expr& e) const {
    const FunctionDef& f = *e.function;
    std::size_t n = e.children.size();
    if (n < f.min_args || n > f.max_args) {
      std::string expected = f.min_args == f.max_args
                                 ? std::to_string(f.min_args)
                                 : std::to_string(f.min_args) + " to " + std::to_string(f.max_args);
      return typeError(e, std::string(f.name) + " takes " + expected + " argument" +
                              (f.max_args == 1 ? "" : "s") + ", not " + std::to_string(n));
    }
    for (std::size_t i = 0; i < n; ++i) {
      Result<ValueType> t = bind(*e.children[i]);
      if (!t) return t;
      ValueType want = f.paramType(i);
      if (want != ValueType::Any && isConcrete(*t) && *t != want) {
        return typeError(*e.children[i], std::string(f.name) + " needs " +
                                             std::string(valueTypeName(want)) + " as argument " +
                                             std::to_string(i + 1) + ", not " +
                                             std::string(valueTypeName(*t)));
      }
    }
    return f.result;
  }

  Result<Condition> bindWhere(std::unique_ptr<Expr> expr) const {
    Result<ValueType> t = bind(*expr);
    if (!t) return t.status();
    if (isConcrete(*t) && *t != ValueType::Bool) {
      return typeError(
          *expr, "a condition must be a boolean expression, not " + std::string(valueTypeName(*t)));
    }
    return Condition(std::shared_ptr<const Expr>(std::move(expr)));
  }

  Result<Projection> bindItem(SelectItem& item) const {
    Expr& e = *item.expr;
    Projection p;
    if (e.kind == ExprKind::Path) {
      IOTHUB_RETURN_IF_ERROR(bindPath(e));
      p.kind = ProjectionKind::Path;
      p.path = e.path;
      p.name = item.alias.value_or(p.path.leaf());
      return p;
    }
    if (e.kind != ExprKind::Aggregate) {
      return typeError(e,
                       "only property paths and the aggregates COUNT, AVG, SUM, MIN and MAX "
                       "can be selected");
    }
    p.kind = projectionKind(e.aggregate);
    if (e.aggregate == AggregateKind::Count) {
      if (!e.children.empty()) return typeError(e, "COUNT() takes no arguments");
    } else {
      if (e.children.size() != 1 || e.children[0]->kind != ExprKind::Path) {
        return typeError(e, std::string(aggregateName(e.aggregate)) +
                                " needs one property path as its argument");
      }
      IOTHUB_RETURN_IF_ERROR(bindPath(*e.children[0]));
      p.path = e.children[0]->path;
    }
    p.name = item.alias.value_or(std::string(projectionName(p.kind)));
    return p;
  }

 private:
  std::string_view text_;
  Collection collection_;
};

}  // namespace

Result<Query> bindSelect(std::string_view text, SelectStatement statement) {
  Query query;
  const std::vector<std::string>& from = statement.from;
  auto fromError = [&](std::string_view message) {
    return queryError("Syntax", text, statement.from_begin, statement.from_end, message);
  };
  if (from.size() == 1 && equalsIgnoreCase(from[0], "devices")) {
    query.collection = Collection::Devices;
  } else if (from.size() == 2 && equalsIgnoreCase(from[0], "devices") &&
             equalsIgnoreCase(from[1], "jobs")) {
    query.collection = Collection::DeviceJobs;
  } else if (from.size() == 2 && equalsIgnoreCase(from[0], "devices") &&
             equalsIgnoreCase(from[1], "modules")) {
    return fromError("module twins (FROM devices.modules) are not supported");
  } else {
    return fromError("unknown collection; expected devices or devices.jobs");
  }
  Binder binder(text, query.collection);
  query.select_all = statement.select_all;
  query.top = statement.top;

  std::set<std::string> names;
  bool any_aggregate = false;
  const Expr* first_path_item = nullptr;
  for (SelectItem& item : statement.items) {
    Result<Projection> p = binder.bindItem(item);
    if (!p) return p.status();
    if (!names.insert(p->name).second) {
      std::size_t begin = item.alias ? item.alias_begin : item.expr->begin;
      std::size_t end = item.alias ? item.alias_end : item.expr->end;
      return queryError("Type", text, begin, end,
                        "duplicate output name '" + p->name + "'; use AS to rename");
    }
    if (p->kind == ProjectionKind::Path) {
      if (first_path_item == nullptr) first_path_item = item.expr.get();
    } else {
      any_aggregate = true;
    }
    query.projections.push_back(std::move(p).value());
  }

  if (statement.where) {
    Result<Condition> where = binder.bindWhere(std::move(statement.where));
    if (!where) return where.status();
    query.where = std::move(where).value();
  }

  if (statement.group_by) {
    Expr& g = *statement.group_by;
    if (g.kind != ExprKind::Path) return binder.typeError(g, "GROUP BY needs a property path");
    IOTHUB_RETURN_IF_ERROR(binder.bindPath(g));
    if (query.select_all) {
      return binder.typeError(g, "GROUP BY needs a projection list, not SELECT *");
    }
    query.group_by = g.path;
    for (std::size_t i = 0; i < query.projections.size(); ++i) {
      const Projection& p = query.projections[i];
      if (p.kind == ProjectionKind::Path && !(p.path == g.path)) {
        return binder.typeError(*statement.items[i].expr,
                                "a selected path must be the GROUP BY path or inside an aggregate");
      }
    }
  } else if (any_aggregate && first_path_item != nullptr) {
    return binder.typeError(*first_path_item,
                            "cannot select a path together with aggregates without GROUP BY");
  }
  return query;
}

Result<Condition> bindCondition(std::string_view text, std::unique_ptr<Expr> expr,
                                Collection collection) {
  return Binder(text, collection).bindWhere(std::move(expr));
}

}  // namespace iothub::query
