// The operator's assignment channel as the binary runs it, against the real apiserver
// (docs/warm-pool.md, "The assignment channel"): perimeter-operator started with
// --warm-assignment-port makes its CA in a Secret of its namespace and serves a certificate for
// its Service's name; a warm runner's client (runner/warm_assignment.h), resolving that name to
// loopback as cluster DNS would resolve it to the Service, trusts that CA alone, is refused with a
// wrong token, is held until a pod carries an assignment, and then gets its item and confirms it.
// The claim is another slice's: the assignment is written here by hand, as the claim will.
#include <gtest/gtest.h>
#include <prometheus/registry.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <set>
#include <thread>

#include "agentapi/api_error.h"
#include "agentapi/beast_transport.h"
#include "agentapi/sim_process.h"
#include "agentenvironment/warm_pods.h"
#include "cluster/local_cluster.h"
#include "controllers/agentenvironment/assignment_certificates.h"
#include "controllers/agentenvironment/runner_naming.h"
#include "controllers/agentenvironment/runner_resources.h"
#include "core/base64.h"
#include "core/log.h"
#include "core/random.h"
#include "install_crds.h"
#include "kube/api_error.h"
#include "kube/config.h"
#include "kube/http_transport.h"
#include "kube/resource_client.h"
#include "localcluster/ports.h"
#include "operator/operator_process.h"
#include "pki/pki.h"
#include "runner/warm_assignment.h"

namespace perimeter::agentenvironment {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;

struct ChildResult {
  int exit_code = -1;
  std::string output{};
};

// Runs `body` in a child process whose /etc/hosts is `hosts_file`, in a mount namespace of its
// own (root), so the Service's name resolves to loopback for it alone. The child is killed after
// `limit`; its exit code is body's, and what body wrote to `out` comes back.
ChildResult run_with_hosts(const std::string& hosts_file, std::chrono::seconds limit,
                           const std::function<int(std::string* out)>& body) {
  int pipe_fds[2];
  if (::pipe(pipe_fds) != 0) return {};
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::close(pipe_fds[0]);
    ::alarm(static_cast<unsigned>(limit.count()));
    int code = 90;
    std::string out;
    if (::unshare(CLONE_NEWNS) != 0) {
      out = "unshare failed";
    } else if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0 ||
               ::mount(hosts_file.c_str(), "/etc/hosts", nullptr, MS_BIND, nullptr) != 0) {
      out = "bind mount of /etc/hosts failed";
    } else {
      try {
        code = body(&out);
      } catch (const std::exception& error) {
        out += std::string("threw: ") + error.what();
        code = 91;
      }
    }
    const ssize_t ignored = ::write(pipe_fds[1], out.data(), out.size());
    (void)ignored;
    ::_exit(code);
  }
  ::close(pipe_fds[1]);
  ChildResult result;
  char buffer[4096];
  ssize_t n = 0;
  while ((n = ::read(pipe_fds[0], buffer, sizeof buffer)) > 0) result.output.append(buffer, n);
  ::close(pipe_fds[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return result;
}

class NullSink final : public LogSink {
 public:
  void write(std::string_view) override {}
};

class WarmAssignmentOperatorTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { install_crds(); }

  void SetUp() override {
    kubeconfig_ = perimeter::testing::shared_cluster().kubeconfig_path();
    config_ = kube::Config::from_kubeconfig_file(kubeconfig_);
    config_.qps = 0;
    transport_ = std::make_unique<kube::HttpTransport>(config_);
    secrets_.emplace(*transport_, kube::resources::secrets(), metrics_);
    pods_.emplace(*transport_, kube::resources::pods(), metrics_);
    const std::string suffix = std::to_string(::getpid());
    operator_ns_ = "warm-operator-" + suffix;
    team_ns_ = "warm-team-" + suffix;
    kube::ResourceClient namespaces(*transport_, kube::resources::namespaces(), metrics_);
    for (const auto& ns : {operator_ns_, team_ns_}) {
      namespaces.create(
          "", {{"apiVersion", "v1"}, {"kind", "Namespace"}, {"metadata", {{"name", ns}}}});
    }
    // The ServiceAccount admission wants the namespace's default account; no controller
    // manager runs here to make it.
    kube::ResourceClient(*transport_, kube::resources::service_accounts(), metrics_)
        .create(team_ns_, {{"apiVersion", "v1"},
                           {"kind", "ServiceAccount"},
                           {"metadata", {{"name", "default"}}}});

    address_.namespace_ = operator_ns_;
    address_.port = localcluster::pick_free_port();
    hosts_file_ = logs_.path() + "/hosts";
    std::ofstream(hosts_file_) << "127.0.0.1 localhost\n127.0.0.1 "
                               << assignment_service_dns_names(address_).front() << "\n";
    operator_ = std::make_unique<perimeter::testing::OperatorProcess>(
        perimeter::testing::OperatorProcessOptions{
            std::string(std::getenv("PERIMETER_BIN_DIR")) + "/perimeter-operator",
            kubeconfig_,
            logs_.path() + "/operator.log",
            {"--warm-assignment-port=" + std::to_string(address_.port),
             "--session-namespaces=" + team_ns_, "--tunnel-namespaces=" + team_ns_},
            {"POD_NAMESPACE=" + operator_ns_}});
  }

  std::string operator_log() const {
    std::ifstream in(logs_.path() + "/operator.log");
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  }

  // The CA the operator keeps in its namespace, once it has made it.
  std::string ca_from_secret() {
    for (int attempt = 0; attempt < 300; ++attempt) {
      try {
        const json secret = secrets_->get(operator_ns_, "perimeter-assignment-ca");
        std::string pem;
        if (base64_decode_any(secret["data"]["ca.crt"].get<std::string>(), &pem)) return pem;
      } catch (const kube::ApiError& e) {
        if (e.kind() != kube::ErrorKind::kNotFound) throw;
      }
      std::this_thread::sleep_for(100ms);
    }
    ADD_FAILURE() << "the operator made no CA Secret\n" << operator_log();
    return {};
  }

  // A warm pod of environment "payments" in the team namespace, as the pool will make it, and its
  // own Secret; returns its token.
  std::string create_warm_pod(const std::string& name, const AssignmentEndpoint& endpoint) {
    AgentEnvironment env = warm_test::warm_pool_environment();
    env.namespace_ = team_ns_;
    const WarmPodToken minted = mint_warm_pod_token();
    secrets_->create(team_ns_, build_warm_pod_secret(env, name, minted.token, endpoint));
    pods_->create(team_ns_, build_warm_runner_pod(env, name, minted.sha256, endpoint));
    return minted.token;
  }

  // What the claim will do: the session's Secret (named as a claim names it), then the
  // assignment on the pod.
  void assign(const std::string& name, const std::string& work_id) {
    const std::string secret = runner_object_name(work_id);
    secrets_->create(
        team_ns_,
        {{"apiVersion", "v1"},
         {"kind", "Secret"},
         {"metadata", {{"name", secret}}},
         {"data", {{std::string(kSecretKeyWorkSecret), base64_encode("secret-of-" + work_id)}}}});
    pods_->merge_patch(team_ns_, name,
                       {{"metadata",
                         {{"annotations",
                           {{std::string(kAnnotationAssignedWorkId), work_id},
                            {std::string(kAnnotationAssignedSessionId), "sesn-" + work_id},
                            {std::string(kAnnotationAssignedSecret), secret}}}}}});
  }

  // The operator's count of one outcome of the assignment service.
  double answers(const std::string& outcome) const {
    const std::string metrics = operator_->metrics();
    const std::string series =
        "perimeter_warm_assignment_answers_total{outcome=\"" + outcome + "\"} ";
    const size_t at = metrics.find(series);
    return at == std::string::npos ? 0 : std::stod(metrics.substr(at + series.size()));
  }

  runner::WarmConfig warm_config(const std::string& token, const std::string& ca_pem) const {
    runner::WarmConfig config;
    config.assignment_url = assignment_service_url(address_);
    config.token = token;
    config.ca_pem = ca_pem;
    return config;
  }

  perimeter::testing::TempDir logs_;
  std::string kubeconfig_;
  kube::Config config_;
  std::unique_ptr<kube::HttpTransport> transport_;
  prometheus::Registry registry_;
  kube::ClientMetrics metrics_{registry_};
  std::optional<kube::ResourceClient> secrets_, pods_;
  std::string operator_ns_, team_ns_, hosts_file_;
  AssignmentServiceAddress address_;
  std::unique_ptr<perimeter::testing::OperatorProcess> operator_;
};

TEST_F(WarmAssignmentOperatorTest, AWarmRunnerReachesTheOperatorOverTlsAndGetsItsItemOnceAssigned) {
  const std::string ca_pem = ca_from_secret();
  ASSERT_FALSE(ca_pem.empty());
  EXPECT_TRUE(pki::Certificate::from_pem(ca_pem).is_ca());
  const AssignmentEndpoint endpoint{assignment_service_url(address_), ca_pem};
  const std::string token = create_warm_pod("payments-warm-1", endpoint);

  // A wrong token: 401 over TLS verified against the Secret's CA for the Service's name, and the
  // runner's client gives up; a client trusting another CA does not get as far as asking.
  const auto refused = run_with_hosts(hosts_file_, 60s, [&](std::string* out) {
    agentapi::BeastTransportOptions tls;
    tls.ca_pem = ca_pem;
    agentapi::BeastTransport transport(std::move(tls));
    agentapi::HttpRequest request;
    request.method = "GET";
    request.url = endpoint.url + "/v1/assignment";
    request.headers = {{"Authorization", "Bearer " + std::string(64, '0')}};
    request.timeout = 10s;
    // The listener starts once the operator's pod cache has synced.
    for (int attempt = 0;; ++attempt) {
      try {
        *out += std::to_string(transport.send(request).status);
        break;
      } catch (const agentapi::TransportError&) {
        if (attempt == 200) throw;
        std::this_thread::sleep_for(100ms);
      }
    }
    runner::RealStoppableSleeper sleeper;
    runner::StopSource stop;
    runner::WarmAssignmentClient client(warm_config("wrong", ca_pem), transport, sleeper,
                                        SystemRandom::instance(),
                                        Logger("runner", std::make_shared<NullSink>()), nullptr);
    try {
      client.wait(stop);
      *out += " not-refused";
    } catch (const runner::AssignmentRefused&) {
      *out += " refused";
    }

    const auto other_key = pki::PrivateKey::generate_ec_p256();
    const auto other_ca = pki::issue_self_signed_ca({"another CA", "", 1h, 1min, 0}, other_key,
                                                    std::chrono::system_clock::now());
    agentapi::BeastTransportOptions other;
    other.ca_pem = other_ca.pem();
    agentapi::BeastTransport untrusting(std::move(other));
    try {
      untrusting.send(request);
      *out += " other-ca-answered";
    } catch (const agentapi::TransportError&) {
      *out += " other-ca-refused";
    }
    return 0;
  });
  EXPECT_EQ(refused.exit_code, 0) << refused.output;
  EXPECT_EQ(refused.output, "401 refused other-ca-refused") << operator_log();
  EXPECT_GE(answers("unauthenticated"), 2);

  // The right token: held until the pod carries an assignment, then the item, then the confirm.
  std::string assign_error;
  std::thread assigner([&] {
    // Assign once the operator has held the runner's request at least once.
    for (int i = 0; i < 300 && answers("waiting") < 1; ++i) std::this_thread::sleep_for(100ms);
    try {
      assign("payments-warm-1", "work_warm_1");
    } catch (const std::exception& error) {
      assign_error = error.what();
    }
  });
  const auto served = run_with_hosts(hosts_file_, 90s, [&](std::string* out) {
    agentapi::BeastTransportOptions tls;
    tls.ca_pem = ca_pem;
    agentapi::BeastTransport transport(std::move(tls));
    runner::RealStoppableSleeper sleeper;
    runner::StopSource stop;
    runner::WarmAssignmentClient client(warm_config(token, ca_pem), transport, sleeper,
                                        SystemRandom::instance(),
                                        Logger("runner", std::make_shared<NullSink>()), nullptr);
    const auto assignment = client.wait(stop);
    if (!assignment) return 2;
    *out = assignment->work_id + " " + assignment->session_id + " " + assignment->work_secret;
    return 0;
  });
  assigner.join();
  EXPECT_EQ(assign_error, "");
  EXPECT_EQ(served.exit_code, 0) << served.output << operator_log();
  EXPECT_EQ(served.output, "work_warm_1 sesn-work_warm_1 secret-of-work_warm_1");
  EXPECT_GE(answers("waiting"), 1);
  EXPECT_GE(answers("assigned"), 1);
  // Delivered in the answer: the runner sent no confirm.
  EXPECT_EQ(answers("confirmed"), 0);

  // The delivery is on the pod in the apiserver, to the runner's nonce: the token opens nothing
  // from now on.
  const json pod = pods_->get(team_ns_, "payments-warm-1");
  const json annotations = pod["metadata"].value("annotations", json::object());
  EXPECT_TRUE(annotations.contains(std::string(kAnnotationAssignmentConfirmedAt)))
      << pod["metadata"].dump();
  EXPECT_EQ(annotations.value(std::string(kAnnotationAssignmentNonceSha256), "").size(), 64u)
      << pod["metadata"].dump();

  // The channel's threads, by name, as top -H shows them.
  std::set<std::string> threads;
  for (const auto& task :
       std::filesystem::directory_iterator("/proc/" + std::to_string(operator_->pid()) + "/task")) {
    std::ifstream comm(task.path() / "comm");
    std::string name;
    std::getline(comm, name);
    threads.insert(name);
  }
  for (const char* name : {"assign-io", "assign/0", "assign/1", "assign-cert"}) {
    EXPECT_EQ(threads.count(name), 1u) << name;
  }

  // SIGTERM: the operator stops its listener with everything else and exits.
  operator_.reset();
  EXPECT_NE(operator_log().find("\"msg\":\"stopped\""), std::string::npos) << operator_log();
}

}  // namespace
}  // namespace perimeter::agentenvironment
