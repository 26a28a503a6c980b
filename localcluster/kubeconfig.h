#pragma once

#include <string>

namespace perimeter::localcluster {

struct KubeconfigSpec {
  std::string server;  // https://127.0.0.1:<port>
  std::string ca_file;
  std::string client_cert_file;
  std::string client_key_file;
  std::string context_name = "perimeter-local";
  std::string user_name = "perimeter-admin";
};

// The kubeconfig YAML text: one cluster, one user authenticated by client certificate, one
// current context. File paths are referenced, not inlined, so the certificates stay in one place.
std::string render_kubeconfig(const KubeconfigSpec& spec);

// Writes render_kubeconfig(spec) to `path` (mode 0600: it points at the admin key).
void write_kubeconfig(const std::string& path, const KubeconfigSpec& spec);

}  // namespace perimeter::localcluster
