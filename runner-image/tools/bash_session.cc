#include "tools/bash_session.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <random>

#include "tools/text.h"

extern char** environ;

namespace perimeter::tools {
namespace {

std::string random_uuid() {
  static thread_local std::mt19937_64 engine{std::random_device{}()};
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (int i = 0; i < 32; ++i) {
    if (i == 8 || i == 12 || i == 16 || i == 20) out += '-';
    out += kHex[engine() & 0xF];
  }
  return out;
}

// The SDK's /\x1b\[[0-9;?]*[ -/]*[@-~]/g.
std::string strip_ansi(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  std::size_t i = 0;
  while (i < text.size()) {
    if (text[i] == '\x1b' && i + 1 < text.size() && text[i + 1] == '[') {
      std::size_t j = i + 2;
      while (j < text.size() && (std::isdigit(static_cast<unsigned char>(text[j])) ||
                                 text[j] == ';' || text[j] == '?'))
        ++j;
      while (j < text.size() && text[j] >= ' ' && text[j] <= '/') ++j;
      if (j < text.size() && text[j] >= '@' && text[j] <= '~') {
        i = j + 1;
        continue;
      }
    }
    out += text[i++];
  }
  return out;
}

// Keeps the last `limit` UTF-16 units of `buf` (whole code points). Returns true if it cut.
bool keep_tail(std::string* buf, std::size_t* units, std::size_t limit) {
  if (*units <= limit) return false;
  std::size_t excess = *units - limit;
  std::size_t cut = 0;
  while (excess > 0 && cut < buf->size()) {
    const auto lead = static_cast<unsigned char>((*buf)[cut]);
    const std::size_t len = utf8_sequence_length(lead);
    const std::size_t cost = len == 4 ? 2 : 1;
    cut += len;
    *units -= cost;
    excess = cost >= excess ? 0 : excess - cost;
  }
  buf->erase(0, cut);
  return true;
}

void set_nonblocking(int fd) {
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
}

}  // namespace

std::vector<std::string> scrubbed_environment() {
  std::vector<std::string> env;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    std::string entry(*e);
    std::string upper = entry.substr(0, entry.find('='));
    std::transform(upper.begin(), upper.end(), upper.begin(),
                   [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
    if (upper.rfind("ANTHROPIC_", 0) == 0) continue;
    env.push_back(std::move(entry));
  }
  return env;
}

BashSession::BashSession(const std::string& workdir, std::vector<std::string> env) {
  // Shell-control settings the sentinel parsing relies on, not part of the user's environment.
  auto set = [&env](const std::string& name, const std::string& value) {
    const std::string prefix = name + "=";
    env.erase(std::remove_if(env.begin(), env.end(),
                             [&](const std::string& e) { return e.rfind(prefix, 0) == 0; }),
              env.end());
    env.push_back(prefix + value);
  };
  set("PS1", "");
  set("PS2", "");
  set("TERM", "dumb");
  std::vector<char*> envp;
  envp.reserve(env.size() + 1);
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);

  // stdin is a socket so a write to a dead shell is EPIPE via MSG_NOSIGNAL, never SIGPIPE.
  int in_pair[2];
  int out_pipe[2];
  int err_pipe[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, in_pair) != 0)
    throw_errno(errno, "socketpair");
  UniqueFd in_child(in_pair[0]);
  stdin_.reset(in_pair[1]);
  if (::pipe2(out_pipe, O_CLOEXEC) != 0) throw_errno(errno, "pipe2");
  UniqueFd out_child(out_pipe[1]);
  stdout_.reset(out_pipe[0]);
  if (::pipe2(err_pipe, O_CLOEXEC) != 0) throw_errno(errno, "pipe2");
  UniqueFd err_child(err_pipe[1]);
  stderr_.reset(err_pipe[0]);
  ::shutdown(in_child.get(), SHUT_WR);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, in_child.get(), 0);
  posix_spawn_file_actions_adddup2(&actions, out_child.get(), 1);
  posix_spawn_file_actions_adddup2(&actions, err_child.get(), 2);
  posix_spawn_file_actions_addchdir_np(&actions, workdir.c_str());
  // Everything else the runner holds stays out of the agent's shell: Boost.Asio opens its
  // sockets (the API connections) without close-on-exec.
  posix_spawn_file_actions_addclosefrom_np(&actions, 3);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  // A session of its own (Node's `detached: true`): the shell leads a process group we can kill.
  sigset_t defaults;
  sigemptyset(&defaults);
  sigaddset(&defaults, SIGPIPE);
  sigaddset(&defaults, SIGINT);
  sigaddset(&defaults, SIGTERM);
  sigset_t no_mask;
  sigemptyset(&no_mask);
  posix_spawnattr_setsigdefault(&attr, &defaults);
  posix_spawnattr_setsigmask(&attr, &no_mask);
  posix_spawnattr_setflags(&attr,
                           POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
  char arg0[] = "/bin/bash";
  char arg1[] = "--noprofile";
  char arg2[] = "--norc";
  char* argv[] = {arg0, arg1, arg2, nullptr};
  const int rc = ::posix_spawn(&pid_, "/bin/bash", &actions, &attr, argv, envp.data());
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) {
    pid_ = -1;
    closed_ = true;
    throw BashTerminated();
  }
  set_nonblocking(stdout_.get());
  set_nonblocking(stderr_.get());
}

BashSession::~BashSession() {
  kill_group();
}

void BashSession::kill_group() {
  closed_ = true;
  stdin_.reset();
  stdout_.reset();
  stderr_.reset();
  if (pid_ > 0) {
    // The negative pid reaches every process of the group, so a hung foreground job dies too.
    if (::kill(-pid_, SIGKILL) != 0) ::kill(pid_, SIGKILL);
    while (::waitpid(pid_, nullptr, 0) < 0 && errno == EINTR) {
    }
    pid_ = -1;
  }
}

BashSession::Result BashSession::exec(std::string_view command, std::chrono::milliseconds timeout) {
  if (closed_) throw BashTerminated();
  // Whatever the shell printed between commands (a background job) is not this command's output.
  char discard[4096];
  for (int fd : {stdout_.get(), stderr_.get()}) {
    while (::read(fd, discard, sizeof(discard)) > 0) {
    }
  }

  // A per-call nonce, so a command printing a fixed marker cannot spoof the framing; the '' keeps
  // the literal out of what the shell reads, only its printf puts it together.
  const std::string sentinel = "__ANT_CMD_" + random_uuid() + "_DONE__";
  const std::string split = sentinel.substr(0, 8) + "''" + sentinel.substr(8);
  std::string wrapped = "{ ";
  wrapped.append(command);
  // </dev/null: a command that reads stdin gets EOF instead of the shell's own input.
  wrapped += "\n} </dev/null 2>&1; printf '\\n" + split + "%d\\n' $?\n";

  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::string buf;
  std::size_t units = 0;
  bool truncated = false;
  Utf8StreamDecoder out_decoder;
  Utf8StreamDecoder err_decoder;
  std::string_view to_write(wrapped);
  bool out_eof = false;
  bool err_eof = false;
  std::size_t sentinel_at = std::string::npos;
  std::size_t search_from = 0;

  auto append = [&](const std::string& text) {
    if (text.empty()) return;
    buf += text;
    units += utf16_length(text);
    // Cap while accumulating so a command that streams without end cannot exhaust memory; the
    // tail is kept so the sentinel stays visible.
    if (keep_tail(&buf, &units, kBashOutputLimit)) {
      truncated = true;
      search_from = 0;
    }
  };

  for (;;) {
    if (sentinel_at == std::string::npos) {
      const std::size_t from = search_from > sentinel.size() ? search_from - sentinel.size() : 0;
      sentinel_at = buf.find(sentinel, from);
      search_from = buf.size();
    }
    if (sentinel_at != std::string::npos &&
        buf.find('\n', sentinel_at + sentinel.size()) != std::string::npos) {
      break;
    }
    if (out_eof && err_eof) {
      // The shell closed (exited or was killed) before the sentinel.
      kill_group();
      throw BashTerminated();
    }
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline) throw BashTimeout("bash command timed out after");
    const auto wait_ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now).count();
    pollfd fds[3];
    nfds_t count = 0;
    if (!out_eof) fds[count++] = {stdout_.get(), POLLIN, 0};
    if (!err_eof) fds[count++] = {stderr_.get(), POLLIN, 0};
    if (!to_write.empty()) fds[count++] = {stdin_.get(), POLLOUT, 0};
    const int ready = ::poll(fds, count, static_cast<int>(std::min<long long>(wait_ms + 1, 1000)));
    if (ready < 0 && errno != EINTR) throw_errno(errno, "poll");
    for (nfds_t i = 0; i < count && ready > 0; ++i) {
      if (fds[i].revents == 0) continue;
      if (fds[i].fd == stdin_.get()) {
        const ssize_t n =
            ::send(stdin_.get(), to_write.data(), to_write.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
          to_write.remove_prefix(static_cast<size_t>(n));
        } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
          to_write = {};  // the shell is gone; its pipes' EOF ends the wait
        }
        continue;
      }
      const bool is_out = fds[i].fd == stdout_.get();
      char chunk[65536];
      for (;;) {
        const ssize_t n = ::read(fds[i].fd, chunk, sizeof(chunk));
        if (n > 0) {
          append((is_out ? out_decoder : err_decoder)
                     .write(std::string_view(chunk, static_cast<size_t>(n))));
          continue;
        }
        if (n == 0) {
          append((is_out ? out_decoder : err_decoder).finish());
          (is_out ? out_eof : err_eof) = true;
        } else if (errno == EINTR) {
          continue;
        }
        break;
      }
    }
  }

  Result result;
  std::string_view tail = std::string_view(buf).substr(sentinel_at + sentinel.size());
  std::size_t digits = (!tail.empty() && tail[0] == '-') ? 1 : 0;
  while (digits < tail.size() && std::isdigit(static_cast<unsigned char>(tail[digits]))) ++digits;
  const bool has_number = digits > ((!tail.empty() && tail[0] == '-') ? 1u : 0u);
  result.exit_code = has_number ? std::stoi(std::string(tail.substr(0, digits))) : -1;
  std::string out = strip_ansi(std::string_view(buf).substr(0, sentinel_at));
  while (!out.empty() && out.back() == '\n') out.pop_back();
  if (truncated) out = "[output truncated]\n" + out;
  result.output = std::move(out);
  return result;
}

}  // namespace perimeter::tools
