#pragma once

namespace perimeter::localcluster {

// A TCP port on 127.0.0.1 that was free a moment ago: bound with port 0, then released for the
// component that will listen on it. Throws std::runtime_error when no socket can be bound.
int pick_free_port();

}  // namespace perimeter::localcluster
