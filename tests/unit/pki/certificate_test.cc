// Issuing and reading certificates: every property is read back by OpenSSL itself (its API or its
// command-line tool), not by the accessors under test alone.

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/obj_mac.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>

#include <chrono>
#include <memory>
#include <set>

#include "openssl_cli.h"
#include "pki/pki.h"

namespace perimeter::pki {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;
using namespace std::chrono_literals;
using cli::hex_digits;
using cli::read_text;
using cli::run;
using cli::TempDir;
using cli::write_text;

// 2031-03-04T05:06:07Z: far from today, so nothing here can pass by reading the wall clock.
constexpr TimePoint kNow = std::chrono::sys_days{std::chrono::year{2031} / 3 / 4} + 5h + 6min + 7s;
constexpr std::chrono::seconds kFiveYears = 5 * 365 * 24h;
constexpr std::chrono::seconds kNinetyDays = 90 * 24h;

long epoch_seconds(TimePoint time) {
  return std::chrono::system_clock::to_time_t(time);
}

struct TunnelPki {
  PrivateKey ca_key = PrivateKey::generate_ec_p256();
  Certificate ca = issue_self_signed_ca({.common_name = "perimeter-mcp-tunnel-ca",
                                         .organization = "Perimeter",
                                         .lifetime = kFiveYears,
                                         .max_path_length = 0},
                                        ca_key, kNow);
  PrivateKey server_key = PrivateKey::generate_ec_p256();
  Certificate server = issue_certificate({.common_name = "*.tnl-abc.tunnels.example",
                                          .dns_names = {"*.tnl-abc.tunnels.example"},
                                          .lifetime = kNinetyDays,
                                          .usage = Usage::kServer},
                                         server_key, ca, ca_key, kNow);
};

// The extension `nid` of `cert`, decoded, with its criticality (-1 when absent).
template <typename T>
std::unique_ptr<T, void (*)(T*)> decoded(X509* cert, int nid, void (*free)(T*), int* critical) {
  return {static_cast<T*>(X509_get_ext_d2i(cert, nid, critical, nullptr)), free};
}

TEST(IssueSelfSignedCa, HasEveryExtensionTheTunnelsApiRequires) {
  TunnelPki pki;
  X509* ca = pki.ca.native();

  int critical = -1;
  auto constraints = decoded(ca, NID_basic_constraints, BASIC_CONSTRAINTS_free, &critical);
  ASSERT_NE(constraints, nullptr);
  EXPECT_TRUE(constraints->ca);
  EXPECT_EQ(critical, 1);
  ASSERT_NE(constraints->pathlen, nullptr);
  EXPECT_EQ(ASN1_INTEGER_get(constraints->pathlen), 0);

  auto key_id = decoded(ca, NID_subject_key_identifier, ASN1_OCTET_STRING_free, &critical);
  ASSERT_NE(key_id, nullptr);
  EXPECT_EQ(ASN1_STRING_length(key_id.get()), 20);  // SHA-1 of the public key (RFC 5280 method 1)
  EXPECT_EQ(critical, 0);

  auto usage = decoded(ca, NID_key_usage, ASN1_BIT_STRING_free, &critical);
  ASSERT_NE(usage, nullptr);
  EXPECT_EQ(critical, 1);
  EXPECT_EQ(ASN1_BIT_STRING_get_bit(usage.get(), 5), 1);  // keyCertSign
  EXPECT_EQ(ASN1_BIT_STRING_get_bit(usage.get(), 6), 1);  // cRLSign

  EXPECT_EQ(X509_get_signature_nid(ca), NID_ecdsa_with_SHA256);
  EVP_PKEY* key = X509_get0_pubkey(ca);
  ASSERT_NE(key, nullptr);
  EXPECT_EQ(EVP_PKEY_get_base_id(key), EVP_PKEY_EC);
  char curve[64] = {0};
  ASSERT_EQ(EVP_PKEY_get_group_name(key, curve, sizeof(curve), nullptr), 1);
  EXPECT_EQ(OBJ_sn2nid(curve), NID_X9_62_prime256v1);
  EXPECT_EQ(X509_verify(ca, key), 1);  // self-signed
  EXPECT_EQ(X509_NAME_cmp(X509_get_subject_name(ca), X509_get_issuer_name(ca)), 0);

  EXPECT_TRUE(pki.ca.is_ca());
  EXPECT_EQ(pki.ca.common_name(), "perimeter-mcp-tunnel-ca");
  EXPECT_EQ(pki.ca.subject(), "CN=perimeter-mcp-tunnel-ca,O=Perimeter");
  EXPECT_EQ(tunnel_ca_violation(pki.ca.pem()), std::nullopt);
}

TEST(IssueSelfSignedCa, WithoutPathLengthHasNone) {
  PrivateKey key = PrivateKey::generate_ec_p256();
  Certificate ca = issue_self_signed_ca({.common_name = "ca", .lifetime = 1h}, key, kNow);
  int critical = -1;
  auto constraints = decoded(ca.native(), NID_basic_constraints, BASIC_CONSTRAINTS_free, &critical);
  ASSERT_NE(constraints, nullptr);
  EXPECT_EQ(constraints->pathlen, nullptr);
}

TEST(IssueCertificate, ServerCertificateHasTheTunnelGatewaysShape) {
  TunnelPki pki;
  X509* server = pki.server.native();

  EXPECT_THAT(pki.server.dns_names(), ElementsAre("*.tnl-abc.tunnels.example"));
  EXPECT_TRUE(pki.server.ip_addresses().empty());
  EXPECT_FALSE(pki.server.is_ca());
  EXPECT_TRUE(pki.server.matches(pki.server_key));
  EXPECT_FALSE(pki.server.matches(pki.ca_key));

  int critical = -1;
  auto usages = decoded(server, NID_ext_key_usage, EXTENDED_KEY_USAGE_free, &critical);
  ASSERT_NE(usages, nullptr);
  ASSERT_EQ(sk_ASN1_OBJECT_num(usages.get()), 1);
  EXPECT_EQ(OBJ_obj2nid(sk_ASN1_OBJECT_value(usages.get(), 0)), NID_server_auth);

  auto constraints = decoded(server, NID_basic_constraints, BASIC_CONSTRAINTS_free, &critical);
  ASSERT_NE(constraints, nullptr);
  EXPECT_FALSE(constraints->ca);
  EXPECT_EQ(critical, 1);

  auto usage = decoded(server, NID_key_usage, ASN1_BIT_STRING_free, &critical);
  ASSERT_NE(usage, nullptr);
  EXPECT_EQ(ASN1_BIT_STRING_get_bit(usage.get(), 0), 1);  // digitalSignature
  EXPECT_EQ(ASN1_BIT_STRING_get_bit(usage.get(), 2), 0);  // no keyEncipherment on an EC key
  EXPECT_EQ(ASN1_BIT_STRING_get_bit(usage.get(), 5), 0);  // not a signer of certificates

  EXPECT_EQ(X509_get_signature_nid(server), NID_ecdsa_with_SHA256);
  EXPECT_EQ(X509_verify(server, X509_get0_pubkey(pki.ca.native())), 1);
}

TEST(IssueCertificate, AuthorityKeyIdIsTheCasSubjectKeyId) {
  TunnelPki pki;
  // Read with OpenSSL's own decoders, then through the accessors.
  const ASN1_OCTET_STRING* ski = X509_get0_subject_key_id(pki.ca.native());
  const ASN1_OCTET_STRING* aki = X509_get0_authority_key_id(pki.server.native());
  ASSERT_NE(ski, nullptr);
  ASSERT_NE(aki, nullptr);
  EXPECT_EQ(ASN1_OCTET_STRING_cmp(ski, aki), 0);
  EXPECT_EQ(pki.server.authority_key_id(), pki.ca.subject_key_id());
  EXPECT_EQ(pki.ca.subject_key_id().size(), 40u);
  EXPECT_NE(pki.server.subject_key_id(), pki.ca.subject_key_id());
}

TEST(IssueCertificate, VerifiesAgainstTheCaWithTheOpensslCommand) {
  TunnelPki pki;
  TempDir dir;
  write_text(dir.file("ca.pem"), pki.ca.pem());
  write_text(dir.file("server.pem"), pki.server.pem());
  // -attime: verified at the injected time, not at the machine's.
  const std::string at = " -attime " + std::to_string(epoch_seconds(kNow + 1h));
  auto ok =
      run("openssl verify -x509_strict -purpose sslserver -verify_hostname "
          "mcp.tnl-abc.tunnels.example" +
          at + " -CAfile " + dir.file("ca.pem") + " " + dir.file("server.pem"));
  EXPECT_EQ(ok.exit_code, 0) << ok.output;
  EXPECT_THAT(ok.output, HasSubstr(": OK"));

  // The same command fails once the certificate has expired: the check above means something.
  const std::string later = " -attime " + std::to_string(epoch_seconds(kNow + kNinetyDays + 1h));
  auto expired = run("openssl verify" + later + " -CAfile " + dir.file("ca.pem") + " " +
                     dir.file("server.pem"));
  EXPECT_NE(expired.exit_code, 0) << expired.output;
  EXPECT_THAT(expired.output, HasSubstr("expired"));

  EXPECT_EQ(verify_server_certificate(pki.server, pki.ca, "mcp.tnl-abc.tunnels.example", kNow),
            std::nullopt);
}

TEST(Certificate, FingerprintIsTheSha256OfTheDerAsOpensslComputesIt) {
  TunnelPki pki;
  TempDir dir;
  write_text(dir.file("ca.pem"), pki.ca.pem());
  auto digest =
      run("openssl x509 -in " + dir.file("ca.pem") + " -outform DER | sha256sum | cut -d' ' -f1");
  ASSERT_EQ(digest.exit_code, 0) << digest.output;
  EXPECT_EQ(pki.ca.fingerprint_sha256() + "\n", digest.output);
  EXPECT_EQ(pki.ca.fingerprint_sha256().size(), 64u);
  EXPECT_EQ(pki.ca.fingerprint_sha256(), hex_digits(pki.ca.fingerprint_sha256()));  // lowercase
  EXPECT_NE(pki.ca.fingerprint_sha256(), pki.server.fingerprint_sha256());
}

TEST(Certificate, SerialAndKeyIdsMatchWhatOpensslPrints) {
  TunnelPki pki;
  TempDir dir;
  write_text(dir.file("server.pem"), pki.server.pem());
  auto serial = run("openssl x509 -in " + dir.file("server.pem") + " -noout -serial");
  ASSERT_EQ(serial.exit_code, 0) << serial.output;
  std::string printed = hex_digits(serial.output.substr(serial.output.find('=') + 1));
  printed.erase(0, printed.find_first_not_of('0'));
  EXPECT_EQ(pki.server.serial_hex(), printed);

  auto ids = run("openssl x509 -in " + dir.file("server.pem") +
                 " -noout -ext subjectKeyIdentifier,authorityKeyIdentifier");
  ASSERT_EQ(ids.exit_code, 0) << ids.output;
  EXPECT_THAT(hex_digits(ids.output), HasSubstr(pki.server.subject_key_id()));
  EXPECT_THAT(hex_digits(ids.output), HasSubstr(pki.server.authority_key_id()));
}

TEST(Certificate, SerialsAreRandomAndAbout128Bits) {
  TunnelPki pki;
  std::set<std::string> serials;
  for (int i = 0; i < 20; ++i) {
    Certificate cert = issue_certificate({.common_name = "x", .lifetime = 1h}, pki.server_key,
                                         pki.ca, pki.ca_key, kNow);
    serials.insert(cert.serial_hex());
    EXPECT_LE(cert.serial_hex().size(), 32u);
    EXPECT_GE(cert.serial_hex().size(), 24u);  // a shorter one has odds of 2^-32
  }
  EXPECT_EQ(serials.size(), 20u);
}

TEST(IssueCertificate, LifetimesFollowTheInjectedNow) {
  TunnelPki pki;
  EXPECT_EQ(pki.ca.not_before(), kNow);
  EXPECT_EQ(pki.ca.not_after(), kNow + kFiveYears);
  EXPECT_EQ(pki.server.not_before(), kNow);
  EXPECT_EQ(pki.server.not_after(), kNow + kNinetyDays);

  // Backdated, as the local cluster does, and past 2050 (GeneralizedTime).
  const TimePoint late = std::chrono::sys_days{std::chrono::year{2049} / 12 / 31};
  Certificate cert = issue_certificate(
      {.common_name = "x", .lifetime = 3 * 24h, .backdate = 1h, .usage = Usage::kClient},
      pki.server_key, pki.ca, pki.ca_key, late);
  EXPECT_EQ(cert.not_before(), late - 1h);
  EXPECT_EQ(cert.not_after(), late + 3 * 24h);

  // Sub-second parts are dropped, never rounded up past `now`.
  Certificate truncated = issue_certificate({.common_name = "x", .lifetime = 1h}, pki.server_key,
                                            pki.ca, pki.ca_key, kNow + 999ms);
  EXPECT_EQ(truncated.not_before(), kNow);
}

TEST(IssueCertificate, VerifyHonoursTheValidityWindow) {
  TunnelPki pki;
  const std::string host = "mcp.tnl-abc.tunnels.example";
  EXPECT_EQ(verify_server_certificate(pki.server, pki.ca, host, kNow), std::nullopt);
  EXPECT_EQ(verify_server_certificate(pki.server, pki.ca, host, kNow + kNinetyDays), std::nullopt);
  EXPECT_THAT(verify_server_certificate(pki.server, pki.ca, host, kNow - 1s).value_or(""),
              HasSubstr("not valid before 2031-03-04T05:06:07Z"));
  EXPECT_THAT(
      verify_server_certificate(pki.server, pki.ca, host, kNow + kNinetyDays + 1s).value_or(""),
      HasSubstr("expired at 2031-06-02T05:06:07Z"));
}

TEST(IssueCertificate, ClientAndBothUsagesAndIpAddresses) {
  TunnelPki pki;
  Certificate both = issue_certificate({.common_name = "kube-apiserver",
                                        .dns_names = {"localhost", "kubernetes.default.svc"},
                                        .ip_addresses = {"127.0.0.1", "10.0.0.1", "::1"},
                                        .lifetime = 1h,
                                        .usage = Usage::kServerAndClient},
                                       pki.server_key, pki.ca, pki.ca_key, kNow);
  EXPECT_THAT(both.dns_names(), ElementsAre("localhost", "kubernetes.default.svc"));
  EXPECT_THAT(both.ip_addresses(), ElementsAre("127.0.0.1", "10.0.0.1", "::1"));
  TempDir dir;
  write_text(dir.file("ca.pem"), pki.ca.pem());
  write_text(dir.file("both.pem"), both.pem());
  const std::string at = " -attime " + std::to_string(epoch_seconds(kNow + 1min));
  for (const char* purpose : {"sslserver", "sslclient"}) {
    auto result = run(std::string("openssl verify -purpose ") + purpose + at + " -verify_ip ::1" +
                      " -CAfile " + dir.file("ca.pem") + " " + dir.file("both.pem"));
    EXPECT_EQ(result.exit_code, 0) << purpose << ": " << result.output;
  }

  Certificate client = issue_certificate({.common_name = "perimeter-admin",
                                          .organization = "system:masters",
                                          .lifetime = 1h,
                                          .usage = Usage::kClient},
                                         pki.server_key, pki.ca, pki.ca_key, kNow);
  write_text(dir.file("client.pem"), client.pem());
  auto as_client = run("openssl verify -purpose sslclient" + at + " -CAfile " + dir.file("ca.pem") +
                       " " + dir.file("client.pem"));
  EXPECT_EQ(as_client.exit_code, 0) << as_client.output;
  auto as_server = run("openssl verify -purpose sslserver" + at + " -CAfile " + dir.file("ca.pem") +
                       " " + dir.file("client.pem"));
  EXPECT_NE(as_server.exit_code, 0) << as_server.output;
  EXPECT_EQ(client.subject(), "CN=perimeter-admin,O=system:masters");
  EXPECT_TRUE(client.dns_names().empty());
}

TEST(IssueCertificate, RsaLeafAlsoGetsKeyEncipherment) {
  TunnelPki pki;
  PrivateKey rsa = PrivateKey::generate_rsa(2048);
  Certificate cert =
      issue_certificate({.common_name = "rsa", .lifetime = 1h}, rsa, pki.ca, pki.ca_key, kNow);
  int critical = -1;
  auto usage = decoded(cert.native(), NID_key_usage, ASN1_BIT_STRING_free, &critical);
  ASSERT_NE(usage, nullptr);
  EXPECT_EQ(ASN1_BIT_STRING_get_bit(usage.get(), 2), 1);
}

TEST(IssueCertificate, RefusesAnIssuerThatCannotSign) {
  TunnelPki pki;
  const CertificateRequest request{.common_name = "x", .lifetime = 1h};
  EXPECT_THROW(issue_certificate(request, pki.server_key, pki.server, pki.server_key, kNow),
               PkiError);  // a leaf is no CA
  EXPECT_THROW(issue_certificate(request, pki.server_key, pki.ca, pki.server_key, kNow),
               PkiError);  // the wrong key for the CA
  EXPECT_THROW(issue_certificate({.common_name = "x", .lifetime = 0s}, pki.server_key, pki.ca,
                                 pki.ca_key, kNow),
               PkiError);
  EXPECT_THROW(
      issue_certificate({.common_name = "x", .dns_names = {"a,DNS:evil.example"}, .lifetime = 1h},
                        pki.server_key, pki.ca, pki.ca_key, kNow),
      PkiError);
  EXPECT_THROW(
      issue_certificate({.common_name = "x", .ip_addresses = {"300.1.1.1"}, .lifetime = 1h},
                        pki.server_key, pki.ca, pki.ca_key, kNow),
      PkiError);
}

TEST(PrivateKey, PemRoundTripsAndParseErrorsCarryOpensslsReasonButNoKey) {
  PrivateKey key = PrivateKey::generate_ec_p256();
  const std::string pem = key.pem();
  EXPECT_THAT(pem, HasSubstr("-----BEGIN PRIVATE KEY-----"));
  PrivateKey again = PrivateKey::from_pem(pem);
  EXPECT_EQ(again.pem(), pem);
  EXPECT_THAT(key.public_pem(), HasSubstr("-----BEGIN PUBLIC KEY-----"));

  // A damaged key: the error names OpenSSL's reason and does not echo the input.
  std::string damaged = pem;
  damaged[damaged.find('\n') + 5] ^= 0x01;
  try {
    PrivateKey::from_pem(damaged);
    FAIL() << "a damaged key parsed";
  } catch (const PkiError& error) {
    const std::string message = error.what();
    EXPECT_THAT(message, HasSubstr("reading a private key from PEM: error:"));
    EXPECT_THAT(message, Not(HasSubstr(damaged.substr(28, 40))));
  }
  EXPECT_THROW(PrivateKey::from_pem("garbage"), PkiError);
}

TEST(PrivateKey, AnEncryptedKeyIsAnErrorNotAPrompt) {
  TempDir dir;
  auto made =
      run("openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -aes256 "
          "-pass pass:secret -out " +
          dir.file("key.pem"));
  ASSERT_EQ(made.exit_code, 0) << made.output;
  EXPECT_THROW(PrivateKey::from_pem(read_text(dir.file("key.pem"))), PkiError);
}

TEST(PrivateKey, ReadsKeysOpensslWrote) {
  TempDir dir;
  auto made = run("openssl ecparam -name prime256v1 -genkey -noout -out " + dir.file("key.pem"));
  ASSERT_EQ(made.exit_code, 0) << made.output;  // the traditional "EC PRIVATE KEY" form
  PrivateKey key = read_private_key_file(dir.file("key.pem"));
  Certificate ca = issue_self_signed_ca({.common_name = "ca", .lifetime = 1h}, key, kNow);
  EXPECT_TRUE(ca.matches(key));
}

TEST(Certificate, PemRoundTripsAndBundlesParse) {
  TunnelPki pki;
  Certificate parsed = Certificate::from_pem(pki.server.pem());
  EXPECT_EQ(parsed.der(), pki.server.der());
  auto both = Certificate::all_from_pem(pki.server.pem() + pki.ca.pem());
  ASSERT_EQ(both.size(), 2u);
  EXPECT_EQ(both[1].fingerprint_sha256(), pki.ca.fingerprint_sha256());
  EXPECT_TRUE(Certificate::all_from_pem("no certificate here").empty());
  EXPECT_THROW(Certificate::from_pem("no certificate here"), PkiError);
  EXPECT_THROW(Certificate::all_from_pem(pki.ca.pem() + "-----BEGIN CERTIFICATE-----\nAAAA\n"
                                                        "-----END CERTIFICATE-----\n"),
               PkiError);
}

TEST(Files, KeysAre0600AndCertificates0644EvenOverAnOlderFile) {
  TunnelPki pki;
  TempDir dir;
  const std::string key_path = dir.file("ca.key");
  write_text(key_path, "an older, world-readable file\n");
  ::chmod(key_path.c_str(), 0644);
  write_private_key_file(key_path, pki.ca_key);
  write_certificate_file(dir.file("ca.crt"), pki.ca);
  write_public_key_file(dir.file("ca.pub"), pki.ca_key);

  auto mode = [](const std::string& path) {
    struct stat info {};
    EXPECT_EQ(::stat(path.c_str(), &info), 0) << path;
    return info.st_mode & 0777;
  };
  EXPECT_EQ(mode(key_path), 0600u);
  EXPECT_EQ(mode(dir.file("ca.crt")), 0644u);
  EXPECT_EQ(mode(dir.file("ca.pub")), 0644u);

  EXPECT_EQ(read_text(key_path), pki.ca_key.pem());
  EXPECT_EQ(read_certificate_file(dir.file("ca.crt")).der(), pki.ca.der());
  EXPECT_TRUE(pki.ca.matches(read_private_key_file(key_path)));
  EXPECT_EQ(read_text(dir.file("ca.pub")), pki.ca_key.public_pem());
  EXPECT_THROW(read_certificate_file(dir.file("missing.crt")), PkiError);
  EXPECT_THROW(write_certificate_file(dir.file("no/such/dir/x.crt"), pki.ca), PkiError);
}

}  // namespace
}  // namespace perimeter::pki
