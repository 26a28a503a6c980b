#include "localcluster/machine_lock.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <future>
#include <optional>
#include <stdexcept>
#include <string>

namespace perimeter::localcluster {
namespace {

using std::chrono::milliseconds;

class MachineLockTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("machine-lock-test-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string path() const { return (dir_ / "node.lock").string(); }

  std::filesystem::path dir_;
  Logger logger_{"test"};
};

// A second holder (a second real node, here in the same process: flock locks belong to the open
// file, so it conflicts the same way) waits, then is refused with the holder named.
TEST_F(MachineLockTest, ASecondHolderIsRefusedWithTheHolderNamedWhileTheFirstHoldsIt) {
  std::optional<MachineLock> first = MachineLock::acquire(path(), milliseconds(0), logger_);
  try {
    MachineLock::acquire(path(), milliseconds(300), logger_);
    FAIL() << "a second holder got the lock";
  } catch (const std::runtime_error& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr(path()));
    EXPECT_THAT(e.what(), ::testing::HasSubstr("pid " + std::to_string(::getpid())));
  }
  first.reset();
  EXPECT_NO_THROW(MachineLock::acquire(path(), milliseconds(0), logger_));
}

// One that waits gets the lock as soon as the holder lets go, within its wait.
TEST_F(MachineLockTest, AWaiterGetsTheLockWhenTheHolderLetsGo) {
  std::optional<MachineLock> first = MachineLock::acquire(path(), milliseconds(0), logger_);
  auto waiter = std::async(std::launch::async, [&] {
    return MachineLock::acquire(path(), milliseconds(10000), logger_);
  });
  EXPECT_EQ(waiter.wait_for(milliseconds(300)), std::future_status::timeout);
  first.reset();
  ASSERT_EQ(waiter.wait_for(milliseconds(5000)), std::future_status::ready);
  MachineLock second = waiter.get();
  std::ifstream holder(path());
  std::string pid;
  holder >> pid;
  EXPECT_EQ(pid, std::to_string(::getpid()));
}

// Moving the lock moves the holding: the moved-from object releases nothing.
TEST_F(MachineLockTest, AMovedLockIsStillHeld) {
  std::optional<MachineLock> moved;
  {
    MachineLock lock = MachineLock::acquire(path(), milliseconds(0), logger_);
    moved.emplace(std::move(lock));
  }
  EXPECT_THROW(MachineLock::acquire(path(), milliseconds(0), logger_), std::runtime_error);
  moved.reset();
  EXPECT_NO_THROW(MachineLock::acquire(path(), milliseconds(0), logger_));
}

}  // namespace
}  // namespace perimeter::localcluster
