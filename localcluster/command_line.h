#pragma once

#include <string>
#include <vector>

namespace perimeter::localcluster {

// `perimeter-local-cluster <command> [flags]`, parsed. See usage_text() for what each means.
struct CommandLine {
  std::string command;  // serve, run, up, down, status
  std::string dir;  // the cluster folder (serve/run: made when empty; up/down/status: the dev one)
  std::string tools_dir;
  int nodes = 0;
  bool controller_manager = false;
  bool scheduler = false;
  bool real_node = false;           // a real kubelet on containerd (see real_node.h)
  std::vector<std::string> images;  // more OCI archives for the real node to import
  std::vector<std::string> apiserver_flags;
  bool control_stdin = false;  // serve: commands on stdin, replies on stdout; EOF stops
  int timeout_seconds = 120;   // per component
  bool verbose = false;
};

std::string usage_text();

// Parses argv (without the program name). Throws std::invalid_argument naming the offending
// argument and what was expected.
CommandLine parse_command_line(const std::vector<std::string>& args);

}  // namespace perimeter::localcluster
