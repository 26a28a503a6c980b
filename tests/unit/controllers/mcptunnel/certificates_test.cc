#include "controllers/mcptunnel/certificates.h"

#include <gtest/gtest.h>

#include "core/base64.h"

namespace perimeter::mcptunnel {
namespace {

using nlohmann::json;
using std::chrono::hours;
using std::chrono::minutes;
using std::chrono::seconds;

McpTunnel tunnel_with(std::chrono::seconds duration, std::chrono::seconds renew_before,
                      std::chrono::seconds ca_duration, std::chrono::seconds ca_renew_before) {
  McpTunnel tunnel;
  tunnel.name = "tickets";
  tunnel.namespace_ = "team-a";
  tunnel.uid = "u-1";
  tunnel.certificate = {duration, renew_before, ca_duration, ca_renew_before};
  return tunnel;
}

const auto kNow = std::chrono::system_clock::time_point(std::chrono::hours(24 * 365 * 56));

TEST(TunnelCaTest, IssuesACaTheTunnelsApiAccepts) {
  const auto tunnel = tunnel_with(hours(2160), hours(720), hours(43800), hours(8760));
  const auto ca = issue_tunnel_ca(tunnel, kNow);
  EXPECT_EQ(pki::tunnel_ca_violation(ca.certificate.pem()), std::nullopt);
  EXPECT_TRUE(ca.certificate.matches(ca.key));
  EXPECT_EQ(ca.certificate.not_after(), kNow + hours(43800));
  EXPECT_FALSE(ca_rotation_due(tunnel, ca.certificate, kNow + hours(43800 - 8761)));
  EXPECT_TRUE(ca_rotation_due(tunnel, ca.certificate, kNow + hours(43800 - 8760)));
}

TEST(TunnelCaTest, TheCaSecretRoundTripsAndCarriesTheRetiringCaUntilItIsArchived) {
  const auto tunnel = tunnel_with(hours(2160), hours(720), hours(43800), hours(8760));
  const auto old_ca = issue_tunnel_ca(tunnel, kNow);
  const auto new_ca = issue_tunnel_ca(tunnel, kNow);
  const json secret = build_ca_secret(tunnel, new_ca, old_ca.certificate);
  EXPECT_EQ(secret["metadata"]["name"], "tickets-ca");
  EXPECT_EQ(secret["metadata"]["ownerReferences"][0]["uid"], "u-1");
  const auto read = read_ca_secret(secret);
  ASSERT_TRUE(read.current);
  EXPECT_EQ(read.current->certificate.fingerprint_sha256(), new_ca.certificate.fingerprint_sha256());
  ASSERT_TRUE(read.retiring);
  EXPECT_EQ(read.retiring->fingerprint_sha256(), old_ca.certificate.fingerprint_sha256());
  EXPECT_FALSE(read_ca_secret(build_ca_secret(tunnel, new_ca, std::nullopt)).retiring);
  EXPECT_FALSE(read_ca_secret(nullptr).current);
}

TEST(TunnelCaTest, ACaSecretWhoseKeyIsNotItsCertificatesIsRefused) {
  const auto tunnel = tunnel_with(hours(2160), hours(720), hours(43800), hours(8760));
  const auto one = issue_tunnel_ca(tunnel, kNow);
  const auto other = issue_tunnel_ca(tunnel, kNow);
  json secret = build_ca_secret(tunnel, one, std::nullopt);
  secret["data"]["ca.key"] = base64_encode(other.key.pem());
  EXPECT_THROW(read_ca_secret(secret), pki::PkiError);
}

TEST(ServerCertificateTest, IsForTheWildcardSignedDirectlyByTheCaAndRenewedBeforeExpiry) {
  const auto tunnel = tunnel_with(hours(2160), hours(720), hours(43800), hours(8760));
  const auto ca = issue_tunnel_ca(tunnel, kNow);
  const auto server = issue_server_certificate(tunnel, ca, "abc.tunnels.example", kNow);
  EXPECT_EQ(pki::verify_server_certificate(server.certificate, ca.certificate,
                                           "tickets.abc.tunnels.example", kNow),
            std::nullopt);
  EXPECT_EQ(server.certificate.authority_key_id(), ca.certificate.subject_key_id());
  EXPECT_EQ(server.certificate.not_after(), kNow + hours(2160));
  const json secret = build_tls_secret(tunnel, server, ca.certificate);
  EXPECT_EQ(secret["type"], "kubernetes.io/tls");

  const auto domain = std::string("abc.tunnels.example");
  EXPECT_EQ(server_certificate_due(tunnel, secret, ca.certificate, domain, kNow), std::nullopt);
  EXPECT_EQ(server_certificate_due(tunnel, secret, ca.certificate, domain,
                                   kNow + hours(2160 - 721)),
            std::nullopt);
  EXPECT_TRUE(server_certificate_due(tunnel, secret, ca.certificate, domain,
                                     kNow + hours(2160 - 720)));
  EXPECT_EQ(server_renewal_at(tunnel, server.certificate), kNow + hours(2160 - 720));
}

TEST(ServerCertificateTest, IsIssuedAgainWhenItNoLongerFitsTheTunnel) {
  const auto tunnel = tunnel_with(hours(2160), hours(720), hours(43800), hours(8760));
  const auto ca = issue_tunnel_ca(tunnel, kNow);
  const auto other_ca = issue_tunnel_ca(tunnel, kNow);
  const auto server = issue_server_certificate(tunnel, ca, "abc.tunnels.example", kNow);
  const json secret = build_tls_secret(tunnel, server, ca.certificate);
  EXPECT_TRUE(server_certificate_due(tunnel, nullptr, ca.certificate, "abc.tunnels.example", kNow));
  // A rotated CA: the certificate must be signed by the new one.
  EXPECT_TRUE(
      server_certificate_due(tunnel, secret, other_ca.certificate, "abc.tunnels.example", kNow));
  // Another domain (a tunnel adopted by id).
  EXPECT_TRUE(server_certificate_due(tunnel, secret, ca.certificate, "xyz.tunnels.example", kNow));
  // A key that is not the certificate's.
  json swapped = secret;
  swapped["data"]["tls.key"] = base64_encode(pki::PrivateKey::generate_ec_p256().pem());
  EXPECT_TRUE(server_certificate_due(tunnel, swapped, ca.certificate, "abc.tunnels.example", kNow));
  // Garbage.
  json garbage = secret;
  garbage["data"]["tls.crt"] = base64_encode("not a certificate");
  EXPECT_TRUE(server_certificate_due(tunnel, garbage, ca.certificate, "abc.tunnels.example", kNow));
}

TEST(ServerCertificateTest, NeverOutlivesItsCaAndRenewsAtTheSameFractionWhenCutShort) {
  // Minute-scale lifetimes, as the e2e test uses: the CA has 60 s left, the certificate wants 100 s.
  const auto tunnel = tunnel_with(seconds(100), seconds(50), seconds(120), seconds(80));
  const auto ca = issue_tunnel_ca(tunnel, kNow - seconds(60));
  const auto server = issue_server_certificate(tunnel, ca, "abc.tunnels.example", kNow);
  EXPECT_LE(server.certificate.not_after(), ca.certificate.not_after());
  const auto renew_at = server_renewal_at(tunnel, server.certificate);
  EXPECT_GT(renew_at, kNow);
  EXPECT_LT(renew_at, server.certificate.not_after());
}

}  // namespace
}  // namespace perimeter::mcptunnel
