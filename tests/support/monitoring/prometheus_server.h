#pragma once

#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

namespace perimeter::process {
class Process;
}

namespace perimeter::testing {

// Debian's prometheus package; a test that needs them fails, naming what installs them
// (missing_prometheus_tools()).
inline constexpr const char* kPrometheus = "/usr/bin/prometheus";
inline constexpr const char* kPromtool = "/usr/bin/promtool";

// "" when both binaries are there; otherwise which is missing and what installs it.
std::string missing_prometheus_tools();

// `text` percent-encoded for a URL's query (RFC 3986 unreserved characters kept).
std::string percent_encode(const std::string& text);

// A real Prometheus server scraping one target ("host:port", path /metrics) as `job` every
// second, on a free loopback port, its configuration and TSDB in a temporary directory of its
// own. Destruction stops it on every path out of a test: the process first (SIGTERM to its group,
// SIGKILL after a grace period), then the directory.
class PrometheusServer {
 public:
  PrometheusServer(const std::string& job, const std::string& target);
  ~PrometheusServer();
  PrometheusServer(const PrometheusServer&) = delete;
  PrometheusServer& operator=(const PrometheusServer&) = delete;

  bool running();
  std::string log() const;

  // A GET on its HTTP API; nullopt while it does not answer 200 with status "success".
  std::optional<nlohmann::json> api(const std::string& path_and_query) const;
  // The value of an instant query whose result is one sample; nullopt otherwise.
  std::optional<double> query(const std::string& promql) const;
  // Every sample of an instant query's vector, keyed by its labels; nullopt when the query
  // fails or is not a vector.
  std::optional<std::map<std::map<std::string, std::string>, double>> query_vector(
      const std::string& promql) const;

 private:
  std::string dir_;
  std::string address_;  // 127.0.0.1:PORT
  std::unique_ptr<process::Process> process_;
};

// promtool's linter (`promtool check metrics`) on a text exposition as scraped: counters end in
// _total, units are base units spelled out, every family has its HELP.
struct MetricsLint {
  int exit_code = -1;
  std::string output;  // promtool's findings, empty when none
};
MetricsLint promtool_check_metrics(const std::string& exposition);

// The body of GET http://<address><target> ("" when it cannot be read): a scrape, as
// Prometheus makes it.
std::string http_get_body(const std::string& address, const std::string& target);

}  // namespace perimeter::testing
