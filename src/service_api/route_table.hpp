#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace iothub::service_api {

// A path pattern of literal segments and parameters: "/twins/{id}/methods" matches
// "/twins/door-1/methods" with "door-1" for {id}. A last segment "{name*}" takes the rest of
// the path, zero segments included ("/ui/{path*}" matches "/ui" and "/ui/js/app.js").
class PathPattern {
 public:
  explicit PathPattern(std::string_view pattern);

  // Whether the decoded path segments match: a container of strings or string_views
  // (size(), operator[]). Allocates nothing.
  template <class Segments>
  bool matches(const Segments& segments) const {
    if (segments.size() < segments_.size() - (hasRest() ? 1 : 0)) return false;
    if (!hasRest() && segments.size() != segments_.size()) return false;
    for (std::size_t i = 0; i < segments_.size(); ++i) {
      const Segment_& s = segments_[i];
      if (s.rest) return true;
      if (!s.parameter && std::string_view(segments[i]) != s.literal) return false;
    }
    return true;
  }

  // The parameters' values of matching segments, appended to `params` in order (a rest
  // parameter as one value, its segments joined by '/').
  template <class Segments>
  void extract(const Segments& segments, std::vector<std::string>* params) const {
    for (std::size_t i = 0; i < segments_.size(); ++i) {
      if (segments_[i].rest) {
        std::string joined;
        for (std::size_t j = i; j < segments.size(); ++j) {
          if (j > i) joined += '/';
          joined += std::string_view(segments[j]);
        }
        params->push_back(std::move(joined));
        return;
      }
      if (segments_[i].parameter) params->emplace_back(std::string_view(segments[i]));
    }
  }

  // The pattern as written: a label of bounded cardinality for metrics and logs.
  std::string_view text() const { return text_; }

 private:
  struct Segment_ {
    std::string literal;  // empty for a parameter
    bool parameter = false;
    bool rest = false;
  };
  bool hasRest() const { return !segments_.empty() && segments_.back().rest; }
  std::string text_;
  std::vector<Segment_> segments_;
};

// The segments of a path as written ("/a/b/" gives "a", "b"), without percent-decoding: for
// listeners whose routes are all literal.
std::vector<std::string> pathSegments(std::string_view path);

// Routes of one HTTP listener: {method, path pattern, handler}, tried in the order added,
// so that a literal segment written before a parameter wins ("/jobs/v2/query" before
// "/jobs/v2/{id}"). Once a path matches a route's pattern, routes of other patterns further
// down are not tried for it, unless that route was added with `claims_path = false`: then a
// method it does not serve falls through ("/devices/query" serves POST; the other methods
// address a device named "query").
//
// find() tells the three outcomes a listener answers: the route and its parameters; no route
// for the path (404); routes for the path but not for the method (405, with Allow).
template <typename Handler>
class RouteTable {
 public:
  struct Route {
    std::string method;
    PathPattern pattern;
    Handler handler;
    bool claims_path = true;
  };

  struct Match {
    const Route* route = nullptr;     // null: no route for the method (see allow)
    std::vector<std::string> params;  // the pattern's parameters, in order
    std::string allow;  // when route is null: the methods the path has, or empty (404)
  };

  void add(std::string_view method, std::string_view pattern, Handler handler,
           bool claims_path = true) {
    routes_.push_back(
        Route{std::string(method), PathPattern(pattern), std::move(handler), claims_path});
  }

  template <class Segments>
  Match find(std::string_view method, const Segments& segments) const {
    Match m;
    std::string_view claimed;
    for (const Route& r : routes_) {
      if (!claimed.empty() && r.pattern.text() != claimed) continue;
      if (!r.pattern.matches(segments)) continue;
      if (r.method == method) {
        m.route = &r;
        r.pattern.extract(segments, &m.params);
        m.allow.clear();
        return m;
      }
      if (m.allow.find(r.method) == std::string::npos) {
        if (!m.allow.empty()) m.allow += ", ";
        m.allow += r.method;
      }
      if (r.claims_path) claimed = r.pattern.text();
    }
    return m;
  }

  // The pattern of the first route whose pattern matches the path, whatever the method.
  template <class Segments>
  std::string_view patternOf(const Segments& segments) const {
    for (const Route& r : routes_) {
      if (r.pattern.matches(segments)) return r.pattern.text();
    }
    return {};
  }

 private:
  std::vector<Route> routes_;
};

}  // namespace iothub::service_api
