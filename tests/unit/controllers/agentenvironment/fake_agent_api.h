#pragma once

#include <memory>
#include <string>
#include <vector>

#include "agentapi/agent_api.h"
#include "controllers/agentenvironment/session_ports.h"

namespace perimeter::agentenvironment::testing_support {

using std::chrono::milliseconds;

// {"sessions_token":"sess_tok"}, base64url without padding, as the API sends it.
inline constexpr const char* kSecret = "eyJzZXNzaW9uc190b2tlbiI6InNlc3NfdG9rIn0";

// A queued session item of environment env_1, as a poll hands it out.
inline agentapi::WorkItem session_item(const std::string& work_id,
                                       const std::string& secret = kSecret) {
  agentapi::WorkItem item;
  item.id = work_id;
  item.environment_id = "env_1";
  item.data_type = "session";
  item.data_id = "sesn_" + work_id;
  item.state = "queued";
  item.secret = secret;
  return item;
}

// Hands the poller clients that forward to one mock, and remembers the credentials asked for.
class ForwardingApi final : public agentapi::AgentApi {
 public:
  explicit ForwardingApi(agentapi::AgentApi& target) : target_(target) {}
  std::optional<agentapi::WorkItem> poll(const agentapi::PollOptions& o) override {
    return target_.poll(o);
  }
  agentapi::WorkItem ack(const std::string& id) override { return target_.ack(id); }
  agentapi::HeartbeatResponse heartbeat(const std::string& id, const std::string& expected,
                                        std::optional<std::int64_t> ttl,
                                        milliseconds timeout) override {
    return target_.heartbeat(id, expected, ttl, timeout);
  }
  agentapi::WorkItem stop(const std::string& id, bool force) override {
    return target_.stop(id, force);
  }
  agentapi::WorkItem retrieve_work(const std::string& id) override {
    return target_.retrieve_work(id);
  }
  agentapi::WorkItem update_work_metadata(const std::string& id,
                                          const nlohmann::json& metadata) override {
    return target_.update_work_metadata(id, metadata);
  }
  agentapi::WorkPage list_work(int limit, const std::string& page) override {
    return target_.list_work(limit, page);
  }
  agentapi::WorkQueueStats stats() override { return target_.stats(); }
  agentapi::Session retrieve_session(const std::string& id) override {
    return target_.retrieve_session(id);
  }
  agentapi::EventPage list_events(const std::string& id, int limit,
                                  const std::string& page) override {
    return target_.list_events(id, limit, page);
  }
  void send_events(const std::string& id, const nlohmann::json& events) override {
    target_.send_events(id, events);
  }
  std::string stream_events(const std::string& id, const std::string& last,
                            const std::function<bool(const agentapi::SessionEvent&)>& on_event,
                            const std::atomic<bool>& cancel) override {
    return target_.stream_events(id, last, on_event, cancel);
  }
  agentapi::SkillVersion retrieve_skill_version(const std::string& id,
                                                const std::string& version) override {
    return target_.retrieve_skill_version(id, version);
  }
  std::string download_skill_content(const std::string& id, const std::string& version) override {
    return target_.download_skill_content(id, version);
  }

 private:
  agentapi::AgentApi& target_;
};

class FakeFactory final : public AgentApiFactory {
 public:
  explicit FakeFactory(agentapi::AgentApi& api) : api_(api) {}
  std::unique_ptr<agentapi::AgentApi> make(const std::string& base_url, const std::string& env_id,
                                           const std::string& credential,
                                           const std::string& extra_ca_pem) override {
    credentials.push_back(credential);
    extra_ca_pems.push_back(extra_ca_pem);
    base_urls.push_back(base_url);
    environment_ids.push_back(env_id);
    return std::make_unique<ForwardingApi>(api_);
  }
  std::vector<std::string> credentials, base_urls, environment_ids, extra_ca_pems;

 private:
  agentapi::AgentApi& api_;
};

}  // namespace perimeter::agentenvironment::testing_support
