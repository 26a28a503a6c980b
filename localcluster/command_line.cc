#include "localcluster/command_line.h"

#include <stdexcept>

namespace perimeter::localcluster {
namespace {

int parse_int(const std::string& flag, const std::string& value, int min, int max) {
  size_t used = 0;
  int number = 0;
  try {
    number = std::stoi(value, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != value.size() || value.empty() || number < min || number > max) {
    throw std::invalid_argument(flag + " wants a whole number from " + std::to_string(min) +
                                " to " + std::to_string(max) + ", got '" + value + "'");
  }
  return number;
}

}  // namespace

std::string usage_text() {
  return R"(usage: perimeter-local-cluster <command> [flags]

A real Kubernetes control plane on 127.0.0.1 for tests and local runs: etcd, kube-apiserver and,
on request, kube-controller-manager, kube-scheduler and KWOK with fake Nodes.

commands:
  up       start a cluster in the background, print its kubeconfig path once ready, return
  down     stop the background cluster and remove everything it made
  status   say whether the background cluster runs, and where
  run      start a cluster in the foreground; Ctrl-C stops it
  serve    the supervisor the C++ harness starts (one JSON line on stdout when ready)

flags:
  --nodes N               fake Nodes run by KWOK (up/run default 3)
  --controller-manager    start kube-controller-manager (up/run: on unless --minimal)
  --scheduler             start kube-scheduler (up/run: on unless --minimal)
  --real-node             also start a real node: kubelet on a containerd of its own, CNI bridge
                          networking, locally built images (root; hack/images/build-images.sh)
  --image ARCHIVE         also import this OCI archive into the real node, named
                          localhost/perimeter/<file name without .tar>:<its tag>; repeatable
                          (the runner: <build>/images/perimeter-runner.tar)
  --minimal               up/run: etcd and kube-apiserver only, no nodes
  --apiserver-flag F      pass F (e.g. --etcd-compaction-interval=1m) to kube-apiserver; repeatable
  --dir D                 the cluster folder
  --tools-dir D           where the binaries are (default $PERIMETER_TOOLS_BIN or
                          ~/.cache/perimeter/tools/bin; `make tools` builds them)
  --timeout S             seconds each component gets to become ready (default 120)
  --control-stdin         serve: read commands (restart-apiserver, describe, stop) on stdin
  --verbose               debug logging
)";
}

CommandLine parse_command_line(const std::vector<std::string>& args) {
  if (args.empty()) throw std::invalid_argument("missing command");
  CommandLine line;
  line.command = args[0];
  const bool daemon_like = line.command == "up" || line.command == "run";
  if (line.command != "serve" && line.command != "run" && line.command != "up" &&
      line.command != "down" && line.command != "status") {
    throw std::invalid_argument("unknown command '" + line.command +
                                "' (want up, down, status, run or serve)");
  }
  if (daemon_like) {
    line.nodes = 3;
    line.controller_manager = true;
    line.scheduler = true;
  }
  for (size_t i = 1; i < args.size(); ++i) {
    std::string flag = args[i];
    std::string value;
    bool has_inline_value = false;
    if (auto eq = flag.find('='); flag.rfind("--", 0) == 0 && eq != std::string::npos) {
      value = flag.substr(eq + 1);
      flag = flag.substr(0, eq);
      has_inline_value = true;
    }
    auto take_value = [&]() -> std::string {
      if (has_inline_value) return value;
      if (i + 1 >= args.size()) throw std::invalid_argument(flag + " needs a value");
      return args[++i];
    };
    auto no_value = [&] {
      if (has_inline_value) throw std::invalid_argument(flag + " takes no value");
    };
    if (flag == "--nodes") {
      line.nodes = parse_int(flag, take_value(), 0, 1000);
    } else if (flag == "--controller-manager") {
      no_value();
      line.controller_manager = true;
    } else if (flag == "--scheduler") {
      no_value();
      line.scheduler = true;
    } else if (flag == "--real-node") {
      no_value();
      line.real_node = true;
    } else if (flag == "--image") {
      line.images.push_back(take_value());
    } else if (flag == "--minimal") {
      no_value();
      line.nodes = 0;
      line.controller_manager = false;
      line.scheduler = false;
    } else if (flag == "--apiserver-flag") {
      std::string extra = take_value();
      if (extra.rfind("--", 0) != 0) {
        throw std::invalid_argument("--apiserver-flag wants a flag such as --v=2, got '" + extra +
                                    "'");
      }
      line.apiserver_flags.push_back(extra);
    } else if (flag == "--dir") {
      line.dir = take_value();
    } else if (flag == "--tools-dir") {
      line.tools_dir = take_value();
    } else if (flag == "--timeout") {
      line.timeout_seconds = parse_int(flag, take_value(), 1, 3600);
    } else if (flag == "--control-stdin") {
      no_value();
      line.control_stdin = true;
    } else if (flag == "--verbose") {
      no_value();
      line.verbose = true;
    } else {
      throw std::invalid_argument("unknown flag '" + args[i] + "'");
    }
  }
  if (!line.images.empty() && !line.real_node) {
    throw std::invalid_argument("--image needs --real-node: only the real node imports images");
  }
  if (line.command == "serve" && line.dir.empty()) {
    throw std::invalid_argument("serve needs --dir");
  }
  return line;
}

}  // namespace perimeter::localcluster
