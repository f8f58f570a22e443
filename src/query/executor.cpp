#include "query/executor.hpp"

#include "query/value.hpp"

namespace iothub::query {
namespace {

// MIN/MAX order: numbers before strings, each by compareSameKind().
int compareForExtreme(const json::value& a, const json::value& b) {
  if (a.is_number() != b.is_number()) return a.is_number() ? -1 : 1;
  return compareSameKind(a, b).value_or(0);
}

}  // namespace

QueryExecution::QueryExecution(const Query& query, Page page)
    : query_(query), page_(page), aggregate_(query.isAggregate()) {
  result_.item_type = query.itemType();
  if (aggregate_ && !query_.group_by) {
    groups_.emplace_back();
    groups_.back().accumulators.resize(query_.projections.size());
  }
}

bool QueryExecution::offer(const RowView& row) {
  if (done_) return false;
  if (!query_.where.matches(row)) return true;
  return offerMatched(row);
}

bool QueryExecution::offerMatched(const RowView& row) {
  if (done_) return false;
  if (aggregate_) {
    if (!query_.group_by) {
      accumulate(groups_.front(), row);
      return true;
    }
    Value key_value = row.resolve(*query_.group_by);
    const json::value* key = key_value.getIf();
    std::string hash = key ? valueKey(*key) : std::string("u");
    auto [it, inserted] = group_index_.try_emplace(std::move(hash), groups_.size());
    if (inserted) {
      Group g;
      if (key != nullptr) {
        g.key = *key;
        g.key_defined = true;
      }
      g.accumulators.resize(query_.projections.size());
      groups_.push_back(std::move(g));
    }
    accumulate(groups_[it->second], row);
    return true;
  }
  std::size_t index = matched_++;
  if (query_.top && index >= *query_.top) {
    done_ = true;
    return false;
  }
  if (index < page_.offset) return true;
  if (index - page_.offset >= page_.limit) {
    result_.has_more = true;
    done_ = true;
    return false;
  }
  emit(row);
  return true;
}

void QueryExecution::emit(const RowView& row) {
  if (query_.select_all) {
    result_.rows.emplace_back(row.toObject());
    return;
  }
  json::object out;
  for (const Projection& p : query_.projections) {
    Value v = row.resolve(p.path);
    if (v.isDefined()) out[p.name] = v.get();
  }
  result_.rows.emplace_back(std::move(out));
}

void QueryExecution::accumulate(Group& group, const RowView& row) {
  for (std::size_t i = 0; i < query_.projections.size(); ++i) {
    const Projection& p = query_.projections[i];
    Accumulator& a = group.accumulators[i];
    switch (p.kind) {
      case ProjectionKind::Path:
        break;
      case ProjectionKind::Count:
        ++a.count;
        break;
      case ProjectionKind::Avg:
      case ProjectionKind::Sum: {
        Value resolved = row.resolve(p.path);
        const json::value* v = resolved.getIf();
        std::optional<Number> n = v ? toNumber(*v) : std::nullopt;
        if (!n) break;
        ++a.count;
        a.real_sum += n->asDouble();
        if (a.exact &&
            (!n->is_integer || __builtin_add_overflow(a.int_sum, n->integer, &a.int_sum))) {
          a.exact = false;
        }
        break;
      }
      case ProjectionKind::Min:
      case ProjectionKind::Max: {
        Value resolved = row.resolve(p.path);
        const json::value* v = resolved.getIf();
        if (v == nullptr || !(v->is_number() || v->is_string())) break;
        int c = a.has_extreme ? compareForExtreme(*v, a.extreme) : 0;
        if (!a.has_extreme || (p.kind == ProjectionKind::Min ? c < 0 : c > 0)) {
          a.extreme = *v;
          a.has_extreme = true;
        }
        break;
      }
    }
  }
}

json::object QueryExecution::groupRow(const Group& group) const {
  json::object out;
  for (std::size_t i = 0; i < query_.projections.size(); ++i) {
    const Projection& p = query_.projections[i];
    const Accumulator& a = group.accumulators[i];
    switch (p.kind) {
      case ProjectionKind::Path:
        if (group.key_defined) out[p.name] = group.key;
        break;
      case ProjectionKind::Count:
        out[p.name] = a.count;
        break;
      case ProjectionKind::Sum: {
        Number n;
        n.is_integer = a.exact;
        n.integer = a.int_sum;
        n.real = a.real_sum;
        out[p.name] = numberToJson(n);
        break;
      }
      case ProjectionKind::Avg:
        if (a.count > 0) {
          Number n;
          n.is_integer = false;
          n.real = a.real_sum / static_cast<double>(a.count);
          out[p.name] = numberToJson(n);
        }
        break;
      case ProjectionKind::Min:
      case ProjectionKind::Max:
        if (a.has_extreme) out[p.name] = a.extreme;
        break;
    }
  }
  return out;
}

QueryResult QueryExecution::finish() {
  if (aggregate_) {
    std::size_t total = groups_.size();
    if (query_.top && *query_.top < total) total = static_cast<std::size_t>(*query_.top);
    for (std::size_t i = page_.offset; i < total; ++i) {
      if (i - page_.offset >= page_.limit) {
        result_.has_more = true;
        break;
      }
      result_.rows.emplace_back(groupRow(groups_[i]));
    }
  }
  return std::move(result_);
}

QueryResult execute(const Query& query, std::span<const json::object* const> rows, Page page) {
  QueryExecution execution(query, page);
  for (const json::object* row : rows) {
    if (!execution.offer(*row)) break;
  }
  return execution.finish();
}

}  // namespace iothub::query
