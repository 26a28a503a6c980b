#include "sim/oidc_verifier.h"

#include <gtest/gtest.h>

#include "core/fake_clock.h"
#include "test_jwt.h"

namespace perimeter::sim {
namespace {

using jwt_test::jwks_of;
using jwt_test::TestKey;
using nlohmann::json;

constexpr const char* kIssuer = "https://kubernetes.default.svc.cluster.local";
constexpr const char* kAudience = "https://api.anthropic.com";

// A key source that counts its refreshes and can change its keys (an issuer rotating).
class CountingKeySource final : public KeySource {
 public:
  explicit CountingKeySource(json jwks) : jwks_(std::move(jwks)) {}
  std::optional<json> jwks(bool refresh, std::string*) override {
    if (refresh) {
      ++refreshes;
      if (next_) jwks_ = *next_;
    }
    return jwks_;
  }
  void rotate_to(json next) { next_ = std::move(next); }
  int refreshes = 0;

 private:
  json jwks_;
  std::optional<json> next_;
};

class OidcVerifierTest : public ::testing::Test {
 protected:
  std::int64_t now() const {
    return std::chrono::duration_cast<std::chrono::seconds>(clock_.wall_now().time_since_epoch())
        .count();
  }
  json claims(const std::string& audience = kAudience) const {
    return {{"iss", kIssuer},
            {"sub", "system:serviceaccount:tunnels:gateway"},
            {"aud", json::array({audience})},
            {"iat", now()},
            {"nbf", now()},
            {"exp", now() + 600}};
  }
  JwtVerification verify(const std::string& token, KeySource& keys) {
    return verifier_.verify(token, kIssuer, kAudience, keys);
  }

  testing::FakeClock clock_;
  OidcVerifier verifier_{clock_, std::chrono::seconds(30)};
  TestKey ec_ = TestKey::ec("ec-1");
  TestKey rsa_ = TestKey::rsa("rsa-1");
  StaticKeySource keys_{jwks_of({&ec_, &rsa_})};
};

TEST_F(OidcVerifierTest, AcceptsES256AndRS256TokensFromTheIssuer) {
  for (const TestKey* key : {&ec_, &rsa_}) {
    const JwtVerification result = verify(key->sign(claims()), keys_);
    ASSERT_TRUE(result.ok()) << key->alg() << ": " << result.error;
    EXPECT_EQ(result.jwt->subject, "system:serviceaccount:tunnels:gateway");
    EXPECT_EQ(result.jwt->issuer, kIssuer);
  }
}

TEST_F(OidcVerifierTest, AcceptsAStringAudience) {
  json c = claims();
  c["aud"] = kAudience;
  EXPECT_TRUE(verify(ec_.sign(c), keys_).ok());
}

TEST_F(OidcVerifierTest, RefusesATamperedPayload) {
  const std::string token = ec_.sign(claims());
  json forged = claims();
  forged["sub"] = "system:serviceaccount:kube-system:admin";
  const std::string other = ec_.sign(forged);
  // The forged claims under the genuine signature.
  const std::string spliced = other.substr(0, other.rfind('.')) + token.substr(token.rfind('.'));
  const JwtVerification result = verify(spliced, keys_);
  EXPECT_FALSE(result.ok());
  EXPECT_NE(result.error.find("signature"), std::string::npos) << result.error;
}

TEST_F(OidcVerifierTest, RefusesATokenSignedByAnotherKeyWithTheSameKid) {
  const TestKey impostor = TestKey::ec("ec-1");
  const JwtVerification result = verify(impostor.sign(claims()), keys_);
  EXPECT_FALSE(result.ok());
  EXPECT_NE(result.error.find("does not verify"), std::string::npos) << result.error;
}

TEST_F(OidcVerifierTest, RefusesTheWrongAudience) {
  const JwtVerification result = verify(ec_.sign(claims("https://example.com")), keys_);
  EXPECT_FALSE(result.ok());
  EXPECT_NE(result.error.find("audience"), std::string::npos) << result.error;
}

TEST_F(OidcVerifierTest, RefusesTheWrongIssuer) {
  json c = claims();
  c["iss"] = "https://evil.example.com";
  const JwtVerification result = verify(ec_.sign(c), keys_);
  EXPECT_FALSE(result.ok());
  EXPECT_NE(result.error.find("issuer"), std::string::npos) << result.error;
}

TEST_F(OidcVerifierTest, RefusesAnExpiredTokenBeyondTheSkewOnly) {
  json c = claims();
  c["exp"] = now() - 10;  // within the 30 s skew
  EXPECT_TRUE(verify(ec_.sign(c), keys_).ok());
  c["exp"] = now() - 31;
  const JwtVerification result = verify(ec_.sign(c), keys_);
  EXPECT_FALSE(result.ok());
  EXPECT_NE(result.error.find("expired"), std::string::npos) << result.error;
  c.erase("exp");
  EXPECT_FALSE(verify(ec_.sign(c), keys_).ok());
}

TEST_F(OidcVerifierTest, RefusesATokenNotYetValid) {
  json c = claims();
  c["nbf"] = now() + 120;
  const JwtVerification result = verify(ec_.sign(c), keys_);
  EXPECT_FALSE(result.ok());
  EXPECT_NE(result.error.find("nbf"), std::string::npos) << result.error;
}

TEST_F(OidcVerifierTest, RefusesAlgNoneAndHmac) {
  const std::string unsigned_token = base64url_encode(json({{"alg", "none"}}).dump()) + "." +
                                     base64url_encode(claims().dump()) + ".";
  EXPECT_FALSE(verify(unsigned_token, keys_).ok());
  // An HS256 token "signed" with the public key, the classic algorithm confusion.
  const std::string hs = ec_.sign(claims(), {{"alg", "HS256"}});
  const JwtVerification result = verify(hs, keys_);
  EXPECT_FALSE(result.ok());
  EXPECT_NE(result.error.find("HS256"), std::string::npos) << result.error;
}

TEST_F(OidcVerifierTest, RefusesGarbage) {
  for (const std::string token : {"", "a.b", "a.b.c.d", "!!.??.**", "e30.e30.AAAA"}) {
    EXPECT_FALSE(verify(token, keys_).ok()) << token;
  }
}

TEST_F(OidcVerifierTest, AnUnknownKidRefreshesTheKeySetOnce) {
  const TestKey rotated = TestKey::ec("ec-2");
  CountingKeySource keys(jwks_of({&ec_}));
  keys.rotate_to(jwks_of({&ec_, &rotated}));
  EXPECT_TRUE(verify(rotated.sign(claims()), keys).ok());
  EXPECT_EQ(keys.refreshes, 1);
  // A known kid with a bad signature does not refresh.
  const TestKey impostor = TestKey::ec("ec-1");
  EXPECT_FALSE(verify(impostor.sign(claims()), keys).ok());
  EXPECT_EQ(keys.refreshes, 1);
}

TEST_F(OidcVerifierTest, RefusesRsaKeysShorterThan2048Bits) {
  const TestKey weak = TestKey::rsa("weak", 1024);
  StaticKeySource keys(jwks_of({&weak}));
  EXPECT_FALSE(verify(weak.sign(claims()), keys).ok());
}

TEST(Base64UrlDecode, RoundTripsAndRefusesOtherAlphabets) {
  std::string decoded;
  for (const std::string text : {"", "a", "ab", "abc", "abcd", "\xff\xfe\x00"}) {
    ASSERT_TRUE(base64url_decode(base64url_encode(text), &decoded));
    EXPECT_EQ(decoded, text);
  }
  EXPECT_TRUE(base64url_decode("YQ==", &decoded));
  EXPECT_EQ(decoded, "a");
  EXPECT_FALSE(base64url_decode("a+b/", &decoded));
  EXPECT_FALSE(base64url_decode("YQ=a", &decoded));
}

}  // namespace
}  // namespace perimeter::sim
