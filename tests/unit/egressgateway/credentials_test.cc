#include "gateway/credentials.h"

#include <gtest/gtest.h>

#include "core/base64.h"

namespace perimeter::egressgateway {
namespace {

const std::string kKey(40, 'k');

std::string header_for(const std::string& user, const std::string& password) {
  return "Basic " + base64_encode(user + ":" + password);
}

TEST(Credentials, TheOperatorsCredentialIsAccepted) {
  const std::string user = "team-a~agents~sess-42";
  const auto check = verify_proxy_authorization(header_for(user, sign_user(kKey, user)), kKey);
  ASSERT_TRUE(check.identity) << check.failure;
  EXPECT_EQ(check.identity->environment, "team-a/agents");
  EXPECT_EQ(check.identity->session, "sess-42");
}

TEST(Credentials, SignatureIsLowercaseHexHmacSha256) {
  // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
  EXPECT_EQ(sign_user("Jefe", "what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
}

TEST(Credentials, SchemeIsCaseInsensitive) {
  const std::string user = "ns~env~s";
  const auto check = verify_proxy_authorization(
      "basic " + base64_encode(user + ":" + sign_user(kKey, user)), kKey);
  EXPECT_TRUE(check.identity) << check.failure;
}

TEST(Credentials, AnotherEnvironmentsNameWithThisSessionsSignatureIsRefused) {
  const std::string issued = "team-a~agents~s1";
  const std::string password = sign_user(kKey, issued);
  const auto check = verify_proxy_authorization(header_for("team-b~agents~s1", password), kKey);
  EXPECT_FALSE(check.identity);
  EXPECT_EQ(check.failure, "bad_signature");
}

TEST(Credentials, AnotherSessionsSignatureIsRefused) {
  const auto check = verify_proxy_authorization(
      header_for("team-a~agents~s2", sign_user(kKey, "team-a~agents~s1")), kKey);
  EXPECT_FALSE(check.identity);
  EXPECT_EQ(check.failure, "bad_signature");
}

TEST(Credentials, AnotherKeysSignatureIsRefused) {
  const std::string user = "team-a~agents~s1";
  const auto check =
      verify_proxy_authorization(header_for(user, sign_user(std::string(40, 'x'), user)), kKey);
  EXPECT_EQ(check.failure, "bad_signature");
}

TEST(Credentials, UppercaseOrTruncatedSignaturesAreRefused) {
  const std::string user = "team-a~agents~s1";
  std::string upper = sign_user(kKey, user);
  for (auto& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  EXPECT_EQ(verify_proxy_authorization(header_for(user, upper), kKey).failure, "bad_signature");
  EXPECT_EQ(verify_proxy_authorization(header_for(user, sign_user(kKey, user).substr(0, 63)), kKey)
                .failure,
            "bad_signature");
  EXPECT_EQ(verify_proxy_authorization(header_for(user, ""), kKey).failure, "bad_signature");
}

struct Malformed {
  std::string header;
  std::string failure;
};

class CredentialsMalformed : public ::testing::TestWithParam<Malformed> {};

TEST_P(CredentialsMalformed, RefusedWithItsReason) {
  const auto check = verify_proxy_authorization(GetParam().header, kKey);
  EXPECT_FALSE(check.identity);
  EXPECT_EQ(check.failure, GetParam().failure) << GetParam().header;
}

INSTANTIATE_TEST_SUITE_P(
    Table, CredentialsMalformed,
    ::testing::Values(Malformed{"", "missing"}, Malformed{"   ", "missing"},
                      Malformed{"Bearer abc", "not_basic"}, Malformed{"Basic", "not_basic"},
                      Malformed{"Basic !!!!", "malformed_base64"},
                      Malformed{"Basic dGVhbS1h~", "malformed_base64"},
                      Malformed{"Basic YQ-_", "malformed_base64"},
                      Malformed{"Basic " + base64_encode("team-a~agents~s1"), "no_colon"},
                      Malformed{"Basic " + base64_encode("team-a~agents:x"), "bad_user"},
                      Malformed{"Basic " + base64_encode("~agents~s:x"), "bad_user"},
                      Malformed{"Basic " + base64_encode("a~~s:x"), "bad_user"},
                      Malformed{"Basic " + base64_encode("a~b~:x"), "bad_user"},
                      Malformed{"Basic " + base64_encode("a~b~c~d:x"), "bad_user"}));

}  // namespace
}  // namespace perimeter::egressgateway
