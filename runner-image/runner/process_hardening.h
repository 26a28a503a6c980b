#pragma once

#include <string>
#include <vector>

namespace perimeter::runner {

// What keeps the sessions token out of reach of the agent's own processes, which run as the
// runner's uid (docs/runner.md, "The token and the agent's processes").

// PR_SET_DUMPABLE 0: the kernel then refuses same-uid access to this process's
// /proc/PID/{environ,mem,maps,...}, ptrace and process_vm_readv (only CAP_SYS_PTRACE, which no
// runner pod has, passes). Inherited by threads; reset by execve, so the agent's bash is an
// ordinary process. Throws std::system_error when the kernel refuses.
void make_non_dumpable();
bool is_dumpable();

// Removes each of `names` from the environment and overwrites the "NAME=value" bytes where they
// were: unsetenv alone only drops the pointer from `environ`, while /proc/PID/environ reads the
// block the kernel laid out at exec, so the value would still be there for anyone allowed to
// read it (and in a core dump). Call before any thread starts: the environment is not
// thread-safe. Returns how many entries were wiped.
int scrub_environment(const std::vector<std::string>& names);

// The variables that carry a credential and must not outlive start-up.
inline const std::vector<std::string>& credential_variables() {
  static const std::vector<std::string> names = {"ANTHROPIC_WORK_SECRET",
                                                 "ANTHROPIC_ENVIRONMENT_KEY"};
  return names;
}

}  // namespace perimeter::runner
