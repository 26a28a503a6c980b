#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "agentapi/agent_api.h"
#include "controllers/agentenvironment/runner_resources.h"

namespace perimeter::agentenvironment {

// The I/O boundaries of the session poller, so its claim logic is unit-tested with fakes and
// integration-tested against the real apiserver and simulator.

// Makes Managed Agents API clients: one with the environment key for the work queue, and short-
// lived ones with an item's sessions token (health checks).
class AgentApiFactory {
 public:
  virtual ~AgentApiFactory() = default;
  // `extra_ca_pem`: PEM certificates trusted for the API besides the system's store (the
  // environment's apiCAConfigMapRef); empty for none.
  virtual std::unique_ptr<agentapi::AgentApi> make(const std::string& base_url,
                                                   const std::string& environment_id,
                                                   const std::string& credential,
                                                   const std::string& extra_ca_pem) = 0;
};

// The apiserver refused a session object as the spec builds it (validation or admission, 422 or
// 403): trying again cannot help until the spec changes. The message is the server's.
class ObjectRefused : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A warm runner pod (docs/warm-pool.md) as the census shows it ready and unassigned: what the
// claim's assignment patch names, and the resourceVersion it is decided from.
struct WarmPodRef {
  std::string name{};
  std::string uid{};
  std::string resource_version{};
  // When the pod started (status.startTime, from which the kubelet counts activeDeadlineSeconds),
  // or its creationTimestamp (earlier) when the cache shows no start: the assignment gives the
  // session its deadline from now by adding the pod's age.
  std::optional<std::chrono::system_clock::time_point> started_at{};
  // Its spec.activeDeadlineSeconds: only a warm pod an earlier version made carries one.
  std::optional<std::int64_t> active_deadline_seconds{};
  // The digest of the runner template it was made from (perimeter.dev/warm-template).
  std::string template_hash{};
  // The SHA-256 of the nonce its runner's held request carries, as the assignment service saw it
  // a moment ago (WarmAssignmentService::waiting_nonce); empty when none is known. The claim's
  // assignment then records the delivery to that runner in the same write (docs/warm-pool.md).
  std::string waiting_nonce_sha256{};
};

// A runner pod holding the assignment of a work item (a warm pod a claim assigned).
struct AssignedPod {
  std::string name{};
  bool finished = false;  // Succeeded or Failed
};

// Writes a claimed session's objects into the cluster. Every method throws ObjectRefused for an
// object the apiserver refuses as built, and other exceptions for failures that may pass.
class SessionObjectWriter {
 public:
  virtual ~SessionObjectWriter() = default;
  // Creates the session's Secret. When it exists already (a retried claim) its data is replaced,
  // unless the Secret there was written by a claim that polled the item later than this one
  // (its perimeter.dev/claimed-at is newer): then nothing is written and nullopt is returned,
  // since the queue may have re-issued the secret to that later claim and only its copy is valid.
  // Returns the uid and resourceVersion the write left (the runner pod records them).
  virtual std::optional<ObjectVersion> ensure_secret(const nlohmann::json& secret) = 0;
  // Asks the apiserver to validate and admit `pod` without storing it (a dry run), so that a pod
  // the spec cannot make is found before its item is acknowledged. Throws ObjectRefused when the
  // apiserver refuses it as built; a pod of that name already there is no refusal.
  virtual void check_pod(const nlohmann::json& pod) = 0;
  // Creates the runner Pod; false when it existed already, unfinished (a retried claim). A pod of
  // an earlier claim that has finished (the item came back after its lease lapsed) is replaced; a
  // finished pod of this same claim (perimeter.dev/claimed-at) is not, and false is returned.
  // Throws when a pod of that name exists for a different work item (a naming collision).
  virtual bool ensure_pod(const nlohmann::json& pod) = 0;
  // Lets a runner pod an earlier version of the operator made gated be scheduled: removes
  // Perimeter's scheduling gate and no other. Idempotent; throws when the pod cannot be patched.
  virtual void release_pod(const std::string& ns, const std::string& name) = 0;
  // Removes a finished session's pod (as cached) and its Secret once retention is over: exactly
  // those objects, never a replacement of the same name made for a new attempt at the item, and
  // never a Secret a later claim of the item has rewritten. Already gone is fine. A pod that
  // records its Secret's version costs two deletes; one that does not, two reads besides.
  // A warm pod that holds an assignment is removed with the session Secret its
  // perimeter.dev/assigned-secret names and with its own Secret (named like the pod).
  virtual void remove_finished(const nlohmann::json& pod) = 0;
  // Hands the ready warm pod `pod` the claimed session, whose Secret `session.secret` records
  // and is named `secret_name`: one merge patch of its assignment annotations and of the
  // session's deadline (spec.activeDeadlineSeconds: the pod's age plus
  // `session_deadline_seconds`, the environment's spec.runner.activeDeadlineSeconds), carrying
  // the resourceVersion the census showed, so that of two claims of one pod exactly one wins and
  // the assignment never lands without its deadline. False when the pod changed since (409:
  // another claim won it, or it finished or is being deleted) or is gone (404); throws on
  // failures that may pass.
  virtual bool assign_warm_pod(const std::string& ns, const WarmPodRef& pod,
                               const ClaimedSession& session, const std::string& secret_name,
                               std::int64_t session_deadline_seconds) = 0;
  // The name of a runner pod of the environment that holds the assignment of `work_id`, read
  // from the apiserver, not the cache: the claims sweep asks it before it makes a cold pod for
  // an acknowledged item. Throws on failures.
  virtual std::optional<std::string> find_assigned_pod(const std::string& ns,
                                                       const std::string& environment_name,
                                                       const std::string& work_id) = 0;
};

// What the cluster says about an environment's runner pods (from the informer cache).
class RunnerPodCensus {
 public:
  virtual ~RunnerPodCensus() = default;
  // How many of its pods are not yet Succeeded or Failed. Asked before every poll, so a count,
  // not a list: the poller needs no names.
  virtual std::size_t unfinished(const std::string& ns, const std::string& environment_name) = 0;
  // Pods still held by Perimeter's scheduling gate (an earlier version's): name -> work id.
  virtual std::map<std::string, std::string> gated(const std::string& ns,
                                                   const std::string& environment_name) = 0;
  // Whether the cache shows the runner pod `name` (finished or not).
  virtual bool cached(const std::string& ns, const std::string& name) = 0;
  // The environment's warm pods that are ready (Running, their runner container running, not
  // being deleted) and unassigned, oldest first: those a claim may hand an item.
  virtual std::vector<WarmPodRef> ready_warm_pods(const std::string& ns,
                                                  const std::string& environment_name) = 0;
  // A pod the cache shows holding the assignment of `work_id`: an unfinished one when there is
  // one, else a finished one; nullopt when none.
  virtual std::optional<AssignedPod> assigned_pod(const std::string& ns,
                                                  const std::string& work_id) = 0;
};

}  // namespace perimeter::agentenvironment
