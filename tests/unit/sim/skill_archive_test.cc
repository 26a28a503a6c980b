#include "sim/skill_archive.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <string>
#include <vector>

namespace perimeter::sim {
namespace {

struct Entry {
  std::string name;
  char type;
  unsigned mode;
  std::string content;
};

// A minimal ustar reader that checks what a real tar checks: the header checksum and sizes.
std::vector<Entry> read_tar(const std::string& archive) {
  std::vector<Entry> entries;
  std::size_t offset = 0;
  while (offset + 512 <= archive.size()) {
    const char* header = archive.data() + offset;
    if (header[0] == '\0') break;
    unsigned sum = 0;
    for (int i = 0; i < 512; ++i) {
      sum += (i >= 148 && i < 156) ? ' ' : static_cast<unsigned char>(header[i]);
    }
    EXPECT_EQ(sum, std::strtoul(std::string(header + 148, 7).c_str(), nullptr, 8));
    EXPECT_EQ(std::string(header + 257, 5), "ustar");
    const std::size_t size = std::strtoul(std::string(header + 124, 12).c_str(), nullptr, 8);
    Entry entry{
        std::string(header, strnlen(header, 100)), header[156],
        static_cast<unsigned>(std::strtoul(std::string(header + 100, 8).c_str(), nullptr, 8)),
        archive.substr(offset + 512, size)};
    entries.push_back(entry);
    offset += 512 + (size + 511) / 512 * 512;
  }
  EXPECT_EQ(archive.size() % 512, 0u);
  return entries;
}

TEST(SkillArchiveTest, WrapsFilesInOneDirectoryWithParentsAndModes) {
  const std::string archive = make_tar_archive(
      "notes", {{"SKILL.md", "# hi\n", false}, {"scripts/run.sh", "#!/bin/sh\n", true}});
  const auto entries = read_tar(archive);
  ASSERT_EQ(entries.size(), 4u);
  EXPECT_EQ(entries[0].name, "notes/");
  EXPECT_EQ(entries[0].type, '5');
  EXPECT_EQ(entries[1].name, "notes/scripts/");
  EXPECT_EQ(entries[2].name, "notes/SKILL.md");
  EXPECT_EQ(entries[2].content, "# hi\n");
  EXPECT_EQ(entries[2].mode, 0644u);
  EXPECT_EQ(entries[3].name, "notes/scripts/run.sh");
  EXPECT_EQ(entries[3].mode, 0755u);
  EXPECT_EQ(entries[3].type, '0');
}

}  // namespace
}  // namespace perimeter::sim
