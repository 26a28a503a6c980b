// Differential tests: every case runs in a fresh workspace, first through the official SDK's
// agent toolset (Node, tests/differential/driver.mjs), then, in the same workspace rebuilt from
// scratch at the same path, through Perimeter's AgentToolset. The posted results (content blocks
// and is_error) and the workspace left behind must be equal byte for byte, or the case names a
// difference documented in docs/runner-tools.md and asserts exactly that difference.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/clock.h"
#include "core/log.h"
#include "node_driver.h"
#include "tools/agent_toolset.h"

namespace perimeter::tools {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// Builds a workspace; every file gets its own mtime (10 s apart, in creation order), so glob's
// newest-first order is fully determined.
class Layout {
 public:
  Layout(fs::path ws, fs::path outside) : ws_(std::move(ws)), outside_(std::move(outside)) {}
  const fs::path& ws() const { return ws_; }
  const fs::path& outside() const { return outside_; }

  void file(const std::string& rel, const std::string& content, mode_t mode = 0644) {
    const fs::path p = ws_ / rel;
    fs::create_directories(p.parent_path());
    std::ofstream(p, std::ios::binary) << content;
    ::chmod(p.c_str(), mode);
    const timeval times[2] = {{1'700'000'000 + 10 * counter_, 0},
                              {1'700'000'000 + 10 * counter_, 0}};
    ++counter_;
    ::utimes(p.c_str(), times);
  }
  void dir(const std::string& rel) { fs::create_directories(ws_ / rel); }
  void link(const std::string& rel, const std::string& target) {
    fs::create_directories((ws_ / rel).parent_path());
    fs::create_symlink(target, ws_ / rel);
  }
  void fifo(const std::string& rel) { ::mkfifo((ws_ / rel).c_str(), 0644); }

 private:
  fs::path ws_;
  fs::path outside_;
  long counter_ = 0;
};

struct Call {
  std::string tool;
  json input;
};

// A difference from the SDK that docs/runner-tools.md justifies: given both results of one call,
// asserts that they differ in exactly the documented way.
using Difference = std::function<void(const json& sdk, const json& ours)>;

struct Case {
  std::string name;
  std::function<void(Layout&)> setup;
  std::vector<Call> calls;
  std::map<std::size_t, Difference> documented = {};  // call index -> the documented difference
};

[[maybe_unused]] std::string text_of(const json& result) {
  return result.at("content").at(0).at("text").get<std::string>();
}

std::string repeat_lines(const std::string& prefix, int count) {
  std::string out;
  for (int i = 1; i <= count; ++i) out += prefix + std::to_string(i) + "\n";
  return out;
}

// Everything under `root`: type, permission bits, content or link target. Never follows a link.
void snapshot_into(const fs::path& root, const fs::path& dir,
                   std::map<std::string, std::string>* out) {
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const fs::path p = it->path();
    struct stat st {};
    ::lstat(p.c_str(), &st);
    std::string desc = "mode=" + std::to_string(st.st_mode & 07777) + " ";
    if (S_ISLNK(st.st_mode)) {
      desc += "link->" + fs::read_symlink(p).string();
    } else if (S_ISREG(st.st_mode)) {
      std::ifstream in(p, std::ios::binary);
      std::string content((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      desc += "file:" + std::to_string(content.size()) + ":" +
              std::to_string(std::hash<std::string>{}(content));
    } else if (S_ISDIR(st.st_mode)) {
      desc += "dir";
      snapshot_into(root, p, out);
    } else {
      desc += "other";
    }
    (*out)[p.lexically_relative(root).string()] = desc;
  }
}

std::map<std::string, std::string> snapshot(const fs::path& root) {
  std::map<std::string, std::string> out;
  snapshot_into(root, root, &out);
  return out;
}

std::vector<Case> cases() {
  const std::string big = repeat_lines("line ", 1'200'000);  // ~10 MB
  std::vector<Case> c;
  auto basic = [](Layout& l) {
    l.file("a.txt", "hello\nworld\n");
    l.file("src/main.c", "int main() {\n  return 0;\n}\n");
    l.file("src/util/helper.c", "// helper\nint helper(void) { return 1; }\n");
    l.file("docs/readme.md", "# Title\nSome text\nTODO: more\n");
    l.file(".hidden", "secret-ish\n");
    l.file("node_modules/pkg/index.js", "module.exports = 1; // TODO\n");
    l.file(".git/config", "[core]\nTODO = 1\n");
    l.file("b.txt", "no newline at end");
  };
  auto escapes = [&](Layout& l) {
    basic(l);
    std::ofstream(l.outside() / "secret.txt") << "outside secret\n";
    l.link("out", "../outside");
    l.link("secret-link", "../outside/secret.txt");
    l.link("dangling-out", "../outside/nope.txt");
    l.link("inside-link", "a.txt");
    l.link("loop1", "loop2");
    l.link("loop2", "loop1");
  };

  // ---- read ----
  c.push_back({"read_whole_file", basic, {{"read", {{"file_path", "a.txt"}}}}});
  c.push_back({"read_absolute_inside", basic, {{"read", {{"file_path", "@WS@/src/main.c"}}}}});
  c.push_back({"read_missing", basic, {{"read", {{"file_path", "nope.txt"}}}}});
  c.push_back({"read_directory", basic, {{"read", {{"file_path", "src"}}}}});
  c.push_back({"read_fifo",
               [&](Layout& l) {
                 basic(l);
                 l.fifo("pipe");
               },
               {{"read", {{"file_path", "pipe"}}}}});
  c.push_back({"read_empty_file",
               [](Layout& l) { l.file("empty", ""); },
               {{"read", {{"file_path", "empty"}}}}});
  c.push_back({"read_view_ranges",
               [](Layout& l) { l.file("f", repeat_lines("l", 10)); },
               {{"read", {{"file_path", "f"}, {"view_range", {2, 4}}}},
                {"read", {{"file_path", "f"}, {"view_range", {8, -1}}}},
                {"read", {{"file_path", "f"}, {"view_range", {0, 0}}}},
                {"read", {{"file_path", "f"}, {"view_range", {5, 3}}}},
                {"read", {{"file_path", "f"}, {"view_range", {9, 100}}}},
                {"read", {{"file_path", "f"}, {"view_range", {11, 12}}}},
                {"read", {{"file_path", "f"}, {"view_range", json::array()}}},
                {"read", {{"file_path", "f"}, {"view_range", {1, 2, 3}}}},
                {"read", {{"file_path", "f"}, {"view_range", {1}}}},
                {"read", {{"file_path", "f"}, {"view_range", {1.5, 3.7}}}},
                {"read", {{"file_path", "f"}, {"view_range", {"2", "3"}}}},
                {"read", {{"file_path", "f"}, {"view_range", 7}}}}});
  c.push_back(
      {"read_invalid_utf8_and_binary",
       [](Layout& l) {
         l.file("bad", std::string("ok \xff\xfe mid \xe2\x82 end \xf0\x9f\x98\x80 \xc0\xaf\n", 30));
         l.file("bin", std::string("\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0", 20));
       },
       {{"read", {{"file_path", "bad"}}}, {"read", {{"file_path", "bin"}}}}});
  c.push_back({"read_over_cap_needs_view_range",
               [&](Layout& l) { l.file("big.log", big); },
               {{"read", {{"file_path", "big.log"}}},
                {"read", {{"file_path", "big.log"}, {"view_range", {1000, 1003}}}},
                {"read", {{"file_path", "big.log"}, {"view_range", {1'199'999, 0}}}},
                {"read", {{"file_path", "big.log"}, {"view_range", {1, 100000}}}},
                {"read", {{"file_path", "big.log"}, {"view_range", {3, 2}}}}}});
  c.push_back(
      {"read_one_line_over_cap",
       [](Layout& l) { l.file("wide", "first\n" + std::string(300 * 1024, 'x') + "\nlast\n"); },
       {{"read", {{"file_path", "wide"}, {"view_range", {2, 2}}}},
        {"read", {{"file_path", "wide"}, {"view_range", {1, 1}}}},
        {"read", {{"file_path", "wide"}, {"view_range", {3, 3}}}}}});
  c.push_back({"read_escapes",
               escapes,
               {{"read", {{"file_path", "../outside/secret.txt"}}},
                {"read", {{"file_path", "@OUTSIDE@/secret.txt"}}},
                {"read", {{"file_path", "/etc/passwd"}}},
                {"read", {{"file_path", "out/secret.txt"}}},
                {"read", {{"file_path", "secret-link"}}},
                {"read", {{"file_path", "dangling-out"}}},
                {"read", {{"file_path", "inside-link"}}},
                {"read", {{"file_path", "loop1"}}},
                {"read", {{"file_path", "src/../a.txt"}}},
                {"read", {{"file_path", "src/../../ws/a.txt"}}},
                {"read", {{"file_path", "a.txt/x"}}}}});
  c.push_back({"read_bad_inputs",
               basic,
               {{"read", json::object()},
                {"read", {{"file_path", ""}}},
                {"read", {{"file_path", 123}}},
                {"read", {{"file_path", true}}},
                {"read", {{"file_path", {1, 2}}}},
                {"read", nullptr},
                {"read", "a.txt"}}});

  // ---- write ----
  c.push_back({"write_new_nested_and_overwrite",
               basic,
               {{"write", {{"file_path", "new/deep/dir/x.txt"}, {"content", "héllo ✓\n"}}},
                {"write", {{"file_path", "a.txt"}, {"content", "replaced"}}},
                {"write", {{"file_path", "empty.txt"}, {"content", ""}}},
                {"write", {{"file_path", "nocontent.txt"}}},
                {"write", {{"file_path", "@WS@/abs.txt"}, {"content", "abs"}}}}});
  c.push_back({"write_keeps_mode",
               [](Layout& l) { l.file("run.sh", "#!/bin/sh\n", 0755); },
               {{"write", {{"file_path", "run.sh"}, {"content", "#!/bin/sh\necho hi\n"}}}}});
  c.push_back({"write_errors",
               escapes,
               {{"write", {{"file_path", "src"}, {"content", "x"}}},
                {"write", {{"file_path", "a.txt/child"}, {"content", "x"}}},
                {"write", {{"file_path", "../outside/evil.txt"}, {"content", "x"}}},
                {"write", {{"file_path", "out/evil.txt"}, {"content", "x"}}},
                {"write", {{"file_path", "dangling-out"}, {"content", "x"}}},
                {"write", {{"file_path", "/tmp/evil.txt"}, {"content", "x"}}},
                {"write", {{"content", "x"}}},
                {"write", {{"file_path", "num.txt"}, {"content", 5}}},
                {"write", {{"file_path", "null.txt"}, {"content", nullptr}}},
                {"write", nullptr}}});

  // ---- edit ----
  c.push_back(
      {"edit_rules",
       [](Layout& l) {
         l.file("f.txt", "alpha beta\ngamma beta\nunique line\n");
         l.file("g.txt", "aaaa");
       },
       {{"edit",
         {{"file_path", "f.txt"}, {"old_string", "unique"}, {"new_string", "one $& $1 $$"}}},
        {"edit", {{"file_path", "f.txt"}, {"old_string", "beta"}, {"new_string", "B"}}},
        {"edit", {{"file_path", "f.txt"}, {"old_string", "missing"}, {"new_string", "x"}}},
        {"edit",
         {{"file_path", "f.txt"},
          {"old_string", "beta"},
          {"new_string", "B"},
          {"replace_all", true}}},
        {"edit",
         {{"file_path", "g.txt"},
          {"old_string", "aa"},
          {"new_string", "b"},
          {"replace_all", "yes"}}},
        {"edit", {{"file_path", "f.txt"}, {"old_string", ""}, {"new_string", "x"}}},
        {"edit", {{"file_path", "f.txt"}, {"new_string", "x"}}},
        {"edit", {{"old_string", "a"}, {"new_string", "x"}}},
        {"edit", {{"file_path", "f.txt"}, {"old_string", "gamma"}}},
        {"edit", {{"file_path", "f.txt"}, {"old_string", "B"}, {"replace_all", true}}},
        {"edit", {{"file_path", "f.txt"}, {"old_string", "alpha"}, {"new_string", 42}}},
        {"edit", {{"file_path", "missing.txt"}, {"old_string", "a"}, {"new_string", "b"}}},
        {"edit", {{"file_path", "."}, {"old_string", "a"}, {"new_string", "b"}}}}});
  c.push_back(
      {"edit_unicode_and_escapes",
       escapes,
       {{"write", {{"file_path", "u.txt"}, {"content", "naïve café ✓ 😀 end"}}},
        {"edit", {{"file_path", "u.txt"}, {"old_string", "😀"}, {"new_string", "🙂🙂"}}},
        {"edit", {{"file_path", "out/secret.txt"}, {"old_string", "secret"}, {"new_string", "x"}}},
        {"edit", {{"file_path", "secret-link"}, {"old_string", "secret"}, {"new_string", "x"}}},
        {"read", {{"file_path", "u.txt"}}}}});
  c.push_back(
      {"edit_over_cap",
       [&](Layout& l) { l.file("big.log", big); },
       {{"edit", {{"file_path", "big.log"}, {"old_string", "line 5\n"}, {"new_string", "x"}}}}});

  c.push_back(
      {"line_endings_and_nul_through_file_tools",
       [](Layout& l) {
         l.file("crlf.txt", "one\r\ntwo\r\nthree");
         l.file("nul.txt", std::string("a\0b\nc\n", 6));
         l.dir("src");
         l.file("src/main.c", "int main() {}\n");
         l.link("src-link", "src");
         l.link("main-link", "src/main.c");
       },
       {{"read", {{"file_path", "crlf.txt"}, {"view_range", {2, 2}}}},
        {"read", {{"file_path", "nul.txt"}}},
        {"edit", {{"file_path", "crlf.txt"}, {"old_string", "two\r\n"}, {"new_string", "2\n"}}},
        {"read", {{"file_path", "crlf.txt"}}},
        {"write", {{"file_path", "w.bin"}, {"content", std::string("x\0y\u00e9", 5)}}},
        {"read", {{"file_path", "w.bin"}}},
        {"glob", {{"pattern", "*.c"}, {"path", "src-link"}}},
        {"grep", {{"pattern", "main"}, {"path", "src-link"}}},
        {"grep", {{"pattern", "main"}, {"path", "main-link"}}},
        {"read", {{"file_path", "src-link/main.c"}}},
        {"write", {{"file_path", "src-link/new.c"}, {"content", "// via link\n"}}}}});
  c.push_back({"read_streamed_range_edges",
               [&](Layout& l) { l.file("big.log", big); },
               {{"read", {{"file_path", "big.log"}, {"view_range", {1, 0}}}},
                {"read", {{"file_path", "big.log"}, {"view_range", {1'200'000, 1'200'001}}}},
                {"read", {{"file_path", "big.log"}, {"view_range", {1'200'001, -1}}}},
                {"read", {{"file_path", "big.log"}, {"view_range", {0, 1}}}},
                {"read", {{"file_path", "big.log"}, {"view_range", {2.5, 4.5}}}}}});

  // ---- glob ----
  c.push_back({"glob_patterns",
               basic,
               {{"glob", {{"pattern", "**/*.c"}}},
                {"glob", {{"pattern", "*"}}},
                {"glob", {{"pattern", "**/*"}}},
                {"glob", {{"pattern", "**"}}},
                {"glob", {{"pattern", "src/**"}}},
                {"glob", {{"pattern", "{a,b}.txt"}}},
                {"glob", {{"pattern", "?.txt"}}},
                {"glob", {{"pattern", "[ab].txt"}}},
                {"glob", {{"pattern", "[!a].txt"}}},
                {"glob", {{"pattern", "**/util/*.c"}}},
                {"glob", {{"pattern", "src/*/helper.c"}}},
                {"glob", {{"pattern", ".hidden"}}},
                {"glob", {{"pattern", ".*"}}},
                {"glob", {{"pattern", "**/.hidden"}}},
                {"glob", {{"pattern", "node_modules/**/*.js"}}},
                {"glob", {{"pattern", "**/*.js"}}},
                {"glob", {{"pattern", "./docs/*.md"}}},
                {"glob", {{"pattern", "src/"}}},
                {"glob", {{"pattern", "*.nothing"}}},
                {"glob", {{"pattern", "*.c"}, {"path", "src"}}},
                {"glob", {{"pattern", "**/*.c"}, {"path", "src/util"}}},
                {"glob", {{"pattern", "*"}, {"path", "missing"}}},
                {"glob", {{"pattern", "*"}, {"path", "a.txt"}}}}});
  c.push_back({"glob_refusals_and_symlinks",
               escapes,
               {{"glob", {{"pattern", "/etc/*"}}},
                {"glob", {{"pattern", "../*"}}},
                {"glob", {{"pattern", "{..,src}/*"}}},
                {"glob", {{"pattern", "out/*"}}},
                {"glob", {{"pattern", "**/secret.txt"}}},
                {"glob", {{"pattern", "*"}, {"path", "../outside"}}},
                {"glob", {{"pattern", "*"}, {"path", "out"}}},
                {"glob", {{"pattern", "*link*"}}},
                {"glob", json::object()},
                {"glob", {{"pattern", ""}}},
                {"glob", {{"pattern", 7}}},
                {"glob", nullptr}}});
  c.push_back({"glob_result_limit",
               [](Layout& l) {
                 for (int i = 0; i < 250; ++i) l.file("many/f" + std::to_string(i) + ".txt", "x");
               },
               {{"glob", {{"pattern", "many/*.txt"}}}, {"glob", {{"pattern", "**/f1*.txt"}}}}});

  c.push_back({"glob_equal_mtimes_keep_walk_order",
               [](Layout& l) {
                 // Same mtime everywhere: the order is the walk's, nothing else.
                 for (const char* f : {"b/2.txt", "a/1.txt", "a/z/3.txt", "a/y/4.txt", "c.txt",
                                       "a/5.txt", "b/q/6.txt", "0.txt"}) {
                   l.file(f, "x");
                 }
                 ::system(
                     ("find " + l.ws().string() + " -exec touch -h -d @1700000000 {} +").c_str());
               },
               {{"glob", {{"pattern", "**/*.txt"}}},
                {"glob", {{"pattern", "**"}}},
                {"glob", {{"pattern", "{a,b}/**/*.txt"}}},
                {"glob", {{"pattern", "*/*.txt"}}}}});

  // ---- grep ----
  c.push_back({"grep_basics",
               basic,
               {{"grep", {{"pattern", "TODO"}}},
                {"grep", {{"pattern", "^int \\w+\\("}}},
                {"grep", {{"pattern", "return [01];$"}}},
                {"grep", {{"pattern", "nothing-matches-this"}}},
                {"grep", {{"pattern", "e"}, {"path", "docs/readme.md"}}},
                {"grep", {{"pattern", "e"}, {"path", "src"}}},
                {"grep", {{"pattern", "e"}, {"path", "missing"}}},
                {"grep", {{"pattern", "end$"}, {"path", "b.txt"}}},
                {"grep", {{"pattern", "[0-9]"}}},
                {"grep", {{"pattern", "(?:Title|helper)"}}},
                {"grep", {{"pattern", "\\bmain\\b"}}},
                {"grep", {{"pattern", "a|"}}}}});
  c.push_back({"grep_bad_inputs",
               escapes,
               {{"grep", json::object()},
                {"grep", {{"pattern", ""}}},
                {"grep", {{"pattern", "("}}},
                {"grep", {{"pattern", ")"}}},
                {"grep", {{"pattern", "*"}}},
                {"grep", {{"pattern", "["}}},
                {"grep", {{"pattern", "a\\"}}},
                {"grep", {{"pattern", "x"}, {"path", "../outside"}}},
                {"grep", {{"pattern", "x"}, {"path", "out"}}},
                {"grep", {{"pattern", "secret"}}},
                {"grep", {{"pattern", 1}}},
                {"grep", nullptr}}});
  c.push_back({"grep_line_endings_binary_unicode",
               [](Layout& l) {
                 l.file("crlf.txt", "one\r\ntwo\rthree\n\nfour\r\n");
                 l.file("bin.dat", std::string("match one\nmatch\0two\nmatch three", 30));
                 l.file("late-nul.dat",
                        repeat_lines("match ", 20000) + std::string("\0", 1) + "match tail\n");
                 l.file("utf.txt", "naïve match ✓\nbad \xff match\n");
                 l.file("long.txt",
                        "short match\n" + std::string(2500, 'm') + " match\nafter match\n");
               },
               {{"grep", {{"pattern", "o"}, {"path", "crlf.txt"}}},
                {"grep", {{"pattern", "^$"}, {"path", "crlf.txt"}}},
                {"grep", {{"pattern", "match"}, {"path", "bin.dat"}}},
                {"grep", {{"pattern", "tail|match 1999[0-9]$"}, {"path", "late-nul.dat"}}},
                {"grep", {{"pattern", "match"}, {"path", "utf.txt"}}},
                {"grep", {{"pattern", "match"}, {"path", "long.txt"}}}}});
  c.push_back({"grep_output_cap",
               [](Layout& l) { l.file("many.txt", repeat_lines("needle number ", 20000)); },
               {{"grep", {{"pattern", "needle"}}}}});

  c.push_back({"grep_regex_dialect",
               [](Layout& l) {
                 l.file("r.txt",
                        "tab\there\nnbsp\u00a0here\nbrace a{ b}\ncafé\nfoo123bar\nslash/x\n"
                        "Ωmega\n\u2028sep\nabcabc\nprice $5\n");
               },
               {{"grep", {{"pattern", "\\s"}}},
                {"grep", {{"pattern", "a{"}}},
                {"grep", {{"pattern", "(?<=foo)\\d+"}}},
                {"grep", {{"pattern", "(?<word>abc)\\k<word>"}}},
                {"grep", {{"pattern", "caf\\u00e9"}}},
                {"grep", {{"pattern", "\\x41|\\/x"}}},
                {"grep", {{"pattern", "[^]mega"}}},
                {"grep", {{"pattern", "^.mega$"}}},
                {"grep", {{"pattern", "\\$5"}}},
                {"grep", {{"pattern", "(a)|\\1b"}}},
                {"grep", {{"pattern", "\\w+\\d{3}"}}},
                {"grep", {{"pattern", "a{2,1}"}}},
                {"grep", {{"pattern", "[z-a]"}}},
                {"grep", {{"pattern", "(?i)TAB"}}},
                {"grep", {{"pattern", "\\p{L}mega"}}}}});
  c.push_back({"glob_more_patterns",
               [](Layout& l) {
                 l.file("v1.txt", "");
                 l.file("v2.txt", "");
                 l.file("v10.txt", "");
                 l.file(".dot/x", "");
                 l.file(".dot/.y", "");
                 l.file("src/.h2", "");
                 l.file("src/sub/.h3", "");
                 l.file("src/sub/z", "");
                 l.file("node_modules/m/i.js", "");
                 l.file("Upper.TXT", "");
                 l.file("sp ace/f [1].md", "");
                 l.file("x/y/z/deep.txt", "");
               },
               {{"glob", {{"pattern", "v{1..3}.txt"}}},
                {"glob", {{"pattern", "v{1,1?}.txt"}}},
                {"glob", {{"pattern", "**/.*"}}},
                {"glob", {{"pattern", "**/.dot/*"}}},
                {"glob", {{"pattern", "**/.h3"}}},
                {"glob", {{"pattern", "**/node_modules/*"}}},
                {"glob", {{"pattern", "**/i.js"}}},
                {"glob", {{"pattern", "*.txt"}}},
                {"glob", {{"pattern", "*.TXT"}}},
                {"glob", {{"pattern", "[[:upper:]]*"}}},
                {"glob", {{"pattern", "sp ace/*"}}},
                {"glob", {{"pattern", "**/z/*"}}},
                {"glob", {{"pattern", "x/**/deep.txt"}}},
                {"glob", {{"pattern", "**/**/deep.txt"}}},
                {"glob", {{"pattern", "x\\y\\*\\deep.txt"}}},
                {"glob", {{"pattern", "{v1,x/y}*"}}},
                {"glob", {{"pattern", "v[0-9].txt"}}},
                {"glob", {{"pattern", "v[!0-1]*.txt"}}},
                {"glob", {{"pattern", "*/"}}},
                {"glob", {{"pattern", "[.]dot/*"}}}}});

  // ---- bash ----
  c.push_back({"bash_persistent_shell",
               basic,
               {{"bash", {{"command", "echo hello; echo to-stderr >&2"}}},
                {"bash", {{"command", "cd src && export FOO=bar"}}},
                {"bash", {{"command", "pwd; echo $FOO"}}},
                {"bash", {{"command", "true"}}},
                {"bash", {{"command", "echo partial; exit_code() { return 3; }; exit_code"}}},
                {"bash", {{"command", "false"}}},
                {"bash", {{"command", "printf '\\033[1;31mred\\033[0m plain\\n\\n\\n'"}}},
                {"bash", {{"command", "cat; echo after-cat"}}},
                {"bash", {{"command", "echo naïve ✓; printf 'bad \\377 byte\\n'"}}},
                {"bash", {{"command", "env | grep -c '^ANTHROPIC_' || true"}}},
                {"bash", {{"command", "echo $PS1$PS2$TERM"}}},
                {"bash", {{"restart", true}}},
                {"bash", {{"command", "pwd; echo ${FOO:-unset}"}, {"restart", true}}},
                {"bash", json::object()},
                {"bash", {{"command", ""}}},
                {"bash", {{"command", "if"}}},
                {"bash", nullptr}}});
  c.push_back({"bash_timeout_and_exit",
               basic,
               {{"bash", {{"command", "cd src; sleep 30"}, {"timeout_ms", 300}}},
                {"bash", {{"command", "pwd"}}},
                {"bash", {{"command", "exit 3"}}},
                {"bash", {{"command", "echo alive"}}},
                {"bash", {{"command", "sleep 1 & echo started"}}},
                {"bash", {{"command", "echo quick"}, {"timeout_ms", 5000}}}}});
  c.push_back({"bash_output_cap",
               basic,
               {{"bash", {{"command", "for i in $(seq 1 30000); do echo line-$i; done"}}},
                {"bash", {{"command", "head -c 300000 /dev/zero | tr '\\0' 'x'; echo; echo tail"}}},
                {"bash", {{"command", "seq 1 20000; exit 2"}}}}});
  // ---- documented differences (docs/runner-tools.md, "Differences from the SDK") ----
  // Each asserts the exact difference, so a change on either side shows up here.
  auto result_text = [](const json& r) {
    return r.at("content").at(0).at("text").get<std::string>();
  };
  c.push_back({"documented_regex_code_units",
               [](Layout& l) { l.file("e.txt", "\xF0\x9F\x98\x80\n"); },
               {{"grep", {{"pattern", "^.$"}, {"path", "e.txt"}}}},
               {{0, [=](const json& sdk, const json& ours) {
                   // JavaScript's '.' is one UTF-16 unit; PCRE2 in UTF mode matches the whole code
                   // point.
                   EXPECT_EQ(result_text(sdk), "no matches");
                   EXPECT_EQ(result_text(ours).substr(result_text(ours).size() - 13),
                             "/e.txt:1:\xF0\x9F\x98\x80");
                   EXPECT_EQ(sdk.at("is_error"), ours.at("is_error"));
                 }}}});
  c.push_back({"documented_glob_extglob",
               basic,
               {{"glob", {{"pattern", "+(a|b).txt"}}}},
               {{0, [=](const json& sdk, const json& ours) {
                   // minimatch's extglobs are not implemented: the pattern is read literally.
                   EXPECT_NE(result_text(sdk).find("/a.txt"), std::string::npos);
                   EXPECT_EQ(result_text(ours), "no matches");
                 }}}});
  c.push_back({"documented_view_range_nested_array",
               [](Layout& l) { l.file("f", repeat_lines("l", 6)); },
               {{"read", {{"file_path", "f"}, {"view_range", {json::array({3}), 4}}}}},
               {{0, [=](const json& sdk, const json& ours) {
                   // JavaScript reads [3] as 3; Perimeter reads a non-number element as NaN (slice
                   // 0).
                   EXPECT_EQ(result_text(sdk), "l3\nl4");
                   EXPECT_EQ(result_text(ours), "l1\nl2\nl3\nl4");
                 }}}});
  return c;
}

class RunnerToolsDifferential : public ::testing::TestWithParam<Case> {
 protected:
  static void SetUpTestSuite() {
    const char* source_dir = std::getenv("PERIMETER_SOURCE_DIR");
    ASSERT_NE(source_dir, nullptr) << "PERIMETER_SOURCE_DIR is set by ctest";
    try {
      install_dir_ = testing::NodeDriver::find_install(source_dir);
      driver_ = std::make_unique<testing::NodeDriver>(source_dir, install_dir_);
    } catch (const std::exception& e) {
      setup_error_ = e.what();
    }
    char tmpl[] = "/tmp/perimeter-tools-diff-XXXXXX";
    base_ = fs::canonical(::mkdtemp(tmpl));
  }
  static void TearDownTestSuite() {
    driver_.reset();
    std::error_code ignored;
    fs::remove_all(base_, ignored);
  }

  // A fresh workspace at the same path every time.
  Layout fresh_layout() {
    std::error_code ignored;
    fs::remove_all(base_ / "ws", ignored);
    fs::remove_all(base_ / "outside", ignored);
    fs::create_directories(base_ / "ws");
    fs::create_directories(base_ / "outside");
    return Layout(base_ / "ws", base_ / "outside");
  }

  static json substitute(json input, const Layout& l) {
    if (input.is_object() && input.contains("file_path") && input["file_path"].is_string()) {
      std::string p = input["file_path"];
      for (auto [token, value] :
           {std::pair{"@WS@", l.ws().string()}, {"@OUTSIDE@", l.outside().string()}}) {
        if (auto pos = p.find(token); pos != std::string::npos)
          p.replace(pos, std::string(token).size(), value);
      }
      input["file_path"] = p;
    }
    return input;
  }

  static inline std::string install_dir_;
  static inline std::string setup_error_;
  static inline std::unique_ptr<testing::NodeDriver> driver_;
  static inline fs::path base_;
};

TEST_P(RunnerToolsDifferential, SameResultsAsOfficialSdk) {
  ASSERT_TRUE(setup_error_.empty()) << setup_error_;
  const Case& tc = GetParam();

  Layout sdk_layout = fresh_layout();
  tc.setup(sdk_layout);
  std::vector<json> sdk_results;
  for (const auto& call : tc.calls) {
    sdk_results.push_back(
        driver_->call(sdk_layout.ws().string(), call.tool, substitute(call.input, sdk_layout)));
  }
  driver_->close_workdir(sdk_layout.ws().string());
  const auto sdk_ws = snapshot(sdk_layout.ws());
  const auto sdk_outside = snapshot(sdk_layout.outside());

  Layout our_layout = fresh_layout();
  tc.setup(our_layout);
  SystemClock clock;
  auto sink = std::make_shared<StderrSink>();
  std::vector<json> our_results;
  {
    AgentToolsetOptions options;
    options.workdir = our_layout.ws().string();
    AgentToolset toolset(std::move(options), clock, Logger("runner-tools", sink, LogLevel::kWarn));
    for (const auto& call : tc.calls) {
      our_results.push_back(
          toolset.execute(call.tool, substitute(call.input, our_layout)).to_json());
    }
  }
  const auto our_ws = snapshot(our_layout.ws());
  const auto our_outside = snapshot(our_layout.outside());

  for (std::size_t i = 0; i < tc.calls.size(); ++i) {
    SCOPED_TRACE("call " + std::to_string(i) + ": " + tc.calls[i].tool + " " +
                 tc.calls[i].input.dump());
    if (std::getenv("PERIMETER_DIFF_VERBOSE") != nullptr) {
      std::cerr << tc.calls[i].tool << " " << tc.calls[i].input.dump()
                << "\n  sdk:  " << sdk_results[i].dump() << "\n  ours: " << our_results[i].dump()
                << "\n";
    }
    if (auto it = tc.documented.find(i); it != tc.documented.end()) {
      it->second(sdk_results[i], our_results[i]);
    } else {
      EXPECT_EQ(sdk_results[i].dump(), our_results[i].dump());
    }
  }
  EXPECT_EQ(sdk_ws, our_ws) << "the workspace left behind differs";
  EXPECT_EQ(sdk_outside, our_outside) << "something outside the workspace changed";
}

void PrintTo(const Case& c, std::ostream* os) {
  *os << c.name;
}

INSTANTIATE_TEST_SUITE_P(AgentToolset20260401, RunnerToolsDifferential,
                         ::testing::ValuesIn(cases()),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           return info.param.name;
                         });

}  // namespace
}  // namespace perimeter::tools
