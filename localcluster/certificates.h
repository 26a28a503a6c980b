#pragma once

#include <string>
#include <vector>

#include "pki/pki.h"

namespace perimeter::localcluster {

// The throwaway PKI of one local cluster, as PEM files in one directory.
struct ClusterCertificates {
  std::string ca_cert;         // the cluster CA: signs the serving and client certificates
  std::string ca_key;          // kube-controller-manager needs it only for CSR signing; kept
  std::string apiserver_cert;  // serving cert: 127.0.0.1, localhost, kubernetes.default...
  std::string apiserver_key;
  std::string admin_cert;  // client cert: CN=perimeter-admin, O=system:masters
  std::string admin_key;
  std::string service_account_key;  // signs service-account tokens
  std::string service_account_pub;  // verifies them
};

// The names the apiserver's serving certificate is valid for: loopback plus the in-cluster
// service names and the first address of the service range (10.0.0.1).
std::vector<std::string> apiserver_dns_names();
std::vector<std::string> apiserver_ip_addresses();

inline constexpr const char* kAdminUser = "perimeter-admin";
inline constexpr const char* kAdminGroup = "system:masters";

// Generates every key and certificate into `dir` (which must exist): ECDSA P-256 keys, SHA-256
// signatures, valid from an hour ago for a year. Private keys are written 0600.
// Throws std::runtime_error with OpenSSL's reason on failure.
ClusterCertificates generate_certificates(const std::string& dir);

// A fresh ECDSA P-256 key and a certificate for it signed by the cluster CA, valid like the
// others (from an hour ago, for a year); the certificate written to `cert_path`, the key to
// `key_path` (0600). `request`'s lifetime and backdate are replaced by the cluster's.
// Throws pki::PkiError (a std::runtime_error) with OpenSSL's reason on failure.
void issue_from_cluster_ca(pki::CertificateRequest request, const pki::Certificate& ca,
                           const pki::PrivateKey& ca_key, const std::string& cert_path,
                           const std::string& key_path);

}  // namespace perimeter::localcluster
