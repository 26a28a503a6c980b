// The Tunnels API's certificate rules (../shared/docs/mcp-tunnels.md, "Certificates"). The bad
// certificates are made by the `openssl` command, not by the module under test, so a rule the
// module's issuer happens to satisfy is still checked against a certificate that breaks it.

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <optional>
#include <string>

#include "openssl_cli.h"
#include "pki/pki.h"

namespace perimeter::pki {
namespace {

using ::testing::HasSubstr;
using namespace std::chrono_literals;
using cli::read_text;
using cli::run;
using cli::TempDir;
using cli::write_text;

constexpr const char* kRsa2048 = "-algorithm RSA -pkeyopt rsa_keygen_bits:2048";
constexpr const char* kRsa1024 = "-algorithm RSA -pkeyopt rsa_keygen_bits:1024";
constexpr const char* kP256 = "-algorithm EC -pkeyopt ec_paramgen_curve:P-256";
constexpr const char* kP384 = "-algorithm EC -pkeyopt ec_paramgen_curve:P-384";
constexpr const char* kP224 = "-algorithm EC -pkeyopt ec_paramgen_curve:P-224";

constexpr const char* kGoodCaExtensions =
    "basicConstraints = critical,CA:TRUE\n"
    "keyUsage = critical,keyCertSign,cRLSign\n"
    "subjectKeyIdentifier = hash\n"
    "authorityKeyIdentifier = none\n";

// Makes a key (`openssl genpkey <key_options>`) into <name>.key and a self-signed certificate
// with exactly `extensions` into <name>.pem; returns the certificate's PEM.
std::string openssl_ca(const TempDir& dir, const std::string& name, const std::string& key_options,
                       const std::string& extensions, const std::string& digest = "-sha256",
                       const std::string& subject = "/CN=test-ca") {
  const std::string config = dir.file(name + ".cnf");
  write_text(config, "[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = unused\n[ext]\n" +
                         extensions);
  auto key = run("openssl genpkey " + key_options + " -out " + dir.file(name + ".key"));
  if (key.exit_code != 0) throw std::runtime_error("openssl genpkey: " + key.output);
  auto cert = run("openssl req -x509 -new -key " + dir.file(name + ".key") + " -subj " + subject +
                  " -config " + config + " -extensions ext -days 30 " + digest + " -out " +
                  dir.file(name + ".pem"));
  if (cert.exit_code != 0) throw std::runtime_error("openssl req -x509: " + cert.output);
  return read_text(dir.file(name + ".pem"));
}

struct BadCa {
  const char* name;
  const char* key;
  std::string extensions;
  const char* digest;
  const char* reason;  // a part of the reason the rule gives
};

TEST(TunnelCaViolation, CertificatesMadeByOpensslThatBreakOneRuleEachAreRefusedWithTheirRule) {
  TempDir dir;
  const std::string without_bc =
      "keyUsage = critical,keyCertSign\nsubjectKeyIdentifier = hash\nauthorityKeyIdentifier = "
      "none\n";
  const BadCa cases[] = {
      {"ca_false", kP256,
       "basicConstraints = critical,CA:FALSE\nkeyUsage = critical,keyCertSign\n"
       "subjectKeyIdentifier = hash\n",
       "-sha256", "BasicConstraints says CA:FALSE"},
      {"not_critical", kP256,
       "basicConstraints = CA:TRUE\nkeyUsage = critical,keyCertSign\nsubjectKeyIdentifier = hash\n",
       "-sha256", "BasicConstraints is not critical"},
      {"no_basic_constraints", kP256, without_bc, "-sha256", "no BasicConstraints extension"},
      {"no_ski", kP256,
       "basicConstraints = critical,CA:TRUE\nkeyUsage = critical,keyCertSign\n"
       "subjectKeyIdentifier = none\nauthorityKeyIdentifier = none\n",
       "-sha256", "no Subject Key Identifier"},
      {"no_key_cert_sign", kP256,
       "basicConstraints = critical,CA:TRUE\nkeyUsage = critical,digitalSignature,cRLSign\n"
       "subjectKeyIdentifier = hash\n",
       "-sha256", "KeyUsage does not include keyCertSign"},
      {"no_key_usage", kP256, "basicConstraints = critical,CA:TRUE\nsubjectKeyIdentifier = hash\n",
       "-sha256", "no KeyUsage extension"},
      {"rsa_1024", kRsa1024, kGoodCaExtensions, "-sha256",
       "the RSA key has 1024 bits; at least 2048 are required"},
      {"p_224", kP224, kGoodCaExtensions, "-sha256",
       "the ECDSA key is on curve secp224r1; P-256, P-384 or P-521 is required"},
      {"sha1_ecdsa", kP256, kGoodCaExtensions, "-sha1", "signed with SHA1 (ecdsa-with-SHA1)"},
      {"sha1_rsa", kRsa2048, kGoodCaExtensions, "-sha1", "signed with SHA1"},
      {"sha224", kP256, kGoodCaExtensions, "-sha224", "SHA-256 or stronger is required"},
  };
  for (const auto& bad : cases) {
    SCOPED_TRACE(bad.name);
    const std::string pem = openssl_ca(dir, bad.name, bad.key, bad.extensions, bad.digest);
    auto violation = tunnel_ca_violation(pem);
    ASSERT_TRUE(violation.has_value()) << "accepted";
    EXPECT_THAT(*violation, HasSubstr(bad.reason));
  }
}

TEST(TunnelCaViolation, CertificatesMadeByOpensslThatKeepEveryRuleAreAccepted) {
  // The control for the table above: the same recipe with nothing broken passes, so each
  // refusal there comes from the one thing that case changed.
  TempDir dir;
  EXPECT_EQ(tunnel_ca_violation(openssl_ca(dir, "rsa", kRsa2048, kGoodCaExtensions)), std::nullopt);
  EXPECT_EQ(tunnel_ca_violation(openssl_ca(dir, "p256", kP256, kGoodCaExtensions)), std::nullopt);
  EXPECT_EQ(tunnel_ca_violation(openssl_ca(dir, "p384", kP384, kGoodCaExtensions, "-sha384")),
            std::nullopt);
  // keyCertSign alone is enough; an AKI on the CA is allowed.
  EXPECT_EQ(tunnel_ca_violation(openssl_ca(dir, "minimal", kP256,
                                           "basicConstraints = critical,CA:TRUE\n"
                                           "keyUsage = critical,keyCertSign\n"
                                           "subjectKeyIdentifier = hash\n"
                                           "authorityKeyIdentifier = keyid\n",
                                           "-sha512")),
            std::nullopt);
  // The module's own CA.
  PrivateKey key = PrivateKey::generate_ec_p256();
  Certificate ca = issue_self_signed_ca({.common_name = "ca", .lifetime = 24h}, key,
                                        std::chrono::sys_days{std::chrono::year{2030} / 1 / 1});
  EXPECT_EQ(tunnel_ca_violation(ca.pem()), std::nullopt);
}

TEST(TunnelCaViolation, ThePemItselfMustHoldExactlyOneCertificateAndNoKey) {
  TempDir dir;
  const std::string good = openssl_ca(dir, "good", kP256, kGoodCaExtensions);
  const std::string key = read_text(dir.file("good.key"));
  ASSERT_THAT(key, HasSubstr("PRIVATE KEY"));
  ASSERT_EQ(tunnel_ca_violation(good), std::nullopt);

  struct Case {
    const char* name;
    std::string pem;
    const char* reason;
  };
  // Text before a PEM block is allowed (openssl x509 -text writes some): padding of that kind
  // makes a valid certificate as long as wanted.
  auto padded_to = [&](std::size_t size) {
    return std::string(size - good.size() - 1, '#') + "\n" + good;
  };
  const std::string oversized = padded_to(kTunnelCaMaxPemBytes + 1);
  const std::string at_limit = padded_to(kTunnelCaMaxPemBytes);
  ASSERT_EQ(at_limit.size(), kTunnelCaMaxPemBytes);

  const Case cases[] = {
      {"two certificates", good + good, "the PEM holds 2 certificates"},
      {"key after the certificate", good + key, "the PEM contains a private key"},
      {"key before the certificate", key + good, "the PEM contains a private key"},
      {"traditional EC key",
       good + "-----BEGIN EC PRIVATE KEY-----\nAAAA\n"
              "-----END EC PRIVATE KEY-----\n",
       "the PEM contains a private key (EC PRIVATE KEY)"},
      {"more than 8 KB", oversized, "the PEM is 8193 bytes; at most 8192 are allowed"},
      {"garbage", "this is not a certificate", "the PEM holds no certificate"},
      {"empty", "", "the PEM holds no certificate"},
      {"garbage inside a block",
       "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n",
       "the certificate does not parse"},
      {"broken base64", "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
       "the PEM does not parse"},
      {"a public key next to it",
       good + "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
       "the PEM contains a PUBLIC KEY block"},
  };
  for (const auto& bad : cases) {
    SCOPED_TRACE(bad.name);
    auto violation = tunnel_ca_violation(bad.pem);
    ASSERT_TRUE(violation.has_value()) << "accepted";
    EXPECT_THAT(*violation, HasSubstr(bad.reason));
    EXPECT_THAT(*violation, ::testing::Not(HasSubstr("BEGIN")));  // a reason, not an echo
  }
  EXPECT_EQ(tunnel_ca_violation(at_limit), std::nullopt);  // 8 KB exactly is allowed
}

// --- server certificates --------------------------------------------------------------------

constexpr TimePoint kNow = std::chrono::sys_days{std::chrono::year{2031} / 3 / 4} + 12h;

struct Pki {
  PrivateKey ca_key = PrivateKey::generate_ec_p256();
  Certificate ca = issue_self_signed_ca(
      {.common_name = "tunnel-ca", .lifetime = 5 * 365 * 24h, .max_path_length = 0}, ca_key, kNow);
  PrivateKey server_key = PrivateKey::generate_ec_p256();
  Certificate server = issue_certificate({.common_name = "*.tnl-1.tunnels.example",
                                          .dns_names = {"*.tnl-1.tunnels.example"},
                                          .lifetime = 90 * 24h},
                                         server_key, ca, ca_key, kNow);
};

TEST(VerifyServerCertificate, AcceptsRouteHostsUnderTheWildcardOnly) {
  Pki pki;
  EXPECT_EQ(verify_server_certificate(pki.server, pki.ca, "tickets.tnl-1.tunnels.example"),
            std::nullopt);
  EXPECT_EQ(verify_server_certificate(pki.server, pki.ca, "Tickets.TNL-1.tunnels.example"),
            std::nullopt);
  for (const char* host : {"tnl-1.tunnels.example", "a.tickets.tnl-1.tunnels.example",
                           "tickets.tnl-2.tunnels.example", "tickets", ""}) {
    SCOPED_TRACE(host);
    EXPECT_THAT(verify_server_certificate(pki.server, pki.ca, host).value_or("accepted"),
                HasSubstr("no Subject Alternative Name matches"));
  }
}

TEST(VerifyServerCertificate, AcceptsAnExactRouteName) {
  Pki pki;
  Certificate exact = issue_certificate(
      {.common_name = "db", .dns_names = {"db.tnl-1.tunnels.example"}, .lifetime = 24h},
      pki.server_key, pki.ca, pki.ca_key, kNow);
  EXPECT_EQ(verify_server_certificate(exact, pki.ca, "db.tnl-1.tunnels.example"), std::nullopt);
  EXPECT_THAT(verify_server_certificate(exact, pki.ca, "tickets.tnl-1.tunnels.example")
                  .value_or("accepted"),
              HasSubstr("(the certificate names db.tnl-1.tunnels.example)"));
}

TEST(VerifyServerCertificate, RefusesALeafSignedByAnotherCa) {
  Pki pki;
  Pki other;
  EXPECT_THAT(verify_server_certificate(other.server, pki.ca, "x.tnl-1.tunnels.example")
                  .value_or("accepted"),
              HasSubstr("Authority Key Identifier " + other.ca.subject_key_id() +
                        " is not the CA's Subject Key Identifier " + pki.ca.subject_key_id()));
}

TEST(VerifyServerCertificate, RefusesALeafWhoseCaClaimsTheSameKeyIdWithAnotherKey) {
  // An impostor CA with the real CA's name and SKI but its own key: only the signature tells
  // them apart. The openssl command agrees that the leaf does not chain to it.
  Pki pki;
  TempDir dir;
  const std::string impostor_pem =
      openssl_ca(dir, "impostor", kP256,
                 "basicConstraints = critical,CA:TRUE\nkeyUsage = critical,keyCertSign\n"
                 "subjectKeyIdentifier = " +
                     pki.ca.subject_key_id() + "\nauthorityKeyIdentifier = none\n",
                 "-sha256", "/CN=tunnel-ca");
  Certificate impostor = Certificate::from_pem(impostor_pem);
  ASSERT_EQ(impostor.subject_key_id(), pki.ca.subject_key_id());
  ASSERT_EQ(impostor.subject(), pki.ca.subject());
  EXPECT_THAT(verify_server_certificate(pki.server, impostor, "x.tnl-1.tunnels.example")
                  .value_or("accepted"),
              HasSubstr("the CA's signature on the certificate does not verify"));

  write_text(dir.file("server.pem"), pki.server.pem());
  const std::string at = " -attime " + std::to_string(std::chrono::system_clock::to_time_t(kNow));
  auto refused = run("openssl verify" + at + " -CAfile " + dir.file("impostor.pem") + " " +
                     dir.file("server.pem"));
  EXPECT_NE(refused.exit_code, 0) << refused.output;
  write_text(dir.file("ca.pem"), pki.ca.pem());
  auto accepted =
      run("openssl verify" + at + " -CAfile " + dir.file("ca.pem") + " " + dir.file("server.pem"));
  EXPECT_EQ(accepted.exit_code, 0) << accepted.output;
}

TEST(VerifyServerCertificate, RefusesAClientOnlyCertificate) {
  Pki pki;
  Certificate client = issue_certificate({.common_name = "c",
                                          .dns_names = {"*.tnl-1.tunnels.example"},
                                          .lifetime = 24h,
                                          .usage = Usage::kClient},
                                         pki.server_key, pki.ca, pki.ca_key, kNow);
  EXPECT_THAT(
      verify_server_certificate(client, pki.ca, "x.tnl-1.tunnels.example").value_or("accepted"),
      HasSubstr("ExtendedKeyUsage does not include serverAuth"));
  Certificate both = issue_certificate({.common_name = "c",
                                        .dns_names = {"*.tnl-1.tunnels.example"},
                                        .lifetime = 24h,
                                        .usage = Usage::kServerAndClient},
                                       pki.server_key, pki.ca, pki.ca_key, kNow);
  EXPECT_EQ(verify_server_certificate(both, pki.ca, "x.tnl-1.tunnels.example"), std::nullopt);
}

// A leaf signed by the module's CA with the `openssl x509 -req` command and `extensions`, as a
// certificate from elsewhere (cert-manager, a user's own tooling) would be.
Certificate openssl_leaf(const TempDir& dir, const Pki& pki, const std::string& name,
                         const std::string& extensions) {
  write_text(dir.file("ca.pem"), pki.ca.pem());
  write_private_key_file(dir.file("ca.key"), pki.ca_key);
  write_private_key_file(dir.file(name + ".key"), pki.server_key);
  write_text(dir.file(name + ".cnf"), "[ext]\n" + extensions);
  auto csr = run("openssl req -new -key " + dir.file(name + ".key") + " -subj /CN=" + name +
                 " -out " + dir.file(name + ".csr"));
  if (csr.exit_code != 0) throw std::runtime_error("openssl req: " + csr.output);
  auto cert =
      run("openssl x509 -req -in " + dir.file(name + ".csr") + " -CA " + dir.file("ca.pem") +
          " -CAkey " + dir.file("ca.key") + " -set_serial 0x1234 -days 30 -sha256 -extfile " +
          dir.file(name + ".cnf") + " -extensions ext -out " + dir.file(name + ".pem"));
  if (cert.exit_code != 0) throw std::runtime_error("openssl x509 -req: " + cert.output);
  return read_certificate_file(dir.file(name + ".pem"));
}

TEST(VerifyServerCertificate, JudgesCertificatesMadeElsewhere) {
  Pki pki;
  TempDir dir;
  const std::string host = "mcp.tnl-1.tunnels.example";
  Certificate no_eku = openssl_leaf(dir, pki, "no_eku",
                                    "subjectAltName = DNS:*.tnl-1.tunnels.example\n"
                                    "authorityKeyIdentifier = keyid\n");
  EXPECT_EQ(verify_server_certificate(no_eku, pki.ca, host), std::nullopt);  // EKU is optional

  Certificate no_aki = openssl_leaf(dir, pki, "no_aki",
                                    "subjectAltName = DNS:*.tnl-1.tunnels.example\n"
                                    "authorityKeyIdentifier = none\n");
  EXPECT_THAT(verify_server_certificate(no_aki, pki.ca, host).value_or("accepted"),
              HasSubstr("the certificate has no Authority Key Identifier"));

  Certificate no_san = openssl_leaf(dir, pki, "no_san", "authorityKeyIdentifier = keyid\n");
  EXPECT_THAT(verify_server_certificate(no_san, pki.ca, host).value_or("accepted"),
              HasSubstr("no DNS Subject Alternative Name"));

  Certificate code_signing = openssl_leaf(dir, pki, "code_signing",
                                          "subjectAltName = DNS:*.tnl-1.tunnels.example\n"
                                          "authorityKeyIdentifier = keyid\n"
                                          "extendedKeyUsage = codeSigning\n");
  EXPECT_THAT(verify_server_certificate(code_signing, pki.ca, host).value_or("accepted"),
              HasSubstr("ExtendedKeyUsage does not include serverAuth"));
}

TEST(VerifyServerCertificate, RefusesACaWithoutSubjectKeyId) {
  Pki pki;
  TempDir dir;
  Certificate no_ski_ca = Certificate::from_pem(
      openssl_ca(dir, "no_ski", kP256,
                 "basicConstraints = critical,CA:TRUE\nkeyUsage = critical,keyCertSign\n"
                 "subjectKeyIdentifier = none\nauthorityKeyIdentifier = none\n"));
  EXPECT_THAT(verify_server_certificate(pki.server, no_ski_ca, "x.tnl-1.tunnels.example")
                  .value_or("accepted"),
              HasSubstr("the CA has no Subject Key Identifier"));
}

}  // namespace
}  // namespace perimeter::pki
