#pragma once

#include <sys/types.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace perimeter::testing {

// A perimeter-sim server run as a child process on a free port, for integration tests, the
// conformance test and benchmarks: on 127.0.0.1, or on the address given as `--address IP` in
// extra_args (a real node's bridge gateway). Stopped with SIGTERM (then SIGKILL) on destruction.
class SimProcess {
 public:
  // Finds perimeter-sim in $PERIMETER_BIN_DIR; throws std::runtime_error when it cannot start it.
  explicit SimProcess(std::vector<std::string> extra_args = {});
  ~SimProcess();
  SimProcess(const SimProcess&) = delete;
  SimProcess& operator=(const SimProcess&) = delete;

  // Where the server says it listens (its `listening` line), e.g. http://127.0.0.1:40123.
  const std::string& url() const { return url_; }
  int port() const { return port_; }
  // The server's stderr so far, for failure messages.
  std::string log() const;
  // Sends SIGTERM and waits; returns the exit status (as from waitpid) or -1.
  int terminate();

 private:
  pid_t pid_ = -1;
  int port_ = 0;
  std::string url_;
  std::string dir_;
};

// One HTTP exchange against the simulator's admin or public API, for tests.
struct HttpResult {
  int status = 0;
  std::string body;
  nlohmann::json json() const;
};
HttpResult http_call(const std::string& base_url, const std::string& method,
                     const std::string& path, const std::string& body = "",
                     const std::vector<std::pair<std::string, std::string>>& headers = {});

// The directory a test may write to; removed on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace perimeter::testing
