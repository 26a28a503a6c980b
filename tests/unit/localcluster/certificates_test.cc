#include "localcluster/certificates.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>

namespace perimeter::localcluster {
namespace {

using ::testing::Contains;

struct X509Free {
  void operator()(X509* cert) const { X509_free(cert); }
};
struct PkeyFree {
  void operator()(EVP_PKEY* key) const { EVP_PKEY_free(key); }
};
using CertPtr = std::unique_ptr<X509, X509Free>;
using KeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;

CertPtr load_cert(const std::string& path) {
  FILE* file = std::fopen(path.c_str(), "r");
  if (!file) return nullptr;
  CertPtr cert(PEM_read_X509(file, nullptr, nullptr, nullptr));
  std::fclose(file);
  return cert;
}

KeyPtr load_private(const std::string& path) {
  FILE* file = std::fopen(path.c_str(), "r");
  if (!file) return nullptr;
  KeyPtr key(PEM_read_PrivateKey(file, nullptr, nullptr, nullptr));
  std::fclose(file);
  return key;
}

KeyPtr load_public(const std::string& path) {
  FILE* file = std::fopen(path.c_str(), "r");
  if (!file) return nullptr;
  KeyPtr key(PEM_read_PUBKEY(file, nullptr, nullptr, nullptr));
  std::fclose(file);
  return key;
}

std::string name_entry(X509* cert, int nid) {
  char buffer[256] = {0};
  X509_NAME_get_text_by_NID(X509_get_subject_name(cert), nid, buffer, sizeof(buffer));
  return buffer;
}

// The certificate chains to the CA, checked by OpenSSL's own verifier for `purpose`.
bool verifies(X509* cert, X509* ca, int purpose) {
  X509_STORE* store = X509_STORE_new();
  X509_STORE_add_cert(store, ca);
  X509_STORE_CTX* ctx = X509_STORE_CTX_new();
  X509_STORE_CTX_init(ctx, store, cert, nullptr);
  X509_STORE_CTX_set_purpose(ctx, purpose);
  int ok = X509_verify_cert(ctx);
  X509_STORE_CTX_free(ctx);
  X509_STORE_free(store);
  return ok == 1;
}

class CertificatesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir() + "/pki-" + std::to_string(::getpid());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    files_ = generate_certificates(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string dir_;
  ClusterCertificates files_;
};

TEST_F(CertificatesTest, ServingCertificateChainsToTheCaAndNamesEveryApiserverAddress) {
  CertPtr ca = load_cert(files_.ca_cert);
  CertPtr serving = load_cert(files_.apiserver_cert);
  ASSERT_TRUE(ca && serving);
  EXPECT_TRUE(verifies(serving.get(), ca.get(), X509_PURPOSE_SSL_SERVER));
  for (const auto& dns : apiserver_dns_names()) {
    EXPECT_EQ(X509_check_host(serving.get(), dns.c_str(), dns.size(), 0, nullptr), 1) << dns;
  }
  for (const auto& ip : apiserver_ip_addresses()) {
    EXPECT_EQ(X509_check_ip_asc(serving.get(), ip.c_str(), 0), 1) << ip;
  }
  EXPECT_THAT(apiserver_dns_names(), Contains("kubernetes.default"));
  EXPECT_THAT(apiserver_ip_addresses(), Contains("127.0.0.1"));
  EXPECT_NE(X509_check_host(serving.get(), "example.com", 11, 0, nullptr), 1);
  // Not usable as a client certificate.
  EXPECT_FALSE(verifies(serving.get(), ca.get(), X509_PURPOSE_SSL_CLIENT));
}

TEST_F(CertificatesTest, AdminClientCertificateIsInSystemMasters) {
  CertPtr ca = load_cert(files_.ca_cert);
  CertPtr admin = load_cert(files_.admin_cert);
  ASSERT_TRUE(ca && admin);
  EXPECT_TRUE(verifies(admin.get(), ca.get(), X509_PURPOSE_SSL_CLIENT));
  EXPECT_EQ(name_entry(admin.get(), NID_commonName), kAdminUser);
  EXPECT_EQ(name_entry(admin.get(), NID_organizationName), kAdminGroup);
}

TEST_F(CertificatesTest, KeysMatchTheirCertificatesAndStayPrivate) {
  for (const auto& [cert_path, key_path] : {std::pair{files_.ca_cert, files_.ca_key},
                                            std::pair{files_.apiserver_cert, files_.apiserver_key},
                                            std::pair{files_.admin_cert, files_.admin_key}}) {
    CertPtr cert = load_cert(cert_path);
    KeyPtr key = load_private(key_path);
    ASSERT_TRUE(cert && key) << cert_path;
    EXPECT_EQ(X509_check_private_key(cert.get(), key.get()), 1) << cert_path;
    struct stat info {};
    ASSERT_EQ(::stat(key_path.c_str(), &info), 0);
    EXPECT_EQ(info.st_mode & 0777, 0600) << key_path;
  }
  KeyPtr signing = load_private(files_.service_account_key);
  KeyPtr verifying = load_public(files_.service_account_pub);
  ASSERT_TRUE(signing && verifying);
  EXPECT_EQ(EVP_PKEY_eq(signing.get(), verifying.get()), 1);
}

TEST_F(CertificatesTest, EveryClusterGetsItsOwnCa) {
  const std::string other_dir = dir_ + "-other";
  std::filesystem::create_directories(other_dir);
  ClusterCertificates other = generate_certificates(other_dir);
  CertPtr ca = load_cert(files_.ca_cert);
  CertPtr foreign_admin = load_cert(other.admin_cert);
  EXPECT_FALSE(verifies(foreign_admin.get(), ca.get(), X509_PURPOSE_SSL_CLIENT));
  std::filesystem::remove_all(other_dir);
}

TEST_F(CertificatesTest, TheKubeletsCertificateComesFromTheClusterCaLikeTheOthers) {
  const std::string cert_path = dir_ + "/kubelet-client.crt";
  const std::string key_path = dir_ + "/kubelet-client.key";
  issue_from_cluster_ca({.common_name = "system:node:n1",
                         .organization = "system:nodes",
                         .lifetime = std::chrono::seconds(1),  // replaced by the cluster's
                         .usage = pki::Usage::kClient},
                        pki::read_certificate_file(files_.ca_cert),
                        pki::read_private_key_file(files_.ca_key), cert_path, key_path);
  CertPtr ca = load_cert(files_.ca_cert);
  CertPtr kubelet = load_cert(cert_path);
  KeyPtr key = load_private(key_path);
  ASSERT_TRUE(ca && kubelet && key);
  EXPECT_TRUE(verifies(kubelet.get(), ca.get(), X509_PURPOSE_SSL_CLIENT));
  EXPECT_EQ(X509_check_private_key(kubelet.get(), key.get()), 1);
  EXPECT_EQ(name_entry(kubelet.get(), NID_commonName), "system:node:n1");
  EXPECT_EQ(name_entry(kubelet.get(), NID_organizationName), "system:nodes");
  // The same validity as the admin certificate issued with the cluster: an hour back, a year on.
  const pki::Certificate issued = pki::read_certificate_file(cert_path);
  const pki::Certificate admin = pki::read_certificate_file(files_.admin_cert);
  EXPECT_EQ(issued.not_after() - issued.not_before(), std::chrono::hours(24 * 365 + 1));
  EXPECT_EQ(admin.not_after() - admin.not_before(), std::chrono::hours(24 * 365 + 1));
  struct stat info {};
  ASSERT_EQ(::stat(key_path.c_str(), &info), 0);
  EXPECT_EQ(info.st_mode & 0777, 0600u);
}

TEST(CertificatesErrors, UnwritableFolderIsReported) {
  EXPECT_THAT([] { generate_certificates("/nonexistent-perimeter-dir"); },
              ::testing::ThrowsMessage<std::runtime_error>(
                  ::testing::HasSubstr("/nonexistent-perimeter-dir/ca.crt")));
}

}  // namespace
}  // namespace perimeter::localcluster
