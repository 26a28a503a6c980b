#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <vector>

#include "tools/file_io.h"
#include "tools/js_value.h"
#include "tools/line_regex.h"
#include "tools/path_util.h"
#include "tools/search_tools.h"
#include "tools/text.h"
#include "tools/tool_error.h"

namespace perimeter::tools {
namespace {

// Node's fs.createReadStream reads 64 KiB at a time; binary detection happens per such chunk.
constexpr std::size_t kStreamChunkBytes = std::size_t{64} * 1024;

class Search {
 public:
  Search(const LineRegex& regex, const Clock& clock, Clock::TimePoint deadline)
      : regex_(regex), clock_(clock), deadline_(deadline) {}

  // False when the search must stop (output cap reached, entry budget spent, or deadline).
  bool grep_file(const std::string& file) {
    UniqueFd fd(::open(file.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));
    if (!fd) return true;  // unreadable: skipped, as a stream error is
    Utf8StreamDecoder decoder;
    std::string partial;
    bool saw_return = false;
    std::size_t line_number = 0;
    bool at_end = false;
    while (!at_end) {
      if (timed_out()) return false;
      std::string text;
      const ssize_t n = ::read(fd.get(), buffer_.data(), buffer_.size());
      if (n < 0) {
        if (errno == EINTR) continue;
        return true;  // EISDIR, EIO...: readline ends, the lines so far count
      }
      if (n == 0) {
        text = decoder.finish();
        at_end = true;
      } else {
        text = decoder.write(std::string_view(buffer_.data(), static_cast<size_t>(n)));
      }
      // readline: "\r\n", "\n" and a lone "\r" end a line; a "\n" right after a chunk that ended
      // in "\r" belongs to that break.
      std::string_view chunk(text);
      if (saw_return && !chunk.empty() && chunk[0] == '\n') chunk.remove_prefix(1);
      if (!chunk.empty()) saw_return = false;
      std::size_t start = 0;
      for (std::size_t i = 0; i < chunk.size(); ++i) {
        const char c = chunk[i];
        if (c != '\n' && c != '\r') continue;
        partial.append(chunk.substr(start, i - start));
        if (!emit(file, ++line_number, partial)) return false;
        partial.clear();
        if (c == '\r') {
          if (i + 1 < chunk.size() && chunk[i + 1] == '\n') {
            ++i;
          } else if (i + 1 == chunk.size()) {
            saw_return = true;
          }
        }
        start = i + 1;
      }
      partial.append(chunk.substr(start));
      // A NUL marks a binary file: the lines already complete count, the rest is never read.
      if (text.find('\0') != std::string::npos) return true;
    }
    if (!partial.empty() && !emit(file, ++line_number, partial)) return false;
    return true;
  }

  // Depth-first over real directories in name order; symlinks, devices and sockets are skipped.
  bool walk(const std::string& dir, int depth) {
    if (depth > kWalkMaxDepth) return true;
    if (timed_out()) return false;
    DIR* handle = ::opendir(dir.c_str());
    if (handle == nullptr) return true;
    std::vector<std::pair<std::string, unsigned char>> entries;
    // Each DIR stream is private to this call, which is all readdir needs to be thread-safe.
    while (const dirent* d = ::readdir(handle)) {  // NOLINT(concurrency-mt-unsafe)
      const std::string_view name(d->d_name);
      if (name == "." || name == "..") continue;
      unsigned char type = d->d_type;
      if (type == DT_UNKNOWN) {
        struct stat st {};
        if (::lstat((dir + "/" + d->d_name).c_str(), &st) == 0) {
          type = S_ISDIR(st.st_mode) ? DT_DIR : S_ISREG(st.st_mode) ? DT_REG : DT_LNK;
        }
      }
      entries.emplace_back(std::string(name), type);
    }
    ::closedir(handle);
    std::sort(entries.begin(), entries.end());
    for (const auto& [name, type] : entries) {
      if (name == ".git" || name == "node_modules") continue;
      if (remaining_-- == 0) return false;
      if (timed_out()) return false;
      std::string child = dir;
      child += '/';
      child += name;
      if (type == DT_DIR) {
        if (!walk(child, depth + 1)) return false;
      } else if (type == DT_REG) {
        if (!grep_file(child)) return false;
      }
    }
    return true;
  }

  bool timed_out() {
    if (!timed_out_ && clock_.now() >= deadline_) timed_out_ = true;
    return timed_out_;
  }
  bool was_timed_out() const { return timed_out_; }
  std::vector<std::string>& hits() { return hits_; }

 private:
  bool emit(const std::string& file, std::size_t line_number, const std::string& line) {
    // Long lines are skipped (a model-supplied regex on one could backtrack for ever) but counted.
    const std::size_t units = utf16_length(line);
    if (units > kGrepMaxLineLength) return true;
    if (!regex_.test(line)) return true;
    std::string hit = file + ":" + std::to_string(line_number) + ":" + line;
    const auto cost = static_cast<long long>(utf16_length(hit)) + 1;
    budget_ -= cost;
    if (budget_ < 0) {
      hits_.push_back("[output truncated at " + std::to_string(kGrepOutputLimit) + " bytes]");
      return false;
    }
    hits_.push_back(std::move(hit));
    return true;
  }

  const LineRegex& regex_;
  const Clock& clock_;
  Clock::TimePoint deadline_;
  bool timed_out_ = false;
  long long budget_ = static_cast<long long>(kGrepOutputLimit);
  std::size_t remaining_ = kWalkMaxEntries;
  std::vector<std::string> hits_;
  // One read buffer for the whole search: allocating it per file costs more than the reads.
  std::vector<char> buffer_ = std::vector<char>(kStreamChunkBytes);
};

}  // namespace

std::string GrepTool::run(const nlohmann::json& input) {
  if (input.is_null()) {
    throw ToolError("Error: Cannot destructure property 'pattern' of 'object null' as it is null.");
  }
  const nlohmann::json* pattern_value = field(input, "pattern");
  if (!js_truthy(pattern_value)) throw ToolError("grep: pattern is required");
  std::string root = workspace_.workdir();
  const nlohmann::json* path_value = field(input, "path");
  if (js_truthy(path_value)) root = workspace_.confine(*path_value);
  // `new RegExp(pattern)` coerces a non-string pattern to its string form.
  const LineRegex regex(js_to_string(*pattern_value));
  Search search(regex, clock_, clock_.now() + timeout_);
  struct stat st {};
  if (::stat(root.c_str(), &st) == 0 && S_ISREG(st.st_mode)) {
    search.grep_file(root);
  } else {
    search.walk(root, 0);
  }
  auto& hits = search.hits();
  if (search.was_timed_out()) {
    if (hits.empty()) {
      throw ToolError("grep: timed out after " + std::to_string(timeout_.count() / 1000) + "s");
    }
    hits.push_back("[the search was cut short after " + std::to_string(timeout_.count()) + " ms]");
  }
  if (hits.empty()) return "no matches";
  std::string out;
  for (std::size_t i = 0; i < hits.size(); ++i) {
    if (i > 0) out += '\n';
    out += hits[i];
  }
  return out;
}

}  // namespace perimeter::tools
