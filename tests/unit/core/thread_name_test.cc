#include "core/thread_name.h"

#include <gtest/gtest.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <fstream>
#include <string>
#include <thread>

namespace perimeter {
namespace {

// What the kernel shows for the calling thread: what top -H and the operator bench read.
std::string this_threads_comm() {
  std::ifstream comm("/proc/self/task/" + std::to_string(syscall(SYS_gettid)) + "/comm");
  std::string name;
  std::getline(comm, name);
  return name;
}

TEST(ThreadNameTest, TheKernelShowsTheName) {
  std::string seen;
  std::thread([&] {
    name_this_thread("poll/3");
    seen = this_threads_comm();
  }).join();
  EXPECT_EQ(seen, "poll/3");
}

TEST(ThreadNameTest, ALongNameKeepsItsFirstFifteenBytes) {
  std::string seen;
  std::thread([&] {
    name_this_thread("reconcile/agentenvironment");
    seen = this_threads_comm();
  }).join();
  EXPECT_EQ(seen, "reconcile/agent");
}

}  // namespace
}  // namespace perimeter
