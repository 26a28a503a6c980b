#include "monitoring/prometheus_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <system_error>

#include "process/process.h"

namespace perimeter::testing {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
using nlohmann::json;

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// A loopback port free now (bound, read, released): Prometheus takes no port 0.
int free_loopback_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw std::system_error(errno, std::generic_category(), "socket");
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t size = sizeof(address);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &size) != 0) {
    const int err = errno;
    ::close(fd);
    throw std::system_error(err, std::generic_category(), "binding a free port on 127.0.0.1");
  }
  ::close(fd);
  return ntohs(address.sin_port);
}

// One GET; nullopt when there is no answer at all.
std::optional<std::pair<int, std::string>> get(const std::string& address,
                                               const std::string& target) {
  try {
    const auto colon = address.rfind(':');
    boost::asio::io_context io;
    boost::asio::ip::tcp::resolver resolver(io);
    beast::tcp_stream stream(io);
    stream.expires_after(std::chrono::seconds(10));
    stream.connect(resolver.resolve(address.substr(0, colon), address.substr(colon + 1)));
    http::request<http::empty_body> request{http::verb::get, target, 11};
    request.set(http::field::host, address);
    http::write(stream, request);
    beast::flat_buffer buffer;
    http::response<http::string_body> response;
    http::read(stream, buffer, response);
    beast::error_code ignored;
    stream.socket().shutdown(boost::asio::ip::tcp::socket::shutdown_both, ignored);
    return std::make_pair(static_cast<int>(response.result_int()), std::move(response.body()));
  } catch (const std::exception&) {
    return std::nullopt;  // not listening (yet)
  }
}

}  // namespace

std::string missing_prometheus_tools() {
  std::string missing;
  for (const char* tool : {kPrometheus, kPromtool}) {
    if (::access(tool, X_OK) != 0)
      missing += std::string(tool) +
                 " is missing: Debian's prometheus package "
                 "(hack/install-deps.sh). ";
  }
  return missing;
}

std::string percent_encode(const std::string& text) {
  static const char* hex = "0123456789ABCDEF";
  std::string encoded;
  for (const unsigned char c : text) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      encoded += static_cast<char>(c);
    } else {
      encoded += '%';
      encoded += hex[c >> 4];
      encoded += hex[c & 15];
    }
  }
  return encoded;
}

PrometheusServer::PrometheusServer(const std::string& job, const std::string& target)
    : address_("127.0.0.1:" + std::to_string(free_loopback_port())) {
  std::string dir_template =
      (std::filesystem::temp_directory_path() / "perimeter-prometheus-XXXXXX").string();
  if (::mkdtemp(dir_template.data()) == nullptr)
    throw std::system_error(errno, std::generic_category(), "mkdtemp");
  dir_ = dir_template;
  std::ofstream(dir_ + "/prometheus.yml") << "global:\n"
                                          << "  scrape_interval: 1s\n"
                                          << "  scrape_timeout: 1s\n"
                                          << "  evaluation_interval: 1s\n"
                                          << "scrape_configs:\n"
                                          << "  - job_name: " << job << "\n"
                                          << "    static_configs:\n"
                                          << "      - targets: ['" << target << "']\n";
  process::ProcessSpec spec;
  spec.argv = {kPrometheus, "--config.file=" + dir_ + "/prometheus.yml",
               "--storage.tsdb.path=" + dir_ + "/data", "--web.listen-address=" + address_,
               "--log.level=warn"};
  spec.log_path = dir_ + "/prometheus.log";
  process_ = process::Process::spawn(spec);
}

PrometheusServer::~PrometheusServer() {
  process_.reset();
  std::error_code ignored;
  std::filesystem::remove_all(dir_, ignored);
}

bool PrometheusServer::running() {
  return process_->running();
}

std::string PrometheusServer::log() const {
  return read_file(dir_ + "/prometheus.log");
}

std::optional<json> PrometheusServer::api(const std::string& path_and_query) const {
  const auto reply = get(address_, path_and_query);
  if (!reply || reply->first != 200) return std::nullopt;
  try {
    auto body = json::parse(reply->second);
    if (body.value("status", "") != "success") return std::nullopt;
    return body["data"];
  } catch (const json::exception&) {
    return std::nullopt;
  }
}

std::optional<double> PrometheusServer::query(const std::string& promql) const {
  const auto data = api("/api/v1/query?query=" + percent_encode(promql));
  if (!data || (*data)["resultType"] != "vector" || (*data)["result"].size() != 1)
    return std::nullopt;
  return std::stod((*data)["result"][0]["value"][1].get<std::string>());
}

std::optional<std::map<std::map<std::string, std::string>, double>> PrometheusServer::query_vector(
    const std::string& promql) const {
  const auto data = api("/api/v1/query?query=" + percent_encode(promql));
  if (!data || (*data)["resultType"] != "vector") return std::nullopt;
  std::map<std::map<std::string, std::string>, double> samples;
  for (const auto& sample : (*data)["result"]) {
    samples[sample["metric"].get<std::map<std::string, std::string>>()] =
        std::stod(sample["value"][1].get<std::string>());
  }
  return samples;
}

MetricsLint promtool_check_metrics(const std::string& exposition) {
  char path[] = "/tmp/perimeter-exposition-XXXXXX";
  const int fd = ::mkstemp(path);
  if (fd < 0) throw std::system_error(errno, std::generic_category(), "mkstemp");
  ::close(fd);
  std::ofstream(path) << exposition;
  const auto run =
      process::run_shell(std::string(kPromtool) + " check metrics < " + path + " 2>&1");
  ::unlink(path);
  return {run.exit_code, run.output};
}

std::string http_get_body(const std::string& address, const std::string& target) {
  const auto reply = get(address, target);
  return reply && reply->first == 200 ? reply->second : "";
}

}  // namespace perimeter::testing
