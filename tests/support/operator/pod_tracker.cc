#include "operator/pod_tracker.h"

#include <algorithm>

#include "core/log.h"

namespace perimeter::testing {

using nlohmann::json;

namespace {

runtime::InformerOptions tracker_options(const std::string& ns) {
  runtime::InformerOptions options;
  options.ns = ns;
  options.label_selector = "app.kubernetes.io/component=runner";
  return options;
}

}  // namespace

PodTracker::PodTracker(kube::ResourceClient& pods, const std::string& ns,
                       runtime::RuntimeMetrics& metrics)
    : informer_(pods, tracker_options(ns), metrics,
                Logger("pod-tracker", StderrSink::instance(), LogLevel::kWarn)) {
  runtime::EventHandlers handlers;
  handlers.on_add = [this](const runtime::ObjectPtr& pod) { observe(*pod, true); };
  handlers.on_update = [this](const runtime::ObjectPtr&, const runtime::ObjectPtr& pod) {
    observe(*pod, false);
  };
  handlers.on_delete = [this](const runtime::ObjectPtr& pod) {
    std::lock_guard lock(mutex_);
    const std::string name = (*pod)["metadata"]["name"];
    unfinished_.erase(name);
    deleted_at_[name] = std::chrono::steady_clock::now();
  };
  informer_.add_handlers(std::move(handlers));
  informer_.start();
  informer_.wait_for_sync(std::chrono::seconds(30));
}

PodTracker::~PodTracker() {
  informer_.stop();
}

size_t PodTracker::max_unfinished() const {
  std::lock_guard lock(mutex_);
  return max_unfinished_;
}

size_t PodTracker::max_unfinished_of_one_session() const {
  std::lock_guard lock(mutex_);
  return max_unfinished_of_one_session_;
}

std::map<std::string, int> PodTracker::adds_per_work_id() const {
  std::lock_guard lock(mutex_);
  return adds_;
}

std::map<std::string, std::set<std::string>> PodTracker::uids_per_work_id() const {
  std::lock_guard lock(mutex_);
  return uids_;
}

std::set<std::string> PodTracker::succeeded_uids() const {
  std::lock_guard lock(mutex_);
  std::set<std::string> uids;
  for (const auto& [uid, seen] : succeeded_) uids.insert(uid);
  return uids;
}

std::optional<std::chrono::system_clock::time_point> PodTracker::succeeded_seen_at(
    const std::string& uid) const {
  std::lock_guard lock(mutex_);
  const auto it = succeeded_.find(uid);
  if (it == succeeded_.end()) return std::nullopt;
  return it->second;
}

std::optional<std::chrono::steady_clock::time_point> PodTracker::deleted_at(
    const std::string& name) const {
  std::lock_guard lock(mutex_);
  const auto it = deleted_at_.find(name);
  if (it == deleted_at_.end()) return std::nullopt;
  return it->second;
}

void PodTracker::observe(const json& pod, bool added) {
  std::lock_guard lock(mutex_);
  const std::string name = pod["metadata"]["name"];
  const std::string work_id = pod["metadata"]["annotations"].value("perimeter.dev/work-id", "");
  if (added) ++adds_[work_id];
  const std::string uid = pod["metadata"].value("uid", "");
  uids_[work_id].insert(uid);
  deleted_at_.erase(name);
  session_of_[name] =
      pod["metadata"].value("labels", json::object()).value("perimeter.dev/session-id", "");
  const std::string phase = pod.value("status", json::object()).value("phase", "");
  if (phase == "Succeeded") succeeded_.emplace(uid, std::chrono::system_clock::now());
  if (phase == "Succeeded" || phase == "Failed") {
    unfinished_.erase(name);
  } else {
    unfinished_.insert(name);
  }
  max_unfinished_ = std::max(max_unfinished_, unfinished_.size());
  std::map<std::string, size_t> per_session;
  for (const auto& unfinished : unfinished_) {
    max_unfinished_of_one_session_ =
        std::max(max_unfinished_of_one_session_, ++per_session[session_of_[unfinished]]);
  }
}

}  // namespace perimeter::testing
