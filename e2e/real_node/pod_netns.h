#pragma once

// Acting from inside a pod's network namespace on the real node, as the pod's own processes
// would: shared by the NetworkPolicy, egress gateway and cluster services tests.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <exception>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "process/process.h"

namespace perimeter::e2e {

// A shell command that must succeed; its output in the failure message otherwise.
inline void run_ok(const std::string& command) {
  const process::ShellResult result = process::run_shell(command + " 2>&1");
  ASSERT_EQ(result.exit_code, 0) << command << ": " << result.output;
}

// Runs `body` on a thread of its own that has entered the network namespace at `netns_path`
// (setns moves only the calling thread; sockets it makes stay in that namespace, and threads it
// starts inherit it). An exception from `body` fails the test instead of ending the process.
template <typename Body>
void in_netns(const std::string& netns_path, Body body) {
  std::thread thread([&] {
    const int fd = ::open(netns_path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0 || ::setns(fd, CLONE_NEWNET) != 0) {
      ADD_FAILURE() << "entering " << netns_path << ": " << std::strerror(errno);
      if (fd >= 0) ::close(fd);
      return;
    }
    ::close(fd);
    try {
      body();
    } catch (const std::exception& e) {
      ADD_FAILURE() << "in " << netns_path << ": " << e.what();
    }
  });
  thread.join();
}

inline sockaddr_in address_of(const std::string& ip, int port) {
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  ::inet_pton(AF_INET, ip.c_str(), &address.sin_addr);
  return address;
}

enum class Outcome { kConnected, kRefused, kTimedOut, kError };

inline std::string describe(Outcome outcome) {
  switch (outcome) {
    case Outcome::kConnected:
      return "connected";
    case Outcome::kRefused:
      return "refused";
    case Outcome::kTimedOut:
      return "timed out";
    case Outcome::kError:
      return "error";
  }
  return "?";
}

// One TCP connect from inside a network namespace, bounded by `limit`.
inline Outcome tcp_from(const std::string& netns_path, const std::string& ip, int port,
                        std::chrono::milliseconds limit = std::chrono::milliseconds(3000)) {
  Outcome outcome = Outcome::kError;
  in_netns(netns_path, [&] {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return;
    const sockaddr_in address = address_of(ip, port);
    int rc = ::connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof(address));
    if (rc != 0 && errno == EINPROGRESS) {
      pollfd watch{fd, POLLOUT, 0};
      rc = ::poll(&watch, 1, static_cast<int>(limit.count()));
      if (rc == 0) {
        outcome = Outcome::kTimedOut;
      } else if (rc > 0) {
        int error = 0;
        socklen_t length = sizeof(error);
        ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length);
        outcome = error == 0              ? Outcome::kConnected
                  : error == ECONNREFUSED ? Outcome::kRefused
                  : error == ETIMEDOUT    ? Outcome::kTimedOut
                                          : Outcome::kError;
      }
    } else if (rc == 0) {
      outcome = Outcome::kConnected;
    } else if (errno == ECONNREFUSED) {
      outcome = Outcome::kRefused;
    }
    ::close(fd);
  });
  return outcome;
}

// One UDP datagram from inside a network namespace and its echo: kConnected when the echo came
// back within `limit`, kRefused on an ICMP refusal, kTimedOut when nothing came.
inline Outcome udp_from(const std::string& netns_path, const std::string& ip, int port,
                        std::chrono::milliseconds limit = std::chrono::milliseconds(2000)) {
  Outcome outcome = Outcome::kError;
  in_netns(netns_path, [&] {
    const int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return;
    const sockaddr_in address = address_of(ip, port);
    const std::string probe = "perimeter-dns-probe";
    if (::connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof(address)) != 0 ||
        ::send(fd, probe.data(), probe.size(), 0) < 0) {
      outcome = errno == ECONNREFUSED ? Outcome::kRefused : Outcome::kError;
      ::close(fd);
      return;
    }
    pollfd watch{fd, POLLIN, 0};
    const int rc = ::poll(&watch, 1, static_cast<int>(limit.count()));
    if (rc == 0) {
      outcome = Outcome::kTimedOut;
    } else if (rc > 0) {
      char buffer[64];
      const ssize_t count = ::recv(fd, buffer, sizeof(buffer), MSG_DONTWAIT);
      outcome = count == static_cast<ssize_t>(probe.size()) ? Outcome::kConnected
                : (count < 0 && errno == ECONNREFUSED)      ? Outcome::kRefused
                                                            : Outcome::kError;
    }
    ::close(fd);
  });
  return outcome;
}

// TCP and UDP listeners opened inside a network namespace; TCP connections are accepted and
// closed, UDP datagrams echoed; each records the source addresses it saw.
class Listeners {
 public:
  struct Endpoint {
    std::string ip;
    int port;
    bool udp;
  };

  Listeners(const std::string& netns_path, const std::vector<Endpoint>& endpoints) {
    in_netns(netns_path, [&] {
      for (const Endpoint& endpoint : endpoints) {
        const int fd = ::socket(
            AF_INET, (endpoint.udp ? SOCK_DGRAM : SOCK_STREAM) | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        const sockaddr_in address = address_of(endpoint.ip, endpoint.port);
        const int one = 1;
        ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (::bind(fd, reinterpret_cast<const sockaddr*>(&address), sizeof(address)) != 0 ||
            (!endpoint.udp && ::listen(fd, 16) != 0)) {
          ADD_FAILURE() << "listening on " << key(endpoint, "") << ": " << std::strerror(errno);
        }
        fds_.push_back(fd);
        endpoints_.push_back(endpoint);
      }
    });
    thread_ = std::thread([this] { serve(); });
  }

  ~Listeners() {
    stopping_ = true;
    if (thread_.joinable()) thread_.join();
    for (const int fd : fds_) ::close(fd);
  }

  // Whether `endpoint` has seen anything from `source`.
  bool saw(const Endpoint& endpoint, const std::string& source) {
    std::lock_guard lock(mutex_);
    return seen_.count(key(endpoint, source)) != 0;
  }

 private:
  static std::string key(const Endpoint& endpoint, const std::string& source) {
    return std::string(endpoint.udp ? "udp " : "tcp ") + endpoint.ip + ":" +
           std::to_string(endpoint.port) + " from " + source;
  }

  void serve() {
    std::vector<pollfd> watched;
    for (const int fd : fds_) watched.push_back({fd, POLLIN, 0});
    while (!stopping_) {
      if (::poll(watched.data(), watched.size(), 100) <= 0) continue;
      for (size_t i = 0; i < watched.size(); ++i) {
        if ((watched[i].revents & POLLIN) == 0) continue;
        sockaddr_in peer{};
        socklen_t length = sizeof(peer);
        if (endpoints_[i].udp) {
          char buffer[512];
          const ssize_t count = ::recvfrom(watched[i].fd, buffer, sizeof(buffer), 0,
                                           reinterpret_cast<sockaddr*>(&peer), &length);
          if (count < 0) continue;
          ::sendto(watched[i].fd, buffer, static_cast<size_t>(count), 0,
                   reinterpret_cast<const sockaddr*>(&peer), length);
        } else {
          const int client =
              ::accept4(watched[i].fd, reinterpret_cast<sockaddr*>(&peer), &length, SOCK_CLOEXEC);
          if (client < 0) continue;
          ::close(client);
        }
        char text[INET_ADDRSTRLEN] = {};
        ::inet_ntop(AF_INET, &peer.sin_addr, text, sizeof(text));
        std::lock_guard lock(mutex_);
        seen_.insert(key(endpoints_[i], text));
      }
    }
  }

  std::vector<int> fds_;
  std::vector<Endpoint> endpoints_;
  std::thread thread_;
  std::atomic<bool> stopping_{false};
  std::mutex mutex_;
  std::set<std::string> seen_;
};

}  // namespace perimeter::e2e
