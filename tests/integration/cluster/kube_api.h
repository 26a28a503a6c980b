#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "cluster/local_cluster.h"
#include "localcluster/http_client.h"

namespace perimeter::testing {

// Raw HTTPS to the harness's apiserver as the admin user: enough for smoke tests, and
// independent of the operator's Kubernetes client so the harness is proven on its own.
class KubeApi {
 public:
  explicit KubeApi(const LocalCluster& cluster) {
    localcluster::HttpClientConfig config;
    config.base_url = cluster.apiserver_url();
    config.ca_file = cluster.ca_file();
    config.cert_file = cluster.client_cert_file();
    config.key_file = cluster.client_key_file();
    config.timeout = std::chrono::seconds(10);
    client_ = std::make_unique<localcluster::HttpClient>(config);
  }

  localcluster::HttpResponse get(const std::string& path) { return client_->get(path); }
  localcluster::HttpResponse post(const std::string& path, const nlohmann::json& body) {
    return client_->request("POST", path, body.dump());
  }
  localcluster::HttpResponse put(const std::string& path, const nlohmann::json& body) {
    return client_->request("PUT", path, body.dump());
  }
  localcluster::HttpResponse remove(const std::string& path) {
    return client_->request("DELETE", path);
  }
  // The body as JSON, or null when the status is not the one expected.
  nlohmann::json get_json(const std::string& path, int* status = nullptr) {
    auto response = get(path);
    if (status) *status = response.status;
    if (response.status != 200) return nullptr;
    return nlohmann::json::parse(response.body);
  }
  localcluster::HttpClient& client() { return *client_; }

  // A namespace with its default ServiceAccount (made by the controller manager), so Pods can
  // be created in it. Labels are applied at creation.
  void create_namespace(const std::string& name,
                        const nlohmann::json& labels = nlohmann::json::object());

 private:
  std::unique_ptr<localcluster::HttpClient> client_;
};

// Polls `condition` until it holds or `limit` passes. The limit only bounds a broken run; the
// tests never assert how fast anything happened.
bool eventually(const std::function<bool()>& condition,
                std::chrono::seconds limit = std::chrono::seconds(60));

}  // namespace perimeter::testing
