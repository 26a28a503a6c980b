#include "kube/config.h"

#include <yaml-cpp/yaml.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "kube/api_error.h"

namespace perimeter::kube {

namespace fs = std::filesystem;

std::string read_file_or_throw(const std::string& path, const std::string& what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ConfigError("cannot read " + what + " file '" + path + "'");
  std::ostringstream contents;
  contents << in.rdbuf();
  return contents.str();
}

std::string base64_decode(const std::string& encoded, const std::string& what) {
  static const auto value_of = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+' || c == '-') return 62;
    if (c == '/' || c == '_') return 63;
    return -1;
  };
  std::string out;
  out.reserve(encoded.size() * 3 / 4);
  unsigned int buffer = 0;
  int bits = 0;
  for (char c : encoded) {
    if (c == '=' || c == '\n' || c == '\r' || c == ' ' || c == '\t') continue;
    const int v = value_of(c);
    if (v < 0)
      throw ConfigError(what + " is not valid base64 (character '" + std::string(1, c) + "')");
    buffer = (buffer << 6) | static_cast<unsigned int>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((buffer >> bits) & 0xFF));
    }
  }
  return out;
}

namespace {

std::string resolve(const std::string& path, const std::string& base_dir) {
  if (path.empty() || fs::path(path).is_absolute() || base_dir.empty()) return path;
  return (fs::path(base_dir) / path).string();
}

YAML::Node find_named(const YAML::Node& list, const std::string& name, const std::string& what) {
  if (list && list.IsSequence()) {
    for (const auto& entry : list) {
      if (entry["name"] && entry["name"].as<std::string>() == name) return entry[what];
    }
  }
  throw ConfigError("kubeconfig has no " + what + " named '" + name + "'");
}

std::string scalar(const YAML::Node& node, const char* key) {
  if (!node || !node[key]) return "";
  return node[key].as<std::string>();
}

// "<field>-data" (base64) wins over "<field>" (a file path), as kubectl does.
std::string data_or_file(const YAML::Node& node, const std::string& field,
                         const std::string& base_dir, const std::string& what) {
  const std::string data = scalar(node, (field + "-data").c_str());
  if (!data.empty()) return base64_decode(data, what + " (" + field + "-data)");
  const std::string file = scalar(node, field.c_str());
  if (!file.empty()) return read_file_or_throw(resolve(file, base_dir), what);
  return "";
}

}  // namespace

Config Config::from_kubeconfig_text(const std::string& yaml_text, const std::string& base_dir,
                                    const std::string& context) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    throw ConfigError(std::string("kubeconfig is not valid YAML: ") + e.what());
  }
  if (!root.IsMap()) throw ConfigError("kubeconfig is not a YAML mapping");
  try {
    const std::string context_name = context.empty() ? scalar(root, "current-context") : context;
    if (context_name.empty())
      throw ConfigError("kubeconfig has no current-context and none was named");
    const YAML::Node ctx = find_named(root["contexts"], context_name, "context");
    const std::string cluster_name = scalar(ctx, "cluster");
    const std::string user_name = scalar(ctx, "user");
    const YAML::Node cluster = find_named(root["clusters"], cluster_name, "cluster");
    Config config;
    config.context_name = context_name;
    config.server = scalar(cluster, "server");
    if (config.server.empty())
      throw ConfigError("kubeconfig cluster '" + cluster_name + "' has no server");
    while (!config.server.empty() && config.server.back() == '/') config.server.pop_back();
    config.ca_pem = data_or_file(cluster, "certificate-authority", base_dir, "CA certificate");
    config.insecure_skip_tls_verify = scalar(cluster, "insecure-skip-tls-verify") == "true";
    if (!user_name.empty()) {
      const YAML::Node user = find_named(root["users"], user_name, "user");
      config.client_cert_pem =
          data_or_file(user, "client-certificate", base_dir, "client certificate");
      config.client_key_pem = data_or_file(user, "client-key", base_dir, "client key");
      config.bearer_token = scalar(user, "token");
      const std::string token_file = scalar(user, "tokenFile");
      if (!token_file.empty()) config.bearer_token_file = resolve(token_file, base_dir);
      if (config.client_cert_pem.empty() != config.client_key_pem.empty())
        throw ConfigError("kubeconfig user '" + user_name +
                          "' has a client certificate without a key, or a key without one");
    }
    const std::string ns = scalar(ctx, "namespace");
    if (!ns.empty()) config.default_namespace = ns;
    return config;
  } catch (const YAML::Exception& e) {
    throw ConfigError(std::string("kubeconfig has an unexpected shape: ") + e.what());
  }
}

Config Config::from_kubeconfig_file(const std::string& path, const std::string& context) {
  const std::string text = read_file_or_throw(path, "kubeconfig");
  return from_kubeconfig_text(text, fs::path(path).parent_path().string(), context);
}

Config Config::in_cluster(const InClusterPaths& paths, const EnvLookup& env) {
  const auto host = env("KUBERNETES_SERVICE_HOST");
  const auto port = env("KUBERNETES_SERVICE_PORT");
  if (!host || host->empty() || !port || port->empty())
    throw ConfigError(
        "not running in a cluster: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are unset");
  Config config;
  config.context_name = "in-cluster";
  // An IPv6 service host needs brackets in a URL.
  const bool ipv6 = host->find(':') != std::string::npos;
  config.server = "https://" + (ipv6 ? "[" + *host + "]" : *host) + ":" + *port;
  // Read once now so a missing token fails at start-up, and re-read later on rotation.
  read_file_or_throw(paths.token_file, "service-account token");
  config.bearer_token_file = paths.token_file;
  config.ca_pem = read_file_or_throw(paths.ca_file, "service-account CA");
  std::ifstream ns_file(paths.namespace_file);
  std::string ns;
  if (ns_file && std::getline(ns_file, ns) && !ns.empty()) config.default_namespace = ns;
  return config;
}

namespace {

// Configuration is read once at start-up, before the process starts threads or sets variables.
std::optional<std::string> environment_variable(const std::string& name) {
  const char* value = std::getenv(name.c_str());  // NOLINT(concurrency-mt-unsafe): see above
  if (value == nullptr) return std::nullopt;
  return std::string(value);
}

}  // namespace

Config Config::in_cluster() {
  return in_cluster(InClusterPaths{}, environment_variable);
}

Config Config::load(const std::string& explicit_kubeconfig, const std::string& context) {
  if (!explicit_kubeconfig.empty()) return from_kubeconfig_file(explicit_kubeconfig, context);
  if (const auto list = environment_variable("KUBECONFIG"); list && !list->empty()) {
    std::stringstream paths(*list);
    std::string path;
    while (std::getline(paths, path, ':')) {
      if (!path.empty() && fs::exists(path)) return from_kubeconfig_file(path, context);
    }
    throw ConfigError("no file named in KUBECONFIG exists: " + *list);
  }
  if (environment_variable("KUBERNETES_SERVICE_HOST")) return in_cluster();
  if (const auto home = environment_variable("HOME")) {
    const auto path = fs::path(*home) / ".kube" / "config";
    if (fs::exists(path)) return from_kubeconfig_file(path.string(), context);
  }
  throw ConfigError(
      "no Kubernetes configuration: pass --kubeconfig, set KUBECONFIG, or run in a cluster");
}

}  // namespace perimeter::kube
