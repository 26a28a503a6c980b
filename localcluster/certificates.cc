#include "localcluster/certificates.h"

#include <chrono>

namespace perimeter::localcluster {
namespace {

using namespace std::chrono_literals;

// Valid from an hour ago, so clocks a little apart do not reject them, for a year.
constexpr std::chrono::seconds kBackdate = 1h;
constexpr std::chrono::seconds kLifetime = 365 * 24h;

}  // namespace

std::vector<std::string> apiserver_dns_names() {
  return {"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
          "kubernetes.default.svc.cluster.local"};
}

std::vector<std::string> apiserver_ip_addresses() {
  return {"127.0.0.1", "10.0.0.1"};
}

void issue_from_cluster_ca(pki::CertificateRequest request, const pki::Certificate& ca,
                           const pki::PrivateKey& ca_key, const std::string& cert_path,
                           const std::string& key_path) {
  request.lifetime = kLifetime;
  request.backdate = kBackdate;
  const pki::PrivateKey key = pki::PrivateKey::generate_ec_p256();
  const pki::Certificate cert =
      pki::issue_certificate(request, key, ca, ca_key, std::chrono::system_clock::now());
  pki::write_certificate_file(cert_path, cert);
  pki::write_private_key_file(key_path, key);
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

  const pki::PrivateKey ca_key = pki::PrivateKey::generate_ec_p256();
  const pki::Certificate ca = pki::issue_self_signed_ca(
      {.common_name = "perimeter-local-cluster-ca", .lifetime = kLifetime, .backdate = kBackdate},
      ca_key, std::chrono::system_clock::now());
  pki::write_certificate_file(files.ca_cert, ca);
  pki::write_private_key_file(files.ca_key, ca_key);

  issue_from_cluster_ca({.common_name = "kube-apiserver",
                         .dns_names = apiserver_dns_names(),
                         .ip_addresses = apiserver_ip_addresses(),
                         .usage = pki::Usage::kServer},
                        ca, ca_key, files.apiserver_cert, files.apiserver_key);
  issue_from_cluster_ca(
      {.common_name = kAdminUser, .organization = kAdminGroup, .usage = pki::Usage::kClient}, ca,
      ca_key, files.admin_cert, files.admin_key);

  pki::PrivateKey service_account = pki::PrivateKey::generate_ec_p256();
  pki::write_private_key_file(files.service_account_key, service_account);
  pki::write_public_key_file(files.service_account_pub, service_account);
  return files;
}

}  // namespace perimeter::localcluster
