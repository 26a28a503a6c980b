#include "core/thread_name.h"

#include <pthread.h>

#include <string>

namespace perimeter {

void name_this_thread(std::string_view name) {
  constexpr std::size_t kLinuxLimit = 15;  // 16 bytes with the terminating NUL
  const std::string kept(name.substr(0, kLinuxLimit));
  // Only fails for a name over the limit; a thread without a name works as well.
  pthread_setname_np(pthread_self(), kept.c_str());
}

}  // namespace perimeter
