#include "core/base64.h"

#include <gtest/gtest.h>

namespace perimeter {
namespace {

TEST(Base64Test, EncodesTheRfc4648VectorsInBothAlphabets) {
  // RFC 4648 section 10.
  const std::pair<const char*, const char*> vectors[] = {{"", ""},
                                                         {"f", "Zg=="},
                                                         {"fo", "Zm8="},
                                                         {"foo", "Zm9v"},
                                                         {"foob", "Zm9vYg=="},
                                                         {"fooba", "Zm9vYmE="},
                                                         {"foobar", "Zm9vYmFy"}};
  for (const auto& [plain, encoded] : vectors) {
    EXPECT_EQ(base64_encode(plain), encoded) << plain;
    std::string unpadded = encoded;
    while (!unpadded.empty() && unpadded.back() == '=') unpadded.pop_back();
    EXPECT_EQ(base64url_encode(plain), unpadded) << plain;
  }
  EXPECT_EQ(base64_encode("\xfb\xff"), "+/8=");
  EXPECT_EQ(base64url_encode("\xfb\xff"), "-_8");
}

TEST(Base64Test, DecodesEitherAlphabetWithOrWithoutPaddingAndRefusesTheRest) {
  std::string out;
  for (const char* text : {"+/8=", "-_8", "-_8=", "+/8"}) {
    ASSERT_TRUE(base64_decode_any(text, &out)) << text;
    EXPECT_EQ(out, "\xfb\xff") << text;
  }
  std::string bytes;
  for (int i = 0; i < 256; ++i) bytes.push_back(static_cast<char>(i));
  ASSERT_TRUE(base64_decode_any(base64url_encode(bytes), &out));
  EXPECT_EQ(out, bytes);
  ASSERT_TRUE(base64_decode_any(base64_encode(bytes), &out));
  EXPECT_EQ(out, bytes);
  EXPECT_FALSE(base64_decode_any("Zm9v!", &out));
  EXPECT_FALSE(base64_decode_any("Z", &out));  // no whole byte
  EXPECT_FALSE(base64_decode_any("Zm 9v", &out));
  EXPECT_FALSE(base64_decode_any("Zm=9v", &out)) << "padding only at the end";
}

TEST(Base64Test, TheUrlOnlyDecoderRefusesTheStandardAlphabet) {
  std::string out;
  ASSERT_TRUE(base64url_decode("-_8", &out));
  EXPECT_EQ(out, "\xfb\xff");
  ASSERT_TRUE(base64url_decode("-_8=", &out));
  EXPECT_FALSE(base64url_decode("+/8", &out));
}

}  // namespace
}  // namespace perimeter
