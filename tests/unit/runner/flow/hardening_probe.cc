// A stand-in for the runner's start-up in process_hardening_test: started with PROBE_SECRET in
// the environment it was exec'ed with (so the value sits in the block /proc/PID/environ reads),
// it hardens itself as perimeter-runner does (argv[1] "harden"), only scrubs its environment
// ("scrub"), or neither ("plain"); prints its own /proc/self/environ (NULs as newlines; a
// non-dumpable process cannot open it: its /proc files belong to root), and "ready", then waits
// for stdin to close.
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>

#include "runner/process_hardening.h"

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "plain";
  if (mode == "harden") perimeter::runner::make_non_dumpable();
  if (mode == "harden" || mode == "scrub") perimeter::runner::scrub_environment({"PROBE_SECRET"});
  std::ifstream in("/proc/self/environ");
  std::stringstream text;
  text << in.rdbuf();
  std::string environ_text = text.str();
  for (char& c : environ_text) {
    if (c == '\0') c = '\n';
  }
  std::cout << environ_text << "dumpable=" << perimeter::runner::is_dumpable() << "\nready"
            << std::endl;
  char byte;
  while (::read(STDIN_FILENO, &byte, 1) > 0) {
  }
  return 0;
}
