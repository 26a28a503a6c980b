#include "localcluster/certificates.h"

#include <fcntl.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <unistd.h>

#include <cstdio>
#include <memory>
#include <stdexcept>

namespace perimeter::localcluster {
namespace {

std::string openssl_error(const std::string& what) {
  unsigned long code = ERR_get_error();
  if (code == 0) return what + ": unknown OpenSSL error";
  char buffer[256];
  ERR_error_string_n(code, buffer, sizeof(buffer));
  ERR_clear_error();
  return what + ": " + buffer;
}

void check(bool ok, const std::string& what) {
  if (!ok) throw std::runtime_error(openssl_error(what));
}

struct PkeyDeleter {
  void operator()(EVP_PKEY* key) const { EVP_PKEY_free(key); }
};
struct X509Deleter {
  void operator()(X509* cert) const { X509_free(cert); }
};
using Pkey = std::unique_ptr<EVP_PKEY, PkeyDeleter>;
using Cert = std::unique_ptr<X509, X509Deleter>;

Pkey new_key() {
  Pkey key(EVP_EC_gen("P-256"));
  check(key != nullptr, "generating an ECDSA P-256 key");
  return key;
}

void add_extension(X509* cert, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str());
  check(ext != nullptr, "building certificate extension " + std::string(OBJ_nid2sn(nid)));
  int ok = X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
  check(ok == 1, "adding certificate extension");
}

struct Subject {
  std::string common_name;
  std::string organization;  // empty for none
};

// A certificate for `key`, signed by `issuer_key` (self-signed when issuer is null).
Cert make_certificate(EVP_PKEY* key, const Subject& subject, X509* issuer, EVP_PKEY* issuer_key,
                      const std::vector<std::pair<int, std::string>>& extensions) {
  Cert cert(X509_new());
  check(cert != nullptr, "allocating a certificate");
  X509_set_version(cert.get(), 2);
  unsigned char serial_bytes[16];
  check(RAND_bytes(serial_bytes, sizeof(serial_bytes)) == 1, "drawing a serial number");
  serial_bytes[0] &= 0x7f;  // positive
  BIGNUM* serial = BN_bin2bn(serial_bytes, sizeof(serial_bytes), nullptr);
  check(serial != nullptr && BN_to_ASN1_INTEGER(serial, X509_get_serialNumber(cert.get())),
        "setting the serial number");
  BN_free(serial);
  // Valid from an hour ago, so clocks a little apart do not reject it.
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), 365L * 24 * 3600);
  X509_NAME* name = X509_get_subject_name(cert.get());
  if (!subject.organization.empty()) {
    X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8,
                               reinterpret_cast<const unsigned char*>(subject.organization.c_str()),
                               -1, -1, 0);
  }
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                             reinterpret_cast<const unsigned char*>(subject.common_name.c_str()),
                             -1, -1, 0);
  X509* signer = issuer ? issuer : cert.get();
  check(X509_set_issuer_name(cert.get(), X509_get_subject_name(signer)) == 1, "setting issuer");
  check(X509_set_pubkey(cert.get(), key) == 1, "setting the public key");
  for (const auto& [nid, value] : extensions) add_extension(cert.get(), signer, nid, value);
  check(X509_sign(cert.get(), issuer_key ? issuer_key : key, EVP_sha256()) > 0,
        "signing certificate for " + subject.common_name);
  return cert;
}

// fopen with a mode, so private keys are never readable by others, not even briefly.
FILE* open_for_writing(const std::string& path, mode_t mode) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) throw std::runtime_error("cannot write " + path);
  FILE* file = ::fdopen(fd, "w");
  if (!file) {
    ::close(fd);
    throw std::runtime_error("cannot write " + path);
  }
  return file;
}

void write_certificate(const std::string& path, X509* cert) {
  FILE* file = open_for_writing(path, 0644);
  int ok = PEM_write_X509(file, cert);
  std::fclose(file);
  check(ok == 1, "writing " + path);
}

void write_private_key(const std::string& path, EVP_PKEY* key) {
  FILE* file = open_for_writing(path, 0600);
  int ok = PEM_write_PrivateKey(file, key, nullptr, nullptr, 0, nullptr, nullptr);
  std::fclose(file);
  check(ok == 1, "writing " + path);
}

void write_public_key(const std::string& path, EVP_PKEY* key) {
  FILE* file = open_for_writing(path, 0644);
  int ok = PEM_write_PUBKEY(file, key);
  std::fclose(file);
  check(ok == 1, "writing " + path);
}

std::string join_alt_names() {
  std::string names;
  for (const auto& dns : apiserver_dns_names())
    names += (names.empty() ? "" : ",") + ("DNS:" + dns);
  for (const auto& ip : apiserver_ip_addresses()) names += ",IP:" + ip;
  return names;
}

}  // namespace

std::vector<std::string> apiserver_dns_names() {
  return {"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
          "kubernetes.default.svc.cluster.local"};
}

std::vector<std::string> apiserver_ip_addresses() {
  return {"127.0.0.1", "10.0.0.1"};
}

ClusterCertificates generate_certificates(const std::string& dir) {
  ClusterCertificates files{
      .ca_cert = dir + "/ca.crt",
      .ca_key = dir + "/ca.key",
      .apiserver_cert = dir + "/apiserver.crt",
      .apiserver_key = dir + "/apiserver.key",
      .admin_cert = dir + "/admin.crt",
      .admin_key = dir + "/admin.key",
      .service_account_key = dir + "/service-account.key",
      .service_account_pub = dir + "/service-account.pub",
  };

  Pkey ca_key = new_key();
  Cert ca = make_certificate(ca_key.get(), {"perimeter-local-cluster-ca", ""}, nullptr, nullptr,
                             {{NID_basic_constraints, "critical,CA:TRUE"},
                              {NID_key_usage, "critical,keyCertSign,cRLSign,digitalSignature"},
                              {NID_subject_key_identifier, "hash"}});
  write_certificate(files.ca_cert, ca.get());
  write_private_key(files.ca_key, ca_key.get());

  Pkey serving_key = new_key();
  Cert serving = make_certificate(serving_key.get(), {"kube-apiserver", ""}, ca.get(), ca_key.get(),
                                  {{NID_basic_constraints, "critical,CA:FALSE"},
                                   {NID_key_usage, "critical,digitalSignature,keyEncipherment"},
                                   {NID_ext_key_usage, "serverAuth"},
                                   {NID_authority_key_identifier, "keyid"},
                                   {NID_subject_alt_name, join_alt_names()}});
  write_certificate(files.apiserver_cert, serving.get());
  write_private_key(files.apiserver_key, serving_key.get());

  Pkey admin_key = new_key();
  Cert admin = make_certificate(admin_key.get(), {kAdminUser, kAdminGroup}, ca.get(), ca_key.get(),
                                {{NID_basic_constraints, "critical,CA:FALSE"},
                                 {NID_key_usage, "critical,digitalSignature,keyEncipherment"},
                                 {NID_ext_key_usage, "clientAuth"},
                                 {NID_authority_key_identifier, "keyid"}});
  write_certificate(files.admin_cert, admin.get());
  write_private_key(files.admin_key, admin_key.get());

  Pkey service_account = new_key();
  write_private_key(files.service_account_key, service_account.get());
  write_public_key(files.service_account_pub, service_account.get());
  return files;
}

}  // namespace perimeter::localcluster
