#include "agentapi/work_secret.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace perimeter::agentapi {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// {"sessions_token":"sst_1","api_base_url":"http://127.0.0.1:1"} in base64url, no padding.
constexpr const char* kSecret =
    "eyJzZXNzaW9uc190b2tlbiI6InNzdF8xIiwiYXBpX2Jhc2VfdXJsIjoiaHR0cDovLzEyNy4wLjAuMToxIn0";

TEST(WorkSecretTest, DecodesUnpaddedBase64Url) {
  const WorkSecret secret = decode_work_secret(kSecret);
  EXPECT_EQ(secret.sessions_token, "sst_1");
  EXPECT_EQ(secret.api_base_url, "http://127.0.0.1:1");
}

TEST(WorkSecretTest, AcceptsPaddingAndTheStandardAlphabet) {
  // {"sessions_token":"a?>"}: the token's bytes produce '+' and '/' in standard base64.
  EXPECT_EQ(decode_work_secret("eyJzZXNzaW9uc190b2tlbiI6ImE/PiJ9").sessions_token, "a?>");
  EXPECT_EQ(decode_work_secret("eyJzZXNzaW9uc190b2tlbiI6ImE_PiJ9").sessions_token, "a?>");
  // {"sessions_token":"t"} needs padding in standard form.
  EXPECT_EQ(decode_work_secret("eyJzZXNzaW9uc190b2tlbiI6InQifQ==").sessions_token, "t");
  EXPECT_EQ(decode_work_secret("eyJzZXNzaW9uc190b2tlbiI6InQifQ").sessions_token, "t");
}

TEST(WorkSecretTest, UndecodableSecretsGetAClearErrorWithoutTheSecret) {
  auto message = [](std::string_view secret) {
    try {
      decode_work_secret(secret);
    } catch (const SecretError& e) {
      return std::string(e.what());
    }
    return std::string("decoded");
  };
  EXPECT_THAT(message(""), HasSubstr("empty"));
  EXPECT_THAT(message("%%not-base64%%"), HasSubstr("not base64url"));
  EXPECT_THAT(message("%%not-base64%%"), Not(HasSubstr("%%not")));
  EXPECT_THAT(message("bm90IGpzb24"), HasSubstr("does not decode to JSON"));  // "not json"
  EXPECT_THAT(message("WzFd"), HasSubstr("not a JSON object"));               // [1]
  EXPECT_THAT(message("eyJ4IjoxfQ"), HasSubstr("no sessions_token"));         // {"x":1}
  EXPECT_THAT(message("eyJzZXNzaW9uc190b2tlbiI6IiJ9"), HasSubstr("no sessions_token"));  // ""
}

}  // namespace
}  // namespace perimeter::agentapi
