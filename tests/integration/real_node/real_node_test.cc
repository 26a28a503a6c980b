// The real node: a pod with the security context Perimeter puts on runner pods really runs on a
// kubelet + containerd + runc of the harness's own, the container sees those settings enforced,
// and stopping the harness leaves no process, mount, cgroup, network device, iptables chain or ip
// set (kube-router, the node's NetworkPolicy enforcer, makes both once a policy exists).
#include "localcluster/real_node.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "cluster/local_cluster.h"
#include "kube_api.h"
#include "localcluster/tools.h"
#include "process/process.h"

namespace perimeter::testing {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

constexpr const char* kProbeImage = "localhost/perimeter/node-probe:1";
constexpr int kRunnerUid = 65532;

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// Mount points under `dir`, from this process's view of /proc/self/mountinfo.
std::vector<std::string> mounts_under(const std::string& dir) {
  std::vector<std::string> found;
  std::istringstream lines(read_file("/proc/self/mountinfo"));
  for (std::string line; std::getline(lines, line);) {
    std::istringstream fields(line);
    std::string id, parent, device, root, point;
    fields >> id >> parent >> device >> root >> point;
    if (point.rfind(dir, 0) == 0) found.push_back(point);
  }
  return found;
}

// Pids whose command line mentions `needle` (the node's containerd socket: its shims).
std::vector<pid_t> processes_mentioning(const std::string& needle) {
  std::vector<pid_t> found;
  for (const auto& entry : fs::directory_iterator("/proc")) {
    const std::string name = entry.path().filename();
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::string cmdline = read_file(entry.path().string() + "/cmdline");
    if (cmdline.find(needle) != std::string::npos) found.push_back(std::stoi(name));
  }
  return found;
}

std::vector<std::string> cgroups_named(const std::string& cgroup_root) {
  std::vector<std::string> found;
  for (const auto& hierarchy : fs::directory_iterator("/sys/fs/cgroup")) {
    if (fs::is_directory(hierarchy.path().string() + cgroup_root)) {
      found.push_back(hierarchy.path().string() + cgroup_root);
    }
  }
  if (fs::is_directory("/sys/fs/cgroup" + cgroup_root)) found.push_back(cgroup_root);
  return found;
}

std::set<std::string> iptables_chains() {
  std::set<std::string> chains;
  for (const char* table : {"filter", "nat", "mangle"}) {
    process::ProcessSpec spec;
    spec.argv = {"iptables", "-w", "-t", table, "-S"};
    spec.capture_stdout = true;
    auto child = process::Process::spawn(spec);
    for (auto line = child->read_stdout_line(std::chrono::seconds(30));
         line.result == process::LineRead::Result::kLine;
         line = child->read_stdout_line(std::chrono::seconds(30))) {
      if (line.line.rfind("-N ", 0) == 0) chains.insert(std::string(table) + "/" + line.line);
    }
    child->wait();
  }
  return chains;
}

std::set<std::string> ipsets() {
  std::set<std::string> names;
  process::ProcessSpec spec;
  spec.argv = {"ipset", "list", "-n"};
  spec.capture_stdout = true;
  auto child = process::Process::spawn(spec);
  for (auto line = child->read_stdout_line(std::chrono::seconds(30));
       line.result == process::LineRead::Result::kLine;
       line = child->read_stdout_line(std::chrono::seconds(30))) {
    names.insert(line.line);
  }
  child->wait();
  return names;
}

// A NetworkPolicy over every pod of `ns` (no ingress): kube-router gives it a chain and ip sets.
nlohmann::json deny_ingress_policy() {
  return {{"apiVersion", "networking.k8s.io/v1"},
          {"kind", "NetworkPolicy"},
          {"metadata", {{"name", "deny-ingress"}}},
          {"spec", {{"podSelector", nlohmann::json::object()}, {"policyTypes", {"Ingress"}}}}};
}

// Whether some iptables chain of the filter table starts with `prefix`.
bool has_chain_starting(const std::string& prefix) {
  for (const auto& chain : iptables_chains()) {
    if (chain.rfind("filter/-N " + prefix, 0) == 0) return true;
  }
  return false;
}

int run_ip(std::vector<std::string> argv) {
  process::ProcessSpec spec;
  argv.insert(argv.begin(), "ip");
  spec.argv = std::move(argv);
  return process::Process::spawn(spec)->wait().code;
}

// The MAC address pods learn for their gateway must not move while they run. A bridge whose
// address was not set takes its lowest port MAC, so a new pod's veth with a lower one would move
// it: this attaches such a port (02:00:00:00:00:01 is below any random locally administered MAC
// the kernel picks) and reads the bridge's address again.
void expect_bridge_mac_survives_a_new_port(const std::string& bridge) {
  const std::string before = read_file("/sys/class/net/" + bridge + "/address");
  const std::string port = "pmtrmac" + std::to_string(getpid() % 100000);
  ASSERT_EQ(run_ip({"link", "add", port, "address", "02:00:00:00:00:01", "type", "veth", "peer",
                    "name", port + "p"}),
            0);
  EXPECT_EQ(run_ip({"link", "set", port, "master", bridge}), 0);
  EXPECT_EQ(read_file("/sys/class/net/" + bridge + "/address"), before)
      << "the pod bridge's MAC followed a new port: running pods would lose their gateway";
  EXPECT_EQ(run_ip({"link", "delete", port}), 0);
}

// `key=value` lines of the probe's output.
std::map<std::string, std::string> parse_probe(const std::string& log) {
  std::map<std::string, std::string> values;
  std::istringstream lines(log);
  for (std::string line; std::getline(lines, line);) {
    if (auto eq = line.find('='); eq != std::string::npos) {
      values[line.substr(0, eq)] = line.substr(eq + 1);
    }
  }
  return values;
}

nlohmann::json probe_pod(const std::string& name, int hold_seconds = 0) {
  return {{"apiVersion", "v1"},
          {"kind", "Pod"},
          {"metadata", {{"name", name}}},
          {"spec",
           {{"restartPolicy", "Never"},
            {"automountServiceAccountToken", false},
            {"nodeSelector", {{localcluster::kRealNodeLabel, "true"}}},
            {"tolerations",
             {{{"key", localcluster::kRealNodeTaintKey},
               {"operator", "Equal"},
               {"value", "true"},
               {"effect", "NoSchedule"}}}},
            // What Perimeter puts on runner pods.
            {"securityContext",
             {{"runAsNonRoot", true},
              {"runAsUser", kRunnerUid},
              {"runAsGroup", kRunnerUid},
              {"fsGroup", kRunnerUid},
              {"seccompProfile", {{"type", "RuntimeDefault"}}}}},
            {"containers",
             {{{"name", "probe"},
               {"image", kProbeImage},
               {"imagePullPolicy", "Never"},
               {"env",
                {{{"name", "PROBE_WRITE_DIR"}, {"value", "/workspace"}},
                 {{"name", "PROBE_HOLD_SECONDS"}, {"value", std::to_string(hold_seconds)}}}},
               {"securityContext",
                {{"allowPrivilegeEscalation", false},
                 {"readOnlyRootFilesystem", true},
                 {"runAsNonRoot", true},
                 {"capabilities", {{"drop", {"ALL"}}}},
                 {"seccompProfile", {{"type", "RuntimeDefault"}}}}},
               {"volumeMounts", {{{"name", "workspace"}, {"mountPath", "/workspace"}}}}}}},
            {"volumes", {{{"name", "workspace"}, {"emptyDir", {{"sizeLimit", "64Mi"}}}}}}}}};
}

TEST(RealNodeTest, RunnerSecurityContextHoldsInsideARealContainerAndTeardownLeavesNothing) {
  const auto chains_before = iptables_chains();
  const auto ipsets_before = ipsets();
  LocalClusterOptions options;
  options.controller_manager = true;
  options.scheduler = true;
  options.real_node = true;
  auto cluster = LocalCluster::start(options);
  const nlohmann::json node = cluster->real_node();
  ASSERT_TRUE(node.is_object()) << "the supervisor described no real node";
  const std::string node_name = node.at("name");
  const std::string bridge = node.at("bridge");
  const std::string cgroup_root = node.at("cgroup_root");
  const std::string socket = node.at("containerd_socket");
  const std::string dir = cluster->dir();
  std::cout << "[real-node] harness ready in " << cluster->phases().value("total_ms", 0)
            << " ms; node phases " << node.at("phases").dump() << "\n";

  expect_bridge_mac_survives_a_new_port(bridge);

  KubeApi api(*cluster);
  auto node_object = api.get_json("/api/v1/nodes/" + node_name);
  ASSERT_FALSE(node_object.is_null());
  EXPECT_EQ(node_object["metadata"]["labels"].value(localcluster::kRealNodeLabel, ""), "true");

  api.create_namespace("real-node-test");
  auto policy = api.post("/apis/networking.k8s.io/v1/namespaces/real-node-test/networkpolicies",
                         deny_ingress_policy());
  ASSERT_EQ(policy.status, 201) << policy.body;
  const std::string pods = "/api/v1/namespaces/real-node-test/pods";
  auto created = api.post(pods, probe_pod("probe"));
  ASSERT_EQ(created.status, 201) << created.body;

  std::string phase;
  nlohmann::json pod;
  const bool finished = eventually(
      [&] {
        pod = api.get_json(pods + "/probe");
        phase = pod.is_null() ? "" : pod["status"].value("phase", "");
        return phase == "Succeeded" || phase == "Failed";
      },
      std::chrono::seconds(180));
  ASSERT_TRUE(finished) << "pod never finished; last seen: " << pod.dump(2);
  ASSERT_EQ(phase, "Succeeded") << pod.dump(2);
  EXPECT_EQ(pod["spec"].value("nodeName", ""), node_name);
  EXPECT_FALSE(pod["status"].value("podIP", "").empty()) << "no pod IP from the CNI bridge";

  // While it runs, the node really has what teardown must remove.
  EXPECT_TRUE(fs::exists("/sys/class/net/" + bridge)) << "the CNI bridge was never made";
  EXPECT_FALSE(cgroups_named(cgroup_root).empty());
  EXPECT_FALSE(mounts_under(dir).empty());
  EXPECT_TRUE(eventually([] { return has_chain_starting("KUBE-NWPLCY-"); }))
      << "kube-router made no chain for the namespace's NetworkPolicy";

  // The log, read as a user would: through the apiserver, which fetches it from the kubelet.
  auto log = api.get(pods + "/probe/log");
  ASSERT_EQ(log.status, 200) << log.body;
  auto seen = parse_probe(log.body);
  EXPECT_EQ(seen["probe"], "done") << log.body;
  EXPECT_EQ(seen["uid"], std::to_string(kRunnerUid));
  EXPECT_EQ(seen["gid"], std::to_string(kRunnerUid));
  EXPECT_THAT(seen["root_writable"], HasSubstr("Read-only file system"));
  EXPECT_EQ(seen["write_dir_writable"], "yes") << "the emptyDir workspace is not writable";
  for (const char* set : {"cap_inh", "cap_prm", "cap_eff", "cap_bnd", "cap_amb"}) {
    EXPECT_EQ(seen[set], "0000000000000000") << set;
  }
  EXPECT_EQ(seen["no_new_privs"], "1");
  EXPECT_EQ(seen["seccomp"], "2") << "2 is SECCOMP_MODE_FILTER: RuntimeDefault applied";

  const auto pids = cluster->component_pids();
  cluster.reset();

  for (pid_t pid : pids) EXPECT_FALSE(process::process_alive(pid)) << "pid " << pid;
  EXPECT_THAT(processes_mentioning(socket), ::testing::IsEmpty()) << "shims left behind";
  EXPECT_THAT(mounts_under(dir), ::testing::IsEmpty());
  EXPECT_FALSE(fs::exists("/sys/class/net/" + bridge));
  EXPECT_THAT(cgroups_named(cgroup_root), ::testing::IsEmpty());
  EXPECT_EQ(iptables_chains(), chains_before);
  EXPECT_EQ(ipsets(), ipsets_before);
  EXPECT_FALSE(fs::exists(dir));
}

TEST(RealNodeTest, NodeOfASigkilledSupervisorIsTornDownByTheNextStart) {
  const auto chains_before = iptables_chains();
  const auto ipsets_before = ipsets();
  LocalClusterOptions options;
  options.controller_manager = true;
  options.scheduler = true;
  options.real_node = true;
  auto first = LocalCluster::start(options);
  const nlohmann::json node = first->real_node();
  ASSERT_TRUE(node.is_object());
  const std::string socket = node.at("containerd_socket");
  const std::string bridge = node.at("bridge");
  const std::string cgroup_root = node.at("cgroup_root");
  const std::string dir = first->dir();
  KubeApi api(*first);
  auto policy = api.post("/apis/networking.k8s.io/v1/namespaces/default/networkpolicies",
                         deny_ingress_policy());
  ASSERT_EQ(policy.status, 201) << policy.body;
  const std::string pods = "/api/v1/namespaces/default/pods";
  auto created = api.post(pods, probe_pod("holder", 600));
  ASSERT_EQ(created.status, 201) << created.body;
  ASSERT_TRUE(eventually(
      [&] {
        auto pod = api.get_json(pods + "/holder");
        return !pod.is_null() && pod["status"].value("phase", "") == "Running";
      },
      std::chrono::seconds(180)));

  ASSERT_TRUE(eventually([] { return has_chain_starting("KUBE-NWPLCY-"); }))
      << "kube-router made no chain for the NetworkPolicy";
  const auto components = first->component_pids();
  ASSERT_EQ(::kill(first->supervisor_pid(), SIGKILL), 0);
  ASSERT_TRUE(eventually([&] {
    for (pid_t pid : components) {
      if (process::process_alive(pid)) return false;
    }
    return true;
  }));
  // What a killed supervisor leaves: the shims outlive containerd by design, with the containers.
  ASSERT_THAT(processes_mentioning(socket), ::testing::Not(::testing::IsEmpty()));
  ASSERT_FALSE(cgroups_named(cgroup_root).empty());
  // And kube-router's chains and ip sets for the policy.
  ASSERT_TRUE(has_chain_starting("KUBE-NWPLCY-"));
  ASSERT_NE(ipsets(), ipsets_before);

  LocalClusterOptions second_options;
  second_options.real_node = true;
  auto second = LocalCluster::start(second_options);
  EXPECT_THAT(processes_mentioning(socket), ::testing::IsEmpty()) << "shims of the dead node";
  EXPECT_THAT(mounts_under(dir), ::testing::IsEmpty());
  EXPECT_FALSE(fs::exists("/sys/class/net/" + bridge));
  EXPECT_THAT(cgroups_named(cgroup_root), ::testing::IsEmpty());
  EXPECT_FALSE(fs::exists(dir));
  second.reset();
  first.reset();  // its supervisor is gone; nothing left to stop
  EXPECT_EQ(iptables_chains(), chains_before);
  EXPECT_EQ(ipsets(), ipsets_before);
}

TEST(RealNodeTest, HarnessWithoutThePauseImageFailsNamingIt) {
  const fs::path empty =
      fs::temp_directory_path() / ("real-node-no-images-" + std::to_string(getpid()));
  fs::create_directories(empty);
  // The supervisor inherits this; nothing else in this binary reads it concurrently.
  ::setenv("PERIMETER_IMAGES_DIR", empty.c_str(), 1);  // NOLINT(concurrency-mt-unsafe)
  LocalClusterOptions options;
  options.real_node = true;
  EXPECT_THAT([&] { LocalCluster::start(options); },
              ::testing::ThrowsMessage<std::runtime_error>(
                  HasSubstr("the pause image " + empty.string() + "/pause.tar")));
  ::unsetenv("PERIMETER_IMAGES_DIR");  // NOLINT(concurrency-mt-unsafe)
  fs::remove_all(empty);
}

TEST(RealNodeTest, MissingBinaryOrImageIsNamed) {
  const fs::path empty =
      fs::temp_directory_path() / ("real-node-empty-" + std::to_string(getpid()));
  fs::create_directories(empty);
  localcluster::RealNodeOptions options;
  options.tools_dir = empty.string();
  options.images_dir = empty.string();
  auto missing = localcluster::missing_node_prerequisites(options);
  std::string all;
  for (const auto& line : missing) all += line + "\n";
  EXPECT_THAT(all, HasSubstr("kubelet not found at " + empty.string()));
  EXPECT_THAT(all, HasSubstr("pause image " + empty.string() + "/pause.tar"));
  EXPECT_THAT(all, HasSubstr("build-images.sh"));
  fs::remove_all(empty);

  // With the real tools and images, nothing is missing on this machine: the test above needs it.
  options.tools_dir = localcluster::tools_bin_dir();
  options.images_dir = localcluster::images_dir();
  EXPECT_THAT(localcluster::missing_node_prerequisites(options), ::testing::IsEmpty());
}

}  // namespace
}  // namespace perimeter::testing
