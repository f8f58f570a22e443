#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/clock.hpp"
#include "common/json.hpp"

namespace iothub::store {

// Plain records as the store keeps them. Domain modules (registry, twin, jobs) own the
// rules; the store only persists and returns these values faithfully.

enum class DeviceStatus { Enabled, Disabled };
enum class AuthType { Sas, SelfSigned, CertificateAuthority, None };

struct DeviceRecord {
  std::string device_id;
  std::string generation_id;
  std::string etag;
  DeviceStatus status = DeviceStatus::Enabled;
  std::optional<std::string> status_reason;
  SystemTime status_updated_time{};
  AuthType auth_type = AuthType::Sas;
  std::string primary_key;  // base64; empty for non-SAS devices
  std::string secondary_key;
  std::optional<std::string> primary_thumbprint;
  std::optional<std::string> secondary_thumbprint;
  bool iot_edge = false;
  std::optional<std::string> device_scope;
  std::vector<std::string> parent_scopes;
  SystemTime connection_state_updated_time{};  // epoch = never
  SystemTime last_activity_time{};             // epoch = never
  std::int64_t cloud_to_device_message_count = 0;

  bool operator==(const DeviceRecord&) const = default;
};

// A device twin as stored. `desired` and `reported` hold the properties the twin module
// keeps (it may embed "$metadata"); the section versions are kept separately.
struct TwinRecord {
  std::string device_id;
  json::object tags;
  json::object desired;
  json::object reported;
  std::int64_t version = 1;           // grows on every change of the twin
  std::int64_t desired_version = 1;   // grows on every change of desired
  std::int64_t reported_version = 1;  // grows on every change of reported

  bool operator==(const TwinRecord&) const = default;
};

// Permissions of a shared access policy (docs/protocol.md §1.3), as a bit set.
enum Permission : std::uint32_t {
  kRegistryRead = 1u << 0,
  kRegistryWrite = 1u << 1,
  kServiceConnect = 1u << 2,
  kDeviceConnect = 1u << 3,
};

struct AccessPolicyRecord {
  std::string name;
  std::string primary_key;  // base64
  std::string secondary_key;
  std::uint32_t permissions = 0;  // Permission bits

  bool operator==(const AccessPolicyRecord&) const = default;
};

struct DeviceStatistics {
  std::int64_t total = 0;
  std::int64_t enabled = 0;
  std::int64_t disabled = 0;
};

// A job (scheduleDeviceMethod / scheduleUpdateTwin). The indexed fields are what the
// scheduler and job queries filter on; `document` holds everything else of the job
// (request, failure reason, statistics) as the jobs module shapes it.
struct JobRecord {
  std::string job_id;
  std::string type;
  std::string status;
  SystemTime created_time{};
  SystemTime start_time{};
  std::optional<SystemTime> end_time;
  json::object document;

  bool operator==(const JobRecord&) const = default;

  // Its priority among due jobs (iothub's extension, docs/jobs.md): the document's
  // "priority", 0 when absent. Claims and the engine start higher ones first.
  int priority() const {
    const json::value* p = document.if_contains("priority");
    return p != nullptr && p->is_int64() ? static_cast<int>(p->get_int64()) : 0;
  }
};

// One target device of a job. Keyed by (job_id, device_id).
struct DeviceJobRecord {
  std::string job_id;
  std::string device_id;
  std::string status;
  SystemTime last_updated_time{};
  json::object document;  // type, times, outcome, error: shaped by the jobs module

  bool operator==(const DeviceJobRecord&) const = default;
};

// The right of one node to run a job in a cluster (docs/cluster.md, "Jobs across nodes";
// JobStore leases). Every claim gives the job a higher epoch, so (job_id, epoch) names one
// claim; the lease is held until it is released or its end passes on the store's clock.
struct JobLease {
  std::string job_id;
  std::int64_t epoch = 0;

  bool operator==(const JobLease&) const = default;
};

// A job as JobStore::claimJobs hands it to its new owner.
struct ClaimedJob {
  JobRecord job;
  JobLease lease;
  bool cancel_requested = false;  // JobStore::requestJobCancel was called for it
};

// What JobStore::renewJobLeases found for one lease.
struct JobLeaseRenewal {
  std::string job_id;
  bool held = false;  // renewed; false: it had expired or another claim took the job
  bool cancel_requested = false;
};

// A device-job row committed together with a twin update (TwinStore::updateTwinForJob);
// with a lease, only while that lease is held.
struct DeviceJobWrite {
  DeviceJobRecord row;
  std::optional<JobLease> lease;
};

// What a persistent MQTT session (CleanSession=0) keeps between connections and hub
// restarts (MQTT 3.1.1 §3.1.2.4, docs/protocol.md §2.6): its subscriptions. Keyed by client id.
struct MqttSubscriptionRecord {
  std::string filter;
  int qos = 0;

  bool operator==(const MqttSubscriptionRecord&) const = default;
};

struct MqttSessionRecord {
  std::string client_id;
  std::vector<MqttSubscriptionRecord> subscriptions;

  bool operator==(const MqttSessionRecord&) const = default;
};

// A cloud-to-device message in its device's queue (C2dStore; docs/c2d.md). The store keeps
// the queue order, the lock and the delivery count; `document` holds the message's other
// fields as the c2d module shapes them (ids, ack, content type, application properties).
struct C2dMessageRecord {
  std::string device_id;
  std::int64_t sequence = 0;  // assigned by enqueueC2d; grows with every enqueue (store-wide)
  SystemTime enqueued_time{};
  SystemTime expiry_time{};         // removed as expired once this has passed
  std::string lock_token;           // empty when no device holds the message
  SystemTime locked_until{};        // meaningful with a lock token
  std::int32_t delivery_count = 0;  // times it was locked for a device
  json::object document;
  std::string body;  // the payload's bytes

  bool operator==(const C2dMessageRecord&) const = default;
};

// Why a message left its queue (C2dFeedbackRule decides which ones produce feedback).
enum class C2dRemoval { Completed, Rejected, Expired, DeliveryCountExceeded, Purged };

// A feedback record waiting for a service's feedback receiver (C2dStore feedback queue).
struct C2dFeedbackRecord {
  std::int64_t sequence = 0;  // assigned by the store; grows with every record (store-wide)
  SystemTime enqueued_time{};
  json::object document;  // the record as the service receives it (shaped by the c2d module)

  bool operator==(const C2dFeedbackRecord&) const = default;
};

// A device-to-cloud message in the partitioned telemetry log (TelemetryStore;
// docs/telemetry.md), as the Event Hubs-compatible endpoint serves it.
struct TelemetryRecord {
  std::int32_t partition = 0;
  std::int64_t sequence = 0;   // assigned by appendTelemetry: the partition's next, gapless
  SystemTime enqueued_time{};  // when the hub accepted it (set by the caller)
  std::string device_id;
  json::object document;  // properties and annotations, shaped by the telemetry module
  std::string body;       // the payload's bytes

  bool operator==(const TelemetryRecord&) const = default;
};

// One partition of the telemetry log as TelemetryStore::telemetryPartition reads it.
struct TelemetryPartitionInfo {
  std::int32_t partition = 0;
  std::int64_t begin_sequence = 0;  // the oldest retained record's (== next_sequence if empty)
  std::int64_t next_sequence = 0;   // what the next append gets (0 for a partition never used)
  SystemTime last_enqueued_time{};  // of the newest record ever appended (epoch: none)
  std::uint64_t bytes = 0;          // retained records' body + document bytes

  bool operator==(const TelemetryPartitionInfo&) const = default;
};

// A consumer group of the Event Hubs-compatible endpoint (TelemetryStore; docs/telemetry.md
// §9). Names compare case-insensitively (ASCII); the record keeps the case it was created
// with. "$Default" exists in every store.
struct ConsumerGroupRecord {
  std::string name;
  SystemTime created_time{};

  bool operator==(const ConsumerGroupRecord&) const = default;
};

inline constexpr std::string_view kDefaultConsumerGroup = "$Default";

// The key a consumer group is stored and ordered under: its name in ASCII lower case.
inline std::string consumerGroupKey(std::string_view name) {
  std::string key(name);
  for (char& c : key) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return key;
}

}  // namespace iothub::store
