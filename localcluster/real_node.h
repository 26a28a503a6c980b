#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "core/log.h"
#include "localcluster/http_client.h"
#include "localcluster/local_volumes.h"
#include "localcluster/machine_lock.h"
#include "process/process.h"

namespace perimeter::localcluster {

// The label and taint every real node carries, so tests (and the runner pods of `make run`) can
// target it, and nothing else lands on it by accident next to KWOK's fake nodes.
inline constexpr const char* kRealNodeLabel = "perimeter.dev/real-node";
inline constexpr const char* kRealNodeTaintKey = "perimeter.dev/real-node";
// Built by hack/images/build-images.sh and imported into the node's containerd.
inline constexpr const char* kPauseImage = "localhost/perimeter/pause:1";
inline constexpr const char* kImageNamePrefix = "localhost/perimeter/";
// The node's cluster DNS: CoreDNS (hack/images/coredns/build-image.sh) in kube-system, behind
// the kube-dns Service at the tenth address of the service range, which the kubelet gives pods
// as their nameserver.
inline constexpr const char* kClusterDnsImage = "localhost/perimeter/coredns:1";
inline constexpr const char* kClusterDomain = "cluster.local";

struct RealNodeOptions {
  std::string dir;         // an empty folder of the cluster's: config, state, sockets, logs
  std::string logs_dir;    // where containerd.log and kubelet.log go
  std::string tools_dir;   // where kubelet is (see tools.h)
  std::string images_dir;  // OCI archives to import: pause.tar is required
  std::vector<std::string> extra_images;  // more OCI archives to import (the runner image)
  std::string apiserver_url;
  std::string ca_cert;  // the cluster CA: signs the kubelet's client certificate and
  std::string ca_key;   // verifies the apiserver's client certificate at the kubelet
  std::chrono::seconds start_timeout{120};
  std::function<bool()> abort_requested;
  // An admin client for the apiserver (RBAC for the kubelet, Node readiness).
  std::function<std::unique_ptr<HttpClient>()> admin_client;
  // The apiserver's --service-cluster-ip-range (kube-router's firewall wants it).
  std::string service_cluster_ip_range;
  // Where each running node records what teardown needs (outside its cluster folder), so a
  // node whose supervisor was SIGKILLed is torn down by the next start. Empty: no records.
  std::string records_dir;
  // Held from before the start until the node is torn down: two real nodes on one machine would
  // share the host's iptables (two service proxies, two NetworkPolicy enforcers), so a second
  // one (another test run, `make run`) waits for the first to stop, up to `machine_lock_wait`.
  std::string machine_lock = "/run/lock/perimeter-real-node.lock";
  std::chrono::seconds machine_lock_wait{std::chrono::minutes(20)};
};

// Where the node's image archives are: $PERIMETER_IMAGES_DIR, else ~/.cache/perimeter/images
// (what hack/images/build-images.sh fills).
std::string images_dir();

// Everything the node needs from this machine that is not there, one line each naming it
// ("binary runc not found on PATH (Debian package runc)"). Empty when the node can start.
std::vector<std::string> missing_node_prerequisites(const RealNodeOptions& options);

// A real kubelet on a containerd of its own, with CNI bridge networking, registered with the
// local apiserver: pods scheduled to it really run (runc, overlayfs, a locally built pause
// image). Everything it makes lives under `dir`, in a cgroup subtree and a bridge of unique
// names; destroying it kills every process it started (containerd's shims and containers
// included), unmounts what they mounted, and deletes the bridge, the cgroups, the iptables
// chains and ip sets the kubelet, the node's NetworkPolicy enforcer (kube-router's firewall,
// docs/development.md "NetworkPolicy on the real node") and its service proxy (kube-proxy,
// "Services on the real node") added.
class RealNode {
 public:
  // Checks the prerequisites, starts containerd, imports the images, starts the kubelet and
  // waits until the Node is Ready. Throws std::runtime_error naming what is missing or what did
  // not come up (with the tail of its log).
  static std::unique_ptr<RealNode> start(const RealNodeOptions& options, Logger logger);

  ~RealNode();
  RealNode(const RealNode&) = delete;
  RealNode& operator=(const RealNode&) = delete;

  const std::string& name() const { return name_; }
  std::vector<pid_t> pids() const;
  // The kube-dns Service's ClusterIP, the pods' nameserver.
  const std::string& cluster_dns_ip() const { return cluster_dns_ip_; }
  // A hosts file (one "address name..." line each) the cluster DNS answers from, ahead of its
  // kubernetes zone, re-read within a second of a change: names of stand-in hosts a test or a
  // local run wants pods to resolve. Replace it whole (write beside, rename).
  std::string cluster_dns_hosts_file() const { return options_.dir + "/cluster-dns/hosts"; }

  // Name, bridge, pod subnet, containerd socket, imported images, start phases (JSON).
  nlohmann::json describe() const;
  // Components that have exited although nobody stopped them.
  std::vector<std::string> exited_components();

  // Stops the kubelet, every container and containerd, then removes what they left. Idempotent.
  void stop();

  // Tears down every node recorded in `records_dir` whose supervisor is gone (SIGKILLed): its
  // containers and shims, mounts, cgroups, bridge, iptables chains and cluster folder. Returns
  // the ids it reaped. RealNode::start calls it first.
  static std::vector<std::string> reap_orphaned_nodes(const std::string& records_dir,
                                                      const Logger& logger);

 private:
  RealNode(RealNodeOptions options, Logger logger, std::optional<MachineLock> machine_lock);
  void start_all();
  void write_kubelet_credentials();
  void write_containerd_config();
  void write_cni_config();
  void start_containerd();
  void import_images();
  void grant_node_role();
  void make_cgroup_root();
  void start_kubelet();
  void wait_for_node_registered();
  void wait_for_node_ready();
  void write_network_policies_credentials();
  void start_network_policies();
  void wait_for_network_policies();
  void remove_ipsets();
  void write_service_proxy_config();
  void start_service_proxy();
  void wait_for_service_proxy();
  void route_pods_to_the_node();
  // `ip rule <verb>` of the rule that refuses untranslated service-range traffic from pods.
  std::vector<std::string> untranslated_rule(const std::string& verb) const;
  void deploy_cluster_dns();
  void wait_for(process::Process& process, const std::string& component,
                const std::string& log_path, const std::string& what,
                const std::function<bool(std::string*)>& probe);
  void remember_iptables_chains();
  std::string record_path() const;
  void write_record() const;
  void remember_host_paths();
  void remove_host_paths();

  void kill_containers();
  void unmount_all();
  void remove_cgroups();
  void create_bridge();
  void delete_bridge();
  void remove_iptables_chains();

  // First: released last, once the destructor's stop() has removed everything. None for an
  // orphan being reaped (the reaping node holds it).
  std::optional<MachineLock> machine_lock_;
  RealNodeOptions options_;
  Logger logger_;
  std::string name_;         // 127.0.0.1 (see start_all)
  std::string id_;           // 8 hex digits, shared by the bridge and the cgroup root
  std::string bridge_;       // pmtr<id>
  std::string pod_subnet_;   // 10.<a>.<b>.0/24
  std::string gateway_;      // 10.<a>.<b>.1, the host's address on the bridge
  std::string cgroup_root_;  // /perimeter-<id>
  std::string snapshotter_;  // overlayfs, or native without overlay
  std::string socket_;
  std::string containerd_log_, kubelet_log_;
  std::unique_ptr<process::Process> containerd_, kubelet_;
  // kube-router with only its firewall on: the node's NetworkPolicy enforcer.
  std::unique_ptr<process::Process> network_policies_;
  std::string network_policies_log_;
  // kube-proxy in iptables mode: the node's service proxy (ClusterIPs reach their endpoints).
  std::unique_ptr<process::Process> service_proxy_;
  std::string service_proxy_log_;
  std::string cluster_dns_ip_;
  // The node's storage: host folders for PersistentVolumeClaims (local_volumes.h).
  std::unique_ptr<LocalVolumeRunner> volumes_;
  std::vector<std::string> images_;
  // iptables chains that existed before the kubelet started ("table/chain"), per binary.
  std::vector<std::string> chains_before_;
  bool iptables_recorded_ = false;
  std::vector<std::string> ipsets_before_;       // ip sets that existed before the node started
  std::vector<std::string> created_host_paths_;  // outside `dir`, made by the kubelet
  nlohmann::json phases_ = nlohmann::json::object();
  bool stopped_ = false;
};

}  // namespace perimeter::localcluster
