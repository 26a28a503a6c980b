#include "proxy_processes.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace perimeter::bench {
namespace {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
namespace fs = std::filesystem;

std::string read_whole(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

void write_whole(const std::string& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
  if (!out) throw std::runtime_error("cannot write " + path);
}

std::string make_temp_dir(const std::string& name) {
  std::string pattern = (fs::temp_directory_path() / ("mcpguard-bench-" + name + "-XXXXXX"));
  if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  return pattern;
}

// Waits until 127.0.0.1:port accepts a connection, or fails with the tail of `log`.
void wait_accepting(process::Process& child, unsigned short port, const std::string& log) {
  asio::io_context io;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (std::chrono::steady_clock::now() < deadline) {
    if (!child.running()) {
      throw std::runtime_error(child.name() + " exited (" +
                               child.exit_status().value_or(process::ExitStatus{}).describe() +
                               "): " + read_whole(log));
    }
    tcp::socket socket(io);
    boost::system::error_code ec;
    socket.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port), ec);
    if (!ec) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  throw std::runtime_error(child.name() + " did not accept on port " + std::to_string(port) +
                           " within 20 s: " + read_whole(log));
}

// A FIFO at `path` read by a thread of this process until destroyed, counting lines. Opened for
// reading before the proxy opens it for writing, so the proxy never waits for a reader.
class FifoDrain {
 public:
  explicit FifoDrain(const std::string& path) {
    if (::mkfifo(path.c_str(), 0600) != 0) throw std::runtime_error("mkfifo " + path + " failed");
    fd_ = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd_ < 0) throw std::runtime_error("cannot open " + path + " for reading");
    reader_ = std::thread([this] { drain(); });
  }
  ~FifoDrain() {
    stop_ = true;
    reader_.join();
    ::close(fd_);
  }
  FifoDrain(const FifoDrain&) = delete;
  FifoDrain& operator=(const FifoDrain&) = delete;
  long lines() const { return lines_; }

 private:
  void drain() {
    char buffer[64 * 1024];
    while (!stop_) {
      pollfd ready{fd_, POLLIN, 0};
      ::poll(&ready, 1, 100);
      const ssize_t n = ::read(fd_, buffer, sizeof buffer);
      if (n > 0) {
        lines_ += std::count(buffer, buffer + n, '\n');
      } else if (n == 0) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));  // no writer (yet, or now)
      }
    }
  }

  int fd_ = -1;
  std::atomic<bool> stop_{false};
  std::atomic<long> lines_{0};
  std::thread reader_;
};

class ChildProxy : public ProxyProcess {
 public:
  ChildProxy(std::string dir, std::string config, unsigned short port, RequestLog log,
             std::string log_path)
      : dir_(std::move(dir)),
        config_(std::move(config)),
        port_(port),
        request_log_(log == RequestLog::kFile ? log_path : std::string()) {
    if (log == RequestLog::kFifo) fifo_ = std::make_unique<FifoDrain>(log_path);
  }
  ~ChildProxy() override {
    if (child_) child_->terminate(std::chrono::seconds(5));
    fifo_.reset();
    std::error_code ignored;
    fs::remove_all(dir_, ignored);
  }
  unsigned short port() const override { return port_; }
  pid_t pid() const override { return child_->pid(); }
  const std::string& config() const override { return config_; }
  long request_log_lines() const override {
    if (fifo_) return fifo_->lines();
    if (request_log_.empty()) return -1;
    const std::string text = read_whole(request_log_);
    return static_cast<long>(std::count(text.begin(), text.end(), '\n'));
  }

  void start(const process::ProcessSpec& spec, const std::string& log) {
    child_ = process::Process::spawn(spec);
    wait_accepting(*child_, port_, log);
  }
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
  std::string config_;
  unsigned short port_;
  std::string request_log_;  // a file's path
  std::unique_ptr<FifoDrain> fifo_;
  std::unique_ptr<process::Process> child_;
};

}  // namespace

unsigned short free_port() {
  asio::io_context io;
  tcp::acceptor acceptor(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  return acceptor.local_endpoint().port();
}

std::unique_ptr<ProxyProcess> start_nginx(const std::string& nginx, unsigned short upstream_port,
                                          RequestLog log, int max_streams) {
  const bool access_log = log != RequestLog::kNone;
  const std::string dir = make_temp_dir("nginx");
  const unsigned short port = free_port();
  const int connections = 2 * max_streams + 1024;
  const std::string config =
      "worker_processes 1;\n"
      "worker_rlimit_nofile " +
      std::to_string(connections + 64) +
      ";\n"
      "error_log " +
      dir +
      "/error.log warn;\n"
      "pid " +
      dir +
      "/nginx.pid;\n"
      "events { worker_connections " +
      std::to_string(connections) +
      "; }\n"
      "http {\n"
      "  access_log " +
      (access_log ? dir + "/access.log" : std::string("off")) +
      ";\n"
      "  client_body_temp_path " +
      dir +
      "/client_body;\n"
      "  proxy_temp_path " +
      dir +
      "/proxy;\n"
      "  fastcgi_temp_path " +
      dir +
      "/fastcgi;\n"
      "  uwsgi_temp_path " +
      dir +
      "/uwsgi;\n"
      "  scgi_temp_path " +
      dir +
      "/scgi;\n"
      "  upstream mcp {\n"
      "    server 127.0.0.1:" +
      std::to_string(upstream_port) +
      ";\n"
      "    keepalive 64;\n"
      "    keepalive_requests 1000000;\n"
      "  }\n"
      "  server {\n"
      "    listen 127.0.0.1:" +
      std::to_string(port) +
      " backlog=4096;\n"
      "    location / {\n"
      "      proxy_pass http://mcp;\n"
      "      proxy_http_version 1.1;\n"
      "      proxy_set_header Connection \"\";\n"
      "      proxy_buffering off;\n"
      "      proxy_read_timeout 3600s;\n"
      "    }\n"
      "  }\n"
      "}\n";
  write_whole(dir + "/nginx.conf", config);
  auto proxy = std::make_unique<ChildProxy>(dir, config, port, log, dir + "/access.log");
  process::ProcessSpec spec;
  spec.argv = {nginx,
               "-p",
               dir,
               "-c",
               dir + "/nginx.conf",
               "-e",
               dir + "/error.log",
               "-g",
               "daemon off; master_process off;"};
  spec.log_path = dir + "/nginx.out";
  proxy->start(spec, dir + "/error.log");
  return proxy;
}

std::unique_ptr<ProxyProcess> start_guard(const std::string& guard, unsigned short upstream_port,
                                          RequestLog log, int threads) {
  const std::string dir = make_temp_dir("guard");
  const unsigned short port = free_port();
  const unsigned short metrics_port = free_port();
  const std::string config = "metrics_listen: 127.0.0.1:" + std::to_string(metrics_port) +
                             "\n"
                             "audit:\n"
                             "  level: metadata\n"
                             "routes:\n"
                             "  - name: bench\n"
                             "    listen: 127.0.0.1:" +
                             std::to_string(port) +
                             "\n"
                             "    upstream: http://127.0.0.1:" +
                             std::to_string(upstream_port) +
                             "\n"
                             "    allowed_cidrs: [\"127.0.0.0/8\"]\n"
                             "    tools:\n"
                             "      allow: [\"*\"]\n"
                             "      deny: [\"delete_*\"]\n";
  write_whole(dir + "/config.yaml", config);
  auto proxy = std::make_unique<ChildProxy>(dir, config, port, log, dir + "/audit.jsonl");
  // Through a shell that execs the guard, so stdout (the audit) and stderr (the log) go to files
  // of their own and the child's pid is the guard's.
  const std::string audit =
      log != RequestLog::kNone ? dir + "/audit.jsonl" : std::string("/dev/null");
  process::ProcessSpec spec;
  spec.argv = {"/bin/sh",
               "-c",
               "exec \"$0\" --config \"$1\" --threads \"$2\" >\"$3\" 2>\"$4\"",
               guard,
               dir + "/config.yaml",
               std::to_string(threads),
               audit,
               dir + "/guard.log"};
  spec.log_path = dir + "/shell.out";
  proxy->start(spec, dir + "/guard.log");
  return proxy;
}

long rss_kib(pid_t pid) {
  std::istringstream status(read_whole("/proc/" + std::to_string(pid) + "/status"));
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  }
  return 0;
}

double cpu_seconds(pid_t pid) {
  // The scheduler's run time of every thread, in nanoseconds (finer than utime's clock ticks).
  long long nanoseconds = 0;
  std::error_code ec;
  for (const auto& task : fs::directory_iterator("/proc/" + std::to_string(pid) + "/task", ec)) {
    std::istringstream fields(read_whole(task.path().string() + "/schedstat"));
    long long run = 0;
    if (fields >> run) nanoseconds += run;
  }
  return static_cast<double>(nanoseconds) / 1e9;
}

}  // namespace perimeter::bench
