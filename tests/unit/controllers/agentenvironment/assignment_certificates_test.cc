#include "controllers/agentenvironment/assignment_certificates.h"

#include <gtest/gtest.h>
#include <openssl/x509v3.h>
#include <prometheus/registry.h>

#include "core/base64.h"
#include "core/fake_random.h"
#include "kube/fake_api_server.h"
#include "kube/resource.h"

namespace perimeter::agentenvironment {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;

const pki::TimePoint kNow = std::chrono::sys_days{std::chrono::year{2026} / 12 / 1} + 20h;
constexpr const char* kNamespace = "perimeter-system";
constexpr const char* kSecret = "perimeter-assignment-ca";
constexpr const char* kSecretPath =
    "/api/v1/namespaces/perimeter-system/secrets/perimeter-assignment-ca";

AssignmentServiceAddress address() {
  AssignmentServiceAddress address;
  address.service_name = "perimeter-assignment";
  address.namespace_ = kNamespace;
  address.cluster_domain = "cluster.example";
  address.port = 8443;
  return address;
}

class AssignmentCaTest : public ::testing::Test {
 protected:
  AssignmentCa load(pki::TimePoint now = kNow) {
    return load_or_create_assignment_ca(secrets_, kNamespace, kSecret, now);
  }
  void patch_field(const std::string& key, const std::string& value) {
    secrets_.merge_patch(kNamespace, kSecret, {{"data", {{key, base64_encode(value)}}}});
  }
  std::string refusal() {
    try {
      load();
    } catch (const std::invalid_argument& e) {
      return e.what();
    }
    return "(accepted)";
  }

  testing::FakeApiServer server_;
  prometheus::Registry registry_;
  kube::ClientMetrics metrics_{registry_};
  kube::ResourceClient secrets_{server_, kube::resources::secrets(), metrics_};
};

TEST_F(AssignmentCaTest, TheCaIsMadeOnceInTheOperatorsNamespaceAndLoadedThereafter) {
  const AssignmentCa made = load();
  EXPECT_TRUE(made.certificate.is_ca());
  EXPECT_TRUE(made.certificate.matches(made.key));

  const auto stored = server_.object_at(kSecretPath);
  ASSERT_TRUE(stored.has_value());
  std::string stored_cert;
  ASSERT_TRUE(base64_decode_any((*stored)["data"]["ca.crt"].get<std::string>(), &stored_cert));
  EXPECT_EQ(pki::Certificate::from_pem(stored_cert).fingerprint_sha256(),
            made.certificate.fingerprint_sha256());

  EXPECT_EQ(load().certificate.fingerprint_sha256(), made.certificate.fingerprint_sha256());
}

TEST_F(AssignmentCaTest, AReplicaWhoseCreateLosesUsesTheWinnersCa) {
  const AssignmentCa winner = load();
  // This replica read before the winner's create landed, so its own create meets AlreadyExists.
  server_.fail_next("GET", "secrets/perimeter-assignment-ca", 404,
                    R"({"kind":"Status","reason":"NotFound","code":404})");
  const AssignmentCa loser = load();
  EXPECT_EQ(loser.certificate.fingerprint_sha256(), winner.certificate.fingerprint_sha256());
  EXPECT_TRUE(loser.certificate.matches(winner.key));
}

TEST_F(AssignmentCaTest, ASecretEditedIntoGarbageStopsTheStartWithTheReason) {
  const AssignmentCa original = load();

  patch_field("ca.crt", "not a certificate");
  std::string why = refusal();
  EXPECT_NE(why.find("perimeter-system/perimeter-assignment-ca"), std::string::npos) << why;
  EXPECT_NE(why.find("does not parse"), std::string::npos) << why;

  patch_field("ca.crt", original.certificate.pem());
  patch_field("ca.key", pki::PrivateKey::generate_ec_p256().pem());
  why = refusal();
  EXPECT_NE(why.find("ca.key is not the key of ca.crt"), std::string::npos) << why;

  secrets_.merge_patch(kNamespace, kSecret, {{"data", {{"ca.key", nullptr}}}});
  why = refusal();
  EXPECT_NE(why.find("lacks ca.crt or ca.key"), std::string::npos) << why;
}

TEST_F(AssignmentCaTest, ACaThatWouldExpireBeforeItsServingCertificateIsRefused) {
  load();
  EXPECT_EQ(refusal(), "(accepted)");
  try {
    load(kNow + kAssignmentCaLifetime - 24h);
    FAIL() << "a CA a day from its expiry was accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("expires within"), std::string::npos) << e.what();
  }
}

TEST(AssignmentServingCertificateTest, IsForTheServicesNamesSignedByTheCaAndRenewedAtTwoThirds) {
  EXPECT_EQ(assignment_service_url(address()),
            "https://perimeter-assignment.perimeter-system.svc:8443");
  const AssignmentCa ca = [] {
    auto key = pki::PrivateKey::generate_ec_p256();
    auto cert = pki::issue_self_signed_ca({"test CA", "", 24h * 365, 0s, 0}, key, kNow);
    return AssignmentCa{std::move(cert), std::move(key)};
  }();
  const auto serving = issue_assignment_serving_certificate(ca, address(), kNow);
  const auto leaf = pki::Certificate::from_pem(serving.chain_pem);
  EXPECT_TRUE(leaf.matches(pki::PrivateKey::from_pem(serving.key_pem)));
  for (const char* name : {"perimeter-assignment.perimeter-system.svc",
                           "perimeter-assignment.perimeter-system.svc.cluster.example"}) {
    EXPECT_EQ(pki::verify_server_certificate(leaf, ca.certificate, name, kNow), std::nullopt)
        << name;
  }
  EXPECT_NE(pki::verify_server_certificate(leaf, ca.certificate, "perimeter-assignment", kNow),
            std::nullopt);
  EXPECT_EQ(serving.not_after, kNow + kAssignmentServingLifetime);
  EXPECT_EQ(serving.renew_at, kNow + kAssignmentServingLifetime * 2 / 3);

  // Never past the CA's own expiry.
  const auto late = kNow + 24h * 365 - 24h;
  EXPECT_EQ(issue_assignment_serving_certificate(ca, address(), late).not_after,
            ca.certificate.not_after());
}

// An operator run outside the cluster: warm pods dial an address of its host, and the certificate
// must name that address (the runner checks the IP against the certificate's iPAddress names).
TEST(AssignmentServingCertificateTest, ADirectAddressIsWhatPodsAskAndWhatTheCertificateNames) {
  AssignmentServiceAddress direct = address();
  direct.direct_address = "10.88.0.1";
  EXPECT_EQ(assignment_service_url(direct), "https://10.88.0.1:8443");
  direct.direct_address = "fd00::1";
  EXPECT_EQ(assignment_service_url(direct), "https://[fd00::1]:8443");
  direct.direct_address = "10.88.0.1";
  const AssignmentCa ca = [] {
    auto key = pki::PrivateKey::generate_ec_p256();
    auto cert = pki::issue_self_signed_ca({"test CA", "", 24h * 365, 0s, 0}, key, kNow);
    return AssignmentCa{std::move(cert), std::move(key)};
  }();
  const auto leaf =
      pki::Certificate::from_pem(issue_assignment_serving_certificate(ca, direct, kNow).chain_pem);
  EXPECT_EQ(leaf.ip_addresses(), std::vector<std::string>{"10.88.0.1"});
  // What the runner's TLS client checks for an address (Asio's host_name_verification).
  EXPECT_EQ(X509_check_ip_asc(leaf.native(), "10.88.0.1", 0), 1);
  EXPECT_EQ(X509_check_ip_asc(leaf.native(), "10.88.0.2", 0), 0);
  EXPECT_EQ(pki::verify_server_certificate(leaf, ca.certificate,
                                           "perimeter-assignment.perimeter-system.svc", kNow),
            std::nullopt);
  // Without one, no address is named.
  EXPECT_TRUE(pki::Certificate::from_pem(
                  issue_assignment_serving_certificate(ca, address(), kNow).chain_pem)
                  .ip_addresses()
                  .empty());
}

class NullSink final : public LogSink {
 public:
  void write(std::string_view) override {}
};

TEST(ServingCertificateRenewalTest, RenewsAtItsTimeAndRetriesAFailureWithBackoff) {
  auto ca = std::make_shared<AssignmentCa>([] {
    auto key = pki::PrivateKey::generate_ec_p256();
    auto cert = pki::issue_self_signed_ca({"test CA", "", 24h * 365, 0s, 0}, key, kNow);
    return AssignmentCa{std::move(cert), std::move(key)};
  }());
  const auto first = issue_assignment_serving_certificate(*ca, address(), kNow);
  std::vector<std::string> installed;
  std::vector<std::string> counted;
  bool refuse = false;
  testing::FakeRandom random(0.5);  // no jitter: the delays are exact
  ServingCertificateRenewal renewal(
      ca, address(), first.renew_at,
      [&](const AssignmentServingCertificate& serving) {
        if (refuse) throw std::runtime_error("does not load");
        installed.push_back(serving.chain_pem);
      },
      [&](std::string_view result) { counted.emplace_back(result); },
      Logger("test", std::make_shared<NullSink>()), random);

  EXPECT_EQ(renewal.step(kNow + 1h), first.renew_at);
  EXPECT_TRUE(installed.empty());

  refuse = true;
  EXPECT_EQ(renewal.step(first.renew_at), first.renew_at + 10s);
  EXPECT_EQ(renewal.step(first.renew_at + 10s), first.renew_at + 10s + 20s);
  EXPECT_TRUE(installed.empty());

  refuse = false;
  const auto at = first.renew_at + 30s;
  EXPECT_EQ(renewal.step(at), at + kAssignmentServingLifetime * 2 / 3);
  ASSERT_EQ(installed.size(), 1u);
  EXPECT_NE(installed[0], first.chain_pem);
  EXPECT_EQ(pki::Certificate::from_pem(installed[0]).not_after(), at + kAssignmentServingLifetime);
  EXPECT_EQ(counted, (std::vector<std::string>{"error", "error", "renewed"}));
}

}  // namespace
}  // namespace perimeter::agentenvironment
