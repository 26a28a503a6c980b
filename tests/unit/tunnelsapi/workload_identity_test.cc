#include "tunnelsapi/workload_identity.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>

#include "agentapi/mock_agent_api.h"
#include "agentapi/sim_process.h"
#include "core/capturing_log_sink.h"
#include "core/fake_clock.h"
#include "core/fake_random.h"
#include "tunnelsapi/tunnels_api_client.h"

namespace perimeter::tunnelsapi {
namespace {

using agentapi::ApiError;
using agentapi::HttpRequest;
using agentapi::HttpResponse;
using agentapi::ProtocolError;
using agentapi::TransportError;
using nlohmann::json;
using std::chrono::milliseconds;
using std::chrono::seconds;
using ::testing::_;
using ::testing::Contains;
using ::testing::HasSubstr;
using testing::http_reply;
using ::testing::Invoke;
using testing::MockHttpTransport;
using ::testing::Not;
using ::testing::Pair;
using testing::RecordingSleeper;
using ::testing::Return;
using ::testing::StrictMock;

// A projected ServiceAccount token as the kubelet writes it (a JWT; the signature is not checked
// here, the token endpoint checks it).
constexpr const char* kAssertion1 =
    "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6cDpvIn0.c2lnMQ";
constexpr const char* kAssertion2 =
    "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6cDpvMiJ9.c2lnMg";

std::string token_response(const std::string& access_token, int expires_in) {
  return json({{"access_token", access_token},
               {"token_type", "Bearer"},
               {"expires_in", expires_in},
               {"scope", "workspace:manage_tunnels"}})
      .dump();
}

class WorkloadIdentityTest : public ::testing::Test {
 protected:
  WorkloadIdentityTest() {
    write_assertion(kAssertion1);
    config_.base_url = "http://127.0.0.1:9/";
    config_.federation_rule_id = "fdrl_01";
    config_.organization_id = "org-uuid-1";
    config_.service_account_id = "svac_01";
    config_.workspace_id = "wrkspc_01";
    config_.assertion_file = assertion_path_;
    config_.user_agent = "perimeter-test/1";
  }

  void write_assertion(const std::string& text) {
    std::ofstream out(assertion_path_, std::ios::trunc);
    out << text;
  }

  std::unique_ptr<WorkloadIdentityTokenSource> make_source() {
    auto transport = std::make_unique<StrictMock<MockHttpTransport>>();
    transport_ = transport.get();
    return std::make_unique<WorkloadIdentityTokenSource>(
        config_, std::move(transport), clock_, random_, sleeper_, &metrics_,
        Logger("tunnelsapi.wif", sink_, LogLevel::kDebug));
  }

  std::string logs() const {
    std::string all;
    for (const auto& line : sink_->lines()) all += line + "\n";
    return all;
  }

  testing::TempDir dir_;
  std::string assertion_path_ = dir_.path() + "/token";
  WorkloadIdentityConfig config_;
  testing::FakeClock clock_;
  testing::FakeRandom random_{0.5};
  RecordingSleeper sleeper_;
  testing::RecordingApiMetrics metrics_;
  std::shared_ptr<testing::CapturingLogSink> sink_ = std::make_shared<testing::CapturingLogSink>();
  StrictMock<MockHttpTransport>* transport_ = nullptr;
};

TEST_F(WorkloadIdentityTest, TheExchangeSendsTheSdksJwtBearerRequest) {
  auto source = make_source();
  HttpRequest seen;
  EXPECT_CALL(*transport_, send(_)).WillOnce(Invoke([&](const HttpRequest& request) {
    seen = request;
    return http_reply(200, token_response("sk-ant-oat-1", 3600));
  }));
  EXPECT_EQ(source->access_token().expose(), "sk-ant-oat-1");
  EXPECT_EQ(seen.method, "POST");
  EXPECT_EQ(seen.url, "http://127.0.0.1:9/v1/oauth/token");
  EXPECT_THAT(seen.headers, Contains(Pair("Content-Type", "application/json")));
  EXPECT_THAT(seen.headers,
              Contains(Pair("anthropic-beta", "oauth-2025-04-20,oidc-federation-2026-04-01")));
  EXPECT_THAT(seen.headers, Contains(Pair("User-Agent", "perimeter-test/1")));
  for (const auto& header : seen.headers) {
    EXPECT_NE(header.first, "Authorization");
    EXPECT_NE(header.first, "anthropic-version");  // the SDK sends none here
  }
  EXPECT_EQ(json::parse(seen.body),
            json({{"grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"},
                  {"assertion", kAssertion1},
                  {"federation_rule_id", "fdrl_01"},
                  {"organization_id", "org-uuid-1"},
                  {"service_account_id", "svac_01"},
                  {"workspace_id", "wrkspc_01"}}));
  EXPECT_EQ(metrics_.responses, (std::vector<std::pair<std::string, int>>{{"oauth.token", 200}}));
}

TEST_F(WorkloadIdentityTest, OptionalIdsAreLeftOutWhenNotConfigured) {
  config_.service_account_id.clear();
  config_.workspace_id.clear();
  write_assertion(std::string("\n  ") + kAssertion1 + "\n");  // whitespace trimmed
  auto source = make_source();
  HttpRequest seen;
  EXPECT_CALL(*transport_, send(_)).WillOnce(Invoke([&](const HttpRequest& request) {
    seen = request;
    return http_reply(200, token_response("sk-ant-oat-1", 3600));
  }));
  source->access_token();
  const json body = json::parse(seen.body);
  EXPECT_FALSE(body.contains("service_account_id"));
  EXPECT_FALSE(body.contains("workspace_id"));
  EXPECT_EQ(body["assertion"], kAssertion1);
}

TEST_F(WorkloadIdentityTest, TheAccessTokenIsCachedUntilShortlyBeforeItExpires) {
  auto source = make_source();
  EXPECT_CALL(*transport_, send(_))
      .WillOnce(Return(http_reply(200, token_response("sk-ant-oat-1", 3600))))
      .WillOnce(Return(http_reply(200, token_response("sk-ant-oat-2", 3600))));
  EXPECT_EQ(source->access_token().expose(), "sk-ant-oat-1");
  EXPECT_EQ(source->access_token().expose(), "sk-ant-oat-1");
  // refresh_before is 120 s: at 3600 - 121 s the token is still served.
  clock_.advance(seconds(3600 - 121));
  EXPECT_EQ(source->access_token().expose(), "sk-ant-oat-1");
  clock_.advance(seconds(2));
  EXPECT_EQ(source->access_token().expose(), "sk-ant-oat-2");
  EXPECT_EQ(source->exchanges(), 2);
}

TEST_F(WorkloadIdentityTest, AFailedRefreshServesTheCachedTokenWhileItHasOver30SecondsLeft) {
  auto source = make_source();
  const std::string unavailable =
      R"({"type":"error","error":{"type":"api_error","message":"unavailable"}})";
  EXPECT_CALL(*transport_, send(_))
      .WillOnce(Return(http_reply(200, token_response("sk-ant-oat-1", 3600))))
      .WillRepeatedly(Return(http_reply(503, unavailable)));
  source->access_token();
  clock_.advance(seconds(3500));  // past refresh_at (3480 s), 100 s left
  EXPECT_EQ(source->access_token().expose(), "sk-ant-oat-1");
  EXPECT_THAT(logs(), HasSubstr("access token refresh failed"));
  clock_.advance(seconds(75));  // 25 s left: too little to hand out
  EXPECT_THROW(source->access_token(), OAuthError);
  EXPECT_EQ(source->exchanges(), 1);
}

TEST_F(WorkloadIdentityTest, AShortLivedTokenIsRefreshedAtHalfItsLifetime) {
  auto source = make_source();
  EXPECT_CALL(*transport_, send(_))
      .WillOnce(Return(http_reply(200, token_response("sk-ant-oat-1", 60))))
      .WillOnce(Return(http_reply(200, token_response("sk-ant-oat-2", 60))));
  source->access_token();
  clock_.advance(seconds(29));
  EXPECT_EQ(source->access_token().expose(), "sk-ant-oat-1");
  clock_.advance(seconds(1));
  EXPECT_EQ(source->access_token().expose(), "sk-ant-oat-2");
}

TEST_F(WorkloadIdentityTest, TheAssertionFileIsReadAgainAtEveryExchange) {
  auto source = make_source();
  std::vector<std::string> assertions;
  EXPECT_CALL(*transport_, send(_)).Times(2).WillRepeatedly(Invoke([&](const HttpRequest& request) {
    assertions.push_back(json::parse(request.body)["assertion"]);
    return http_reply(200, token_response("sk-ant-oat-" + std::to_string(assertions.size()), 3600));
  }));
  source->access_token();
  write_assertion(kAssertion2);  // the kubelet rotated the projected token
  clock_.advance(seconds(3600));
  source->access_token();
  EXPECT_EQ(assertions, (std::vector<std::string>{kAssertion1, kAssertion2}));
}

TEST_F(WorkloadIdentityTest, InvalidateDropsOnlyTheRejectedToken) {
  auto source = make_source();
  EXPECT_CALL(*transport_, send(_))
      .WillOnce(Return(http_reply(200, token_response("sk-ant-oat-1", 3600))))
      .WillOnce(Return(http_reply(200, token_response("sk-ant-oat-2", 3600))));
  const Secret first = source->access_token();
  source->invalidate(Secret("sk-ant-oat-other"));  // not ours: nothing happens
  EXPECT_EQ(source->access_token(), first);
  source->invalidate(first);
  EXPECT_EQ(source->access_token().expose(), "sk-ant-oat-2");
  source->invalidate(first);  // a second caller with the same stale token: no third exchange
  EXPECT_EQ(source->access_token().expose(), "sk-ant-oat-2");
  EXPECT_EQ(source->exchanges(), 2);
}

TEST_F(WorkloadIdentityTest, AnOAuthErrorKeepsOnlyTheSafeFieldsOfTheBody) {
  auto source = make_source();
  const json body = {{"error", "invalid_grant"},
                     {"error_description", "audience does not match the federation rule"},
                     {"error_uri", "https://docs.example/wif"},
                     {"assertion", kAssertion1}};
  EXPECT_CALL(*transport_, send(_))
      .WillOnce(Return(http_reply(400, body.dump(), {{"request-id", "req_9"}})));
  try {
    source->access_token();
    FAIL() << "expected OAuthError";
  } catch (const OAuthError& e) {
    EXPECT_EQ(e.status(), 400);
    EXPECT_EQ(e.operation(), "oauth.token");
    EXPECT_EQ(e.error(), "invalid_grant");
    EXPECT_EQ(e.error_description(), "audience does not match the federation rule");
    EXPECT_EQ(e.error_uri(), "https://docs.example/wif");
    EXPECT_EQ(e.request_id(), "req_9");
    EXPECT_TRUE(e.fatal());
    EXPECT_FALSE(e.body().contains("assertion"));
    EXPECT_THAT(e.raw_body(), Not(HasSubstr(kAssertion1)));
    EXPECT_THAT(e.what(), Not(HasSubstr(kAssertion1)));
  }
  EXPECT_TRUE(sleeper_.delays.empty());  // a 400 is not retried
  EXPECT_THAT(logs(), Not(HasSubstr(kAssertion1)));
}

TEST_F(WorkloadIdentityTest, AnApiShapedErrorIsKeptToo) {
  auto source = make_source();
  EXPECT_CALL(*transport_, send(_))
      .WillOnce(Return(http_reply(
          401,
          R"({"type":"error","error":{"type":"authentication_error","message":"no matching rule"}})")));
  try {
    source->access_token();
    FAIL() << "expected OAuthError";
  } catch (const ApiError& e) {  // an OAuthError is an ApiError
    EXPECT_EQ(e.status(), 401);
    EXPECT_EQ(e.error_type(), "authentication_error");
    EXPECT_EQ(e.api_message(), "no matching rule");
  }
}

TEST_F(WorkloadIdentityTest, TheAssertionIsScrubbedFromATextErrorBody) {
  EXPECT_EQ(redact_oauth_error_body(std::string("bad token ") + kAssertion1, kAssertion1),
            "bad token <assertion>");
  EXPECT_EQ(redact_oauth_error_body(std::string(3000, 'x'), kAssertion1).size(),
            2000 + std::string("... <1000 more chars>").size());
  EXPECT_EQ(redact_oauth_error_body(R"(["x"])", kAssertion1), "null");
}

TEST_F(WorkloadIdentityTest, TheExchangeIsRetriedThroughServerErrorsAndResets) {
  auto source = make_source();
  EXPECT_CALL(*transport_, send(_))
      .WillOnce(Return(http_reply(503, "{}")))
      .WillOnce(Invoke(
          [](const HttpRequest&) -> HttpResponse { throw TransportError("connection reset"); }))
      .WillOnce(Return(http_reply(200, token_response("sk-ant-oat-1", 3600))));
  EXPECT_EQ(source->access_token().expose(), "sk-ant-oat-1");
  EXPECT_EQ(sleeper_.delays, (std::vector<milliseconds>{milliseconds(500), milliseconds(1000)}));
}

TEST_F(WorkloadIdentityTest, AnAnswerWithoutAUsableTokenIsAProtocolErrorThatQuotesNothing) {
  auto source = make_source();
  const std::vector<std::string> bodies = {
      json({{"access_token", "sk-ant-oat-leak"}}).dump(),  // no expires_in
      json({{"access_token", "sk-ant-oat-leak"}, {"expires_in", 3600}, {"token_type", "mac"}})
          .dump(),
      json({{"access_token", ""}, {"expires_in", 3600}}).dump(),
      "sk-ant-oat-leak",
  };
  for (const std::string& body : bodies) {
    SCOPED_TRACE(body);
    EXPECT_CALL(*transport_, send(_)).WillOnce(Return(http_reply(200, body)));
    try {
      source->access_token();
      ADD_FAILURE() << "expected ProtocolError";
    } catch (const ProtocolError& e) {
      EXPECT_EQ(e.operation(), "oauth.token");
      EXPECT_THAT(e.what(), Not(HasSubstr("sk-ant-oat-leak")));
      EXPECT_THAT(e.body_excerpt(), HasSubstr("withheld"));
    }
    ::testing::Mock::VerifyAndClearExpectations(transport_);
  }
  EXPECT_EQ(metrics_.protocol_errors.size(), bodies.size());
  EXPECT_THAT(logs(), Not(HasSubstr("sk-ant-oat-leak")));
}

TEST_F(WorkloadIdentityTest, AMissingEmptyOrOversizedAssertionIsRefusedBeforeSending) {
  // StrictMock: no request may go out.
  auto source = make_source();
  std::remove(assertion_path_.c_str());
  EXPECT_THROW(source->access_token(), WorkloadIdentityError);
  write_assertion("  \n");
  EXPECT_THROW(source->access_token(), WorkloadIdentityError);
  write_assertion(std::string(kMaxAssertionBytes + 1, 'a'));
  EXPECT_THROW(source->access_token(), WorkloadIdentityError);
}

TEST_F(WorkloadIdentityTest, TheAssertionGoesOnlyToHttpsOrLoopback) {
  config_.base_url = "http://api.example.com";
  auto source = make_source();
  EXPECT_THROW(source->access_token(), WorkloadIdentityError);

  for (const char* url :
       {"https://api.anthropic.com", "http://localhost:8080", "http://[::1]:80"}) {
    SCOPED_TRACE(url);
    config_.base_url = url;
    auto allowed = make_source();
    EXPECT_CALL(*transport_, send(_))
        .WillOnce(Return(http_reply(200, token_response("sk-ant-oat-1", 3600))));
    allowed->access_token();
  }

  config_.base_url = "http://10.0.0.1:8080";
  config_.allow_plain_http = true;
  auto opted_in = make_source();
  EXPECT_CALL(*transport_, send(_))
      .WillOnce(Return(http_reply(200, token_response("sk-ant-oat-1", 3600))));
  opted_in->access_token();
}

TEST_F(WorkloadIdentityTest, NeitherTheAssertionNorTheAccessTokenIsLogged) {
  auto source = make_source();
  EXPECT_CALL(*transport_, send(_))
      .WillOnce(Return(http_reply(500, std::string("echo ") + kAssertion1)))
      .WillOnce(Return(http_reply(200, token_response("sk-ant-oat-secret", 3600))));
  const Secret token = source->access_token();
  source->invalidate(token);
  const std::string all = logs();
  EXPECT_THAT(all, HasSubstr("access token exchanged"));  // the logger was listening
  EXPECT_THAT(all, Not(HasSubstr(kAssertion1)));
  EXPECT_THAT(all, Not(HasSubstr("sk-ant-oat-secret")));
}

// The two together: a 401 from the Tunnels API drops the cached access token, the next call
// exchanges a new one, and the request goes out once more with it.
TEST_F(WorkloadIdentityTest, ATunnelsApi401ExchangesANewTokenOnce) {
  auto source = make_source();
  EXPECT_CALL(*transport_, send(_))
      .WillOnce(Return(http_reply(200, token_response("sk-ant-oat-1", 3600))))
      .WillOnce(Return(http_reply(200, token_response("sk-ant-oat-2", 3600))));

  auto api_transport = std::make_unique<StrictMock<MockHttpTransport>>();
  auto* api = api_transport.get();
  TunnelsClientConfig config;
  config.base_url = "http://127.0.0.1:9";
  TunnelsApiClient client(config, *source, std::move(api_transport), random_, sleeper_, &metrics_,
                          Logger("tunnelsapi", sink_, LogLevel::kDebug));
  std::vector<std::string> authorizations;
  EXPECT_CALL(*api, send(_)).Times(2).WillRepeatedly(Invoke([&](const HttpRequest& request) {
    for (const auto& [name, value] : request.headers) {
      if (name == "Authorization") authorizations.push_back(value);
    }
    return authorizations.size() == 1
               ? http_reply(401, "{}")
               : http_reply(200, R"({"type":"tunnel","id":"tnl_01","display_name":null,
                       "domain":"d.example","created_at":"2026-11-30T01:00:00Z","archived_at":null})");
  }));
  EXPECT_EQ(client.retrieve_tunnel("tnl_01").domain, "d.example");
  EXPECT_EQ(authorizations,
            (std::vector<std::string>{"Bearer sk-ant-oat-1", "Bearer sk-ant-oat-2"}));
  EXPECT_EQ(source->exchanges(), 2);
  EXPECT_THAT(logs(), Not(HasSubstr("sk-ant-oat-")));
}

}  // namespace
}  // namespace perimeter::tunnelsapi
