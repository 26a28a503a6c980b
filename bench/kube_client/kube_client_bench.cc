// Benchmark: the CPU one Kubernetes API request costs the operator's client, against curl.
//
// The operator's claims are bounded by its requests (docs/operator.md: seven per session, about
// 0.17 ms of CPU each with TLS): this measures one request alone. A real kube-apiserver is started
// on loopback; `kube::ResourceClient` over `kube::HttpTransport` (the operator's client: Beast over
// OpenSSL, I/O on the calling thread, kept-alive connections) makes N requests of each kind one
// after the other, and the calling thread's CPU time is divided by N. The peer is curl (libcurl
// over OpenSSL) making the same requests over one kept-alive connection; its process CPU is taken
// from two runs of different lengths and their difference divided by the requests between them,
// so its start and TLS handshake are not counted. Only the client's CPU is counted, never the
// apiserver's.
//
//   PERIMETER_TOOLS_BIN=~/.cache/perimeter/tools/bin build/bin/kube_client_bench [--requests N]
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cluster/local_cluster.h"
#include "kube/client_metrics.h"
#include "kube/config.h"
#include "kube/http_transport.h"
#include "kube/resource_client.h"

namespace {

using nlohmann::json;
using namespace perimeter;

double thread_cpu_us() {
  timespec now{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now);
  return now.tv_sec * 1e6 + now.tv_nsec / 1e3;
}

double children_cpu_us() {
  rusage usage{};
  getrusage(RUSAGE_CHILDREN, &usage);
  return (usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) * 1e6 + usage.ru_utime.tv_usec +
         usage.ru_stime.tv_usec;
}

// What a claim writes: a small Secret (a generated name, so that curl can post the same body).
json secret() {
  return {{"apiVersion", "v1"},
          {"kind", "Secret"},
          {"metadata", {{"generateName", "bench-"}, {"labels", {{"bench", "kube-client"}}}}},
          {"type", "Opaque"},
          {"stringData",
           {{"work-secret", std::string(64, 'x')}, {"session-id", "sesn_0123456789abcdef"}}}};
}

// curl's CPU for one run of the given arguments (its own config file, so no argv limit).
double curl_cpu_us(const std::vector<std::string>& config_lines, const std::string& dir) {
  const std::string config_path = dir + "/curl.config";
  {
    std::ofstream config(config_path);
    for (const auto& line : config_lines) config << line << "\n";
  }
  const double before = children_cpu_us();
  const pid_t child = fork();
  if (child == 0) {
    execlp("curl", "curl", "--silent", "--show-error", "--fail", "--config", config_path.c_str(),
           static_cast<char*>(nullptr));
    _exit(127);
  }
  int status = 0;
  waitpid(child, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    throw std::runtime_error("curl failed (exit " + std::to_string(WEXITSTATUS(status)) + ")");
  }
  return children_cpu_us() - before;
}

struct Figures {
  double ours_us = 0;
  double curl_us = 0;
};

}  // namespace

int main(int argc, char** argv) {
  int requests = 2000;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--requests" && i + 1 < argc) {
      requests = std::max(100, std::atoi(argv[++i]));
    } else {
      std::cerr << "usage: kube_client_bench [--requests N]\n";
      return 2;
    }
  }
  try {
    auto cluster = testing::LocalCluster::start({});
    auto config = kube::Config::from_kubeconfig_file(cluster->kubeconfig_path());
    config.qps = 0;  // the client's CPU, not its limiter's waits
    kube::HttpTransport transport(config);
    prometheus::Registry registry;
    kube::ClientMetrics client_metrics(registry);
    kube::ResourceClient config_maps(transport, kube::resources::config_maps(), client_metrics);
    kube::ResourceClient secrets(transport, kube::resources::secrets(), client_metrics);
    const std::string ns = "default";
    config_maps.create(ns, {{"apiVersion", "v1"},
                            {"kind", "ConfigMap"},
                            {"metadata", {{"name", "bench"}}},
                            {"data", {{"key", std::string(512, 'v')}}}});
    config_maps.get(ns, "bench");  // the connection is open before the clock starts

    Figures get_figures, write_figures;
    double start = thread_cpu_us();
    for (int i = 0; i < requests; ++i) config_maps.get(ns, "bench");
    get_figures.ours_us = (thread_cpu_us() - start) / requests;
    const json body = secret();
    start = thread_cpu_us();
    for (int i = 0; i < requests; ++i) secrets.create(ns, body);
    write_figures.ours_us = (thread_cpu_us() - start) / requests;

    // curl: the same requests over one connection (a URL range, so its options are read once), two
    // lengths, the difference. The query parameter only numbers the requests; the apiserver
    // ignores it.
    const std::string base = cluster->apiserver_url() + "/api/v1/namespaces/" + ns;
    const std::vector<std::string> options = {
        "cacert = \"" + cluster->ca_file() + "\"", "cert = \"" + cluster->client_cert_file() + "\"",
        "key = \"" + cluster->client_key_file() + "\"", "output = \"/dev/null\""};
    auto get_run = [&](int n) {
      std::vector<std::string> lines = options;
      lines.push_back("url = \"" + base + "/configmaps/bench?n=[1-" + std::to_string(n) + "]\"");
      return curl_cpu_us(lines, cluster->dir());
    };
    auto post_run = [&](int n) {
      std::vector<std::string> lines = options;
      lines.push_back("header = \"Content-Type: application/json\"");
      lines.push_back("data = " + json(body.dump()).dump());
      lines.push_back("url = \"" + base + "/secrets?n=[1-" + std::to_string(n) + "]\"");
      return curl_cpu_us(lines, cluster->dir());
    };
    const int short_run = requests / 5;
    get_figures.curl_us = (get_run(requests) - get_run(short_run)) / (requests - short_run);
    write_figures.curl_us = (post_run(requests) - post_run(short_run)) / (requests - short_run);

    auto print = [&](const char* kind, const Figures& f) {
      std::cout << json{{"bench", "kube_client"},
                        {"requests", kind},
                        {"count", requests},
                        {"ours_cpu_us_per_request", f.ours_us},
                        {"curl_cpu_us_per_request", f.curl_us},
                        {"ours_over_curl", f.ours_us / f.curl_us}}
                       .dump()
                << "\n";
    };
    print("get configmap", get_figures);
    print("create secret", write_figures);
    std::cout << std::fixed << std::setprecision(1) << "client CPU per request (" << requests
              << " of each):\n  GET configmap:          ours " << get_figures.ours_us
              << " us, curl " << get_figures.curl_us << " us (" << std::setprecision(2)
              << get_figures.ours_us / get_figures.curl_us << "x)\n"
              << std::setprecision(1) << "  POST secret:            ours " << write_figures.ours_us
              << " us, curl " << write_figures.curl_us << " us (" << std::setprecision(2)
              << write_figures.ours_us / write_figures.curl_us << "x)\n";
  } catch (const std::exception& e) {
    std::cerr << "kube_client_bench: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
