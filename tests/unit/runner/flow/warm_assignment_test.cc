#include "runner/warm_assignment.h"

#include <gtest/gtest.h>

#include <deque>
#include <filesystem>
#include <fstream>
#include <map>
#include <variant>

#include "agentapi/api_error.h"
#include "core/capturing_log_sink.h"
#include "core/fake_clock.h"
#include "core/fake_random.h"
#include "flow_fakes.h"
#include "runner/runner_config.h"

namespace perimeter::runner {
namespace {

using std::chrono::milliseconds;

// The assignment service as a script: each request takes the next answer (a response, or no
// answer at all), and every request is recorded.
class ScriptedAssignmentService final : public agentapi::HttpTransport {
 public:
  struct NoAnswer {};
  using Answer = std::variant<agentapi::HttpResponse, NoAnswer>;

  void answer(int status, std::string body = "") {
    agentapi::HttpResponse response;
    response.status = status;
    response.body = std::move(body);
    answers_.push_back(response);
  }
  void no_answer() { answers_.push_back(NoAnswer{}); }

  agentapi::HttpResponse send(const agentapi::HttpRequest& request) override {
    return stream(
        request, [](std::string_view) { return true; }, never_);
  }
  agentapi::HttpResponse stream(const agentapi::HttpRequest& request,
                                const std::function<bool(std::string_view)>& on_chunk,
                                const std::atomic<bool>& /*cancel*/) override {
    requests.push_back(request);
    if (answers_.empty()) throw std::logic_error("the script has no answer left");
    Answer next = answers_.front();
    answers_.pop_front();
    if (std::holds_alternative<NoAnswer>(next)) {
      throw agentapi::TransportError("connection refused");
    }
    agentapi::HttpResponse response = std::get<agentapi::HttpResponse>(next);
    if (response.status >= 200 && response.status < 300) {
      if (!response.body.empty()) on_chunk(response.body);
      response.body.clear();
    }
    return response;
  }

  std::vector<agentapi::HttpRequest> requests;

 private:
  std::deque<Answer> answers_;
  std::atomic<bool> never_{false};
};

// An operator of an earlier version: the runner confirms what it got.
const char* kAssignment = R"({"work_id":"work_1","session_id":"sesn_1","work_secret":"c2VjcmV0"})";
// This version's operator recorded the delivery before it answered.
const char* kDeliveredAssignment =
    R"({"work_id":"work_1","session_id":"sesn_1","work_secret":"c2VjcmV0","delivered":true})";

// The value of `name` among `request`'s headers, or empty.
std::string header(const agentapi::HttpRequest& request, std::string_view name) {
  for (const auto& [key, value] : request.headers) {
    if (key == name) return value;
  }
  return "";
}

class WarmAssignmentTest : public ::testing::Test {
 protected:
  WarmAssignmentTest() : sleeper_(clock_), logger_("runner", sink_, LogLevel::kDebug) {
    config_.assignment_url = "https://perimeter-assignment.perimeter-system.svc:8443";
    config_.token = "pod-token";
  }

  WarmAssignmentClient client() {
    return WarmAssignmentClient(config_, service_, sleeper_, random_, logger_, &metrics_);
  }

  perimeter::testing::FakeClock clock_;
  runner::testing::RecordingStoppableSleeper sleeper_;
  perimeter::testing::FakeRandom random_{0.5};
  std::shared_ptr<perimeter::testing::CapturingLogSink> sink_ =
      std::make_shared<perimeter::testing::CapturingLogSink>();
  Logger logger_;
  RunnerMetrics metrics_;
  ScriptedAssignmentService service_;
  WarmConfig config_;
  StopSource stop_;
};

TEST_F(WarmAssignmentTest, ADeliveredAssignmentIsServedWithoutAConfirmAndEveryAskCarriesOneNonce) {
  service_.answer(204);
  service_.no_answer();  // an answer lost on the way: asked again with the same nonce
  service_.answer(200, kDeliveredAssignment);
  auto assignment = client().wait(stop_);

  ASSERT_TRUE(assignment.has_value());
  EXPECT_EQ(assignment->work_id, "work_1");
  EXPECT_EQ(assignment->work_secret, "c2VjcmV0");
  ASSERT_EQ(service_.requests.size(), 3u);
  const std::string nonce = header(service_.requests[0], WarmAssignmentClient::kNonceHeader);
  EXPECT_EQ(nonce.size(), 64u);
  EXPECT_EQ(nonce.find_first_not_of("0123456789abcdef"), std::string::npos);
  for (const auto& request : service_.requests) {
    EXPECT_EQ(request.method, "GET");  // no confirm
    EXPECT_EQ(header(request, "Authorization"), "Bearer pod-token");
    EXPECT_EQ(header(request, WarmAssignmentClient::kNonceHeader), nonce);
  }
  // Each runner process has its own, and none is the token or appears in the log.
  service_.answer(200, kDeliveredAssignment);
  ASSERT_TRUE(client().wait(stop_).has_value());
  EXPECT_NE(header(service_.requests.back(), WarmAssignmentClient::kNonceHeader), nonce);
  bool assigned_logged = false;
  for (const std::string& line : sink_->lines()) {
    EXPECT_EQ(line.find(nonce), std::string::npos) << line;
    EXPECT_EQ(line.find("confirming"), std::string::npos) << line;
    assigned_logged |= line.find("warm: assigned") != std::string::npos;
  }
  EXPECT_TRUE(assigned_logged);
}

TEST_F(WarmAssignmentTest, AnEarlierOperatorsAssignmentIsConfirmedBeforeItIsServed) {
  service_.answer(204);
  service_.answer(204);
  service_.answer(200, kAssignment);
  service_.answer(204);
  auto assignment = client().wait(stop_);

  ASSERT_TRUE(assignment.has_value());
  EXPECT_EQ(assignment->work_id, "work_1");
  EXPECT_EQ(assignment->session_id, "sesn_1");
  EXPECT_EQ(assignment->work_secret, "c2VjcmV0");
  ASSERT_EQ(service_.requests.size(), 4u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(service_.requests[i].method, "GET");
    EXPECT_EQ(service_.requests[i].url,
              "https://perimeter-assignment.perimeter-system.svc:8443/v1/assignment");
  }
  EXPECT_EQ(service_.requests[3].method, "POST");
  EXPECT_EQ(service_.requests[3].url,
            "https://perimeter-assignment.perimeter-system.svc:8443/v1/assignment/confirm");
  EXPECT_EQ(nlohmann::json::parse(service_.requests[3].body)["work_id"], "work_1");
  for (const auto& request : service_.requests) {
    ASSERT_EQ(request.headers.size() >= 1, true);
    EXPECT_EQ(request.headers[0].first, "Authorization");
    EXPECT_EQ(request.headers[0].second, "Bearer pod-token");
  }
  // An empty hold is the normal answer: asked again at once, no backoff, nothing counted.
  EXPECT_TRUE(sleeper_.delays().empty());
  EXPECT_EQ(metrics_.assignment_retries(), 0);
}

TEST_F(WarmAssignmentTest, FailuresBackOffWithJitterAndAreCounted) {
  service_.no_answer();
  service_.answer(503, "unavailable");
  service_.answer(200, "not json");
  service_.answer(200, kAssignment);
  service_.no_answer();
  service_.answer(204);
  random_.push(0.0);  // factor 0.8
  random_.push(0.5);  // factor 1.0
  random_.push(0.99);
  random_.push(0.5);

  auto assignment = client().wait(stop_);

  ASSERT_TRUE(assignment.has_value());
  EXPECT_EQ(assignment->work_id, "work_1");
  // 200 ms doubling, jittered by ±20 %; a success (the assignment) starts the sequence over.
  const std::vector<milliseconds> expected = {milliseconds(160), milliseconds(400),
                                              milliseconds(957), milliseconds(200)};
  EXPECT_EQ(sleeper_.delays(), expected);
  EXPECT_EQ(metrics_.assignment_retries(), 4);
  // The answer that did not parse is not echoed: it could hold a secret.
  for (const std::string& line : sink_->lines()) {
    EXPECT_EQ(line.find("not json"), std::string::npos) << line;
  }
}

TEST_F(WarmAssignmentTest, ARefusedTokenEndsTheWait) {
  for (int status : {401, 403, 410}) {
    ScriptedAssignmentService service;
    service.answer(status, "{\"error\":\"token refused\"}");
    WarmAssignmentClient refused(config_, service, sleeper_, random_, logger_, &metrics_);
    try {
      refused.wait(stop_);
      FAIL() << "HTTP " << status << " did not end the wait";
    } catch (const AssignmentRefused& error) {
      EXPECT_NE(std::string(error.what()).find(std::to_string(status)), std::string::npos);
      EXPECT_NE(std::string(error.what()).find("token refused"), std::string::npos);
    }
  }
}

TEST_F(WarmAssignmentTest, AConfirmForAnotherWorkIdIsRefused) {
  service_.answer(200, kAssignment);
  service_.answer(409, "assigned another work item");
  EXPECT_THROW(client().wait(stop_), AssignmentRefused);
}

TEST_F(WarmAssignmentTest, AStopEndsTheWaitWithoutAnAssignment) {
  service_.no_answer();
  sleeper_.after_sleep = [](StopSource& stop) { stop.request(); };
  EXPECT_FALSE(client().wait(stop_).has_value());
  EXPECT_EQ(service_.requests.size(), 1u);
}

TEST_F(WarmAssignmentTest, TheAssignmentTakesThePlaceOfThePerSessionVariables) {
  std::map<std::string, std::string> pod_env = {{"ANTHROPIC_ENVIRONMENT_ID", "env_1"},
                                                {"ANTHROPIC_BASE_URL", "https://api.example"}};
  EnvLookup env = [&pod_env](const char* name) -> std::optional<std::string> {
    auto it = pod_env.find(name);
    if (it == pod_env.end()) return std::nullopt;
    return it->second;
  };
  // A work secret the way the queue sends it: base64url of {"sessions_token": ...}.
  WarmAssignment assignment{"work_9", "sesn_9", "eyJzZXNzaW9uc190b2tlbiI6InNrLXRvayJ9"};
  RunnerConfig config = load_runner_config(with_assignment(env, assignment), "/workspace");
  EXPECT_EQ(config.work_id, "work_9");
  EXPECT_EQ(config.session_id, "sesn_9");
  EXPECT_EQ(config.environment_id, "env_1");
  EXPECT_EQ(config.base_url, "https://api.example");
  EXPECT_EQ(config.credential, "sk-tok");
  EXPECT_EQ(config.credential_source, "work_secret");
}

class WarmConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("warm-config-" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()) +
            "-" + ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string write(const std::string& name, const std::string& text) {
    const auto path = dir_ / name;
    std::ofstream(path) << text;
    return path.string();
  }
  EnvLookup env() {
    return [this](const char* name) -> std::optional<std::string> {
      auto it = vars_.find(name);
      if (it == vars_.end()) return std::nullopt;
      return it->second;
    };
  }
  std::filesystem::path dir_;
  std::map<std::string, std::string> vars_;
};

TEST_F(WarmConfigTest, WithoutTheUrlThePodIsCold) {
  EXPECT_FALSE(load_warm_config(env()).has_value());
}

TEST_F(WarmConfigTest, ReadsTheTokenFileAndTrimsIt) {
  vars_["PERIMETER_WARM_ASSIGNMENT_URL"] = "https://assign.perimeter-system.svc:8443/";
  vars_["PERIMETER_WARM_TOKEN_FILE"] = write("token", "tok-123\n");
  vars_["PERIMETER_WARM_CA_FILE"] = write("ca.crt", "pem");
  auto config = load_warm_config(env());
  ASSERT_TRUE(config.has_value());
  EXPECT_EQ(config->assignment_url, "https://assign.perimeter-system.svc:8443");
  EXPECT_EQ(config->token, "tok-123");
  EXPECT_EQ(config->ca_pem, "pem");
}

TEST_F(WarmConfigTest, RefusesPlainHttpAMissingTokenOrCaAndNeverEchoesTheToken) {
  vars_["PERIMETER_WARM_ASSIGNMENT_URL"] = "http://assign:8080";
  vars_["PERIMETER_WARM_TOKEN_FILE"] = write("token", "tok-secret");
  vars_["PERIMETER_WARM_CA_FILE"] = write("ca.crt", "pem");
  EXPECT_THROW(load_warm_config(env()), ConfigError);

  vars_["PERIMETER_WARM_ASSIGNMENT_URL"] = "https://assign:8443";
  vars_["PERIMETER_WARM_TOKEN_FILE"] = write("empty", " \n");
  EXPECT_THROW(load_warm_config(env()), ConfigError);
  vars_["PERIMETER_WARM_TOKEN_FILE"] = (dir_ / "absent").string();
  EXPECT_THROW(load_warm_config(env()), ConfigError);

  vars_["PERIMETER_WARM_TOKEN_FILE"] = write("token", "tok-secret");
  vars_["PERIMETER_WARM_CA_FILE"] = (dir_ / "absent-ca").string();
  try {
    load_warm_config(env());
    FAIL() << "a missing CA file was accepted";
  } catch (const ConfigError& error) {
    EXPECT_EQ(std::string(error.what()).find("tok-secret"), std::string::npos);
  }
  vars_.erase("PERIMETER_WARM_CA_FILE");
  EXPECT_THROW(load_warm_config(env()), ConfigError);
}

}  // namespace
}  // namespace perimeter::runner
