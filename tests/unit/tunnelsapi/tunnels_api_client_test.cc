#include "tunnelsapi/tunnels_api_client.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <functional>
#include <sstream>

#include "agentapi/api_error.h"
#include "agentapi/mock_agent_api.h"
#include "core/capturing_log_sink.h"
#include "core/fake_random.h"

namespace perimeter::tunnelsapi {
namespace {

using agentapi::ApiError;
using agentapi::HttpRequest;
using agentapi::HttpResponse;
using agentapi::ProtocolError;
using agentapi::TransportError;
using nlohmann::json;
using std::chrono::milliseconds;
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

HttpResponse fail(const HttpRequest&) {
  throw TransportError("POST http://127.0.0.1:9/v1/tunnels: connection reset by peer");
}

constexpr const char* kTunnelToken = "eyJhIjoidHVubmVsLXRva2VuLXNlY3JldCJ9";

const std::string kTunnel = R"({"type":"tunnel","id":"tnl_01","display_name":"perimeter-uid-1",
  "domain":"abc123.tunnel.anthropic.com","created_at":"2026-11-30T01:00:00Z","archived_at":null})";
const std::string kArchivedTunnel = R"({"type":"tunnel","id":"tnl_01","display_name":null,
  "domain":"abc123.tunnel.anthropic.com","created_at":"2026-11-30T01:00:00Z",
  "archived_at":"2026-11-30T02:00:00Z"})";
const std::string kToken =
    std::string(R"({"type":"tunnel_token","id":"ttok_1","tunnel_token":")") + kTunnelToken + "\"}";
const std::string kCertificate = R"({"type":"tunnel_certificate","id":"tcrt_01",
  "tunnel_id":"tnl_01","fingerprint":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
  "created_at":"2026-11-30T01:00:00Z","expires_at":"2031-11-29T01:00:00Z","archived_at":null})";
const std::string kCaPem =
    "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUQ\n-----END CERTIFICATE-----\n";

const std::string kNotFound =
    R"({"type":"error","error":{"type":"not_found_error","message":"tunnel tnl_x not found"}})";

// Hands out access-1, access-2, ...: invalidating the current token moves to the next.
class CountingTokenSource : public AccessTokenSource {
 public:
  Secret access_token() override { return Secret("access-" + std::to_string(generation)); }
  void invalidate(const Secret& rejected) override {
    invalidated.push_back(rejected.expose());
    if (rejected == access_token()) ++generation;
  }
  int generation = 1;
  std::vector<std::string> invalidated;
};

class TunnelsApiClientTest : public ::testing::Test {
 protected:
  TunnelsApiClientTest() { client_ = make_client({}); }

  std::unique_ptr<TunnelsApiClient> make_client(const std::string& workspace_id) {
    auto transport = std::make_unique<StrictMock<MockHttpTransport>>();
    transport_ = transport.get();
    TunnelsClientConfig config;
    config.base_url = "http://127.0.0.1:9/";
    config.user_agent = "perimeter-test/1";
    config.workspace_id = workspace_id;
    // FakeRandom's 0.5 makes the jitter factor exactly 1, so delays are the base delays.
    return std::make_unique<TunnelsApiClient>(config, tokens_, std::move(transport), random_,
                                              sleeper_, &metrics_,
                                              Logger("tunnelsapi", sink_, LogLevel::kDebug));
  }

  std::string logs() const {
    std::string all;
    for (const auto& line : sink_->lines()) all += line + "\n";
    return all;
  }

  testing::FakeRandom random_{0.5};
  RecordingSleeper sleeper_;
  testing::RecordingApiMetrics metrics_;
  CountingTokenSource tokens_;
  std::shared_ptr<testing::CapturingLogSink> sink_ = std::make_shared<testing::CapturingLogSink>();
  StrictMock<MockHttpTransport>* transport_ = nullptr;
  std::unique_ptr<TunnelsApiClient> client_;
};

// ---- every call's request ----

struct CallCase {
  std::string name;
  std::function<void(TunnelsApi&)> invoke;
  std::string method;
  std::string url;
  std::string body;  // exact JSON text; empty: no body
  std::string answer;
  bool repeatable;
};

std::vector<CallCase> all_calls() {
  const std::string base = "http://127.0.0.1:9";
  return {
      {"tunnels.create", [](TunnelsApi& api) { api.create_tunnel("perimeter-uid-1"); }, "POST",
       base + "/v1/tunnels", R"({"display_name":"perimeter-uid-1"})", kTunnel, false},
      {"tunnels.retrieve", [](TunnelsApi& api) { api.retrieve_tunnel("tnl_01"); }, "GET",
       base + "/v1/tunnels/tnl_01", "", kTunnel, true},
      {"tunnels.list", [](TunnelsApi& api) { api.list_tunnels(true, 1000, "page_2"); }, "GET",
       base + "/v1/tunnels?include_archived=true&limit=1000&page=page_2", "",
       R"({"data":[],"next_page":null})", true},
      {"tunnels.reveal_token", [](TunnelsApi& api) { api.reveal_token("tnl_01"); }, "POST",
       base + "/v1/tunnels/tnl_01/reveal_token", "", kToken, true},
      {"tunnels.rotate_token",
       [](TunnelsApi& api) { api.rotate_token("tnl_01", "tokenVersion 2"); }, "POST",
       base + "/v1/tunnels/tnl_01/rotate_token", R"({"reason":"tokenVersion 2"})", kToken, false},
      {"tunnels.archive", [](TunnelsApi& api) { api.archive_tunnel("tnl_01"); }, "POST",
       base + "/v1/tunnels/tnl_01/archive", "", kArchivedTunnel, true},
      {"tunnels.certificates.create",
       [](TunnelsApi& api) { api.create_certificate("tnl_01", kCaPem); }, "POST",
       base + "/v1/tunnels/tnl_01/certificates", json({{"ca_certificate_pem", kCaPem}}).dump(),
       kCertificate, false},
      {"tunnels.certificates.list",
       [](TunnelsApi& api) { api.list_certificates("tnl_01", false, 0, ""); }, "GET",
       base + "/v1/tunnels/tnl_01/certificates", "", R"({"data":[],"next_page":null})", true},
      {"tunnels.certificates.retrieve",
       [](TunnelsApi& api) { api.retrieve_certificate("tnl_01", "tcrt_01"); }, "GET",
       base + "/v1/tunnels/tnl_01/certificates/tcrt_01", "", kCertificate, true},
      {"tunnels.certificates.archive",
       [](TunnelsApi& api) { api.archive_certificate("tnl_01", "tcrt_01"); }, "POST",
       base + "/v1/tunnels/tnl_01/certificates/tcrt_01/archive", "", kCertificate, true},
  };
}

TEST_F(TunnelsApiClientTest, EveryCallSendsTheSdksMethodPathHeadersAndBody) {
  for (const CallCase& call : all_calls()) {
    SCOPED_TRACE(call.name);
    HttpRequest seen;
    EXPECT_CALL(*transport_, send(_)).WillOnce(Invoke([&](const HttpRequest& request) {
      seen = request;
      return http_reply(200, call.answer);
    }));
    call.invoke(*client_);
    ::testing::Mock::VerifyAndClearExpectations(transport_);
    EXPECT_EQ(seen.method, call.method);
    EXPECT_EQ(seen.url, call.url);
    EXPECT_EQ(seen.body, call.body);
    EXPECT_THAT(seen.headers, Contains(Pair("Authorization", "Bearer access-1")));
    EXPECT_THAT(seen.headers, Contains(Pair("anthropic-version", "2023-06-01")));
    EXPECT_THAT(seen.headers,
                Contains(Pair("anthropic-beta", "mcp-tunnels-2026-06-22,oauth-2025-04-20")));
    EXPECT_THAT(seen.headers, Contains(Pair("User-Agent", "perimeter-test/1")));
    EXPECT_THAT(seen.headers, Contains(Pair("Accept", "application/json")));
    if (call.body.empty()) {
      EXPECT_THAT(seen.headers, Not(Contains(Pair("Content-Type", _))));
    } else {
      EXPECT_THAT(seen.headers, Contains(Pair("Content-Type", "application/json")));
    }
    for (const auto& header : seen.headers) {
      EXPECT_NE(header.first, "x-api-key");
      EXPECT_NE(header.first, "anthropic-workspace-id");
    }
    EXPECT_EQ(metrics_.responses.back(), std::make_pair(call.name, 200));
  }
}

TEST_F(TunnelsApiClientTest, CreateWithoutANameSendsAnEmptyObject) {
  HttpRequest seen;
  EXPECT_CALL(*transport_, send(_)).WillOnce(Invoke([&](const HttpRequest& request) {
    seen = request;
    return http_reply(200, kArchivedTunnel);
  }));
  client_->create_tunnel("");
  EXPECT_EQ(seen.body, "{}");
  EXPECT_THROW(client_->create_tunnel(std::string(256, 'x')), std::invalid_argument);
}

TEST_F(TunnelsApiClientTest, RotateWithoutAReasonSendsAnEmptyObject) {
  HttpRequest seen;
  EXPECT_CALL(*transport_, send(_)).WillOnce(Invoke([&](const HttpRequest& request) {
    seen = request;
    return http_reply(200, kToken);
  }));
  client_->rotate_token("tnl_01", "");
  EXPECT_EQ(seen.body, "{}");
}

TEST_F(TunnelsApiClientTest, TheWorkspaceHeaderGoesOutWhenConfigured) {
  auto client = make_client("wrkspc_01");
  HttpRequest seen;
  EXPECT_CALL(*transport_, send(_)).WillOnce(Invoke([&](const HttpRequest& request) {
    seen = request;
    return http_reply(200, kTunnel);
  }));
  client->retrieve_tunnel("tnl_01");
  EXPECT_THAT(seen.headers, Contains(Pair("anthropic-workspace-id", "wrkspc_01")));
}

TEST_F(TunnelsApiClientTest, IdsAreEncodedIntoThePath) {
  HttpRequest seen;
  EXPECT_CALL(*transport_, send(_)).WillOnce(Invoke([&](const HttpRequest& request) {
    seen = request;
    return http_reply(200, kCertificate);
  }));
  client_->retrieve_certificate("tnl/../x", "tcrt 1");
  EXPECT_EQ(seen.url, "http://127.0.0.1:9/v1/tunnels/tnl%2F..%2Fx/certificates/tcrt%201");
  EXPECT_THROW(client_->retrieve_tunnel(""), std::invalid_argument);
  EXPECT_THROW(client_->archive_certificate("tnl_01", ""), std::invalid_argument);
}

TEST_F(TunnelsApiClientTest, ListLimitsOutsideTheApisRangeAreRefusedBeforeSending) {
  EXPECT_THROW(client_->list_tunnels(false, 1001, ""), std::invalid_argument);
  EXPECT_THROW(client_->list_certificates("tnl_01", false, -1, ""), std::invalid_argument);
}

TEST_F(TunnelsApiClientTest, APemWithAPrivateKeyNeverLeaves) {
  // StrictMock: any send would fail the test.
  const std::string with_key = kCaPem +
                               "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEI\n-----END EC PRIVATE "
                               "KEY-----\n";
  EXPECT_THROW(client_->create_certificate("tnl_01", with_key), std::invalid_argument);
  EXPECT_THROW(client_->create_certificate("tnl_01", "not a pem"), std::invalid_argument);
}

// ---- parsing ----

TEST_F(TunnelsApiClientTest, ParsesATunnel) {
  EXPECT_CALL(*transport_, send(_))
      .WillOnce(Return(http_reply(200, kTunnel)))
      .WillOnce(Return(http_reply(200, kArchivedTunnel)));
  const Tunnel tunnel = client_->retrieve_tunnel("tnl_01");
  EXPECT_EQ(tunnel.id, "tnl_01");
  EXPECT_EQ(tunnel.display_name, "perimeter-uid-1");
  EXPECT_EQ(tunnel.domain, "abc123.tunnel.anthropic.com");
  EXPECT_EQ(tunnel.created_at, "2026-11-30T01:00:00Z");
  EXPECT_FALSE(tunnel.archived_at.has_value());
  EXPECT_FALSE(tunnel.archived());

  const Tunnel archived = client_->archive_tunnel("tnl_01");
  EXPECT_FALSE(archived.display_name.has_value());
  EXPECT_EQ(archived.archived_at, "2026-11-30T02:00:00Z");
  EXPECT_TRUE(archived.archived());
}

TEST_F(TunnelsApiClientTest, ParsesATokenAndACertificate) {
  EXPECT_CALL(*transport_, send(_))
      .WillOnce(Return(http_reply(200, kToken)))
      .WillOnce(Return(http_reply(200, kCertificate)))
      .WillOnce(Return(http_reply(200, R"({"type":"tunnel_certificate","id":"tcrt_02",
          "tunnel_id":"tnl_01","fingerprint":"ab","created_at":"2026-11-30T01:00:00Z",
          "expires_at":null,"archived_at":"2026-11-30T03:00:00Z"})")));
  const TunnelToken token = client_->reveal_token("tnl_01");
  EXPECT_EQ(token.id, "ttok_1");
  EXPECT_EQ(token.tunnel_token.expose(), kTunnelToken);

  const TunnelCertificate certificate = client_->retrieve_certificate("tnl_01", "tcrt_01");
  EXPECT_EQ(certificate.id, "tcrt_01");
  EXPECT_EQ(certificate.tunnel_id, "tnl_01");
  EXPECT_EQ(certificate.fingerprint,
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08");
  EXPECT_EQ(certificate.created_at, "2026-11-30T01:00:00Z");
  EXPECT_EQ(certificate.expires_at, "2031-11-29T01:00:00Z");
  EXPECT_FALSE(certificate.archived());

  const TunnelCertificate archived = client_->archive_certificate("tnl_01", "tcrt_02");
  EXPECT_FALSE(archived.expires_at.has_value());
  EXPECT_EQ(archived.archived_at, "2026-11-30T03:00:00Z");
}

TEST_F(TunnelsApiClientTest, ParsesPagesAndTheirCursor) {
  EXPECT_CALL(*transport_, send(_))
      .WillOnce(Return(http_reply(
          200, "{\"data\":[" + kTunnel + "," + kArchivedTunnel + "],\"next_page\":\"page_2\"}")))
      .WillOnce(Return(http_reply(200, "{\"data\":[" + kCertificate + "],\"next_page\":null}")));
  const TunnelPage tunnels = client_->list_tunnels(true, 2, "");
  ASSERT_EQ(tunnels.data.size(), 2u);
  EXPECT_EQ(tunnels.data[1].archived_at, "2026-11-30T02:00:00Z");
  EXPECT_EQ(tunnels.next_page, "page_2");
  const TunnelCertificatePage certificates = client_->list_certificates("tnl_01", true, 0, "");
  ASSERT_EQ(certificates.data.size(), 1u);
  EXPECT_FALSE(certificates.next_page.has_value());
}

TEST_F(TunnelsApiClientTest, ListAllWalksEveryPageWithTheCursor) {
  std::vector<std::string> urls;
  EXPECT_CALL(*transport_, send(_))
      .WillOnce(Invoke([&](const HttpRequest& r) {
        urls.push_back(r.url);
        return http_reply(200, "{\"data\":[" + kTunnel + "],\"next_page\":\"p2\"}");
      }))
      .WillOnce(Invoke([&](const HttpRequest& r) {
        urls.push_back(r.url);
        return http_reply(200, "{\"data\":[" + kArchivedTunnel + "],\"next_page\":null}");
      }));
  const std::vector<Tunnel> all = list_all_tunnels(*client_, true, 1);
  EXPECT_EQ(all.size(), 2u);
  EXPECT_EQ(urls, (std::vector<std::string>{
                      "http://127.0.0.1:9/v1/tunnels?include_archived=true&limit=1",
                      "http://127.0.0.1:9/v1/tunnels?include_archived=true&limit=1&page=p2"}));

  EXPECT_CALL(*transport_, send(_))
      .WillOnce(Return(http_reply(200, "{\"data\":[" + kCertificate + "],\"next_page\":\"c2\"}")))
      .WillOnce(Return(http_reply(200, "{\"data\":[" + kCertificate + "],\"next_page\":\"c2\"}")));
  EXPECT_THROW(list_all_certificates(*client_, "tnl_01", false), ProtocolError);
}

struct BadBody {
  std::string name;
  std::string body;
  std::string problem;  // a substring of the error
};

TEST_F(TunnelsApiClientTest, A2xxBodyThatDoesNotParseIsAProtocolErrorWithContextAndAMetric) {
  const std::vector<BadBody> cases = {
      {"not JSON", "<html>bad gateway</html>", "not JSON"},
      {"wrong type", R"({"type":"tunnel_token","id":"tnl_01"})", "`type`"},
      {"no domain", R"({"type":"tunnel","id":"tnl_01","created_at":"x"})", "`domain`"},
      {"display_name a number",
       R"({"type":"tunnel","id":"tnl_01","domain":"d","created_at":"x","display_name":7})",
       "`display_name`"},
  };
  for (const BadBody& bad : cases) {
    SCOPED_TRACE(bad.name);
    EXPECT_CALL(*transport_, send(_)).WillOnce(Return(http_reply(201, bad.body)));
    try {
      client_->retrieve_tunnel("tnl_01");
      ADD_FAILURE() << "expected ProtocolError";
    } catch (const ProtocolError& e) {
      EXPECT_EQ(e.operation(), "tunnels.retrieve");
      EXPECT_EQ(e.status(), 201);
      EXPECT_THAT(e.problem(), HasSubstr(bad.problem));
      EXPECT_EQ(e.body_excerpt(), bad.body.substr(0, 200));
      EXPECT_THAT(e.what(), HasSubstr("tunnels.retrieve"));
    }
  }
  EXPECT_EQ(metrics_.protocol_errors.size(), cases.size());
  // Not a transient failure: never retried.
  EXPECT_TRUE(sleeper_.delays.empty());

  EXPECT_CALL(*transport_, send(_))
      .WillOnce(Return(http_reply(200, R"({"data":{},"next_page":null})")));
  EXPECT_THROW(client_->list_tunnels(false, 0, ""), ProtocolError);
}

TEST_F(TunnelsApiClientTest, ALongOffendingBodyIsTruncated) {
  const std::string body = "{" + std::string(5000, 'x');
  EXPECT_CALL(*transport_, send(_)).WillOnce(Return(http_reply(200, body)));
  try {
    client_->retrieve_tunnel("tnl_01");
    FAIL() << "expected ProtocolError";
  } catch (const ProtocolError& e) {
    EXPECT_LT(e.body_excerpt().size(), 300u);
    EXPECT_THAT(e.body_excerpt(), HasSubstr("5001 bytes"));
  }
}

TEST_F(TunnelsApiClientTest, AMalformedTokenAnswerNeverQuotesTheToken) {
  const std::string leaky =
      std::string(R"({"type":"tunnel_token","tunnel_token":")") + kTunnelToken + "\"}";  // no id
  EXPECT_CALL(*transport_, send(_))
      .WillOnce(Return(http_reply(200, leaky)))
      .WillOnce(Return(http_reply(200, leaky)));
  for (auto call : {+[](TunnelsApi& api) { api.reveal_token("tnl_01"); },
                    +[](TunnelsApi& api) { api.rotate_token("tnl_01", ""); }}) {
    try {
      call(*client_);
      ADD_FAILURE() << "expected ProtocolError";
    } catch (const ProtocolError& e) {
      EXPECT_THAT(e.what(), Not(HasSubstr(kTunnelToken)));
      EXPECT_THAT(e.body_excerpt(), HasSubstr("withheld"));
      EXPECT_THAT(e.problem(), HasSubstr("`id`"));
    }
  }
  EXPECT_THAT(logs(), Not(HasSubstr(kTunnelToken)));
  EXPECT_EQ(metrics_.protocol_errors,
            (std::vector<std::string>{"tunnels.reveal_token", "tunnels.rotate_token"}));
}

// ---- typed errors ----

TEST_F(TunnelsApiClientTest, AnErrorAnswerKeepsTheServersBodyAndIsNotRetried) {
  EXPECT_CALL(*transport_, send(_))
      .WillOnce(Return(http_reply(404, kNotFound, {{"request-id", "req_7"}})));
  try {
    client_->retrieve_tunnel("tnl_x");
    FAIL() << "expected ApiError";
  } catch (const ApiError& e) {
    EXPECT_EQ(e.operation(), "tunnels.retrieve");
    EXPECT_EQ(e.status(), 404);
    EXPECT_EQ(e.error_type(), "not_found_error");
    EXPECT_EQ(e.api_message(), "tunnel tnl_x not found");
    EXPECT_EQ(e.raw_body(), kNotFound);
    EXPECT_EQ(e.request_id(), "req_7");
    EXPECT_TRUE(e.fatal());
  }
  EXPECT_TRUE(sleeper_.delays.empty());
}

TEST_F(TunnelsApiClientTest, TheServicesRefusalsReachTheCallerWithTheirReason) {
  const std::string limit =
      R"({"type":"error","error":{"type":"invalid_request_error","message":"organization has 10 active tunnels"}})";
  const std::string third =
      R"({"type":"error","error":{"type":"invalid_request_error","message":"tunnel already has 2 active certificates"}})";
  EXPECT_CALL(*transport_, send(_))
      .WillOnce(Return(http_reply(400, limit)))
      .WillOnce(Return(http_reply(400, third)));
  try {
    client_->create_tunnel("perimeter-uid-1");
    FAIL();
  } catch (const ApiError& e) {
    EXPECT_THAT(e.what(), HasSubstr("10 active tunnels"));
  }
  try {
    client_->create_certificate("tnl_01", kCaPem);
    FAIL();
  } catch (const ApiError& e) {
    EXPECT_EQ(e.api_message(), "tunnel already has 2 active certificates");
  }
}

// ---- the retry table ----

TEST_F(TunnelsApiClientTest, OnlyRepeatableCallsAreRetriedAfterA5xx) {
  for (const CallCase& call : all_calls()) {
    SCOPED_TRACE(call.name);
    sleeper_.delays.clear();
    if (call.repeatable) {
      EXPECT_CALL(*transport_, send(_))
          .WillOnce(Return(http_reply(503, "{}")))
          .WillOnce(Return(http_reply(500, "{}")))
          .WillOnce(Return(http_reply(200, call.answer)));
      call.invoke(*client_);
      EXPECT_EQ(sleeper_.delays,
                (std::vector<milliseconds>{milliseconds(500), milliseconds(1000)}));
    } else {
      // The request may have been carried out: the 5xx goes to the caller, who looks first.
      EXPECT_CALL(*transport_, send(_))
          .WillOnce(Return(http_reply(503, "{}", {{"x-should-retry", "true"}})));
      try {
        call.invoke(*client_);
        ADD_FAILURE() << "expected ApiError";
      } catch (const ApiError& e) {
        EXPECT_EQ(e.status(), 503);
      }
      EXPECT_TRUE(sleeper_.delays.empty());
    }
    ::testing::Mock::VerifyAndClearExpectations(transport_);
  }
}

TEST_F(TunnelsApiClientTest, OnlyRepeatableCallsAreRetriedAfterAConnectionFailure) {
  for (const CallCase& call : all_calls()) {
    SCOPED_TRACE(call.name);
    sleeper_.delays.clear();
    if (call.repeatable) {
      EXPECT_CALL(*transport_, send(_))
          .WillOnce(Invoke(fail))
          .WillOnce(Return(http_reply(200, call.answer)));
      call.invoke(*client_);
      EXPECT_EQ(sleeper_.delays.size(), 1u);
    } else {
      EXPECT_CALL(*transport_, send(_)).WillOnce(Invoke(fail));
      EXPECT_THROW(call.invoke(*client_), TransportError);
      EXPECT_TRUE(sleeper_.delays.empty());
    }
    ::testing::Mock::VerifyAndClearExpectations(transport_);
  }
}

TEST_F(TunnelsApiClientTest, CreateIsNotRetriedOnTimeoutsConflictsOrGatewayErrorsEither) {
  for (int status : {408, 409, 500, 502, 504, 529}) {
    SCOPED_TRACE(status);
    EXPECT_CALL(*transport_, send(_)).WillOnce(Return(http_reply(status, "{}")));
    EXPECT_THROW(client_->create_tunnel("perimeter-uid-1"), ApiError);
    ::testing::Mock::VerifyAndClearExpectations(transport_);
  }
  EXPECT_TRUE(sleeper_.delays.empty());
  EXPECT_TRUE(metrics_.retries.empty());
}

TEST_F(TunnelsApiClientTest, EveryCallIsRetriedOnA429HonouringRetryAfter) {
  for (const CallCase& call : all_calls()) {
    SCOPED_TRACE(call.name);
    sleeper_.delays.clear();
    EXPECT_CALL(*transport_, send(_))
        .WillOnce(Return(http_reply(429, "{}", {{"retry-after", "2"}})))
        .WillOnce(Return(http_reply(429, "{}", {{"retry-after-ms", "250"}})))
        .WillOnce(Return(http_reply(200, call.answer)));
    call.invoke(*client_);
    EXPECT_EQ(sleeper_.delays, (std::vector<milliseconds>{milliseconds(2000), milliseconds(250)}));
    EXPECT_EQ(metrics_.retries.back().first, call.name + ":429");
    ::testing::Mock::VerifyAndClearExpectations(transport_);
  }
}

TEST_F(TunnelsApiClientTest, A429WithoutUsableRetryAfterBacksOffAndGivesUpAfterMaxRetries) {
  const std::string body =
      R"({"type":"error","error":{"type":"rate_limit_error","message":"slow down"}})";
  EXPECT_CALL(*transport_, send(_))
      .WillOnce(Return(http_reply(429, body, {{"retry-after", "3600"}})))  // over a minute: ignored
      .WillOnce(Return(http_reply(429, body)))
      .WillOnce(Return(http_reply(429, body)));
  try {
    client_->create_tunnel("perimeter-uid-1");
    FAIL() << "expected ApiError";
  } catch (const ApiError& e) {
    EXPECT_EQ(e.status(), 429);
    EXPECT_EQ(e.error_type(), "rate_limit_error");
  }
  EXPECT_EQ(sleeper_.delays, (std::vector<milliseconds>{milliseconds(500), milliseconds(1000)}));
}

TEST_F(TunnelsApiClientTest, XShouldRetryFalseStopsEvenA429) {
  EXPECT_CALL(*transport_, send(_))
      .WillOnce(Return(http_reply(429, "{}", {{"x-should-retry", "false"}})));
  EXPECT_THROW(client_->create_tunnel("perimeter-uid-1"), ApiError);
  EXPECT_CALL(*transport_, send(_))
      .WillOnce(Return(http_reply(503, "{}", {{"x-should-retry", "false"}})));
  EXPECT_THROW(client_->retrieve_tunnel("tnl_01"), ApiError);
  EXPECT_TRUE(sleeper_.delays.empty());
}

// ---- 401: a new access token, once ----

TEST_F(TunnelsApiClientTest, A401IsSentOnceMoreWithANewAccessTokenEvenForCreate) {
  std::vector<std::string> authorizations;
  const std::string unauthorized =
      R"({"type":"error","error":{"type":"authentication_error","message":"token expired"}})";
  EXPECT_CALL(*transport_, send(_))
      .WillOnce(Invoke([&](const HttpRequest& r) {
        for (const auto& [name, value] : r.headers) {
          if (name == "Authorization") authorizations.push_back(value);
        }
        return http_reply(401, unauthorized);
      }))
      .WillOnce(Invoke([&](const HttpRequest& r) {
        for (const auto& [name, value] : r.headers) {
          if (name == "Authorization") authorizations.push_back(value);
        }
        return http_reply(200, kTunnel);
      }));
  EXPECT_EQ(client_->create_tunnel("perimeter-uid-1").id, "tnl_01");
  EXPECT_EQ(authorizations, (std::vector<std::string>{"Bearer access-1", "Bearer access-2"}));
  EXPECT_EQ(tokens_.invalidated, (std::vector<std::string>{"access-1"}));
  EXPECT_TRUE(sleeper_.delays.empty());
}

TEST_F(TunnelsApiClientTest, ASecond401ReachesTheCaller) {
  const std::string unauthorized =
      R"({"type":"error","error":{"type":"authentication_error","message":"rule does not match"}})";
  EXPECT_CALL(*transport_, send(_)).Times(2).WillRepeatedly(Return(http_reply(401, unauthorized)));
  try {
    client_->retrieve_tunnel("tnl_01");
    FAIL() << "expected ApiError";
  } catch (const ApiError& e) {
    EXPECT_EQ(e.status(), 401);
    EXPECT_EQ(e.api_message(), "rule does not match");
  }
  EXPECT_EQ(tokens_.invalidated.size(), 1u);
}

// ---- credentials stay out of logs and debug output ----

TEST_F(TunnelsApiClientTest, NoTokenReachesTheLogsThroughRetriesRefreshesAndErrors) {
  EXPECT_CALL(*transport_, send(_))
      .WillOnce(Invoke(fail))
      .WillOnce(Return(http_reply(503, "{}")))
      .WillOnce(Return(http_reply(401, "{}")))
      .WillOnce(Return(http_reply(200, kToken)));
  const TunnelToken token = client_->reveal_token("tnl_01");
  EXPECT_CALL(*transport_, send(_))
      .WillOnce(Return(http_reply(200, "{\"broken\":\"" + std::string(kTunnelToken) + "\"")));
  EXPECT_THROW(client_->rotate_token("tnl_01", ""), ProtocolError);

  const std::string all = logs();
  EXPECT_THAT(all, HasSubstr("retrying"));  // the logger was listening
  EXPECT_THAT(all, Not(HasSubstr(kTunnelToken)));
  EXPECT_THAT(all, Not(HasSubstr("access-1")));
  EXPECT_THAT(all, Not(HasSubstr("access-2")));
  EXPECT_THAT(all, Not(HasSubstr("Bearer")));
}

TEST(TunnelsTypesTest, DebugOutputNamesEveryFieldButNoCredential) {
  TunnelToken token{"ttok_1", Secret(kTunnelToken)};
  std::ostringstream out;
  out << token;
  EXPECT_EQ(out.str(), "TunnelToken{id=\"ttok_1\", tunnel_token=<redacted>}");
  EXPECT_THAT(::testing::PrintToString(token), Not(HasSubstr(kTunnelToken)));
  EXPECT_THAT(::testing::PrintToString(Secret("access-1")), Not(HasSubstr("access-1")));

  Tunnel tunnel{"tnl_01", std::nullopt, "d.example", "2026-11-30T01:00:00Z",
                "2026-11-30T02:00:00Z"};
  EXPECT_EQ(::testing::PrintToString(tunnel),
            "Tunnel{id=\"tnl_01\", display_name=null, domain=\"d.example\", "
            "created_at=\"2026-11-30T01:00:00Z\", archived_at=\"2026-11-30T02:00:00Z\"}");
  TunnelCertificate certificate{"tcrt_01", "tnl_01", "ab", "c", std::nullopt, std::nullopt};
  EXPECT_EQ(::testing::PrintToString(certificate),
            "TunnelCertificate{id=\"tcrt_01\", tunnel_id=\"tnl_01\", fingerprint=\"ab\", "
            "created_at=\"c\", expires_at=null, archived_at=null}");
}

}  // namespace
}  // namespace perimeter::tunnelsapi
