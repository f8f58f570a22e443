#include "apps/fleetsim/d2c_log.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <unordered_map>

#include "apps/fleetsim/report.hpp"

namespace iothub::fleetsim {

namespace {

void put64(char* out, std::uint64_t v) {
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((v >> (8 * i)) & 0xff);
}
std::uint64_t get64(const char* in) {
  std::uint64_t v = 0;
  for (int i = 0; i < 8; ++i)
    v |= static_cast<std::uint64_t>(static_cast<unsigned char>(in[i])) << (8 * i);
  return v;
}

std::uint64_t microsBetween(std::int64_t from_ns, std::int64_t to_ns) {
  return to_ns > from_ns ? static_cast<std::uint64_t>((to_ns - from_ns) / 1000) : 0;
}

}  // namespace

std::string d2cPayload(std::uint64_t id, std::int64_t sent_ns) {
  return "d2c " + std::to_string(id) + " " + std::to_string(sent_ns);
}

bool parseD2cPayload(std::string_view payload, std::uint64_t& id, std::int64_t& sent_ns) {
  constexpr std::string_view kPrefix = "d2c ";
  if (!payload.starts_with(kPrefix)) return false;
  const char* p = payload.data() + kPrefix.size();
  const char* end = payload.data() + payload.size();
  const auto [after_id, ec1] = std::from_chars(p, end, id);
  if (ec1 != std::errc() || after_id == p || after_id == end || *after_id != ' ') return false;
  const auto [after_ns, ec2] = std::from_chars(after_id + 1, end, sent_ns);
  return ec2 == std::errc() && after_ns == end && after_ns != after_id + 1 && sent_ns >= 0;
}

Status writeD2cRecords(const std::string& path, const std::vector<D2cRecord>& records) {
  std::string bytes(records.size() * kD2cRecordBytes, '\0');
  char* out = bytes.data();
  for (const auto& r : records) {
    put64(out, r.id);
    put64(out + 8, static_cast<std::uint64_t>(r.sent_ns));
    put64(out + 16, static_cast<std::uint64_t>(r.at_ns));
    out += kD2cRecordBytes;
  }
  std::ofstream file(path, std::ios::binary | std::ios::trunc);
  file.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  file.close();
  if (!file) return Status(ErrorCode::ServiceUnavailable, "cannot write " + path);
  return Status::ok();
}

Result<std::vector<D2cRecord>> readD2cRecords(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) return Status(ErrorCode::ArgumentInvalid, "cannot read " + path);
  std::string bytes((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  if (bytes.size() % kD2cRecordBytes != 0) {
    return Status(ErrorCode::ArgumentInvalid,
                  path + ": " + std::to_string(bytes.size()) + " bytes is not a whole number of " +
                      std::to_string(kD2cRecordBytes) + "-byte records");
  }
  std::vector<D2cRecord> records(bytes.size() / kD2cRecordBytes);
  const char* in = bytes.data();
  for (auto& r : records) {
    r.id = get64(in);
    r.sent_ns = static_cast<std::int64_t>(get64(in + 8));
    r.at_ns = static_cast<std::int64_t>(get64(in + 16));
    in += kD2cRecordBytes;
  }
  return records;
}

D2cJoin joinD2c(const std::vector<D2cRecord>& acks, const std::vector<D2cRecord>& reads) {
  D2cJoin j;
  // id → PUBACK time, and whether a reader has had it already.
  struct Acked {
    std::int64_t at_ns = 0;
    bool read = false;
  };
  std::unordered_map<std::uint64_t, Acked> acked;
  acked.reserve(acks.size());
  j.first_sent_ns = INT64_MAX;
  for (const auto& a : acks) {
    if (!acked.try_emplace(a.id, Acked{a.at_ns, false}).second) {
      ++j.ack_duplicates;
      continue;
    }
    ++j.acked;
    j.publish_to_puback.record(microsBetween(a.sent_ns, a.at_ns));
    j.first_sent_ns = std::min(j.first_sent_ns, a.sent_ns);
    j.last_ack_ns = std::max(j.last_ack_ns, a.at_ns);
  }
  if (j.acked == 0) j.first_sent_ns = 0;
  std::unordered_map<std::uint64_t, bool> unannounced;  // read ids without a PUBACK record
  for (const auto& r : reads) {
    ++j.read;
    j.last_read_ns = std::max(j.last_read_ns, r.at_ns);
    auto it = acked.find(r.id);
    if (it == acked.end()) {
      if (!unannounced.try_emplace(r.id, true).second) {
        ++j.read_duplicates;
        continue;
      }
      ++j.read_unique;
      ++j.read_not_acked;
      j.publish_to_read.record(microsBetween(r.sent_ns, r.at_ns));
      continue;
    }
    if (it->second.read) {
      ++j.read_duplicates;
      continue;
    }
    it->second.read = true;
    ++j.read_unique;
    j.publish_to_read.record(microsBetween(r.sent_ns, r.at_ns));
    if (r.at_ns < it->second.at_ns) ++j.read_before_puback;
    j.puback_to_read.record(microsBetween(it->second.at_ns, r.at_ns));
  }
  j.acked_not_read = j.acked - (j.read_unique - j.read_not_acked);
  return j;
}

D2cRecords lastPartOf(const std::vector<D2cRecord>& acks, const std::vector<D2cRecord>& reads,
                      double fraction) {
  D2cRecords out;
  if (acks.empty()) return out;
  std::int64_t first = INT64_MAX;
  std::int64_t last = INT64_MIN;
  for (const auto& a : acks) {
    first = std::min(first, a.sent_ns);
    last = std::max(last, a.sent_ns);
  }
  const double keep = std::clamp(fraction, 0.0, 1.0);
  const auto threshold = last - static_cast<std::int64_t>(static_cast<double>(last - first) * keep);
  for (const auto& a : acks) {
    if (a.sent_ns >= threshold) out.acks.push_back(a);
  }
  for (const auto& r : reads) {
    if (r.sent_ns >= threshold) out.reads.push_back(r);
  }
  return out;
}

json::object d2cJoinJson(const D2cJoin& j) {
  json::object o;
  o["acked"] = j.acked;
  o["ack_duplicates"] = j.ack_duplicates;
  o["read"] = j.read;
  o["read_unique"] = j.read_unique;
  o["read_duplicates"] = j.read_duplicates;
  o["acked_not_read"] = j.acked_not_read;
  o["read_not_acked"] = j.read_not_acked;
  o["read_before_puback"] = j.read_before_puback;
  o["exactly_once"] = j.exactlyOnce() ? 1 : 0;
  const double ack_span = j.last_ack_ns > j.first_sent_ns && j.acked > 0
                              ? static_cast<double>(j.last_ack_ns - j.first_sent_ns) / 1e9
                              : 0;
  const double read_span = j.last_read_ns > j.first_sent_ns && j.read_unique > 0
                               ? static_cast<double>(j.last_read_ns - j.first_sent_ns) / 1e9
                               : 0;
  o["acked_span_s"] = round3(ack_span);
  o["read_span_s"] = round3(read_span);
  o["acked_per_s"] = ack_span > 0 ? round3(static_cast<double>(j.acked) / ack_span) : 0.0;
  o["readable_per_s"] =
      read_span > 0 ? round3(static_cast<double>(j.read_unique) / read_span) : 0.0;
  o["publish_to_puback"] = latencyJson(j.publish_to_puback);
  o["puback_to_read"] = latencyJson(j.puback_to_read);
  o["publish_to_read"] = latencyJson(j.publish_to_read);
  return o;
}

}  // namespace iothub::fleetsim
