// egress_gateway_bench: what perimeter-egress-gateway costs a connection, against going direct
// to the same TLS server in the same run. Prints one JSON line per figure, then a summary.

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "egressgateway/gateway_process.h"
#include "egressgateway/tls_peers.h"

namespace {

using namespace perimeter::testing;
using Clock = std::chrono::steady_clock;

constexpr const char* kUpstreamAddress = "127.0.0.2";
constexpr const char* kUpstreamName = "bench.test";

struct Options {
  int connections = 300;
  int download_mb = 100;
  int download_runs = 3;
  int tunnels = 1000;
  std::string bin_dir = PERIMETER_DEFAULT_BIN_DIR;
};

double percentile(std::vector<double> values, double p) {
  std::sort(values.begin(), values.end());
  const auto index = static_cast<std::size_t>(p * static_cast<double>(values.size() - 1));
  return values[index];
}

void print(const nlohmann::json& line) {
  std::cout << line.dump() << std::endl;
}

// One connection: (CONNECT through the gateway, or none), TLS handshake, PING -> PONG.
double one_exchange(const GatewayProcess* gateway, const TlsStandIn& upstream, const TestCa& ca) {
  const auto started = Clock::now();
  std::unique_ptr<ProxiedTlsClient> client;
  if (gateway != nullptr) {
    client = std::make_unique<ProxiedTlsClient>(gateway->proxy_host(), gateway->proxy_port());
    const auto reply =
        client->connect(std::string(kUpstreamName) + ":" + std::to_string(upstream.port()),
                        gateway->credential("bench", "agents", "s"));
    if (reply.status != 200) throw std::runtime_error("CONNECT answered " + reply.head);
  } else {
    client = std::make_unique<ProxiedTlsClient>(kUpstreamAddress, upstream.port());
  }
  std::string error;
  if (!client->handshake(kUpstreamName, ca.pem(), kUpstreamName, &error)) {
    throw std::runtime_error("handshake: " + error);
  }
  client->write("PING\n");
  if (client->read_to_end() != "PONG\n") throw std::runtime_error("no PONG");
  return std::chrono::duration<double, std::milli>(Clock::now() - started).count();
}

double one_download(const GatewayProcess* gateway, const TlsStandIn& upstream, const TestCa& ca,
                    std::uint64_t bytes) {
  std::unique_ptr<ProxiedTlsClient> client;
  if (gateway != nullptr) {
    client = std::make_unique<ProxiedTlsClient>(gateway->proxy_host(), gateway->proxy_port());
    const auto reply =
        client->connect(std::string(kUpstreamName) + ":" + std::to_string(upstream.port()),
                        gateway->credential("bench", "agents", "d"));
    if (reply.status != 200) throw std::runtime_error("CONNECT answered " + reply.head);
  } else {
    client = std::make_unique<ProxiedTlsClient>(kUpstreamAddress, upstream.port());
  }
  std::string error;
  if (!client->handshake(kUpstreamName, ca.pem(), kUpstreamName, &error)) {
    throw std::runtime_error("handshake: " + error);
  }
  const auto started = Clock::now();
  client->write("SEND " + std::to_string(bytes) + "\n");
  const auto received = client->read_to_end().size();
  const double seconds = std::chrono::duration<double>(Clock::now() - started).count();
  if (received != bytes) throw std::runtime_error("download cut short");
  return static_cast<double>(bytes) / seconds / 1e6;  // MB/s
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto next = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
    if (arg == "--connections")
      options.connections = std::stoi(next());
    else if (arg == "--download-mb")
      options.download_mb = std::stoi(next());
    else if (arg == "--download-runs")
      options.download_runs = std::stoi(next());
    else if (arg == "--tunnels")
      options.tunnels = std::stoi(next());
    else if (arg == "--bin-dir")
      options.bin_dir = next();
    else {
      std::cout << "usage: egress_gateway_bench [--connections N] [--download-mb MB] "
                   "[--download-runs N] [--tunnels N] [--bin-dir DIR]\n"
                   "Root (a private /etc/hosts). Prints JSON lines and a summary.\n";
      return arg == "--help" ? 0 : 2;
    }
  }
  if (geteuid() != 0) {
    std::cerr << "egress_gateway_bench: needs root (the gateway's private /etc/hosts)\n";
    return 1;
  }
  // Each idle tunnel holds a descriptor here, two in the gateway and one in the stand-in.
  rlimit files{};
  getrlimit(RLIMIT_NOFILE, &files);
  files.rlim_cur = std::min<rlim_t>(files.rlim_max, 65536);
  setrlimit(RLIMIT_NOFILE, &files);

  TestCa ca;
  const auto identity = ca.issue({kUpstreamName});
  TlsStandIn upstream(kUpstreamAddress, identity.first, identity.second);
  const std::string hosts = std::filesystem::temp_directory_path() /
                            ("perimeter-egress-bench-hosts-" + std::to_string(getpid()));
  std::ofstream(hosts) << "127.0.0.1 localhost\n"
                       << kUpstreamAddress << " " << kUpstreamName << "\n";
  GatewayProcessOptions gateway_options;
  gateway_options.hosts_file = hosts;
  gateway_options.threads = 2;
  GatewayProcess gateway(
      "listen: 127.0.0.1:0\n"
      "testing_allow_loopback_upstreams: true\n"
      "max_connections: 8192\n"
      "environments:\n"
      "  - name: bench/agents\n"
      "    allow:\n"
      "      - {host: " +
          std::string(kUpstreamName) + ", ports: [" + std::to_string(upstream.port()) + "]}\n",
      gateway_options, options.bin_dir + "/perimeter-egress-gateway");
  // The audit goes to a file, as in a pod whose stdout the runtime writes to disk.

  // 1. Latency: alternate direct and through the gateway, after a warm-up of each.
  one_exchange(nullptr, upstream, ca);
  one_exchange(&gateway, upstream, ca);
  std::vector<double> direct;
  std::vector<double> proxied;
  for (int i = 0; i < options.connections; ++i) {
    direct.push_back(one_exchange(nullptr, upstream, ca));
    proxied.push_back(one_exchange(&gateway, upstream, ca));
  }
  const double direct_p50 = percentile(direct, 0.5);
  const double proxied_p50 = percentile(proxied, 0.5);
  const double direct_p90 = percentile(direct, 0.9);
  const double proxied_p90 = percentile(proxied, 0.9);
  print({{"figure", "connection_ms"},
         {"path", "direct"},
         {"p50", direct_p50},
         {"p90", direct_p90},
         {"n", options.connections}});
  print({{"figure", "connection_ms"},
         {"path", "gateway"},
         {"p50", proxied_p50},
         {"p90", proxied_p90},
         {"n", options.connections}});

  // 2. Throughput of one download, alternated, best of the runs each way.
  const std::uint64_t bytes = static_cast<std::uint64_t>(options.download_mb) * 1000 * 1000;
  double direct_mbps = 0;
  double proxied_mbps = 0;
  for (int run = 0; run < options.download_runs; ++run) {
    direct_mbps = std::max(direct_mbps, one_download(nullptr, upstream, ca, bytes));
    proxied_mbps = std::max(proxied_mbps, one_download(&gateway, upstream, ca, bytes));
  }
  print({{"figure", "download_MBps"},
         {"path", "direct"},
         {"best_of", options.download_runs},
         {"MBps", direct_mbps},
         {"MB", options.download_mb}});
  print({{"figure", "download_MBps"},
         {"path", "gateway"},
         {"best_of", options.download_runs},
         {"MBps", proxied_mbps},
         {"MB", options.download_mb}});

  // 3. Memory per open, idle tunnel (after its TLS handshake).
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const long rss_before = gateway.rss_kib();
  std::vector<std::unique_ptr<ProxiedTlsClient>> tunnels;
  for (int i = 0; i < options.tunnels; ++i) {
    auto client = std::make_unique<ProxiedTlsClient>(gateway.proxy_host(), gateway.proxy_port());
    const auto reply =
        client->connect(std::string(kUpstreamName) + ":" + std::to_string(upstream.port()),
                        gateway.credential("bench", "agents", "idle-" + std::to_string(i)));
    std::string error;
    if (reply.status != 200 || !client->handshake(kUpstreamName, ca.pem(), kUpstreamName, &error)) {
      std::cerr << "tunnel " << i << " failed: " << reply.head << error << "\n";
      return 1;
    }
    tunnels.push_back(std::move(client));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const long rss_after = gateway.rss_kib();
  const double per_tunnel_kib = static_cast<double>(rss_after - rss_before) / options.tunnels;
  print({{"figure", "idle_tunnels_rss"},
         {"tunnels", options.tunnels},
         {"rss_before_kib", rss_before},
         {"rss_after_kib", rss_after},
         {"per_tunnel_kib", per_tunnel_kib}});
  tunnels.clear();

  std::printf(
      "\nperimeter-egress-gateway vs direct, same TLS server on loopback, same run\n"
      "  connection (CONNECT + TLS handshake + PING/PONG), %d each, alternated:\n"
      "    direct  p50 %.3f ms  p90 %.3f ms\n"
      "    gateway p50 %.3f ms  p90 %.3f ms\n"
      "    added p50 %.3f ms; ratio gateway/direct p50 %.2f\n"
      "  %d MB download, best of %d: direct %.0f MB/s, gateway %.0f MB/s; ratio %.2f\n"
      "  %d idle tunnels: gateway RSS %ld -> %ld KiB, %.1f KiB per tunnel\n",
      options.connections, direct_p50, direct_p90, proxied_p50, proxied_p90,
      proxied_p50 - direct_p50, proxied_p50 / direct_p50, options.download_mb,
      options.download_runs, direct_mbps, proxied_mbps, proxied_mbps / direct_mbps, options.tunnels,
      rss_before, rss_after, per_tunnel_kib);
  std::filesystem::remove(hosts);
  return 0;
}
