#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "controllers/agentenvironment/warm_assignment_service.h"
#include "core/log.h"

namespace perimeter::agentenvironment {

struct AssignmentServerOptions {
  std::string address = "0.0.0.0";
  std::uint16_t port = 0;
  // How long a fetch with nothing to hand out is held before its 204; below the runner's request
  // timeout (30 s).
  std::chrono::milliseconds hold{20'000};
  // A held fetch asks again at least this often, besides each wake().
  std::chrono::milliseconds recheck{1'000};
  // A client that opens a connection and sends nothing is closed after this.
  std::chrono::milliseconds idle_timeout{40'000};
};

// The assignment service over HTTPS (docs/warm-pool.md): TLS 1.2 or later with the serving
// certificate and key given, HTTP/1.1 with keep-alive, GET /v1/assignment held as a long-poll (a
// timer per held request on one I/O thread, not a thread each) and POST /v1/assignment/confirm.
// The service's decisions, which may read the apiserver, run on two worker threads, so a slow
// apiserver holds no connection's I/O. The threads are named "assign-io" and "assign/N".
class AssignmentServer {
 public:
  // PEM. Throws std::runtime_error when they do not load.
  AssignmentServer(WarmAssignmentService& service, const std::string& certificate_chain_pem,
                   const std::string& private_key_pem, Logger logger,
                   AssignmentServerOptions options = {});
  ~AssignmentServer();
  AssignmentServer(const AssignmentServer&) = delete;
  AssignmentServer& operator=(const AssignmentServer&) = delete;

  // Binds and starts serving; throws std::system_error when the address cannot be bound.
  void start();
  // Closes the listener and every connection, and joins the threads. Idempotent.
  void stop();
  // The bound port (after start()).
  std::uint16_t port() const;
  // A warm pod changed (the pod informer's handler calls this): held fetches ask again now.
  void wake();
  // Serves this certificate and key to connections that start from now on; connections already
  // open, and the requests they hold, keep theirs. Throws std::runtime_error, serving the old
  // ones still, when they do not load.
  void replace_certificate(const std::string& certificate_chain_pem,
                           const std::string& private_key_pem);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace perimeter::agentenvironment
