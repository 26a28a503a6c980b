#include "sim/skill_archive.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <set>
#include <string_view>

namespace perimeter::sim {
namespace {

constexpr std::size_t kBlock = 512;

void octal(char* field, std::size_t width, unsigned long long value) {
  // width - 1 digits, then NUL, as ustar readers expect.
  std::snprintf(field, width, "%0*llo", static_cast<int>(width - 1), value);
}

void append_entry(std::string* out, const std::string& name, char type, unsigned mode,
                  const std::string& content) {
  char header[kBlock];
  std::memset(header, 0, sizeof header);
  // Fixed-width fields in a zeroed block: copied without terminators on purpose.
  auto put = [&header](std::size_t offset, std::string_view text, std::size_t width) {
    std::copy_n(text.data(), std::min(text.size(), width), header + offset);
  };
  put(0, name, 100);
  octal(header + 100, 8, mode);
  octal(header + 108, 8, 0);  // uid
  octal(header + 116, 8, 0);  // gid
  octal(header + 124, 12, content.size());
  octal(header + 136, 12, 1767225600);  // fixed mtime (2026-01-01): archives are reproducible
  std::memset(header + 148, ' ', 8);    // checksum field counts as spaces while summing
  header[156] = type;
  put(257, "ustar", 6);  // "ustar\0": the terminator is the zeroed byte after it
  put(263, "00", 2);
  put(265, "perimeter", 32);
  put(297, "perimeter", 32);
  unsigned sum = 0;
  for (unsigned char c : header) sum += c;
  std::snprintf(header + 148, 8, "%06o", sum);
  header[155] = ' ';
  out->append(header, sizeof header);
  out->append(content);
  out->append((kBlock - content.size() % kBlock) % kBlock, '\0');
}

}  // namespace

std::string make_tar_archive(const std::string& root, const std::vector<ArchiveFile>& files) {
  std::string out;
  std::set<std::string> directories = {root + "/"};
  for (const auto& file : files) {
    for (std::size_t slash = file.path.find('/'); slash != std::string::npos;
         slash = file.path.find('/', slash + 1)) {
      directories.insert(root + "/" + file.path.substr(0, slash + 1));
    }
  }
  for (const auto& directory : directories) append_entry(&out, directory, '5', 0755, "");
  for (const auto& file : files) {
    append_entry(&out, root + "/" + file.path, '0', file.executable ? 0755 : 0644, file.content);
  }
  out.append(2 * kBlock, '\0');
  return out;
}

}  // namespace perimeter::sim
