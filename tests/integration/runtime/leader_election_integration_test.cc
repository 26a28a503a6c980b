// Two (then three) processes compete for one Lease on a real apiserver.
#include <gtest/gtest.h>

#include <csignal>
#include <cstdio>

#include "cluster/local_cluster.h"
#include "kube/config.h"
#include "kube/http_transport.h"
#include "kube/resource_client.h"
#include "process/process.h"

namespace perimeter::runtime {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

class LeaderElectionIntegrationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    cluster_ = &perimeter::testing::shared_cluster();
    const char* bin_dir = std::getenv("PERIMETER_BIN_DIR");
    ASSERT_NE(bin_dir, nullptr) << "PERIMETER_BIN_DIR is not set (run through ctest)";
    candidate_binary_ = std::string(bin_dir) + "/leader_candidate";
    auto config = kube::Config::from_kubeconfig_file(cluster_->kubeconfig_path());
    transport_ = std::make_unique<kube::HttpTransport>(config);
    kube::ResourceClient namespaces(*transport_, kube::resources::namespaces(), metrics_);
    namespaces.create("",
                      {{"apiVersion", "v1"}, {"kind", "Namespace"}, {"metadata", {{"name", ns_}}}});
  }

  std::unique_ptr<process::Process> candidate(const std::string& identity) {
    process::ProcessSpec spec;
    spec.argv = {candidate_binary_, cluster_->kubeconfig_path(), ns_, "perimeter-operator",
                 identity};
    spec.capture_stdout = true;
    spec.log_path = cluster_->dir() + "/leader-" + identity + ".log";
    return process::Process::spawn(spec);
  }

  // Waits for the given line; returns when it came, or nullopt.
  static std::optional<Clock::time_point> wait_for_line(process::Process& process,
                                                        const std::string& wanted,
                                                        std::chrono::seconds limit) {
    const auto deadline = Clock::now() + limit;
    while (Clock::now() < deadline) {
      auto read = process.read_stdout_line(std::chrono::milliseconds(100));
      if (read.result == process::LineRead::Result::kLine && read.line == wanted)
        return Clock::now();
      if (read.result == process::LineRead::Result::kEof) return std::nullopt;
    }
    return std::nullopt;
  }

  std::string holder() {
    kube::ResourceClient leases(*transport_, kube::resources::leases(), metrics_);
    return leases.get(ns_, "perimeter-operator")["spec"].value("holderIdentity", "");
  }

  perimeter::testing::LocalCluster* cluster_ = nullptr;
  std::string candidate_binary_;
  std::string ns_ = "leader-it-" + std::to_string(::getpid());
  prometheus::Registry registry_;
  kube::ClientMetrics metrics_{registry_};
  std::unique_ptr<kube::HttpTransport> transport_;
};

TEST_F(LeaderElectionIntegrationTest, OneLeadsAFollowerTakesOverAfterAKillAndAtOnceAfterARelease) {
  auto a = candidate("a");
  ASSERT_TRUE(wait_for_line(*a, "LEADING a", std::chrono::seconds(30))) << "a never led";
  auto b = candidate("b");
  ASSERT_TRUE(wait_for_line(*b, "CAMPAIGNING b", std::chrono::seconds(30)));
  // b campaigns against a live leader for several retry periods and must not lead.
  EXPECT_FALSE(wait_for_line(*b, "LEADING b", std::chrono::seconds(6))) << "two leaders at once";
  EXPECT_EQ(holder(), "a");

  // A crash: the lease is not released, b waits it out (15 s from its last observed renewal).
  a->signal(SIGKILL);
  const auto killed = Clock::now();
  auto b_leads = wait_for_line(*b, "LEADING b", std::chrono::seconds(60));
  ASSERT_TRUE(b_leads) << "b never took over";
  const double takeover = std::chrono::duration<double>(*b_leads - killed).count();
  EXPECT_EQ(holder(), "b");

  // A clean stop releases the lease: c takes over within a retry period, not a lease duration.
  auto c = candidate("c");
  ASSERT_TRUE(wait_for_line(*c, "CAMPAIGNING c", std::chrono::seconds(30)));
  EXPECT_FALSE(wait_for_line(*c, "LEADING c", std::chrono::seconds(5)));
  const auto stopping = Clock::now();
  const auto b_exit = b->terminate(std::chrono::seconds(20));
  EXPECT_TRUE(b_exit.success()) << b_exit.describe();
  auto c_leads = wait_for_line(*c, "LEADING c", std::chrono::seconds(60));
  ASSERT_TRUE(c_leads) << "c never took over";
  const double handover = std::chrono::duration<double>(*c_leads - stopping).count();
  EXPECT_EQ(holder(), "c");

  // Figures, not assertions: JSON for machines, then a line for people.
  std::printf(
      "{\"measure\":\"leader_takeover\",\"after_kill_seconds\":%.2f,\"after_release_seconds\":%.2f,"
      "\"lease_seconds\":15,\"retry_seconds\":2}\n",
      takeover, handover);
  std::printf("leader takeover: %.2f s after kill -9 of the leader, %.2f s after a clean release\n",
              takeover, handover);
  c->terminate();
}

}  // namespace
}  // namespace perimeter::runtime
