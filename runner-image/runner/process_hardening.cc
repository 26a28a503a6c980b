#include "runner/process_hardening.h"

#include <sys/prctl.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <system_error>

extern char** environ;

namespace perimeter::runner {

void make_non_dumpable() {
  if (::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) {
    throw std::system_error(errno, std::generic_category(), "prctl(PR_SET_DUMPABLE, 0)");
  }
}

bool is_dumpable() {
  return ::prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) == 1;
}

int scrub_environment(const std::vector<std::string>& names) {
  int wiped = 0;
  for (const std::string& name : names) {
    const std::string prefix = name + "=";
    // Every entry of that name (a hand-made environment can hold duplicates), remembered before
    // unsetenv reshuffles the array; the strings themselves stay where they are.
    std::vector<char*> entries;
    for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
      if (std::strncmp(*e, prefix.c_str(), prefix.size()) == 0) entries.push_back(*e);
    }
    ::unsetenv(name.c_str());  // NOLINT(concurrency-mt-unsafe): before any thread starts
    for (char* entry : entries) {
      // Zeros, not another value: /proc/PID/environ then shows empty strings, and nothing of
      // the name or its length survives past the first byte.
      std::memset(entry, 0, std::strlen(entry));
      ++wiped;
    }
  }
  return wiped;
}

}  // namespace perimeter::runner
