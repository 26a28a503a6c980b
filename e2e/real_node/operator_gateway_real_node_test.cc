// The operator in gateway egress mode on the real node, end to end (docs/egress.md, "The gateway
// mode"): perimeter-operator, as a host process, serves an AgentEnvironment whose API is
// https://api.perimeter.test, a TLS host name the cluster DNS resolves to perimeter-sim inside a
// network namespace the test creates, under a test CA the environment's apiCAConfigMapRef names.
// The operator runs the egress gateway from its own objects and starts the session's runner pod,
// whose NetworkPolicy allows only the gateway and the cluster's DNS. What is shown, each by a check
// that fails without the mechanism:
// - the session completes: the runner's HTTP client reached the API only through HTTPS_PROXY (a
//   direct connection is dropped by the policy, below), with TLS verified against the private CA
//   the pod mounts (without it the runner cannot verify the API and the session never completes),
//   and the gateway's audit has the runner's connections to the API under the session's id;
// - the agent's own bash, through curl and HTTPS_PROXY, reaches an allowedHosts name through the
//   gateway (CONNECT 200, an answer from the stand-in), is refused a name not listed (CONNECT 403,
//   audited `not_allowed`) although that name resolves to the same stand-in, and a direct
//   connection that bypasses the proxy (--noproxy) times out or is refused by the policy, while a
//   pod without the policy makes it;
// - the gateway's audit lines carry the session and the environment for each of these.
//
// The operator resolves the stand-in name through a private /etc/hosts (a mount namespace of its
// own) and trusts the test CA only through the environment's apiCAConfigMapRef, as its runner
// pods do (its own store does not hold it). Shares the real-node cluster of real_node_e2e_test.
// Needs root.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <chrono>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "agentapi/sim_process.h"
#include "cluster/local_cluster.h"
#include "egressgateway/tls_peers.h"
#include "localcluster/real_node.h"
#include "localcluster/tools.h"
#include "operator/operator_process.h"
#include "pod_netns.h"
#include "real_node_cluster.h"
#include "stand_in_network.h"

namespace perimeter::e2e {
namespace {

using json = nlohmann::json;
using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr const char* kApiHost = "api.perimeter.test";
constexpr const char* kAllowedHost = "files.perimeter.test";
constexpr const char* kUnlistedHost = "unlisted.perimeter.test";
constexpr const char* kGatewayName = "perimeter-egress-gateway";

std::string tail(const std::string& text, size_t size = 6000) {
  return text.size() > size ? text.substr(text.size() - size) : text;
}

void write_text(const std::string& path, const std::string& text, mode_t mode) {
  std::ofstream(path) << text;
  ::chmod(path.c_str(), mode);
}

bool is_ready(const json& pod) {
  for (const auto& condition :
       pod.value("status", json::object()).value("conditions", json::array())) {
    if (condition.value("type", "") == "Ready") return condition.value("status", "") == "True";
  }
  return false;
}

class OperatorGatewayRealNodeTest : public RealNodeTest {
 protected:
  void SetUp() override {
    RealNodeTest::SetUp();
    if (HasFatalFailure()) return;
    kubeconfig_ = cluster_->kubeconfig_path();
    apply_crds();
    if (HasFatalFailure()) return;
    files_ = std::make_unique<testing::TempDir>();
  }

  void TearDown() override {
    if (HasFailure()) {
      if (files_) {
        std::cerr << "---- operator log (tail) ----\n"
                  << tail(read_file(files_->path() + "/operator.log"));
      }
      if (sim_) std::cerr << "---- perimeter-sim log (tail) ----\n" << tail(sim_->log());
      try {
        for (const json& pod : list(kube::resources::pods())) {
          const std::string name = pod["metadata"]["name"];
          std::cerr << "---- pod " << name << " (" << pod["status"].value("phase", "") << ") ----\n"
                    << tail(pod_log(name), 4000) << "\n";
        }
      } catch (const std::exception& e) {
        std::cerr << "---- pods: " << e.what() << "\n";
      }
    }
    operator_.reset();  // nothing re-creates pods while they are removed
    sim_.reset();
    RealNodeTest::TearDown();
  }

  // One request to the simulator's admin API, made from inside the stand-in network namespace
  // (the admin API answers only its own host), over TLS verified against the test CA.
  json admin(const std::string& method, const std::string& path, const std::string& body = "") {
    std::string response;
    in_netns(internet_->path(), [&] {
      testing::ProxiedTlsClient client(internet_->address(), sim_->port());
      std::string error;
      if (!client.handshake(kApiHost, ca_->pem(), kApiHost, &error)) {
        ADD_FAILURE() << "TLS to the simulator: " << error;
        return;
      }
      client.write(method + " " + path + " HTTP/1.1\r\nHost: " + kApiHost +
                   "\r\nContent-Type: application/json\r\nContent-Length: " +
                   std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body);
      response = client.read_to_end();
    });
    const auto end_of_head = response.find("\r\n\r\n");
    if (end_of_head == std::string::npos) {
      ADD_FAILURE() << method << " " << path << ": no HTTP answer: " << response;
      return json();
    }
    if (response.rfind("HTTP/1.1 2", 0) != 0) {
      ADD_FAILURE() << method << " " << path << ": " << response.substr(0, 2000);
    }
    return json::parse(response.substr(end_of_head + 4), nullptr, false);
  }

  std::string pod_log(const std::string& pod) {
    kube::HttpRequest request;
    request.method = "GET";
    request.path_and_query = "/api/v1/namespaces/" + ns_ + "/pods/" + pod + "/log";
    const kube::HttpResponse response = transport_->send(request);
    return response.status == 200 ? response.body : "";
  }

  std::vector<json> pods_labelled(const std::string& label, const std::string& value) {
    std::vector<json> found;
    for (const json& pod : list(kube::resources::pods())) {
      if (pod["metadata"].value("labels", json::object()).value(label, "") == value) {
        found.push_back(pod);
      }
    }
    return found;
  }

  std::string kubeconfig_;
  std::unique_ptr<testing::TempDir> files_;
  std::unique_ptr<StandInNetwork> internet_;
  std::unique_ptr<testing::TestCa> ca_;
  std::unique_ptr<testing::SimProcess> sim_;
  std::unique_ptr<testing::OperatorProcess> operator_;
};

TEST_F(OperatorGatewayRealNodeTest, RunnerPodTheOperatorStartsServesASessionThroughTheGateway) {
  const auto started = std::chrono::steady_clock::now();
  const auto elapsed_ms = [&] {
    return std::chrono::duration_cast<milliseconds>(std::chrono::steady_clock::now() - started)
        .count();
  };
  wait_for_cluster_dns();
  internet_ = std::make_unique<StandInNetwork>(node_["bridge"].get<std::string>());
  const std::string standin_ip = internet_->address();
  add_dns_hosts({{standin_ip, kApiHost}, {standin_ip, kAllowedHost}, {standin_ip, kUnlistedHost}});

  // (1) perimeter-sim over TLS inside the stand-in network, with a certificate of the test CA for
  // the API's name, the allowed host's and the unlisted host's: every name reaches the same
  // server, so only the gateway's list tells them apart.
  ca_ = std::make_unique<testing::TestCa>();
  const auto identity = ca_->issue({kApiHost, kAllowedHost, kUnlistedHost});
  const std::string cert_file = files_->path() + "/sim.crt";
  const std::string key_file = files_->path() + "/sim.key";
  write_text(cert_file, identity.first, 0644);
  write_text(key_file, identity.second, 0600);
  // Spawned from a thread inside the namespace, so the simulator lives there.
  in_netns(internet_->path(), [&] {
    sim_ = std::make_unique<testing::SimProcess>(
        std::vector<std::string>{"--address", standin_ip, "--lease-ttl-seconds", "60",
                                 "--tls-cert-file", cert_file, "--tls-key-file", key_file});
  });
  ASSERT_TRUE(sim_) << "perimeter-sim did not start in the stand-in network";
  ASSERT_EQ(sim_->url().rfind("https://", 0), 0u) << sim_->url();
  const int port = sim_->port();
  const std::string api_url = "https://" + std::string(kApiHost) + ":" + std::to_string(port);
  const json created = admin("POST", "/admin/environments", json{{"name", ns_}}.dump());
  ASSERT_TRUE(created.is_object() && created.contains("id")) << created.dump();
  const std::string environment_id = created["id"];

  // (2) The environment: its key, the CA bundle for the API, and the AgentEnvironment.
  client(kube::resources::secrets())
      ->create(ns_,
               {{"apiVersion", "v1"},
                {"kind", "Secret"},
                {"metadata",
                 {{"name", "env-key"}, {"labels", {{"perimeter.dev/environment-key", "true"}}}}},
                {"stringData", {{"environment-key", created.at("key")}}}});
  client(kube::resources::config_maps())
      ->create(ns_, {{"apiVersion", "v1"},
                     {"kind", "ConfigMap"},
                     {"metadata", {{"name", "api-ca"}}},
                     {"data", {{"bundle.pem", ca_->pem()}}}});
  json runner = {{"image", testing::kRunnerImage},
                 {"imagePullPolicy", "Never"},
                 {"env", {{{"name", "PERIMETER_MAX_IDLE_MS"}, {"value", "3000"}}}}};
  runner.update(real_node_placement());
  client(agent_environments())
      ->create(ns_,
               {{"apiVersion", "perimeter.dev/v1alpha1"},
                {"kind", "AgentEnvironment"},
                {"metadata", {{"name", "agents"}}},
                {"spec",
                 {{"environmentId", environment_id},
                  {"environmentKeySecretRef", {{"name", "env-key"}}},
                  {"apiBaseUrl", api_url},
                  {"apiCAConfigMapRef", {{"name", "api-ca"}, {"key", "bundle.pem"}}},
                  {"maxConcurrentSessions", 2},
                  {"egress", {{"allowedHosts", {{{"host", kAllowedHost}, {"ports", {port}}}}}}},
                  {"retention", {{"succeededSeconds", 3600}}},
                  {"runner", runner}}}});

  // (3) The operator in gateway mode, its gateway in the test's namespace, one replica.
  const std::string hosts_file = files_->path() + "/hosts";
  write_text(hosts_file, "127.0.0.1 localhost\n" + standin_ip + " " + kApiHost + "\n", 0644);
  operator_ = std::make_unique<testing::OperatorProcess>(testing::OperatorProcessOptions{
      required_env("PERIMETER_BIN_DIR") + "/perimeter-operator",
      kubeconfig_,
      files_->path() + "/operator.log",
      {"--allowed-api-hosts", api_url, "--runner-egress", "gateway", "--egress-gateway-namespace",
       ns_, "--egress-gateway-replicas", "1"},
      {},
      hosts_file});

  // (4) The gateway's Deployment as the operator made it, with the real node's selector and
  // toleration added by the test (the operator renders no placement for it; it keeps fields it
  // does not own).
  ASSERT_TRUE(eventually(
      [&] {
        try {
          client(kube::resources::deployments())->get(ns_, kGatewayName);
          return true;
        } catch (const std::exception&) {
          return false;
        }
      },
      seconds(60), "the operator to create the egress gateway's Deployment"));
  client(kube::resources::deployments())
      ->merge_patch(ns_, kGatewayName,
                    {{"spec", {{"template", {{"spec", real_node_placement()}}}}}});
  std::string gateway_pod;
  ASSERT_TRUE(eventually(
      [&] {
        for (const json& pod : pods_labelled("app.kubernetes.io/name", kGatewayName)) {
          if (is_ready(pod)) {
            gateway_pod = pod["metadata"]["name"];
            return true;
          }
        }
        return false;
      },
      seconds(120), "the operator's gateway pod to be Ready"));
  std::cerr << "gateway pod " << gateway_pod << " Ready " << elapsed_ms()
            << " ms after the test's start\n";
  ASSERT_TRUE(eventually(
      [&] {
        const json env = client(agent_environments())->get(ns_, "agents");
        return env.value("status", json::object())
                   .value("egress", json::object())
                   .value("mode", "") == "Gateway";
      },
      seconds(30), "status.egress.mode to say Gateway"));

  // (5) The session: the agent's bash through curl, which reads https_proxy and NO_PROXY from
  // the environment the runner passes on. The CA the pod mounts verifies the stand-in.
  const std::string target_port = ":" + std::to_string(port) + "/";
  const std::string cacert = " --cacert /etc/perimeter/api-ca/ca.crt ";
  const auto bash_step = [](const std::string& command) {
    return json{{"tool", "bash"}, {"input", {{"command", command + " 2>&1; echo \" exit=$?\""}}}};
  };
  // YAML takes JSON as it is.
  const std::string scenario = json{
      {"name", "gateway-egress"},
      {"prompt", "Fetch what is allowed."},
      {"steps",
       {bash_step("curl -sS -o /dev/null -w 'connect=%{http_connect} server=%header{server}'" +
                  cacert + "https://" + kAllowedHost + target_port),
        bash_step("curl -sS -o /dev/null -w 'connect=%{http_connect}'" + cacert + "https://" +
                  kUnlistedHost + target_port),
        bash_step("curl -sS --noproxy '*' --connect-timeout 5 -o /dev/null -w "
                  "'direct=%{http_code}'" +
                  cacert + "https://" + kAllowedHost +
                  target_port)}}}.dump();
  const json enqueued = admin("POST", "/admin/environments/" + environment_id + "/sessions",
                              json{{"scenario_yaml", scenario}}.dump());
  const std::string work_id = enqueued.value("work_id", "");
  const std::string session_id = enqueued.value("session_id", "");
  ASSERT_FALSE(work_id.empty() || session_id.empty()) << enqueued.dump();
  ASSERT_TRUE(eventually(
      [&] { return admin("GET", "/admin/work/" + work_id).value("state", "") == "stopped"; },
      seconds(240), "the session to be served and its work item stopped"));
  std::cerr << "session served " << elapsed_ms() << " ms after the test's start\n";
  const json recorded = admin("GET", "/admin/sessions/" + session_id + "/results");
  EXPECT_EQ(recorded.value("status", ""), "terminated") << recorded.dump(2);
  ASSERT_EQ(recorded.value("steps", json::array()).size(), 3u) << recorded.dump(2);
  const auto text_of = [&](int step) {
    return recorded["steps"][step].value("received", json::object()).value("text", "");
  };
  std::cerr << "the agent's curl: allowed host [" << text_of(0) << "], unlisted host ["
            << text_of(1) << "], direct [" << text_of(2) << "]\n";
  // The allowed host, through the gateway: the proxy answered 200 and the stand-in answered over
  // TLS verified for that name.
  EXPECT_NE(text_of(0).find("connect=200 server=perimeter-sim exit=0"), std::string::npos)
      << text_of(0);
  // The unlisted host, the same server: the gateway refused the CONNECT.
  EXPECT_NE(text_of(1).find("connect=403"), std::string::npos) << text_of(1);
  EXPECT_NE(text_of(1).find("exit=56"), std::string::npos) << text_of(1);
  // Bypassing the proxy: no connection (curl's 28 is a timeout, 7 a refusal).
  const std::string direct = text_of(2);
  EXPECT_TRUE(direct.find("exit=28") != std::string::npos ||
              direct.find("exit=7") != std::string::npos)
      << "the runner pod's direct connection to the stand-in: " << direct;
  EXPECT_NE(direct.find("direct=000"), std::string::npos) << direct;

  // (6) The runner pod the operator started: under the operator's policy, with the CA mounted.
  std::vector<json> runner_pods;
  ASSERT_TRUE(eventually(
      [&] {
        runner_pods.clear();
        for (const json& pod : list(kube::resources::pods())) {
          const json annotations = pod["metadata"].value("annotations", json::object());
          if (annotations.value("perimeter.dev/work-id", "") == work_id) runner_pods.push_back(pod);
        }
        return runner_pods.size() == 1 &&
               runner_pods[0].value("status", json::object()).value("phase", "") == "Succeeded";
      },
      seconds(120), "the session's one runner pod to succeed"));
  const json& runner_pod = runner_pods.front();
  const std::string runner_ip = runner_pod["status"].value("podIP", "");
  EXPECT_EQ(runner_pod["spec"].value("nodeName", ""), node_.at("name"));

  // (7) The control for the direct connection: a pod of the same image under no policy reaches
  // the stand-in by the same name and port. So the refusal above is the policy's.
  client(kube::resources::pods())
      ->create(ns_, runner_image_pod("control", {{"role", "control"}},
                                     {"curl", "-sS", "-k", "--noproxy", "*", "--connect-timeout",
                                      "5", "-o", "/dev/null", "-w", "direct=%{http_code}",
                                      "https://" + std::string(kAllowedHost) + target_port},
                                     "Never"));
  ASSERT_TRUE(eventually(
      [&] {
        const std::string phase =
            client(kube::resources::pods())->get(ns_, "control")["status"].value("phase", "");
        return phase == "Succeeded" || phase == "Failed";
      },
      seconds(90), "the control pod to finish"));
  const std::string control_log = pod_log("control");
  EXPECT_EQ(control_log.rfind("direct=", 0), 0u) << control_log;
  EXPECT_EQ(control_log.find("direct=000"), std::string::npos)
      << "a pod without the policy should reach the stand-in directly: " << control_log;

  // (8) The gateway's audit: the session's connections, with the environment and the runner pod
  // as the client. The runner's API calls (the work item's ack, heartbeats, events, results) went
  // to the API host; the agent's curl made one allowed and one refused connection; the direct
  // attempt made none.
  std::vector<json> audit;
  const auto lines_for = [&](const std::string& host) {
    std::vector<json> found;
    for (const json& line : audit) {
      if (line.value("session", json()) == json(session_id) && line.value("host", json()) == host) {
        found.push_back(line);
      }
    }
    return found;
  };
  eventually(
      [&] {
        audit.clear();
        std::istringstream log(pod_log(gateway_pod));
        for (std::string line; std::getline(log, line);) {
          json parsed = json::parse(line, nullptr, false);
          if (parsed.is_object() && parsed.contains("decision")) audit.push_back(parsed);
        }
        return !lines_for(kApiHost).empty() && !lines_for(kAllowedHost).empty() &&
               !lines_for(kUnlistedHost).empty();
      },
      seconds(30), "audit lines of the session's connections in the gateway pod's log");
  const std::vector<json> api_lines = lines_for(kApiHost);
  EXPECT_GE(api_lines.size(), 1u);
  for (const json& line : api_lines) {
    EXPECT_EQ(line.value("decision", ""), "allowed") << line.dump();
    EXPECT_EQ(line.value("reason", ""), "ok") << line.dump();
    EXPECT_EQ(line.value("environment", json()), ns_ + "/agents") << line.dump();
    EXPECT_EQ(line.value("port", 0), port) << line.dump();
    EXPECT_EQ(line.value("client", "").rfind(runner_ip + ":", 0), 0u) << line.dump();
    EXPECT_GT(line.value("bytes_down", 0), 0) << line.dump();
  }
  const std::vector<json> allowed_lines = lines_for(kAllowedHost);
  ASSERT_EQ(allowed_lines.size(), 1u) << "one connection to the allowed host, none direct";
  EXPECT_EQ(allowed_lines[0].value("decision", ""), "allowed") << allowed_lines[0].dump();
  EXPECT_EQ(allowed_lines[0].value("reason", ""), "ok") << allowed_lines[0].dump();
  EXPECT_GT(allowed_lines[0].value("bytes_down", 0), 0) << allowed_lines[0].dump();
  const std::vector<json> unlisted_lines = lines_for(kUnlistedHost);
  ASSERT_EQ(unlisted_lines.size(), 1u);
  EXPECT_EQ(unlisted_lines[0].value("decision", ""), "denied") << unlisted_lines[0].dump();
  EXPECT_EQ(unlisted_lines[0].value("reason", ""), "not_allowed") << unlisted_lines[0].dump();
  EXPECT_EQ(unlisted_lines[0].value("upstream", json()), json()) << "never dialled";
  std::cerr << "the session's audit lines: " << api_lines.size() << " to the API, "
            << allowed_lines.size() << " allowed host, " << unlisted_lines.size()
            << " refused; done " << elapsed_ms() << " ms after the test's start\n";
}

}  // namespace
}  // namespace perimeter::e2e
