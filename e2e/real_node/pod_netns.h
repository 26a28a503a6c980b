#pragma once

// Acting from inside a pod's network namespace on the real node, as the pod's own processes
// would: shared by the NetworkPolicy and the egress gateway tests.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sched.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <exception>
#include <string>
#include <thread>

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

}  // namespace perimeter::e2e
