// A warm runner's assignment channel end to end on loopback: perimeter-runner's
// WarmAssignmentClient against the operator's AssignmentServer over TLS (certificates from
// lib/pki), the service deciding from warm pods and Secrets in the in-memory apiserver as
// KubeWarmPodDirectory reads them (docs/warm-pool.md).
#include <gtest/gtest.h>
#include <prometheus/registry.h>

#include <future>
#include <memory>
#include <thread>

#include "agentapi/api_error.h"
#include "agentapi/beast_transport.h"
#include "agentenvironment/warm_pods.h"
#include "controllers/agentenvironment/assignment_server.h"
#include "controllers/agentenvironment/kube_warm_pod_directory.h"
#include "controllers/agentenvironment/runner_resources.h"
#include "core/clock.h"
#include "core/log.h"
#include "core/random.h"
#include "kube/fake_api_server.h"
#include "pki/hmac.h"
#include "pki/pki.h"
#include "runner/warm_assignment.h"
#include "runtime/store.h"

namespace perimeter::agentenvironment {
namespace {

using nlohmann::json;

struct ServingCertificate {
  std::string ca_pem;
  std::string chain_pem;
  std::string key_pem;
};

ServingCertificate issue_for_localhost(const std::string& ca_name) {
  const auto now = std::chrono::system_clock::now();
  const pki::PrivateKey ca_key = pki::PrivateKey::generate_ec_p256();
  const pki::Certificate ca = pki::issue_self_signed_ca(
      {ca_name, "", std::chrono::hours(1), std::chrono::minutes(1), 0}, ca_key, now);
  const pki::PrivateKey key = pki::PrivateKey::generate_ec_p256();
  pki::CertificateRequest request;
  request.common_name = "localhost";
  request.dns_names = {"localhost"};
  request.ip_addresses = {"127.0.0.1"};
  request.lifetime = std::chrono::hours(1);
  request.backdate = std::chrono::minutes(1);
  const pki::Certificate leaf = pki::issue_certificate(request, key, ca, ca_key, now);
  return {ca.pem(), leaf.pem(), key.pem()};
}

class NullSink final : public LogSink {
 public:
  void write(std::string_view) override {}
};

class WarmAssignmentChannelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    AssignmentServerOptions options;
    options.address = "127.0.0.1";
    // Short holds, so a waiting runner goes round its loop many times in one test.
    options.hold = std::chrono::milliseconds(300);
    options.recheck = std::chrono::milliseconds(50);
    server_ = std::make_unique<AssignmentServer>(service_, certificate_.chain_pem,
                                                 certificate_.key_pem, logger_, options);
    server_->start();
  }
  void TearDown() override { server_->stop(); }

  std::string url() const { return "https://localhost:" + std::to_string(server_->port()); }

  // A warm pod in the apiserver and the informer's cache; returns its token.
  std::string start_warm_pod(const std::string& name) {
    warm_test::SeededWarmPod seeded =
        warm_test::seed_warm_pod(server_api_, name, {url(), certificate_.ca_pem});
    cache(seeded.pod);
    return seeded.token;
  }
  // What the pod informer does: the cache takes the object, the server is woken.
  void cache(const json& pod) {
    store_.upsert(std::make_shared<const json>(pod));
    server_->wake();
  }
  json live(const std::string& name) {
    return *server_api_.object_at("/api/v1/namespaces/a/pods/" + name);
  }
  // What the claim will do: the session's Secret, then the assignment on the pod.
  void assign(const std::string& name, const std::string& work_id) {
    cache(warm_test::seed_assignment(server_api_, pods_, name, work_id));
  }

  runner::WarmConfig warm_config(const std::string& token) const {
    runner::WarmConfig config;
    config.assignment_url = url();
    config.token = token;
    config.ca_pem = certificate_.ca_pem;
    return config;
  }
  agentapi::HttpResponse get_assignment(const std::string& token, const std::string& ca_pem,
                                        const std::string& base) {
    agentapi::BeastTransportOptions tls;
    tls.ca_pem = ca_pem;
    agentapi::BeastTransport transport(std::move(tls));
    agentapi::HttpRequest request;
    request.method = "GET";
    request.url = base + "/v1/assignment";
    if (!token.empty()) request.headers = {{"Authorization", "Bearer " + token}};
    request.timeout = std::chrono::seconds(10);
    return transport.send(request);
  }

  ServingCertificate certificate_ = issue_for_localhost("perimeter assignment test CA");
  std::shared_ptr<NullSink> sink_ = std::make_shared<NullSink>();
  Logger logger_{"test", sink_, LogLevel::kError};
  perimeter::testing::FakeApiServer server_api_;
  prometheus::Registry registry_;
  kube::ClientMetrics metrics_{registry_};
  kube::ResourceClient secrets_{server_api_, kube::resources::secrets(), metrics_};
  kube::ResourceClient pods_{server_api_, kube::resources::pods(), metrics_};
  runtime::Store store_;
  KubeWarmPodDirectory directory_{store_, secrets_, pods_};
  WarmAssignmentService service_{directory_, SystemClock::instance(), nullptr};
  std::unique_ptr<AssignmentServer> server_;
};

TEST_F(WarmAssignmentChannelTest, AWaitingRunnerGetsItsAssignmentAndItsTokenIsDeadAfterward) {
  const std::string token = start_warm_pod("payments-warm-1");
  const std::string other_token = start_warm_pod("payments-warm-2");

  agentapi::BeastTransportOptions tls;
  tls.ca_pem = certificate_.ca_pem;
  agentapi::BeastTransport transport(std::move(tls));
  runner::RealStoppableSleeper sleeper;
  runner::RunnerMetrics runner_metrics;
  runner::WarmAssignmentClient client(warm_config(token), transport, sleeper,
                                      SystemRandom::instance(), logger_, &runner_metrics);
  runner::StopSource stop;
  auto waiting = std::async(std::launch::async, [&] { return client.wait(stop); });

  // The runner is held; the other pod's token meanwhile sees nothing of this pod's item.
  EXPECT_EQ(get_assignment(other_token, certificate_.ca_pem, url()).status, 204);
  assign("payments-warm-1", "work_1");

  ASSERT_EQ(waiting.wait_for(std::chrono::seconds(60)), std::future_status::ready);
  const std::optional<runner::WarmAssignment> assignment = waiting.get();
  ASSERT_TRUE(assignment.has_value());
  EXPECT_EQ(assignment->work_id, "work_1");
  EXPECT_EQ(assignment->session_id, "sesn-work_1");
  EXPECT_EQ(assignment->work_secret, "secret-of-work_1");
  // Delivered in one answer, recorded on the pod with the hash of the nonce the runner's
  // requests carried over the wire, and no confirm: the token opens nothing now.
  const nlohmann::json annotations = live("payments-warm-1")["metadata"]["annotations"];
  EXPECT_TRUE(annotations.contains(std::string(kAnnotationAssignmentConfirmedAt)));
  const std::string nonce_sha256 =
      annotations.value(std::string(kAnnotationAssignmentNonceSha256), "");
  EXPECT_EQ(nonce_sha256.size(), 64u);
  EXPECT_NE(nonce_sha256, pki::sha256_hex(""));
  cache(live("payments-warm-1"));
  const agentapi::HttpResponse replayed = get_assignment(token, certificate_.ca_pem, url());
  EXPECT_EQ(replayed.status, 410);
  EXPECT_EQ(replayed.body.find("secret-of-work_1"), std::string::npos);
  EXPECT_EQ(runner_metrics.assignment_retries(), 0);
}

TEST_F(WarmAssignmentChannelTest, NoTokenOrAWrongOneGetsNothingOverTheWire) {
  start_warm_pod("payments-warm-1");
  assign("payments-warm-1", "work_1");
  for (const std::string& token : {std::string(), mint_warm_pod_token().token}) {
    const agentapi::HttpResponse refused = get_assignment(token, certificate_.ca_pem, url());
    EXPECT_EQ(refused.status, 401);
    EXPECT_EQ(refused.body.find("secret-of-work_1"), std::string::npos);
  }
}

TEST_F(WarmAssignmentChannelTest, OnlyTlsWithTheOperatorsCaReachesTheService) {
  const std::string token = start_warm_pod("payments-warm-1");
  assign("payments-warm-1", "work_1");
  // A client that trusts another CA does not finish the handshake.
  const ServingCertificate impostor = issue_for_localhost("another CA");
  EXPECT_THROW(get_assignment(token, impostor.ca_pem, url()), agentapi::TransportError);
  // Plain HTTP to the port gets no HTTP answer.
  EXPECT_THROW(get_assignment(token, certificate_.ca_pem,
                              "http://127.0.0.1:" + std::to_string(server_->port())),
               agentapi::TransportError);
}

TEST_F(WarmAssignmentChannelTest, ARunnerStoppedWhileHeldEndsWithoutAnAssignment) {
  const std::string token = start_warm_pod("payments-warm-1");
  agentapi::BeastTransportOptions tls;
  tls.ca_pem = certificate_.ca_pem;
  agentapi::BeastTransport transport(std::move(tls));
  runner::RealStoppableSleeper sleeper;
  runner::WarmAssignmentClient client(warm_config(token), transport, sleeper,
                                      SystemRandom::instance(), logger_, nullptr);
  runner::StopSource stop;
  auto waiting = std::async(std::launch::async, [&] { return client.wait(stop); });
  // At least one held request has come back empty before the stop.
  EXPECT_EQ(get_assignment(token, certificate_.ca_pem, url()).status, 204);
  stop.request();
  ASSERT_EQ(waiting.wait_for(std::chrono::seconds(60)), std::future_status::ready);
  EXPECT_FALSE(waiting.get().has_value());
}

}  // namespace
}  // namespace perimeter::agentenvironment

namespace perimeter::agentenvironment {
namespace {

// The serving certificate renewed (ServingCertificateRenewal calls replace_certificate): a
// request held across the swap is answered on its connection, and connections made after it
// shake hands with the new certificate only.
TEST_F(WarmAssignmentChannelTest, AReplacedCertificateServesNewConnectionsAndKeepsHeldOnes) {
  const std::string token = start_warm_pod("payments-warm-1");
  auto held = std::async(std::launch::async,
                         [&] { return get_assignment(token, certificate_.ca_pem, url()); });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));  // the request is held

  const ServingCertificate renewed = issue_for_localhost("perimeter assignment renewed CA");
  server_->replace_certificate(renewed.chain_pem, renewed.key_pem);
  assign("payments-warm-1", "work_1");

  const agentapi::HttpResponse answered = held.get();  // no TransportError: not dropped
  EXPECT_TRUE(answered.status == 200 || answered.status == 204) << answered.status;
  EXPECT_THROW(get_assignment("", certificate_.ca_pem, url()), agentapi::TransportError);
  EXPECT_EQ(get_assignment("", renewed.ca_pem, url()).status, 401);

  // A pair that does not load changes nothing.
  EXPECT_THROW(server_->replace_certificate(renewed.chain_pem, certificate_.key_pem),
               std::runtime_error);
  EXPECT_EQ(get_assignment("", renewed.ca_pem, url()).status, 401);
}

}  // namespace
}  // namespace perimeter::agentenvironment
