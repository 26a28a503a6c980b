#include "localcluster/command_line.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace perimeter::localcluster {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(CommandLineTest, UpDefaultsToAUsefulDevelopmentCluster) {
  CommandLine line = parse_command_line({"up"});
  EXPECT_EQ(line.command, "up");
  EXPECT_EQ(line.nodes, 3);
  EXPECT_TRUE(line.controller_manager);
  EXPECT_TRUE(line.scheduler);
}

TEST(CommandLineTest, MinimalTurnsEverythingOptionalOff) {
  CommandLine line = parse_command_line({"run", "--minimal"});
  EXPECT_EQ(line.nodes, 0);
  EXPECT_FALSE(line.controller_manager);
  EXPECT_FALSE(line.scheduler);
}

TEST(CommandLineTest, ServeStartsFromNothingAndTakesEveryFlag) {
  CommandLine line = parse_command_line(
      {"serve", "--dir", "/tmp/c", "--nodes=2", "--controller-manager", "--scheduler",
       "--apiserver-flag", "--v=2", "--apiserver-flag=--etcd-compaction-interval=1m",
       "--control-stdin", "--timeout", "30", "--tools-dir=/opt/tools", "--verbose"});
  EXPECT_EQ(line.dir, "/tmp/c");
  EXPECT_EQ(line.nodes, 2);
  EXPECT_TRUE(line.controller_manager);
  EXPECT_TRUE(line.scheduler);
  EXPECT_THAT(line.apiserver_flags, ElementsAre("--v=2", "--etcd-compaction-interval=1m"));
  EXPECT_TRUE(line.control_stdin);
  EXPECT_EQ(line.timeout_seconds, 30);
  EXPECT_EQ(line.tools_dir, "/opt/tools");
  EXPECT_TRUE(line.verbose);

  CommandLine bare = parse_command_line({"serve", "--dir", "/tmp/d"});
  EXPECT_EQ(bare.nodes, 0);
  EXPECT_FALSE(bare.controller_manager);
}

TEST(CommandLineTest, RealNodeImportsEveryImageGiven) {
  CommandLine line = parse_command_line(
      {"up", "--real-node", "--image", "build/images/perimeter-runner.tar", "--image=/tmp/x.tar"});
  EXPECT_TRUE(line.real_node);
  EXPECT_THAT(line.images, ElementsAre("build/images/perimeter-runner.tar", "/tmp/x.tar"));
  EXPECT_TRUE(parse_command_line({"up"}).images.empty());
}

TEST(CommandLineTest, BadInputIsNamed) {
  auto fails_with = [](std::vector<std::string> args, const std::string& text) {
    EXPECT_THAT([&] { parse_command_line(args); },
                ::testing::ThrowsMessage<std::invalid_argument>(HasSubstr(text)));
  };
  fails_with({}, "missing command");
  fails_with({"launch"}, "unknown command 'launch'");
  fails_with({"up", "--nodes"}, "--nodes needs a value");
  fails_with({"up", "--nodes", "many"}, "got 'many'");
  fails_with({"up", "--nodes=-1"}, "got '-1'");
  fails_with({"up", "--timeout=0"}, "--timeout wants a whole number from 1");
  fails_with({"up", "--scheduler=yes"}, "--scheduler takes no value");
  fails_with({"up", "--apiserver-flag", "v=2"}, "wants a flag such as --v=2");
  fails_with({"up", "--frobnicate"}, "unknown flag '--frobnicate'");
  fails_with({"serve"}, "serve needs --dir");
  fails_with({"up", "--image", "a.tar"}, "--image needs --real-node");
  fails_with({"up", "--real-node", "--image"}, "--image needs a value");
}

TEST(CommandLineTest, UsageMentionsEveryCommand) {
  for (const char* command : {"up", "down", "status", "run", "serve"}) {
    EXPECT_THAT(usage_text(), HasSubstr(std::string("  ") + command));
  }
}

}  // namespace
}  // namespace perimeter::localcluster
