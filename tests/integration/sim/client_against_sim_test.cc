// The C++ client (real cpprestsdk transport) against perimeter-sim as a separate process, over
// loopback: the whole work-item flow, SSE with reconnects, faults, and bad input.
#include <arpa/inet.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <thread>

#include "agentapi/agent_api_client.h"
#include "agentapi/api_error.h"
#include "agentapi/cpprest_transport.h"
#include "agentapi/sim_process.h"
#include "agentapi/work_secret.h"

namespace perimeter::agentapi {
namespace {

using nlohmann::json;
using std::chrono::milliseconds;

const char* kScenario = R"(
name: integration
steps:
  - tool: bash
    input: {command: "echo hi"}
    expect: {is_error: false, text: "hi\n"}
)";

class ClientAgainstSimTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto created = testing::http_call(sim_.url(), "POST", "/admin/environments",
                                            json({{"name", "it"}, {"key", "env-key"}}).dump());
    ASSERT_EQ(created.status, 201) << created.body;
    environment_ = created.json()["id"];
  }

  std::unique_ptr<AgentApiClient> client(const std::string& credential, int max_retries = 2) {
    ClientConfig config;
    config.base_url = sim_.url();
    config.environment_id = environment_;
    config.credential = credential;
    config.max_retries = max_retries;
    config.retry_backoff.initial = milliseconds(10);
    config.retry_backoff.max = milliseconds(40);
    return std::make_unique<AgentApiClient>(config, std::make_unique<CpprestTransport>(),
                                            SystemRandom::instance(), sleeper_);
  }

  json enqueue(const char* scenario = kScenario) {
    const auto enqueued =
        testing::http_call(sim_.url(), "POST", "/admin/environments/" + environment_ + "/sessions",
                           json({{"scenario_yaml", scenario}}).dump());
    EXPECT_EQ(enqueued.status, 201) << enqueued.body;
    return enqueued.json();
  }

  void set_faults(const json& faults) {
    const auto reply = testing::http_call(sim_.url(), "POST", "/admin/faults", faults.dump());
    ASSERT_EQ(reply.status, 200) << reply.body;
  }

  testing::SimProcess sim_;
  RealSleeper sleeper_;
  std::string environment_;
};

TEST_F(ClientAgainstSimTest, ARunnerServesAWholeSessionThroughTheClient) {
  const json enqueued = enqueue();
  auto operator_client = client("env-key");
  PollOptions poll;
  poll.worker_id = "operator-it";
  const auto item = operator_client->poll(poll);
  ASSERT_TRUE(item.has_value());
  EXPECT_EQ(item->id, enqueued["work_id"]);
  EXPECT_EQ(item->data_type, "session");
  ASSERT_TRUE(item->secret.has_value());
  const WorkSecret secret = decode_work_secret(*item->secret);
  EXPECT_EQ(operator_client->ack(item->id).state, "starting");

  auto runner = client(secret.sessions_token);
  const HeartbeatResponse first =
      runner->heartbeat(item->id, std::string(kNoHeartbeat), 30, milliseconds(5000));
  EXPECT_EQ(first.state, "active");
  EXPECT_TRUE(first.lease_extended);
  EXPECT_EQ(first.ttl_seconds, 30);
  const HeartbeatResponse second =
      runner->heartbeat(item->id, first.last_heartbeat, std::nullopt, milliseconds(5000));
  EXPECT_NE(second.last_heartbeat, first.last_heartbeat);
  try {
    runner->heartbeat(item->id, first.last_heartbeat, std::nullopt, milliseconds(5000));
    FAIL() << "a stale echo must be refused";
  } catch (const ApiError& e) {
    EXPECT_EQ(e.status(), 412);
    EXPECT_EQ(e.lease_state()["last_heartbeat"], second.last_heartbeat);
  }

  const Session session = runner->retrieve_session(item->data_id);
  EXPECT_EQ(session.status, "idle");

  // Pages of the event log add up to the whole log.
  std::vector<std::string> listed;
  std::string page;
  do {
    const EventPage events = runner->list_events(item->data_id, 2, page);
    for (const auto& event : events.data) listed.push_back(event.type);
    page = events.next_page.value_or("");
  } while (!page.empty());
  EXPECT_THAT(listed, ::testing::ElementsAre("user.message", "session.status_running",
                                             "agent.tool_use", "session.status_idle"));

  // Stream, answer the tool call, and follow the stream to the session's end.
  std::atomic<bool> cancel{false};
  std::vector<std::string> streamed;
  std::string last;
  bool terminated = false;
  for (int connection = 0; connection < 5 && !terminated; ++connection) {
    last = runner->stream_events(
        item->data_id, last,
        [&](const SessionEvent& event) {
          streamed.push_back(event.type);
          if (event.type == "agent.tool_use") {
            runner->send_events(
                item->data_id,
                json::array({{{"type", "user.tool_result"},
                              {"tool_use_id", event.id},
                              {"is_error", false},
                              {"content", {{{"type", "text"}, {"text", "hi\n"}}}}}}));
          }
          if (event.type == "session.status_terminated") terminated = true;
          return !terminated;
        },
        cancel);
  }
  EXPECT_TRUE(terminated);
  EXPECT_EQ(std::count(streamed.begin(), streamed.end(), "agent.tool_use"), 1);
  EXPECT_EQ(runner->stop(item->id, true).state, "stopped");
  try {
    runner->stop(item->id, true);
    FAIL() << "a second stop must be 409";
  } catch (const ApiError& e) {
    EXPECT_EQ(e.status(), 409);
  }
  const auto results = testing::http_call(
      sim_.url(), "GET",
      "/admin/sessions/" + enqueued["session_id"].get<std::string>() + "/results");
  EXPECT_EQ(results.json()["all_matched"], true) << results.body;

  const WorkQueueStats stats = operator_client->stats();
  EXPECT_EQ(stats.depth, 0);
  EXPECT_EQ(stats.workers_polling, 1);
}

TEST_F(ClientAgainstSimTest, ALongPollReturnsWorkEnqueuedWhileItWaits) {
  auto operator_client = client("env-key");
  EXPECT_FALSE(operator_client->poll({}).has_value());  // empty queue: null after block_ms
  std::thread producer([this] {
    std::this_thread::sleep_for(milliseconds(200));
    enqueue();
  });
  std::optional<WorkItem> item;
  for (int i = 0; i < 5 && !item; ++i) item = operator_client->poll({});
  producer.join();
  EXPECT_TRUE(item.has_value());
}

TEST_F(ClientAgainstSimTest, ADroppedStreamResumesFromLastEventIdWithoutRepeats) {
  const json enqueued = enqueue(R"(
name: many-events
terminate: true
steps:
  - {tool: bash, input: {command: a}, permission: deny}
  - {tool: bash, input: {command: b}, permission: deny}
  - {tool: bash, input: {command: c}, permission: deny}
)");
  set_faults({{"sse_drop_rate", 1.0}, {"sse_drop_after_events", 2}});
  auto runner = client("env-key");
  std::atomic<bool> cancel{false};
  std::vector<std::string> ids;
  std::string last;
  int connections = 0;
  bool terminated = false;
  while (!terminated && connections < 20) {
    ++connections;
    last = runner->stream_events(
        enqueued["session_id"], last,
        [&](const SessionEvent& event) {
          ids.push_back(event.id);
          terminated = event.type == "session.status_terminated";
          return true;
        },
        cancel);
  }
  EXPECT_TRUE(terminated);
  EXPECT_GT(connections, 2);
  std::vector<std::string> unique = ids;
  std::sort(unique.begin(), unique.end());
  EXPECT_EQ(std::unique(unique.begin(), unique.end()), unique.end()) << "an event came twice";
  const auto listed = runner->list_events(enqueued["session_id"], 1000, "");
  EXPECT_EQ(ids.size(), listed.data.size());
}

TEST_F(ClientAgainstSimTest, FaultsSurfaceAsTypedErrors) {
  enqueue();
  auto operator_client = client("env-key", 1);

  set_faults({{"error_5xx_rate", 1.0}});
  try {
    operator_client->stats();
    FAIL() << "expected ApiError";
  } catch (const ApiError& e) {
    EXPECT_EQ(e.status(), 503);
    EXPECT_EQ(e.error_type(), "api_error");
  }

  set_faults({{"error_5xx_rate", 0.0}, {"non_json_rate", 1.0}});
  EXPECT_THROW(operator_client->stats(), ProtocolError);

  set_faults({{"non_json_rate", 0.0}, {"reset_rate", 1.0}});
  EXPECT_THROW(operator_client->stats(), TransportError);

  set_faults({{"reset_rate", 0.0}, {"undecodable_secret_rate", 1.0}});
  const auto item = operator_client->poll({});
  ASSERT_TRUE(item && item->secret);
  EXPECT_THROW(decode_work_secret(*item->secret), SecretError);

  set_faults({{"undecodable_secret_rate", 0.0}, {"error_429_rate", 1.0}});
  try {
    operator_client->stats();
    FAIL() << "expected ApiError";
  } catch (const ApiError& e) {
    EXPECT_EQ(e.status(), 429);
    EXPECT_FALSE(e.fatal());
  }
  const auto metrics = testing::http_call(sim_.url(), "GET", "/metrics");
  EXPECT_NE(metrics.body.find("perimeter_sim_faults_injected_total{kind=\"429\"}"),
            std::string::npos);
}

TEST_F(ClientAgainstSimTest, SkillVersionsAndArchivesDownloadWithTheSessionsCredential) {
  const json enqueued = enqueue(R"(
name: with-skill
steps: []
skills:
  - {name: notes, files: {SKILL.md: "# notes\n"}}
)");
  auto runner = client("env-key");
  const Session session = runner->retrieve_session(enqueued["session_id"]);
  const json& skills = session.raw["agent"]["skills"];
  ASSERT_EQ(skills.size(), 1u);
  const std::string skill_id = skills[0]["skill_id"];
  const SkillVersion version = runner->retrieve_skill_version(skill_id, skills[0]["version"]);
  EXPECT_EQ(version.name, "notes");
  const std::string archive = runner->download_skill_content(skill_id, version.id);
  ASSERT_GE(archive.size(), 1024u);
  EXPECT_EQ(archive.size() % 512, 0u);
  EXPECT_NE(archive.find("notes/SKILL.md"), std::string::npos);
  EXPECT_NE(archive.find("# notes\n"), std::string::npos);
  try {
    client("wrong-key")->download_skill_content(skill_id, version.id);
    FAIL() << "expected ApiError";
  } catch (const ApiError& e) {
    EXPECT_EQ(e.status(), 401);
  }
}

TEST_F(ClientAgainstSimTest, TheStolenLeaseFaultAnswers412) {
  enqueue();
  set_faults({{"heartbeat_412_rate", 1.0}});
  auto operator_client = client("env-key");
  const auto item = operator_client->poll({});
  ASSERT_TRUE(item.has_value());
  operator_client->ack(item->id);
  auto runner = client(decode_work_secret(*item->secret).sessions_token);
  // The first beat only activates the lease (there is nothing to steal yet); the next one loses.
  const HeartbeatResponse first =
      runner->heartbeat(item->id, std::string(kNoHeartbeat), std::nullopt, milliseconds(5000));
  try {
    runner->heartbeat(item->id, first.last_heartbeat, std::nullopt, milliseconds(5000));
    FAIL() << "expected 412";
  } catch (const ApiError& e) {
    EXPECT_EQ(e.status(), 412);
    EXPECT_TRUE(e.lease_state().is_object());
  }
}

TEST_F(ClientAgainstSimTest, AWrongKeyIsAFatal401) {
  try {
    client("wrong-key")->poll({});
    FAIL() << "expected ApiError";
  } catch (const ApiError& e) {
    EXPECT_EQ(e.status(), 401);
    EXPECT_TRUE(e.fatal());
    EXPECT_EQ(e.error_type(), "authentication_error");
  }
}

TEST_F(ClientAgainstSimTest, GarbageOnTheSocketGets400AndTheServerCarriesOn) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(sim_.port()));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
  const std::string garbage = "THIS IS NOT HTTP\r\n\r\n";
  ASSERT_EQ(write(fd, garbage.data(), garbage.size()), static_cast<ssize_t>(garbage.size()));
  std::string response;
  char buffer[1024];
  ssize_t n;
  while ((n = read(fd, buffer, sizeof buffer)) > 0) response.append(buffer, static_cast<size_t>(n));
  close(fd);
  EXPECT_THAT(response, ::testing::StartsWith("HTTP/1.1 400"));
  EXPECT_THAT(response, ::testing::HasSubstr("\"invalid_request_error\""));
  EXPECT_EQ(testing::http_call(sim_.url(), "GET", "/healthz").status, 200);
}

TEST(SimProcessTest, ShutsDownCleanlyOnSigterm) {
  testing::SimProcess sim;
  ASSERT_EQ(testing::http_call(sim.url(), "GET", "/healthz").status, 200);
  const int status = sim.terminate();
  ASSERT_TRUE(WIFEXITED(status)) << sim.log();
  EXPECT_EQ(WEXITSTATUS(status), 0);
  EXPECT_THAT(sim.log(), ::testing::HasSubstr("shutting down"));
}

}  // namespace
}  // namespace perimeter::agentapi
