#include "localcluster/real_node.h"

#include <openssl/sha.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <sstream>
#include <stdexcept>
#include <system_error>
#include <thread>

#include "core/clock.h"
#include "core/random.h"
#include "localcluster/certificates.h"
#include "localcluster/cluster_dirs.h"
#include "localcluster/kubeconfig.h"
#include "localcluster/ports.h"
#include "localcluster/readiness.h"
#include "localcluster/tools.h"

namespace perimeter::localcluster {
namespace {

namespace fs = std::filesystem;
using SteadyClock = std::chrono::steady_clock;

constexpr const char* kCniBinDir = "/usr/lib/cni";
constexpr const char* kCriNamespace = "k8s.io";
// containerd 1.6 puts every shim's socket here whatever its own state folder is.
constexpr const char* kShimSocketDir = "/run/containerd/s";
constexpr size_t kLogTailLines = 40;
// Made by the kubelet outside its --root-dir, deepest first.
constexpr const char* kKubeletFixedPaths[] = {"/var/lib/kubelet/device-plugins/kubelet.sock",
                                              "/var/lib/kubelet/device-plugins",
                                              "/var/lib/kubelet"};

long long millis_since(SteadyClock::time_point since) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(SteadyClock::now() - since).count();
}

// strerror, thread-safe.
std::string errno_text(int error) {
  return std::error_code(error, std::generic_category()).message();
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// Runs a short command to completion; its stdout is returned, stderr goes to `log_path`.
struct CommandOutput {
  bool ok = false;
  std::string out;
  std::string failure;  // how it failed, with the tail of its log
};

CommandOutput run_command(const std::vector<std::string>& argv, const std::string& log_path,
                          std::chrono::seconds timeout = std::chrono::seconds(60)) {
  process::ProcessSpec spec;
  spec.argv = argv;
  spec.log_path = log_path;
  spec.capture_stdout = true;
  CommandOutput result;
  std::unique_ptr<process::Process> child;
  try {
    child = process::Process::spawn(spec);
  } catch (const std::exception& e) {
    result.failure = e.what();
    return result;
  }
  const auto deadline = SteadyClock::now() + timeout;
  while (true) {
    auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - SteadyClock::now());
    if (left.count() <= 0) {
      child->terminate(std::chrono::seconds(2));
      result.failure = argv[0] + " did not finish within " + std::to_string(timeout.count()) + " s";
      return result;
    }
    auto line = child->read_stdout_line(left);
    if (line.result == process::LineRead::Result::kEof) break;
    if (line.result == process::LineRead::Result::kLine) result.out += line.line + "\n";
  }
  auto status = child->wait();
  result.ok = status.success();
  if (!result.ok) {
    std::string command;
    for (const auto& arg : argv) command += (command.empty() ? "" : " ") + arg;
    result.failure = "`" + command + "` " + status.describe() + ": " + tail_of_file(log_path, 10);
  }
  return result;
}

std::string random_hex(int digits) {
  std::random_device device;
  std::string text;
  for (int i = 0; i < digits; ++i) text += "0123456789abcdef"[device() % 16];
  return text;
}

// --- the kubelet's client certificate, signed by the cluster CA --------------------------------

// CN=system:node:<name>, O=system:nodes: the identity RBAC's system:node role is bound to.
void issue_node_client_certificate(const RealNodeOptions& options, const std::string& node_name,
                                   const std::string& cert_path, const std::string& key_path) {
  issue_from_cluster_ca({.common_name = "system:node:" + node_name,
                         .organization = "system:nodes",
                         .usage = pki::Usage::kClient},
                        pki::read_certificate_file(options.ca_cert),
                        pki::read_private_key_file(options.ca_key), cert_path, key_path);
}

// A client certificate for `user` from the cluster CA, and a kubeconfig at <dir>/<name>.kubeconfig
// that presents it: how each of the node's own components (kube-router, kube-proxy) gets an
// identity of its own rather than the admin's.
void write_component_kubeconfig(const RealNodeOptions& options, const std::string& user,
                                const std::string& name) {
  const std::string pki = options.dir + "/pki";
  fs::create_directories(pki);
  issue_from_cluster_ca({.common_name = user, .usage = pki::Usage::kClient},
                        pki::read_certificate_file(options.ca_cert),
                        pki::read_private_key_file(options.ca_key), pki + "/" + name + ".crt",
                        pki + "/" + name + ".key");
  KubeconfigSpec kubeconfig;
  kubeconfig.server = options.apiserver_url;
  kubeconfig.ca_file = options.ca_cert;
  kubeconfig.client_cert_file = pki + "/" + name + ".crt";
  kubeconfig.client_key_file = pki + "/" + name + ".key";
  kubeconfig.context_name = name;
  kubeconfig.user_name = user;
  write_kubeconfig(options.dir + "/" + name + ".kubeconfig", kubeconfig);
}

// The last lines of a log, without the kubelet's echo of every flag it was given (a fast failure
// would otherwise show only those).
std::string meaningful_tail(const std::string& log_path) {
  std::istringstream lines(tail_of_file(log_path, 400));
  std::vector<std::string> kept;
  for (std::string line; std::getline(lines, line);) {
    if (line.find("] FLAG: --") == std::string::npos) kept.push_back(line);
  }
  std::string tail;
  const size_t first = kept.size() > kLogTailLines ? kept.size() - kLogTailLines : 0;
  for (size_t i = first; i < kept.size(); ++i) tail += kept[i] + "\n";
  return tail;
}

// containerd 1.6 names a shim's socket sha256(<containerd address>/<namespace>/<id>).
std::string shim_socket_path(const std::string& containerd_socket, const std::string& id) {
  const std::string key = containerd_socket + "/" + kCriNamespace + "/" + id;
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(key.data()), key.size(), digest);
  std::string hex;
  for (unsigned char byte : digest) {
    hex += "0123456789abcdef"[byte >> 4];
    hex += "0123456789abcdef"[byte & 15];
  }
  return std::string(kShimSocketDir) + "/" + hex;
}

// Every process whose command line holds `-address <socket>`: containerd's shims of this node.
struct Shim {
  pid_t pid = 0;
  std::string id;
};

std::vector<Shim> find_shims(const std::string& socket) {
  std::vector<Shim> shims;
  std::error_code error;
  for (const auto& entry : fs::directory_iterator("/proc", error)) {
    const std::string name = entry.path().filename();
    if (name.empty() || !std::all_of(name.begin(), name.end(), ::isdigit)) continue;
    std::string raw = read_file(entry.path().string() + "/cmdline");
    std::vector<std::string> argv;
    std::stringstream split(raw);
    for (std::string arg; std::getline(split, arg, '\0');) argv.push_back(arg);
    if (argv.empty() || argv[0].find("containerd-shim") == std::string::npos) continue;
    Shim shim{static_cast<pid_t>(std::stoi(name)), ""};
    bool ours = false;
    for (size_t i = 0; i + 1 < argv.size(); ++i) {
      if (argv[i] == "-address" && argv[i + 1] == socket) ours = true;
      if (argv[i] == "-id") shim.id = argv[i + 1];
    }
    if (ours) shims.push_back(shim);
  }
  return shims;
}

// The cgroup hierarchies mounted here: every v1 controller folder, or the v2 root itself.
std::vector<std::string> cgroup_hierarchies() {
  std::vector<std::string> roots;
  if (fs::exists("/sys/fs/cgroup/cgroup.controllers")) return {"/sys/fs/cgroup"};
  std::error_code error;
  for (const auto& entry : fs::directory_iterator("/sys/fs/cgroup", error)) {
    if (entry.is_directory() && !entry.is_symlink() && fs::exists(entry.path() / "cgroup.procs")) {
      roots.push_back(entry.path().string());
    }
  }
  return roots;
}

// Mount points from /proc/self/mountinfo (octal escapes such as \040 decoded).
std::vector<std::string> mount_points() {
  std::vector<std::string> points;
  std::ifstream mountinfo("/proc/self/mountinfo");
  for (std::string line; std::getline(mountinfo, line);) {
    std::istringstream fields(line);
    std::string id, parent, device, root, point;
    fields >> id >> parent >> device >> root >> point;
    std::string decoded;
    for (size_t i = 0; i < point.size(); ++i) {
      if (point[i] == '\\' && i + 3 < point.size()) {
        decoded += static_cast<char>(std::stoi(point.substr(i + 1, 3), nullptr, 8));
        i += 3;
      } else {
        decoded += point[i];
      }
    }
    points.push_back(decoded);
  }
  return points;
}

bool is_under(const std::string& path, const std::string& dir) {
  return path == dir || path.rfind(dir + "/", 0) == 0;
}

std::set<std::string> iptables_chains(const std::string& binary, const std::string& log_path) {
  std::set<std::string> chains;
  for (const char* table : {"filter", "nat", "mangle"}) {
    auto listed = run_command({binary, "-w", "-t", table, "-S"}, log_path);
    if (!listed.ok) continue;
    std::istringstream lines(listed.out);
    for (std::string line; std::getline(lines, line);) {
      if (line.rfind("-N ", 0) == 0) chains.insert(std::string(table) + "/" + line.substr(3));
    }
  }
  return chains;
}

// The words of one `iptables -S` line; double-quoted words (comments) stay whole.
std::vector<std::string> split_rule(const std::string& line) {
  std::vector<std::string> words;
  std::string word;
  bool quoted = false, in_word = false;
  for (char c : line) {
    if (c == '"') {
      quoted = !quoted;
      in_word = true;
    } else if (c == ' ' && !quoted) {
      if (in_word) words.push_back(word);
      word.clear();
      in_word = false;
    } else {
      word += c;
      in_word = true;
    }
  }
  if (in_word) words.push_back(word);
  return words;
}

// The names of the ip sets on this machine (`ipset list -n`).
std::set<std::string> ipset_names(const std::string& log_path) {
  std::set<std::string> names;
  auto listed = run_command({"ipset", "list", "-n"}, log_path);
  std::istringstream lines(listed.out);
  for (std::string line; std::getline(lines, line);) {
    if (!line.empty()) names.insert(line);
  }
  return names;
}

// kube-router's ip sets (its policy chains match on them): KUBE-SRC-*, KUBE-DST-*,
// kube-router-*, and the same with inet6: in front.
bool is_kube_router_ipset(std::string name) {
  if (name.rfind("inet6:", 0) == 0) name = name.substr(6);
  return name.rfind("KUBE-", 0) == 0 || name.rfind("kube-router-", 0) == 0;
}

// The `n`th address of an IPv4 range ("10.0.0.0/24", 10 -> "10.0.0.10"); "" when it is not one.
std::string nth_address(const std::string& cidr, unsigned n) {
  unsigned a = 0, b = 0, c = 0, d = 0, bits = 0;
  if (std::sscanf(cidr.c_str(), "%u.%u.%u.%u/%u", &a, &b, &c, &d, &bits) != 5 || bits > 30) {
    return "";
  }
  const uint32_t base = (a << 24U) | (b << 16U) | (c << 8U) | d;
  const uint32_t address = base + n;
  return std::to_string(address >> 24U) + "." + std::to_string((address >> 16U) & 255U) + "." +
         std::to_string((address >> 8U) & 255U) + "." + std::to_string(address & 255U);
}

// "https://127.0.0.1:6443" -> 6443; 0 when there is no port.
int url_port(const std::string& url) {
  const auto colon = url.rfind(':');
  if (colon == std::string::npos) return 0;
  return std::atoi(url.c_str() + colon + 1);
}

}  // namespace

std::string images_dir() {
  // NOLINTNEXTLINE(concurrency-mt-unsafe): read-only; nothing calls setenv concurrently
  if (const char* dir = std::getenv("PERIMETER_IMAGES_DIR"); dir && *dir) return dir;
  // NOLINTNEXTLINE(concurrency-mt-unsafe): read-only; nothing calls setenv concurrently
  if (const char* cache = std::getenv("XDG_CACHE_HOME"); cache && *cache) {
    return std::string(cache) + "/perimeter/images";
  }
  // NOLINTNEXTLINE(concurrency-mt-unsafe): read-only; nothing calls setenv concurrently
  const char* home = std::getenv("HOME");
  return std::string(home && *home ? home : "/root") + "/.cache/perimeter/images";
}

std::vector<std::string> missing_node_prerequisites(const RealNodeOptions& options) {
  std::vector<std::string> missing;
  if (::geteuid() != 0) {
    missing.push_back("root: a real node mounts, makes cgroups and network devices (run as root)");
  }
  const std::vector<std::pair<std::string, std::string>> binaries = {
      {"containerd", "containerd"},
      {"containerd-shim-runc-v2", "containerd"},
      {"ctr", "containerd"},
      {"runc", "runc"},
      {"ip", "iproute2"},
      // kube-router, the NetworkPolicy enforcer, programs iptables in one restore and ip sets.
      {"iptables-save", "iptables"},
      {"iptables-restore", "iptables"},
      {"ipset", "ipset"}};
  for (const auto& [binary, package] : binaries) {
    if (process::find_executable(binary).empty()) {
      std::string line = "binary " + binary;
      line += " not found on PATH (Debian package " + package + "; `make deps` installs it)";
      missing.push_back(std::move(line));
    }
  }
  for (const char* plugin : {"bridge", "host-local", "loopback"}) {
    if (::access((std::string(kCniBinDir) + "/" + plugin).c_str(), X_OK) != 0) {
      missing.push_back(std::string("CNI plugin ") + plugin + " not found in " + kCniBinDir +
                        " (Debian package containernetworking-plugins; `make deps`)");
    }
  }
  if (::access((options.tools_dir + "/kubelet").c_str(), X_OK) != 0) {
    missing.push_back("kubelet not found at " + options.tools_dir +
                      "/kubelet (`make tools` builds it)");
  }
  for (const char* tool : {"kube-router", "kube-proxy"}) {
    if (::access((options.tools_dir + "/" + tool).c_str(), X_OK) != 0) {
      missing.push_back(std::string(tool) + " not found at " + options.tools_dir + "/" + tool +
                        " (`make tools` builds it)");
    }
  }
  if (!fs::exists(options.images_dir + "/pause.tar")) {
    missing.push_back("the pause image " + options.images_dir +
                      "/pause.tar (hack/images/build-images.sh builds it; `make setup` runs it)");
  }
  if (!fs::exists(options.images_dir + "/coredns.tar")) {
    missing.push_back("the cluster DNS image " + options.images_dir +
                      "/coredns.tar (hack/images/build-images.sh builds it; `make setup` runs it)");
  }
  for (const auto& archive : options.extra_images) {
    if (!fs::is_regular_file(archive)) {
      missing.push_back("the image archive " + archive +
                        " (the runner's is built by `make build` into <build>/images/)");
    }
  }
  if (cgroup_hierarchies().empty()) {
    missing.push_back("kernel feature: no cgroup hierarchy mounted under /sys/fs/cgroup");
  }
  if (!fs::exists("/proc/self/ns/net")) {
    missing.push_back("kernel feature: network namespaces (/proc/self/ns/net)");
  }
  if (read_file("/proc/self/status").find("Seccomp:") == std::string::npos) {
    missing.push_back("kernel feature: seccomp (no Seccomp line in /proc/self/status)");
  }
  if (!fs::exists("/dev/kmsg")) {
    missing.push_back("/dev/kmsg (the kubelet's OOM watcher reads it)");
  }
  return missing;
}

RealNode::RealNode(RealNodeOptions options, Logger logger, std::optional<MachineLock> machine_lock)
    : machine_lock_(std::move(machine_lock)),
      options_(std::move(options)),
      logger_(std::move(logger)) {}

RealNode::~RealNode() {
  stop();
}

std::unique_ptr<RealNode> RealNode::start(const RealNodeOptions& options, Logger logger) {
  if (auto missing = missing_node_prerequisites(options); !missing.empty()) {
    std::string message = "the real node cannot start; missing:";
    for (const auto& what : missing) message += "\n  - " + what;
    throw std::runtime_error(message);
  }
  MachineLock machine_lock = MachineLock::acquire(
      options.machine_lock,
      std::chrono::duration_cast<std::chrono::milliseconds>(options.machine_lock_wait), logger);
  if (!options.records_dir.empty()) reap_orphaned_nodes(options.records_dir, logger);
  std::unique_ptr<RealNode> node(new RealNode(options, std::move(logger), std::move(machine_lock)));
  node->start_all();  // on failure the destructor removes whatever did start
  return node;
}

std::string RealNode::record_path() const {
  return options_.records_dir.empty() ? "" : options_.records_dir + "/" + id_ + ".json";
}

void RealNode::write_record() const {
  if (options_.records_dir.empty()) return;
  fs::create_directories(options_.records_dir);
  nlohmann::json record = {{"supervisor_pid", ::getpid()},
                           // With the pid: a recycled pid running something else is not ours.
                           {"supervisor_cmdline", read_file("/proc/self/cmdline")},
                           {"dir", options_.dir},
                           {"id", id_},
                           {"socket", socket_},
                           {"cgroup_root", cgroup_root_},
                           {"bridge", bridge_},
                           {"service_cluster_ip_range", options_.service_cluster_ip_range},
                           {"chains_before", chains_before_},
                           {"iptables_recorded", iptables_recorded_},
                           {"ipsets_before", ipsets_before_},
                           {"created_host_paths", created_host_paths_}};
  const std::string path = record_path();
  std::ofstream(path + ".tmp") << record.dump() << "\n";
  fs::rename(path + ".tmp", path);
}

std::vector<std::string> RealNode::reap_orphaned_nodes(const std::string& records_dir,
                                                       const Logger& logger) {
  std::vector<std::string> reaped;
  std::error_code error;
  for (const auto& entry : fs::directory_iterator(records_dir, error)) {
    if (entry.path().extension() != ".json") continue;
    const auto record = nlohmann::json::parse(read_file(entry.path().string()), nullptr, false);
    if (record.is_discarded() || !record.is_object()) {
      logger.warn("ignoring an unreadable real-node record", {{"path", entry.path().string()}});
      continue;
    }
    const pid_t supervisor = record.value("supervisor_pid", 0);
    if (supervisor <= 0) continue;
    if (process::process_alive(supervisor) &&
        read_file("/proc/" + std::to_string(supervisor) + "/cmdline") ==
            record.value("supervisor_cmdline", "")) {
      continue;  // its owner still runs
    }
    // Its supervisor was killed without stopping it: shims, containers, mounts, cgroups and the
    // bridge outlived it. Tear it down the way stop() would have.
    RealNodeOptions options;
    options.dir = record.value("dir", "");
    options.records_dir = records_dir;
    options.service_cluster_ip_range = record.value("service_cluster_ip_range", "");
    if (options.dir.empty()) continue;
    RealNode orphan(options, logger, std::nullopt);
    orphan.id_ = record.value("id", "");
    orphan.socket_ = record.value("socket", "");
    orphan.cgroup_root_ = record.value("cgroup_root", "");
    orphan.bridge_ = record.value("bridge", "");
    orphan.chains_before_ = record.value("chains_before", std::vector<std::string>{});
    orphan.iptables_recorded_ = record.value("iptables_recorded", false);
    orphan.ipsets_before_ = record.value("ipsets_before", std::vector<std::string>{});
    orphan.created_host_paths_ = record.value("created_host_paths", std::vector<std::string>{});
    fs::create_directories(options.dir, error);  // for the teardown commands' logs
    orphan.stop();
    // The cluster folder the sweep could not remove while things were mounted in it.
    const fs::path cluster = fs::path(options.dir).parent_path();
    if (fs::exists(cluster / kSupervisorPidFile) || fs::exists(cluster / "node")) {
      fs::remove_all(cluster, error);
    }
    reaped.push_back(orphan.id_);
  }
  return reaped;
}

void RealNode::start_all() {
  const auto started = SteadyClock::now();
  id_ = random_hex(8);
  // The kubelet refuses a loopback node IP, and the apiserver must reach it on loopback: the
  // node is named 127.0.0.1, its Hostname address, which the apiserver is told to prefer.
  name_ = "127.0.0.1";
  bridge_ = "pmtr" + id_;  // 12 characters: interface names stop at 15
  cgroup_root_ = "/perimeter-" + id_;
  // A /24 in 10.128.0.0/9 no route on this machine uses yet.
  const std::string routes = read_file("/proc/net/route");
  std::random_device device;
  for (int attempt = 0; attempt < 64; ++attempt) {
    const unsigned second = 128 + device() % 128, third = device() % 256;
    char hex[9];
    std::snprintf(hex, sizeof(hex), "%02X%02X%02X", third, second, 10);  // little-endian x.y.z.0
    if (routes.find(std::string("\t00") + hex + "\t") != std::string::npos) continue;
    pod_subnet_ = "10." + std::to_string(second) + "." + std::to_string(third) + ".0/24";
    gateway_ = "10." + std::to_string(second) + "." + std::to_string(third) + ".1";
    break;
  }
  if (pod_subnet_.empty()) throw std::runtime_error("no free /24 for pods in 10.128.0.0/9");
  snapshotter_ = read_file("/proc/filesystems").find("\toverlay\n") != std::string::npos
                     ? "overlayfs"
                     : "native";
  socket_ = options_.dir + "/containerd.sock";
  containerd_log_ = options_.logs_dir + "/containerd.log";
  kubelet_log_ = options_.logs_dir + "/kubelet.log";
  network_policies_log_ = options_.logs_dir + "/kube-router.log";
  service_proxy_log_ = options_.logs_dir + "/kube-proxy.log";
  cluster_dns_ip_ = nth_address(options_.service_cluster_ip_range, 10);
  fs::create_directories(options_.dir);
  fs::create_directories(options_.logs_dir);
  write_record();  // from here on, a killed supervisor leaves something the next start can reap

  write_kubelet_credentials();
  write_containerd_config();
  write_cni_config();
  create_bridge();
  start_containerd();
  phases_["containerd_ready_ms"] = millis_since(started);
  import_images();
  phases_["images_imported_ms"] = millis_since(started);
  grant_node_role();
  remember_iptables_chains();
  remember_host_paths();
  write_record();
  // After the chains were recorded, so teardown knows these are the node's; before any pod.
  route_pods_to_the_node();
  write_network_policies_credentials();
  write_service_proxy_config();
  start_kubelet();
  // kube-router and kube-proxy look their Node up at start, so they start once the kubelet has
  // registered it; the not-ready taint is lifted only after both have programmed their rules,
  // so no pod runs unpoliced and no pod sees a ClusterIP that leads nowhere. Both start
  // together and are waited for in turn: each one's start-up is measured from the same spawn.
  wait_for_node_registered();
  const auto enforcer_spawned = SteadyClock::now();
  start_network_policies();
  start_service_proxy();
  wait_for_network_policies();
  phases_["network_policies_startup_ms"] = millis_since(enforcer_spawned);
  phases_["network_policies_ready_ms"] = millis_since(started);
  wait_for_service_proxy();
  phases_["service_proxy_startup_ms"] = millis_since(enforcer_spawned);
  phases_["service_proxy_ready_ms"] = millis_since(started);
  wait_for_node_ready();
  phases_["node_ready_ms"] = millis_since(started);
  // Not waited for here: its pod starts while the caller goes on (the e2e tests wait for its
  // endpoint), and it needs the controller manager's Deployment and EndpointSlice controllers,
  // which a bare node may run without.
  deploy_cluster_dns();
  phases_["cluster_dns_deployed_ms"] = millis_since(started);
  // Storage for PersistentVolumeClaims (session workspaces): folders under the node's own
  // directory, so they go with it.
  volumes_ = std::make_unique<LocalVolumeRunner>(
      std::make_unique<HttpVolumeApi>(options_.admin_client), options_.dir + "/volumes",
      kRealNodeLabel, logger_.child("volumes"));
  logger_.info("real node ready", describe());
}

void RealNode::write_kubelet_credentials() {
  const std::string pki = options_.dir + "/pki";
  fs::create_directories(pki);
  issue_node_client_certificate(options_, name_, pki + "/kubelet-client.crt",
                                pki + "/kubelet-client.key");
  KubeconfigSpec kubeconfig;
  kubeconfig.server = options_.apiserver_url;
  kubeconfig.ca_file = options_.ca_cert;
  kubeconfig.client_cert_file = pki + "/kubelet-client.crt";
  kubeconfig.client_key_file = pki + "/kubelet-client.key";
  kubeconfig.context_name = name_;
  kubeconfig.user_name = "system:node:" + name_;
  write_kubeconfig(options_.dir + "/kubelet.kubeconfig", kubeconfig);
}

void RealNode::write_containerd_config() {
  const std::string root = options_.dir + "/containerd";
  std::ofstream config(options_.dir + "/containerd.toml");
  // Root, state, runc state and network namespaces all under the node's folder, so nothing is
  // shared with another containerd on this machine and teardown knows where to look.
  config << "version = 2\n"
         << "root = \"" << root << "/root\"\n"
         << "state = \"" << root << "/state\"\n"
         << "disabled_plugins = [\"io.containerd.snapshotter.v1.aufs\", "
            "\"io.containerd.snapshotter.v1.btrfs\", \"io.containerd.snapshotter.v1.zfs\", "
            "\"io.containerd.snapshotter.v1.devmapper\"]\n"
         << "[grpc]\n  address = \"" << socket_ << "\"\n"
         << "[ttrpc]\n  address = \"\"\n"
         << "[metrics]\n  address = \"\"\n"
         << "[plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"" << root << "/opt\"\n"
         << "[plugins.\"io.containerd.grpc.v1.cri\"]\n"
         << "  sandbox_image = \"" << kPauseImage << "\"\n"
         << "  netns_mounts_under_state_dir = true\n"
         << "  enable_selinux = false\n"
         // This machine may not lower oom_score_adj (the pause container asks for -998): keep
         // containers at or above containerd's own.
         << "  restrict_oom_score_adj = true\n"
         << "  [plugins.\"io.containerd.grpc.v1.cri\".containerd]\n"
         << "    snapshotter = \"" << snapshotter_ << "\"\n"
         << "    default_runtime_name = \"runc\"\n"
         << "    [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]\n"
         << "      runtime_type = \"io.containerd.runc.v2\"\n"
         << "      [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc.options]\n"
         << "        SystemdCgroup = false\n"
         << "        Root = \"" << root << "/runc\"\n"
         << "  [plugins.\"io.containerd.grpc.v1.cri\".cni]\n"
         << "    bin_dir = \"" << kCniBinDir << "\"\n"
         << "    conf_dir = \"" << options_.dir << "/cni\"\n";
}

void RealNode::write_cni_config() {
  fs::create_directories(options_.dir + "/cni");
  // No ipMasq: pods talk to the host over the bridge only, so no NAT rule is needed or left.
  nlohmann::json bridge = {{"type", "bridge"},
                           {"bridge", bridge_},
                           {"isGateway", true},
                           {"ipMasq", false},
                           {"hairpinMode", true},
                           {"ipam",
                            {{"type", "host-local"},
                             {"ranges", {{{{"subnet", pod_subnet_}}}}},
                             {"routes", {{{"dst", "0.0.0.0/0"}}}},
                             {"dataDir", options_.dir + "/cni-ipam"}}}};
  nlohmann::json list = {{"cniVersion", "1.0.0"},
                         {"name", "perimeter-" + id_},
                         {"plugins", nlohmann::json::array({bridge})}};
  std::ofstream(options_.dir + "/cni/10-perimeter.conflist") << list.dump(2) << "\n";
}

void RealNode::wait_for(process::Process& process, const std::string& component,
                        const std::string& log_path, const std::string& what,
                        const std::function<bool(std::string*)>& probe) {
  ReadinessCheck check;
  check.component = component;
  check.what = what;
  check.timeout = options_.start_timeout;
  check.probe = probe;
  check.exit_description = [&process]() -> std::optional<std::string> {
    if (process.running()) return std::nullopt;
    return process.exit_status()->describe();
  };
  check.log_path = log_path;
  check.log_tail = [log_path] { return meaningful_tail(log_path); };
  check.abort_requested = options_.abort_requested;
  localcluster::wait_until_ready(check, SystemClock::instance(), ThreadSleeper::instance(),
                                 SystemRandom::instance());
}

void RealNode::start_containerd() {
  process::ProcessSpec spec;
  spec.argv = {process::find_executable("containerd"), "--config",
               options_.dir + "/containerd.toml"};
  spec.log_path = containerd_log_;
  spec.working_dir = options_.dir;
  spec.parent_death_signal = SIGKILL;
  containerd_ = process::Process::spawn(spec);
  write_pid_file(options_.dir + "/containerd.pid", containerd_->pid());
  const std::string probe_log = options_.dir + "/ctr.log";
  wait_for(*containerd_, "containerd", containerd_log_, "the CRI plugin serving on its socket",
           [&](std::string* complaint) {
             // `ctr plugins ls` lists the CRI plugin as ok once it has loaded.
             auto plugins = run_command({"ctr", "--address", socket_, "plugins", "ls"}, probe_log,
                                        std::chrono::seconds(10));
             if (!plugins.ok) {
               *complaint = plugins.failure;
               return false;
             }
             for (std::istringstream lines(plugins.out); !lines.eof();) {
               std::string line;
               std::getline(lines, line);
               if (line.find("io.containerd.grpc.v1") != std::string::npos &&
                   line.find(" cri ") != std::string::npos) {
                 if (line.find(" ok") != std::string::npos) return true;
                 *complaint = "the CRI plugin did not load: " + line;
                 return false;
               }
             }
             *complaint = "no CRI plugin listed yet";
             return false;
           });
}

void RealNode::import_images() {
  std::vector<std::string> archives;
  for (const auto& entry : fs::directory_iterator(options_.images_dir)) {
    if (entry.path().extension() == ".tar") archives.push_back(entry.path().string());
  }
  std::sort(archives.begin(), archives.end());
  archives.insert(archives.end(), options_.extra_images.begin(), options_.extra_images.end());
  for (const auto& archive : archives) {
    const std::string name = kImageNamePrefix + fs::path(archive).stem().string();
    auto imported =
        run_command({"ctr", "--address", socket_, "--namespace", kCriNamespace, "images", "import",
                     "--snapshotter", snapshotter_, "--base-name", name, archive},
                    options_.dir + "/ctr.log");
    if (!imported.ok) {
      throw std::runtime_error("importing image " + archive +
                               " into the node's containerd: " + imported.failure);
    }
    images_.push_back(name);
  }
}

void RealNode::grant_node_role() {
  // The apiserver authorizes with RBAC only; the built-in system:node role is what a kubelet
  // needs, bound here to this node's user alone.
  nlohmann::json binding = {{"apiVersion", "rbac.authorization.k8s.io/v1"},
                            {"kind", "ClusterRoleBinding"},
                            {"metadata", {{"name", "perimeter:" + name_}}},
                            {"roleRef",
                             {{"apiGroup", "rbac.authorization.k8s.io"},
                              {"kind", "ClusterRole"},
                              {"name", "system:node"}}},
                            {"subjects",
                             {{{"apiGroup", "rbac.authorization.k8s.io"},
                               {"kind", "User"},
                               {"name", "system:node:" + name_}}}}};
  auto api = options_.admin_client();
  auto response = api->request("POST", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
                               binding.dump());
  if (response.status != 201 && response.status != 409) {
    throw std::runtime_error("binding system:node to " + name_ + ": HTTP " +
                             std::to_string(response.status) + ": " + response.body);
  }
}

void RealNode::remember_host_paths() {
  // The kubelet's device manager serves a fixed socket whatever --root-dir says.
  created_host_paths_.clear();
  for (const char* path : kKubeletFixedPaths) {
    if (!fs::exists(path)) created_host_paths_.emplace_back(path);
  }
}

void RealNode::remove_host_paths() {
  // Deepest first, and only what did not exist before this node started.
  for (const auto& path : created_host_paths_) {
    // fs::remove leaves a folder that is not empty: another kubelet may have put files there.
    std::error_code ignored;
    fs::remove(path, ignored);
  }
}

void RealNode::remember_iptables_chains() {
  iptables_recorded_ = true;
  if (!process::find_executable("ipset").empty()) {
    for (const auto& name : ipset_names(options_.dir + "/ipset.log"))
      ipsets_before_.push_back(name);
  }
  for (const char* binary : {"iptables", "ip6tables"}) {
    if (process::find_executable(binary).empty()) continue;
    for (const auto& chain : iptables_chains(binary, options_.dir + "/iptables.log")) {
      chains_before_.push_back(std::string(binary) + ":" + chain);
    }
  }
}

void RealNode::make_cgroup_root() {
  // The kubelet wants its cgroup root present in every hierarchy. A new cpuset starts with no
  // CPUs or memory nodes, so it gets its parent's.
  for (const auto& hierarchy : cgroup_hierarchies()) {
    const std::string path = hierarchy + cgroup_root_;
    if (::mkdir(path.c_str(), 0755) != 0 && errno != EEXIST) {
      throw std::runtime_error("creating cgroup " + path + ": " + errno_text(errno));
    }
    for (const char* inherited : {"cpuset.cpus", "cpuset.mems"}) {
      if (!fs::exists(hierarchy + "/" + inherited)) continue;
      std::ofstream(path + "/" + inherited) << read_file(hierarchy + "/" + inherited);
    }
  }
}

void RealNode::start_kubelet() {
  make_cgroup_root();
  const std::string root = options_.dir + "/kubelet";
  fs::create_directories(root + "/pki");
  fs::create_directories(options_.dir + "/pod-logs");
  const int port = pick_free_port();
  const int healthz_port = pick_free_port();
  nlohmann::json config = {
      {"apiVersion", "kubelet.config.k8s.io/v1beta1"},
      {"kind", "KubeletConfiguration"},
      {"address", "127.0.0.1"},
      {"port", port},
      {"readOnlyPort", 0},
      {"healthzBindAddress", "127.0.0.1"},
      {"healthzPort", healthz_port},
      // Only the cluster CA's certificates get in (the apiserver's for pods/log and exec).
      {"authentication",
       {{"anonymous", {{"enabled", false}}},
        {"webhook", {{"enabled", false}}},
        {"x509", {{"clientCAFile", options_.ca_cert}}}}},
      {"authorization", {{"mode", "AlwaysAllow"}}},
      {"cgroupDriver", "cgroupfs"},
      // A subtree of our own, so two nodes on one machine never share kubepods.
      {"cgroupRoot", cgroup_root_},
      {"containerRuntimeEndpoint", "unix://" + socket_},
      {"podLogsDir", options_.dir + "/pod-logs"},
      {"failSwapOn", false},
      {"failCgroupV1", false},
      {"resolvConf", ""},
      // Pods get the cluster DNS (deploy_cluster_dns) as their only nameserver.
      {"clusterDNS", {cluster_dns_ip_}},
      {"clusterDomain", kClusterDomain},
      {"registerWithTaints",
       {{{"key", kRealNodeTaintKey}, {"value", "true"}, {"effect", "NoSchedule"}}}},
      // The images cannot be pulled again: never collect them, and only evict on a full disk.
      {"imageGCHighThresholdPercent", 100},
      {"imageGCLowThresholdPercent", 99},
      {"evictionHard",
       {{"memory.available", "50Mi"}, {"nodefs.available", "1%"}, {"imagefs.available", "1%"}}},
      {"serializeImagePulls", false},
      {"rotateCertificates", false},
  };
  std::ofstream(options_.dir + "/kubelet.yaml") << config.dump(2) << "\n";
  process::ProcessSpec spec;
  spec.argv = {options_.tools_dir + "/kubelet",
               "--config=" + options_.dir + "/kubelet.yaml",
               "--kubeconfig=" + options_.dir + "/kubelet.kubeconfig",
               "--root-dir=" + root,
               "--cert-dir=" + root + "/pki",
               "--hostname-override=" + name_,
               "--node-labels=" + std::string(kRealNodeLabel) + "=true",
               "--v=1"};
  spec.log_path = kubelet_log_;
  spec.working_dir = options_.dir;
  spec.parent_death_signal = SIGKILL;
  kubelet_ = process::Process::spawn(spec);
  write_pid_file(options_.dir + "/kubelet.pid", kubelet_->pid());
}

void RealNode::wait_for_node_registered() {
  auto api = options_.admin_client();
  wait_for(*kubelet_, "kubelet", kubelet_log_, "Node " + name_ + " registered",
           [&](std::string* complaint) {
             auto response = api->get("/api/v1/nodes/" + name_);
             if (response.status == 200) return true;
             *complaint = "Node " + name_ + ": HTTP " + std::to_string(response.status);
             return false;
           });
}

void RealNode::wait_for_node_ready() {
  auto api = options_.admin_client();
  wait_for(*kubelet_, "kubelet", kubelet_log_, "Node " + name_ + " Ready",
           [&](std::string* complaint) {
             auto response = api->get("/api/v1/nodes/" + name_);
             if (response.status != 200) {
               *complaint = "Node " + name_ + ": HTTP " + std::to_string(response.status);
               return false;
             }
             const auto node = nlohmann::json::parse(response.body);
             bool ready = false;
             // A Node without status or spec yet is not ready; never index a missing key.
             const auto status = node.value("status", nlohmann::json::object());
             for (const auto& condition : status.value("conditions", nlohmann::json::array())) {
               if (condition.value("type", "") != "Ready") continue;
               ready = condition.value("status", "") == "True";
               if (!ready) *complaint = "Ready is " + condition.dump();
             }
             if (!ready) return false;
             // No node-lifecycle controller runs here to lift the not-ready taint the
             // TaintNodesByCondition plugin put on at registration: keep only our own taint.
             const auto spec = node.value("spec", nlohmann::json::object());
             const auto taints = spec.value("taints", nlohmann::json::array());
             nlohmann::json kept = nlohmann::json::array();
             for (const auto& taint : taints) {
               if (taint.value("key", "") == kRealNodeTaintKey) kept.push_back(taint);
             }
             if (kept.size() == taints.size()) return true;
             nlohmann::json patch = {{"spec", {{"taints", kept}}}};
             auto patched = api->request("PATCH", "/api/v1/nodes/" + name_, patch.dump(),
                                         "application/merge-patch+json");
             *complaint = "lifting the not-ready taint: HTTP " + std::to_string(patched.status) +
                          ": " + patched.body;
             return false;
           });
}

void RealNode::write_network_policies_credentials() {
  // A user of its own with only what kube-router's firewall reads (and its Events), not the
  // admin's.
  const std::string user = "perimeter:network-policies";
  write_component_kubeconfig(options_, user, "network-policies");

  const auto read_only = nlohmann::json::array({"get", "list", "watch"});
  nlohmann::json role = {{"apiVersion", "rbac.authorization.k8s.io/v1"},
                         {"kind", "ClusterRole"},
                         {"metadata", {{"name", user}}},
                         {"rules",
                          {{{"apiGroups", {""}},
                            {"resources", {"pods", "namespaces", "nodes", "services", "endpoints"}},
                            {"verbs", read_only}},
                           {{"apiGroups", {"discovery.k8s.io"}},
                            {"resources", {"endpointslices"}},
                            {"verbs", read_only}},
                           {{"apiGroups", {"networking.k8s.io"}},
                            {"resources", {"networkpolicies"}},
                            {"verbs", read_only}},
                           {{"apiGroups", {"", "events.k8s.io"}},
                            {"resources", {"events"}},
                            {"verbs", {"create", "patch", "update"}}}}}};
  nlohmann::json binding = {
      {"apiVersion", "rbac.authorization.k8s.io/v1"},
      {"kind", "ClusterRoleBinding"},
      {"metadata", {{"name", user}}},
      {"roleRef",
       {{"apiGroup", "rbac.authorization.k8s.io"}, {"kind", "ClusterRole"}, {"name", user}}},
      {"subjects",
       {{{"apiGroup", "rbac.authorization.k8s.io"}, {"kind", "User"}, {"name", user}}}}};
  auto api = options_.admin_client();
  for (const auto& [path, object] :
       {std::pair{"/apis/rbac.authorization.k8s.io/v1/clusterroles", role},
        std::pair{"/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", binding}}) {
    auto response = api->request("POST", path, object.dump());
    if (response.status != 201 && response.status != 409) {
      throw std::runtime_error("granting " + user + " its role (" + std::string(path) + "): HTTP " +
                               std::to_string(response.status) + ": " + response.body);
    }
  }
}

void RealNode::start_network_policies() {
  process::ProcessSpec spec;
  // Its firewall alone: no routing (the bridge plugin does that), no service proxy, no health
  // or metrics port (their defaults are fixed ports a second node would collide with).
  spec.argv = {options_.tools_dir + "/kube-router",
               "--kubeconfig=" + options_.dir + "/network-policies.kubeconfig",
               "--hostname-override=" + name_,
               "--run-firewall=true",
               "--run-router=false",
               "--run-service-proxy=false",
               "--run-loadbalancer=false",
               "--service-cluster-ip-range=" + options_.service_cluster_ip_range,
               "--health-port=0",
               "--metrics-port=0",
               "--v=1"};
  spec.log_path = network_policies_log_;
  spec.working_dir = options_.dir;
  spec.parent_death_signal = SIGKILL;  // its chains and sets stay: teardown removes them
  network_policies_ = process::Process::spawn(spec);
  write_pid_file(options_.dir + "/kube-router.pid", network_policies_->pid());
}

void RealNode::wait_for_network_policies() {
  const std::string log = options_.dir + "/iptables.log";
  wait_for(*network_policies_, "kube-router", network_policies_log_,
           "its firewall chains hooked into FORWARD, INPUT and OUTPUT",
           [&](std::string* complaint) {
             // Its first full sync, after its caches synced, puts all three jumps in at once.
             auto rules = run_command({"iptables", "-w", "-S"}, log, std::chrono::seconds(10));
             for (const char* chain : {"FORWARD", "INPUT", "OUTPUT"}) {
               const std::string jump = std::string("-A ") + chain + " -m comment --comment";
               const std::string target = std::string("-j KUBE-ROUTER-") + chain;
               bool hooked = false;
               std::istringstream lines(rules.out);
               for (std::string line; std::getline(lines, line);) {
                 if (line.rfind(jump, 0) == 0 && line.find(target) != std::string::npos) {
                   hooked = true;
                 }
               }
               if (!hooked) {
                 *complaint = std::string("no jump to KUBE-ROUTER-") + chain + " yet";
                 return false;
               }
             }
             return true;
           });
}

void RealNode::write_service_proxy_config() {
  // The built-in system:node-proxier role is bound to the user system:kube-proxy: a client
  // certificate with that name is all kube-proxy needs, read-only but for Events.
  const std::string user = "system:kube-proxy";
  write_component_kubeconfig(options_, user, "service-proxy");
  // iptables mode, like kube-router's firewall and the kubelet on this node (one backend for all
  // three: docs/development.md "Services on the real node"). Nothing machine-wide is changed:
  // no conntrack table size or timeouts (0 leaves the kernel's), no route_localnet on every
  // interface (localhostNodePorts off), health and metrics on free loopback ports.
  nlohmann::json config = {
      {"apiVersion", "kubeproxy.config.k8s.io/v1alpha1"},
      {"kind", "KubeProxyConfiguration"},
      {"clientConnection", {{"kubeconfig", options_.dir + "/service-proxy.kubeconfig"}}},
      {"hostnameOverride", name_},
      {"mode", "iptables"},
      {"clusterCIDR", pod_subnet_},
      {"bindAddress", "127.0.0.1"},
      {"healthzBindAddress", "127.0.0.1:" + std::to_string(pick_free_port())},
      {"metricsBindAddress", "127.0.0.1:" + std::to_string(pick_free_port())},
      {"conntrack",
       {{"maxPerCore", 0},
        {"min", 0},
        {"tcpEstablishedTimeout", "0s"},
        {"tcpCloseWaitTimeout", "0s"}}},
      {"iptables", {{"localhostNodePorts", false}, {"minSyncPeriod", "0s"}}},
      // No NodePort listens on the machine's own addresses: only the pod bridge's.
      {"nodePortAddresses", {gateway_ + "/32"}},
  };
  std::ofstream(options_.dir + "/kube-proxy.yaml") << config.dump(2) << "\n";
}

void RealNode::start_service_proxy() {
  process::ProcessSpec spec;
  spec.argv = {options_.tools_dir + "/kube-proxy", "--config=" + options_.dir + "/kube-proxy.yaml",
               "--v=1"};
  spec.log_path = service_proxy_log_;
  spec.working_dir = options_.dir;
  spec.parent_death_signal = SIGKILL;  // its chains stay: teardown removes them
  service_proxy_ = process::Process::spawn(spec);
  write_pid_file(options_.dir + "/kube-proxy.pid", service_proxy_->pid());
}

void RealNode::wait_for_service_proxy() {
  const std::string log = options_.dir + "/iptables.log";
  wait_for(*service_proxy_, "kube-proxy", service_proxy_log_,
           "its first full sync: KUBE-SERVICES hooked into PREROUTING and OUTPUT and ending in "
           "KUBE-NODEPORTS",
           [&](std::string* complaint) {
             // The jumps go in first; the rule that ends KUBE-SERVICES is written by the first
             // full sync, after its Service and EndpointSlice caches synced.
             auto rules =
                 run_command({"iptables", "-w", "-t", "nat", "-S"}, log, std::chrono::seconds(10));
             bool prerouting = false, output = false, synced = false;
             std::istringstream lines(rules.out);
             for (std::string line; std::getline(lines, line);) {
               const bool to_services = line.find("-j KUBE-SERVICES") != std::string::npos;
               if (line.rfind("-A PREROUTING ", 0) == 0 && to_services) prerouting = true;
               if (line.rfind("-A OUTPUT ", 0) == 0 && to_services) output = true;
               if (line.rfind("-A KUBE-SERVICES ", 0) == 0 &&
                   line.find("-j KUBE-NODEPORTS") != std::string::npos) {
                 synced = true;
               }
             }
             if (prerouting && output && synced) return true;
             *complaint = std::string("nat rules: PREROUTING jump ") +
                          (prerouting ? "in" : "not in") + ", OUTPUT jump " +
                          (output ? "in" : "not in") + ", first sync " +
                          (synced ? "done" : "not done");
             return false;
           });
}

void RealNode::remove_ipsets() {
  if (!iptables_recorded_) return;
  // After the chains that match on them are gone; only kube-router's, only those it created.
  const std::set<std::string> before(ipsets_before_.begin(), ipsets_before_.end());
  const std::string log = options_.dir + "/ipset.log";
  for (const auto& name : ipset_names(log)) {
    if (!is_kube_router_ipset(name) || before.count(name) != 0) continue;
    auto destroyed = run_command({"ipset", "destroy", name}, log);
    if (!destroyed.ok) {
      logger_.warn("could not destroy an ip set", {{"set", name}, {"error", destroyed.failure}});
    }
  }
}

void RealNode::route_pods_to_the_node() {
  // The apiserver listens on loopback only; the cluster DNS in a pod must read Services from
  // it. Connections from the node's pods to the bridge's address at the apiserver's port are
  // sent to it: route_localnet on this bridge alone (it goes with the bridge), and a DNAT in a
  // KUBE-* chain of this node's, which teardown removes with the rest. Pods still need
  // credentials: the apiserver authorizes with RBAC.
  //
  // The same for the `kubernetes` Service's address (the first of the service range, port 443),
  // which every pod's in-cluster configuration names (KUBERNETES_SERVICE_HOST, and
  // kubernetes.default.svc through the cluster DNS): the apiserver runs with
  // --endpoint-reconciler-type=none and an endpoint on loopback is not allowed, so kube-proxy has
  // nowhere to send it (its nat chains have no rule for a Service without endpoints, so this
  // DNAT is the one that applies). A NetworkPolicy sees the apiserver's own port, as it would see
  // 6443 on most clusters.
  const int port = url_port(options_.apiserver_url);
  const std::string apiserver = "127.0.0.1:" + std::to_string(port);
  const std::string kubernetes_service = nth_address(options_.service_cluster_ip_range, 1);
  if (kubernetes_service.empty()) {
    throw std::runtime_error("routing the apiserver for pods: the service range " +
                             options_.service_cluster_ip_range + " is not an IPv4 range");
  }
  const std::string chain = "KUBE-PMTR-API-" + id_;
  const std::string log = options_.dir + "/iptables.log";
  std::ofstream("/proc/sys/net/ipv4/conf/" + bridge_ + "/route_localnet") << "1\n";
  for (const auto& argv : std::vector<std::vector<std::string>>{
           {"iptables", "-w", "-t", "nat", "-N", chain},
           {"iptables", "-w", "-t", "nat", "-A", chain, "-d", gateway_ + "/32", "-p", "tcp",
            "--dport", std::to_string(port), "-j", "DNAT", "--to-destination", apiserver},
           {"iptables", "-w", "-t", "nat", "-A", chain, "-d", kubernetes_service + "/32", "-p",
            "tcp", "--dport", "443", "-j", "DNAT", "--to-destination", apiserver},
           {"iptables", "-w", "-t", "nat", "-I", "PREROUTING", "-i", bridge_, "-j", chain}}) {
    if (auto done = run_command(argv, log); !done.ok) {
      throw std::runtime_error("routing the apiserver for pods: " + done.failure);
    }
  }
  // A pod's connection to a ClusterIP that kube-proxy has not translated (the Service is new
  // and its rules are not in yet; or no Service has that address) would follow the host's
  // default route off the machine, and its conntrack entry would keep it untranslated for every
  // retransmission. A routing rule for what comes in on the bridge refuses it at once: routing
  // happens after kube-proxy's DNAT, so a translated packet has its endpoint's address and never
  // matches. (Not a filter rule: kube-router accepts pod traffic at the top of FORWARD.)
  if (auto done = run_command(untranslated_rule("add"), options_.dir + "/ip.log"); !done.ok) {
    throw std::runtime_error("keeping untranslated ClusterIP traffic on the node: " + done.failure);
  }
}

std::vector<std::string> RealNode::untranslated_rule(const std::string& verb) const {
  return {"ip", "rule", verb, "iif", bridge_, "to", options_.service_cluster_ip_range, "prohibit"};
}

void RealNode::deploy_cluster_dns() {
  const std::string name = "coredns";
  fs::create_directories(options_.dir + "/cluster-dns");
  if (!fs::exists(cluster_dns_hosts_file())) std::ofstream(cluster_dns_hosts_file()).flush();
  // Least privilege: a ServiceAccount of its own that may only read what the kubernetes plugin
  // watches (pods are not: `pods disabled`).
  const auto read_only = nlohmann::json::array({"list", "watch"});
  nlohmann::json account = {{"apiVersion", "v1"},
                            {"kind", "ServiceAccount"},
                            {"metadata", {{"name", name}, {"namespace", "kube-system"}}},
                            {"automountServiceAccountToken", false}};
  nlohmann::json role = {
      {"apiVersion", "rbac.authorization.k8s.io/v1"},
      {"kind", "ClusterRole"},
      {"metadata", {{"name", "perimeter:cluster-dns"}}},
      {"rules",
       {{{"apiGroups", {""}}, {"resources", {"services", "namespaces"}}, {"verbs", read_only}},
        {{"apiGroups", {"discovery.k8s.io"}},
         {"resources", {"endpointslices"}},
         {"verbs", read_only}}}}};
  nlohmann::json binding = {
      {"apiVersion", "rbac.authorization.k8s.io/v1"},
      {"kind", "ClusterRoleBinding"},
      {"metadata", {{"name", "perimeter:cluster-dns"}}},
      {"roleRef",
       {{"apiGroup", "rbac.authorization.k8s.io"},
        {"kind", "ClusterRole"},
        {"name", "perimeter:cluster-dns"}}},
      {"subjects", {{{"kind", "ServiceAccount"}, {"name", name}, {"namespace", "kube-system"}}}}};
  // The kubernetes plugin reaches the apiserver at the bridge's address (route_pods_to_the_node)
  // with the ServiceAccount's token; the serving certificate names kubernetes.default.svc.
  const std::string kubeconfig =
      "apiVersion: v1\nkind: Config\nclusters:\n- name: cluster\n  cluster:\n    server: https://" +
      gateway_ + ":" + std::to_string(url_port(options_.apiserver_url)) +
      "\n    certificate-authority: /etc/coredns/ca.crt\n"
      "    tls-server-name: kubernetes.default.svc\n"
      "users:\n- name: coredns\n  user:\n    tokenFile: /var/run/secrets/coredns/token\n"
      "contexts:\n- name: cluster\n  context:\n    cluster: cluster\n    user: coredns\n"
      "current-context: cluster\n";
  // No forward plugin: there is no upstream, and a name neither the hosts file nor the cluster
  // knows gets no address. Port 53 as uid 65532 through the pod's
  // net.ipv4.ip_unprivileged_port_start, a namespaced sysctl: no capability at all.
  const std::string corefile = std::string(".:53 {\n") +
                               "    errors\n"
                               "    ready :8181\n"
                               "    hosts /etc/coredns-hosts/hosts {\n"
                               "        reload 1s\n"
                               "        fallthrough\n"
                               "    }\n"
                               "    kubernetes " +
                               kClusterDomain +
                               " in-addr.arpa ip6.arpa {\n"
                               "        kubeconfig /etc/coredns/kubeconfig cluster\n"
                               "        pods disabled\n"
                               "        fallthrough in-addr.arpa ip6.arpa\n"
                               "    }\n"
                               "}\n";
  nlohmann::json config = {{"apiVersion", "v1"},
                           {"kind", "ConfigMap"},
                           {"metadata", {{"name", name}, {"namespace", "kube-system"}}},
                           {"data",
                            {{"Corefile", corefile},
                             {"kubeconfig", kubeconfig},
                             {"ca.crt", read_file(options_.ca_cert)}}}};
  const nlohmann::json labels = {{"k8s-app", "kube-dns"}};
  nlohmann::json service = {
      {"apiVersion", "v1"},
      {"kind", "Service"},
      {"metadata", {{"name", "kube-dns"}, {"namespace", "kube-system"}, {"labels", labels}}},
      {"spec",
       {{"selector", labels},
        {"clusterIP", cluster_dns_ip_},
        {"ports",
         {{{"name", "dns"}, {"port", 53}, {"targetPort", 53}, {"protocol", "UDP"}},
          {{"name", "dns-tcp"}, {"port", 53}, {"targetPort", 53}, {"protocol", "TCP"}}}}}}};
  nlohmann::json pod_spec = {
      {"serviceAccountName", name},
      {"automountServiceAccountToken", false},
      {"enableServiceLinks", false},
      {"priorityClassName", "system-cluster-critical"},
      // Straight to this node: no scheduler needed.
      {"nodeName", name_},
      {"tolerations",
       {{{"key", kRealNodeTaintKey}, {"operator", "Exists"}, {"effect", "NoSchedule"}}}},
      // Its own answers only: not the node's resolv.conf.
      {"dnsPolicy", "Default"},
      {"securityContext",
       {{"runAsNonRoot", true},
        {"runAsUser", 65532},
        {"runAsGroup", 65532},
        {"seccompProfile", {{"type", "RuntimeDefault"}}},
        {"sysctls", {{{"name", "net.ipv4.ip_unprivileged_port_start"}, {"value", "53"}}}}}},
      {"containers",
       {{{"name", "coredns"},
         {"image", kClusterDnsImage},
         {"imagePullPolicy", "Never"},
         {"args", {"-conf", "/etc/coredns/Corefile"}},
         {"ports",
          {{{"name", "dns"}, {"containerPort", 53}, {"protocol", "UDP"}},
           {{"name", "dns-tcp"}, {"containerPort", 53}, {"protocol", "TCP"}}}},
         {"readinessProbe",
          {{"httpGet", {{"path", "/ready"}, {"port", 8181}}},
           {"periodSeconds", 1},
           {"failureThreshold", 3}}},
         {"resources",
          {{"requests", {{"cpu", "50m"}, {"memory", "32Mi"}}}, {"limits", {{"memory", "128Mi"}}}}},
         {"securityContext",
          {{"allowPrivilegeEscalation", false},
           {"readOnlyRootFilesystem", true},
           {"capabilities", {{"drop", {"ALL"}}}}}},
         {"volumeMounts",
          {{{"name", "config"}, {"mountPath", "/etc/coredns"}, {"readOnly", true}},
           {{"name", "hosts"}, {"mountPath", "/etc/coredns-hosts"}, {"readOnly", true}},
           {{"name", "token"}, {"mountPath", "/var/run/secrets/coredns"}, {"readOnly", true}}}}}}},
      {"volumes",
       {{{"name", "config"}, {"configMap", {{"name", name}}}},
        {{"name", "hosts"},
         {"hostPath", {{"path", options_.dir + "/cluster-dns"}, {"type", "Directory"}}}},
        {{"name", "token"},
         {"projected",
          {{"sources",
            {{{"serviceAccountToken", {{"path", "token"}, {"expirationSeconds", 3600}}}}}}}}}}}};
  nlohmann::json deployment = {
      {"apiVersion", "apps/v1"},
      {"kind", "Deployment"},
      {"metadata", {{"name", name}, {"namespace", "kube-system"}, {"labels", labels}}},
      {"spec",
       {{"replicas", 1},
        {"selector", {{"matchLabels", labels}}},
        {"template", {{"metadata", {{"labels", labels}}}, {"spec", pod_spec}}}}}};
  auto api = options_.admin_client();
  for (const auto& [path, object] :
       {std::pair{"/api/v1/namespaces/kube-system/serviceaccounts", account},
        std::pair{"/apis/rbac.authorization.k8s.io/v1/clusterroles", role},
        std::pair{"/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", binding},
        std::pair{"/api/v1/namespaces/kube-system/configmaps", config},
        std::pair{"/api/v1/namespaces/kube-system/services", service},
        std::pair{"/apis/apps/v1/namespaces/kube-system/deployments", deployment}}) {
    auto response = api->request("POST", path, object.dump());
    if (response.status != 201 && response.status != 409) {
      throw std::runtime_error("deploying the cluster DNS (" + std::string(path) + "): HTTP " +
                               std::to_string(response.status) + ": " + response.body);
    }
  }
}

std::vector<pid_t> RealNode::pids() const {
  std::vector<pid_t> pids;
  if (containerd_) pids.push_back(containerd_->pid());
  if (kubelet_) pids.push_back(kubelet_->pid());
  if (network_policies_) pids.push_back(network_policies_->pid());
  if (service_proxy_) pids.push_back(service_proxy_->pid());
  return pids;
}

nlohmann::json RealNode::describe() const {
  return {{"name", name_},
          {"label", std::string(kRealNodeLabel) + "=true"},
          {"taint", std::string(kRealNodeTaintKey) + "=true:NoSchedule"},
          {"bridge", bridge_},
          {"pod_subnet", pod_subnet_},
          {"gateway", gateway_},
          {"cgroup_root", cgroup_root_},
          {"snapshotter", snapshotter_},
          {"containerd_socket", socket_},
          {"containerd_pid", containerd_ ? containerd_->pid() : 0},
          {"kubelet_pid", kubelet_ ? kubelet_->pid() : 0},
          {"containerd_log", containerd_log_},
          {"kubelet_log", kubelet_log_},
          {"network_policies_pid", network_policies_ ? network_policies_->pid() : 0},
          {"network_policies_log", network_policies_log_},
          {"service_proxy_pid", service_proxy_ ? service_proxy_->pid() : 0},
          {"service_proxy_log", service_proxy_log_},

          {"cluster_dns_ip", cluster_dns_ip_},
          {"cluster_dns_hosts_file", cluster_dns_hosts_file()},
          {"images", images_},
          {"phases", phases_}};
}

std::vector<std::string> RealNode::exited_components() {
  std::vector<std::string> exited;
  if (stopped_) return exited;
  for (auto* process :
       {containerd_.get(), kubelet_.get(), network_policies_.get(), service_proxy_.get()}) {
    if (process && !process->running()) {
      exited.push_back(process->name() + ": " + process->exit_status()->describe());
    }
  }
  return exited;
}

void RealNode::stop() {
  if (stopped_) return;
  stopped_ = true;
  volumes_.reset();  // nothing provisions or removes folders while the node goes
  // The kubelet first, so it does not restart containers while they are killed.
  if (kubelet_) kubelet_->terminate(std::chrono::seconds(10));
  kill_containers();
  // Before its chains go, or its next sync would put them back.
  if (network_policies_) network_policies_->terminate(std::chrono::seconds(5));
  if (service_proxy_) service_proxy_->terminate(std::chrono::seconds(5));
  if (containerd_) containerd_->terminate(std::chrono::seconds(10));
  unmount_all();
  remove_cgroups();
  delete_bridge();
  remove_iptables_chains();
  remove_ipsets();
  remove_host_paths();
  if (auto record = record_path(); !record.empty()) {
    std::error_code ignored;
    fs::remove(record, ignored);
  }
  logger_.info("real node stopped", {{"id", id_}, {"dir", options_.dir}});
}

void RealNode::kill_containers() {
  if (socket_.empty()) return;
  // Containers (pause included) live in our cgroup subtree; their shims do not (they stay in
  // containerd's cgroup, in process groups of their own).
  const auto deadline = SteadyClock::now() + std::chrono::seconds(15);
  while (SteadyClock::now() < deadline) {
    int signalled = 0;
    for (const auto& hierarchy : cgroup_hierarchies()) {
      const fs::path top = hierarchy + cgroup_root_;
      std::error_code error;
      if (!fs::is_directory(top, error)) continue;
      std::vector<fs::path> groups = {top};
      for (const auto& entry : fs::recursive_directory_iterator(top, error)) {
        if (entry.is_directory()) groups.push_back(entry.path());
      }
      for (const auto& group : groups) {
        std::ifstream procs(group / "cgroup.procs");
        for (pid_t pid = 0; procs >> pid;) {
          if (::kill(pid, SIGKILL) == 0) ++signalled;
        }
      }
    }
    if (signalled == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  for (const auto& shim : find_shims(socket_)) {
    const pid_t group = ::getpgid(shim.pid);
    if (group == shim.pid) {
      ::kill(-group, SIGKILL);
    } else {
      ::kill(shim.pid, SIGKILL);
    }
    if (!shim.id.empty()) ::unlink(shim_socket_path(socket_, shim.id).c_str());
  }
  // Shims are not our children: wait for them to be gone so their mounts can be released.
  for (int i = 0; i < 100 && !find_shims(socket_).empty(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

void RealNode::unmount_all() {
  const std::string dir = fs::weakly_canonical(options_.dir).string();
  // Deepest first; a few rounds because unmounting one may reveal another under it.
  for (int round = 0; round < 5; ++round) {
    std::vector<std::string> ours;
    for (const auto& point : mount_points()) {
      if (is_under(point, dir)) ours.push_back(point);
    }
    if (ours.empty()) return;
    std::sort(ours.begin(), ours.end(),
              [](const std::string& a, const std::string& b) { return a.size() > b.size(); });
    for (const auto& point : ours) {
      if (::umount2(point.c_str(), MNT_DETACH) != 0 && errno != EINVAL && errno != ENOENT) {
        logger_.warn("could not unmount", {{"path", point}, {"error", errno_text(errno)}});
      }
    }
  }
}

void RealNode::remove_cgroups() {
  if (cgroup_root_.empty()) return;
  for (const auto& hierarchy : cgroup_hierarchies()) {
    const fs::path top = hierarchy + cgroup_root_;
    std::error_code error;
    if (!fs::is_directory(top, error)) continue;
    std::vector<fs::path> groups;
    for (const auto& entry : fs::recursive_directory_iterator(top, error)) {
      if (entry.is_directory()) groups.push_back(entry.path());
    }
    // Children before parents; cgroup folders go with rmdir, not by removing their files.
    std::sort(groups.begin(), groups.end(), [](const fs::path& a, const fs::path& b) {
      return a.string().size() > b.string().size();
    });
    groups.push_back(top);
    for (const auto& group : groups) {
      if (::rmdir(group.c_str()) != 0 && errno != ENOENT) {
        logger_.warn("could not remove cgroup",
                     {{"path", group.string()}, {"error", errno_text(errno)}});
      }
    }
  }
}

void RealNode::create_bridge() {
  // Made here rather than by the CNI plugin at the first pod, so the host side has the gateway
  // address from the start: what pods must reach on the host (the local simulator of `make run`)
  // can listen there before any pod exists. The bridge plugin adopts it as it is.
  //
  // Its MAC address is set explicitly. A bridge left to choose takes the lowest MAC of its
  // ports, so it changed whenever a pod's veth came or went, and a running pod that had cached
  // the old gateway MAC sent into the void: its new connections timed out until its ARP entry
  // expired, about a minute. A set address is one the kernel never changes.
  std::random_device device;
  std::array<unsigned, 6> octets{};
  for (unsigned& octet : octets) octet = device() % 256;
  octets[0] = (octets[0] & 0xfcU) | 0x02U;  // locally administered, unicast
  char mac[18];
  std::snprintf(mac, sizeof(mac), "%02x:%02x:%02x:%02x:%02x:%02x", octets[0], octets[1], octets[2],
                octets[3], octets[4], octets[5]);
  const std::string log = options_.dir + "/ip.log";
  const std::string prefix = pod_subnet_.substr(pod_subnet_.find('/'));
  for (const auto& argv : std::vector<std::vector<std::string>>{
           {"ip", "link", "add", bridge_, "address", mac, "type", "bridge"},
           {"ip", "addr", "add", gateway_ + prefix, "dev", bridge_},
           {"ip", "link", "set", bridge_, "up"}}) {
    if (auto done = run_command(argv, log); !done.ok) {
      throw std::runtime_error("creating the pod bridge " + bridge_ + ": " + done.failure);
    }
  }
}

void RealNode::delete_bridge() {
  if (!bridge_.empty() && !options_.service_cluster_ip_range.empty()) {
    // Only this rule (its bridge, range and type): a test's own rules on the bridge stay.
    const std::string listed =
        run_command({"ip", "rule", "show", "iif", bridge_}, options_.dir + "/ip.log").out;
    if (listed.find("prohibit") != std::string::npos) {
      run_command(untranslated_rule("del"), options_.dir + "/ip.log");
    }
  }
  if (bridge_.empty() || !fs::exists("/sys/class/net/" + bridge_)) return;
  auto deleted = run_command({"ip", "link", "delete", bridge_}, options_.dir + "/ip.log");
  if (!deleted.ok) logger_.warn("could not delete the bridge", {{"error", deleted.failure}});
}

void RealNode::remove_iptables_chains() {
  if (!iptables_recorded_) return;
  const std::set<std::string> before(chains_before_.begin(), chains_before_.end());
  const std::string log = options_.dir + "/iptables.log";
  for (const char* binary : {"iptables", "ip6tables"}) {
    if (process::find_executable(binary).empty()) continue;
    for (const auto& chain : iptables_chains(binary, log)) {
      // Only the kubelet's, kube-router's and kube-proxy's chains (KUBE-*), and only those made
      // since the node started.
      const auto slash = chain.find('/');
      const std::string table = chain.substr(0, slash), name = chain.substr(slash + 1);
      if (name.rfind("KUBE-", 0) != 0 || before.count(std::string(binary) + ":" + chain)) continue;
      // A chain goes only once no rule jumps to it (KUBE-FIREWALL is hooked into INPUT/OUTPUT).
      auto rules = run_command({binary, "-w", "-t", table, "-S"}, log);
      std::istringstream lines(rules.out);
      for (std::string line; std::getline(lines, line);) {
        auto words = split_rule(line);
        if (words.size() < 3 || words[0] != "-A") continue;
        auto jump = std::find(words.begin(), words.end(), "-j");
        if (jump == words.end() || jump + 1 == words.end() || *(jump + 1) != name) continue;
        words[0] = "-D";
        words.insert(words.begin(), {binary, "-w", "-t", table});
        run_command(words, log);
      }
      run_command({binary, "-w", "-t", table, "-F", name}, log);
      auto removed = run_command({binary, "-w", "-t", table, "-X", name}, log);
      if (!removed.ok) {
        logger_.warn("could not remove an iptables chain",
                     {{"chain", chain}, {"error", removed.failure}});
      }
    }
  }
}

}  // namespace perimeter::localcluster
