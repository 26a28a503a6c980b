#include "controllers/agentenvironment/kube_warm_pod_directory.h"

#include "controllers/agentenvironment/runner_pod_cache.h"
#include "core/base64.h"
#include "kube/api_error.h"

namespace perimeter::agentenvironment {

namespace {

constexpr const char* kTokenHashIndex = "warm_token_sha256";

}  // namespace

KubeWarmPodDirectory::KubeWarmPodDirectory(runtime::Store& pod_cache, kube::ResourceClient& secrets,
                                           kube::ResourceClient& pods)
    : pod_cache_(pod_cache), secrets_(secrets), pods_(pods) {
  pod_cache_.add_index(kTokenHashIndex, [](const nlohmann::json& pod) {
    std::optional<WarmPod> warm = read_warm_pod(pod);
    if (!warm) return std::vector<std::string>{};
    return std::vector<std::string>{warm->token_sha256};
  });
}

std::optional<WarmPod> KubeWarmPodDirectory::find_by_token_sha256(const std::string& token_sha256) {
  // Two pods with one hash would mean a token minted twice: answer neither.
  const std::vector<runtime::ObjectPtr> pods = pod_cache_.by_index(kTokenHashIndex, token_sha256);
  if (pods.size() != 1) return std::nullopt;
  return read_warm_pod(*pods.front());
}

std::optional<WarmPod> KubeWarmPodDirectory::read_live(const WarmPod& pod) {
  try {
    return read_warm_pod(pods_.get(pod.ns, pod.name));
  } catch (const std::exception& error) {
    if (kube::is_not_found(error)) return std::nullopt;
    throw;
  }
}

std::optional<std::string> KubeWarmPodDirectory::read_work_secret(const std::string& ns,
                                                                  const std::string& name) {
  nlohmann::json secret;
  try {
    secret = secrets_.get(ns, name);
  } catch (const std::exception& error) {
    if (kube::is_not_found(error)) return std::nullopt;
    throw;
  }
  const std::string key(kSecretKeyWorkSecret);
  const std::string& encoded =
      secret.contains("data") ? cached_string(secret["data"], key) : cached_string(secret, key);
  std::string work_secret;
  if (encoded.empty() || !base64_decode_any(encoded, &work_secret)) return std::nullopt;
  return work_secret;
}

bool KubeWarmPodDirectory::mark_delivered(const WarmPod& pod, const WarmPodAssignment& assignment,
                                          const std::string& nonce_sha256,
                                          const std::string& delivered_at) {
  // A JSON patch's tests hold against the pod the apiserver has at the write, so no other write
  // to it (the kubelet's status right after the assignment's deadline, a label) fails this, as a
  // resourceVersion would. The apiserver's JSON patch reads a missing member as null: "not
  // delivered yet", "not being deleted".
  const auto annotation = [](std::string_view key) {
    return (nlohmann::json::json_pointer("/metadata/annotations") / std::string(key)).to_string();
  };
  nlohmann::json operations = nlohmann::json::array(
      {{{"op", "test"}, {"path", "/metadata/uid"}, {"value", pod.uid}},
       {{"op", "test"}, {"path", "/metadata/deletionTimestamp"}, {"value", nullptr}},
       {{"op", "test"},
        {"path", annotation(kAnnotationAssignedWorkId)},
        {"value", assignment.work_id}},
       {{"op", "test"},
        {"path", annotation(kAnnotationAssignedSessionId)},
        {"value", assignment.session_id}},
       {{"op", "test"},
        {"path", annotation(kAnnotationAssignedSecret)},
        {"value", assignment.secret_name}},
       {{"op", "test"}, {"path", annotation(kAnnotationAssignmentConfirmedAt)}, {"value", nullptr}},
       {{"op", "add"},
        {"path", annotation(kAnnotationAssignmentConfirmedAt)},
        {"value", delivered_at}}});
  if (!nonce_sha256.empty()) {
    operations.push_back({{"op", "add"},
                          {"path", annotation(kAnnotationAssignmentNonceSha256)},
                          {"value", nonce_sha256}});
  }
  try {
    pods_.json_patch(pod.ns, pod.name, operations);
  } catch (const kube::ApiError& error) {
    // 422: a test failed, the pod is not what this was decided from. 404: gone. Either way the
    // caller reads it and decides again.
    if (error.code() == 422 || error.kind() == kube::ErrorKind::kNotFound) return false;
    throw;
  }
  return true;
}

}  // namespace perimeter::agentenvironment
