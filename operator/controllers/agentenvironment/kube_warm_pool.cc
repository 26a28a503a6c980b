#include "controllers/agentenvironment/kube_warm_pool.h"

#include "controllers/agentenvironment/kube_session_objects.h"
#include "kube/api_error.h"

namespace perimeter::agentenvironment {
namespace {

using nlohmann::json;

// Nothing of a create's or delete's answer is read: the informer's event brings the object.
kube::RequestOptions unread_answer() {
  static const kube::JsonFilter nothing = kube::JsonFilter::members();
  kube::RequestOptions options;
  options.answer = &nothing;
  return options;
}

}  // namespace

void KubeWarmPodWriter::create(const json& secret, const json& pod) {
  const std::string ns = pod["metadata"].value("namespace", "");
  const std::string name = pod["metadata"].value("name", "");
  // The Secret first: the pod mounts it, and a pod without it would wait in ContainerCreating.
  // Both names are new (the token's hash is in them), so AlreadyExists means a retry of ours.
  try {
    secrets_.create(ns, secret, unread_answer());
  } catch (const kube::ApiError& e) {
    if (refused_as_built(e)) throw ObjectRefused(e.status_message());
    if (e.kind() != kube::ErrorKind::kAlreadyExists) throw;
  }
  try {
    pods_.create(ns, pod, unread_answer());
  } catch (const kube::ApiError& e) {
    if (e.kind() == kube::ErrorKind::kAlreadyExists) return;
    // The Secret would wait for the claims sweep; remove it now when the apiserver lets us.
    try {
      kube::DeleteOptions options;
      options.answer = unread_answer().answer;
      secrets_.remove(ns, name, options);
    } catch (const std::exception&) {
      // the claims sweep removes a runner Secret without its pod (docs/claiming.md)
    }
    if (refused_as_built(e)) throw ObjectRefused(e.status_message());
    throw;
  }
}

bool KubeWarmPodWriter::remove(const std::string& ns, const std::string& name,
                               const std::string& uid, const std::string& resource_version) {
  kube::DeleteOptions options;
  options.precondition_uid = uid;
  if (!resource_version.empty()) options.precondition_resource_version = resource_version;
  options.answer = unread_answer().answer;
  try {
    pods_.remove(ns, name, options);
  } catch (const kube::ApiError& e) {
    // 409: another pod of that name (not possible: names are new), or the pod changed since it
    // was cached: a claim may have assigned it. Its Secret stays; the next pass decides again.
    if (e.kind() == kube::ErrorKind::kConflict) return false;
    if (e.kind() != kube::ErrorKind::kNotFound) throw;
  }
  // Named like the pod and never rewritten: nothing else can hold this name.
  try {
    kube::DeleteOptions secret_options;
    secret_options.answer = unread_answer().answer;
    secrets_.remove(ns, name, secret_options);
  } catch (const kube::ApiError& e) {
    if (e.kind() != kube::ErrorKind::kNotFound) throw;
  }
  return true;
}

}  // namespace perimeter::agentenvironment
