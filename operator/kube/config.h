#pragma once

#include <chrono>
#include <functional>
#include <optional>
#include <string>

namespace perimeter::kube {

// How to reach and authenticate to one API server. Loaded from a kubeconfig or from the
// in-cluster service account; file contents are read at load time except the token file, which
// the transport re-reads when it changes (bound service-account tokens rotate).
struct Config {
  std::string server;  // "https://127.0.0.1:6443"
  std::string ca_pem;  // empty: the system's trust store
  bool insecure_skip_tls_verify = false;
  std::string client_cert_pem;
  std::string client_key_pem;
  std::string bearer_token;
  std::string bearer_token_file;  // wins over bearer_token when set
  std::string default_namespace = "default";
  std::string context_name;  // for messages

  // Client-side rate limit on every request (controller-runtime's defaults).
  double qps = 20.0;
  int burst = 30;
  std::chrono::milliseconds request_timeout{30000};

  // A kubeconfig file; `context` empty means its current-context. Throws ConfigError.
  static Config from_kubeconfig_file(const std::string& path, const std::string& context = "");
  // Kubeconfig text; relative file paths inside it resolve against base_dir.
  static Config from_kubeconfig_text(const std::string& yaml_text, const std::string& base_dir,
                                     const std::string& context = "");

  // The files a pod's service account mounts, and the env the kubelet sets. Overridable in tests.
  struct InClusterPaths {
    std::string token_file = "/var/run/secrets/kubernetes.io/serviceaccount/token";
    std::string ca_file = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt";
    std::string namespace_file = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";
  };
  using EnvLookup = std::function<std::optional<std::string>(const std::string&)>;
  static Config in_cluster(const InClusterPaths& paths, const EnvLookup& env);
  static Config in_cluster();

  // The usual order: an explicit --kubeconfig, then $KUBECONFIG (first file of the list that
  // exists), then the in-cluster service account, then ~/.kube/config.
  static Config load(const std::string& explicit_kubeconfig = "", const std::string& context = "");
};

// Reads a whole file; throws ConfigError naming the file and what it was for.
std::string read_file_or_throw(const std::string& path, const std::string& what);
// Standard base64 (kubeconfig *-data fields); throws ConfigError on bad input.
std::string base64_decode(const std::string& encoded, const std::string& what);

}  // namespace perimeter::kube
