#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace perimeter::agentenvironment {

// Labels and annotations the operator puts on what it creates for a session. The work id label
// lets the operator rebuild its state from the cluster after a restart.
inline constexpr std::string_view kLabelEnvironment = "perimeter.dev/environment";
inline constexpr std::string_view kLabelWorkId = "perimeter.dev/work-id";
inline constexpr std::string_view kLabelSessionId = "perimeter.dev/session-id";
inline constexpr std::string_view kLabelComponent = "app.kubernetes.io/component";
inline constexpr std::string_view kLabelManagedBy = "app.kubernetes.io/managed-by";
inline constexpr std::string_view kAnnotationWorkId = "perimeter.dev/work-id";
inline constexpr std::string_view kAnnotationClaimedAt = "perimeter.dev/claimed-at";
// On a runner pod: "<uid>/<resourceVersion>" of the Secret its claim wrote, so that retention
// deletes exactly that Secret (preconditions) without reading it first (docs/claiming.md).
inline constexpr std::string_view kAnnotationSecretVersion = "perimeter.dev/secret-version";
// Written on a finished runner pod once its outcome is counted in the status (docs/claiming.md,
// "Counting sessions exactly once").
inline constexpr std::string_view kAnnotationOutcome = "perimeter.dev/outcome";
inline constexpr std::string_view kAnnotationRecordedAt = "perimeter.dev/outcome-recorded-at";
// Held runner pods back from scheduling until their work item was acknowledged, when the claim
// made the pod before the ack. Pods are now made after the ack and carry no gate; the operator
// still releases the pods an earlier version left gated (docs/claiming.md).
inline constexpr std::string_view kSchedulingGateAcknowledged = "perimeter.dev/acknowledged";
inline constexpr std::string_view kSecretKeyWorkSecret = "work-secret";
// Gateway mode: the session's HTTPS_PROXY, which carries its gateway credential.
inline constexpr std::string_view kSecretKeyHttpsProxy = "https-proxy";

// Warm runner pods (docs/warm-pool.md). The label marks a pod started without a session ("true").
inline constexpr std::string_view kLabelWarm = "perimeter.dev/warm";
// The lowercase hex SHA-256 of the pod's token: enough to check a token, useless to present one.
inline constexpr std::string_view kAnnotationWarmTokenSha256 = "perimeter.dev/warm-token-sha256";
// A digest of the runner template a warm pod was made from (warm_runner_template_hash): a pod
// whose digest is not the spec's is of an earlier template, never assigned, and replaced.
inline constexpr std::string_view kAnnotationWarmTemplate = "perimeter.dev/warm-template";
// The assignment, written by the claim under the pod's resourceVersion, so one claim wins a pod.
inline constexpr std::string_view kAnnotationAssignedWorkId = "perimeter.dev/assigned-work-id";
inline constexpr std::string_view kAnnotationAssignedSessionId =
    "perimeter.dev/assigned-session-id";
// The name of the session's Secret, which holds the work secret as a cold claim writes it.
inline constexpr std::string_view kAnnotationAssignedSecret = "perimeter.dev/assigned-secret";
// Set when the assignment was delivered to the runner (recorded by the assignment service before
// its answer leaves, or on the confirm of a runner that asks without a nonce): the token is
// refused from then on.
inline constexpr std::string_view kAnnotationAssignmentConfirmedAt =
    "perimeter.dev/assignment-confirmed-at";
// The SHA-256 of the nonce the runner sent with the request its assignment was delivered to: the
// same runner, asking again after a lost answer, is answered again; no one else is.
inline constexpr std::string_view kAnnotationAssignmentNonceSha256 =
    "perimeter.dev/assignment-nonce-sha256";
// A warm pod's own Secret: its token and the assignment service's CA.
inline constexpr std::string_view kSecretKeyWarmToken = "token";
inline constexpr std::string_view kSecretKeyWarmCa = "ca.crt";

// The name of a session's runner Pod and of its Secret, derived from the work id alone so that a
// retried claim meets AlreadyExists instead of creating a twin. Work ids are case-sensitive and
// may hold characters a DNS label cannot, so the readable part is sanitized and a hash of the
// exact id keeps distinct ids distinct. At most 63 characters (it becomes the pod's hostname).
std::string runner_object_name(std::string_view work_id);

// `prefix` (a DNS label's start, such as "run-"), the readable part of `id` (lower-case, runs of
// other characters as one '-'), and a hash of the exact id: one DNS label of at most 63
// characters, distinct for distinct ids. runner_object_name and the session workspace's claim
// name are made by it.
std::string object_name_for(std::string_view prefix, std::string_view id);

// `value` as a label value when it is one already (<= 63 chars, alphanumeric ends, [-_.A-Za-z0-9]);
// otherwise a stable hash of it, so selectors still find the object.
std::string label_value_for(std::string_view value);

// FNV-1a, 64 bit: stable across processes and releases, which std::hash is not.
std::uint64_t stable_hash(std::string_view text);

// The last `digits` (1..16) lowercase hex digits of stable_hash(text).
std::string short_hash(std::string_view text, int digits);

}  // namespace perimeter::agentenvironment
