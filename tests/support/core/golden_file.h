#pragma once

// Rendered objects compared byte for byte with files under the source tree, so an output change
// never goes unnoticed (a changed object rolls what it renders in every cluster on upgrade).
// PERIMETER_UPDATE_GOLDEN=1 rewrites the files; review the diff before committing it.

#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

namespace perimeter::testing {

// `directory` is relative to the source tree ($PERIMETER_SOURCE_DIR, else the working directory).
inline std::string golden_path(const std::string& directory, const std::string& name) {
  const char* source = std::getenv("PERIMETER_SOURCE_DIR");
  return std::string(source != nullptr ? source : ".") + "/" + directory + "/" + name;
}

inline void expect_golden(const std::string& directory, const std::string& name,
                          const std::string& actual) {
  const std::string path = golden_path(directory, name);
  if (const char* update = std::getenv("PERIMETER_UPDATE_GOLDEN"); update && *update == '1') {
    std::ofstream(path, std::ios::binary) << actual;
    return;
  }
  std::ifstream in(path, std::ios::binary);
  ASSERT_TRUE(in.good()) << path << " is missing (PERIMETER_UPDATE_GOLDEN=1 writes it)";
  std::stringstream expected;
  expected << in.rdbuf();
  EXPECT_EQ(actual, expected.str()) << "differs from " << path;
}

}  // namespace perimeter::testing
