#pragma once

// Signing keys and JWTs made in the test, for the verifier's and the token exchange's unit tests.

#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>

#include <memory>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>

#include "sim/simulator.h"  // base64url_encode

namespace perimeter::sim::jwt_test {

class TestKey {
 public:
  static TestKey rsa(std::string kid, int bits = 2048) {
    return TestKey(EVP_RSA_gen(static_cast<unsigned>(bits)), std::move(kid), "RS256");
  }
  static TestKey ec(std::string kid) {
    return TestKey(EVP_EC_gen("P-256"), std::move(kid), "ES256");
  }

  const std::string& kid() const { return kid_; }
  const std::string& alg() const { return alg_; }

  // The public half as a JWK.
  nlohmann::json jwk() const {
    nlohmann::json jwk = {{"kid", kid_}, {"use", "sig"}, {"alg", alg_}};
    if (alg_ == "RS256") {
      jwk["kty"] = "RSA";
      jwk["n"] = base64url_encode(bn_param(OSSL_PKEY_PARAM_RSA_N));
      jwk["e"] = base64url_encode(bn_param(OSSL_PKEY_PARAM_RSA_E));
    } else {
      unsigned char point[65];
      std::size_t length = 0;
      if (EVP_PKEY_get_octet_string_param(key_.get(), OSSL_PKEY_PARAM_PUB_KEY, point, sizeof point,
                                          &length) != 1 ||
          length != 65) {
        throw std::runtime_error("cannot read the EC public key");
      }
      jwk["kty"] = "EC";
      jwk["crv"] = "P-256";
      jwk["x"] = base64url_encode(std::string(reinterpret_cast<char*>(point) + 1, 32));
      jwk["y"] = base64url_encode(std::string(reinterpret_cast<char*>(point) + 33, 32));
    }
    return jwk;
  }

  // A compact JWS of `claims`, header {alg, kid, typ:JWT} plus `header_extra`.
  std::string sign(const nlohmann::json& claims,
                   const nlohmann::json& header_extra = nlohmann::json::object()) const {
    nlohmann::json header = {{"alg", alg_}, {"kid", kid_}, {"typ", "JWT"}};
    header.update(header_extra);
    const std::string signing_input =
        base64url_encode(header.dump()) + "." + base64url_encode(claims.dump());
    std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
    std::size_t length = 0;
    if (EVP_DigestSignInit(ctx.get(), nullptr, EVP_sha256(), nullptr, key_.get()) != 1 ||
        EVP_DigestSign(ctx.get(), nullptr, &length,
                       reinterpret_cast<const unsigned char*>(signing_input.data()),
                       signing_input.size()) != 1) {
      throw std::runtime_error("cannot sign");
    }
    std::string signature(length, '\0');
    if (EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(signature.data()), &length,
                       reinterpret_cast<const unsigned char*>(signing_input.data()),
                       signing_input.size()) != 1) {
      throw std::runtime_error("cannot sign");
    }
    signature.resize(length);
    if (alg_ == "ES256") signature = der_to_raw(signature);
    return signing_input + "." + base64url_encode(signature);
  }

 private:
  TestKey(EVP_PKEY* key, std::string kid, std::string alg)
      : key_(key, EVP_PKEY_free), kid_(std::move(kid)), alg_(std::move(alg)) {
    if (!key) throw std::runtime_error("key generation failed");
  }

  std::string bn_param(const char* name) const {
    BIGNUM* bn = nullptr;
    if (EVP_PKEY_get_bn_param(key_.get(), name, &bn) != 1) throw std::runtime_error(name);
    std::string bytes(static_cast<std::size_t>(BN_num_bytes(bn)), '\0');
    BN_bn2bin(bn, reinterpret_cast<unsigned char*>(bytes.data()));
    BN_free(bn);
    return bytes;
  }

  static std::string der_to_raw(const std::string& der) {
    const unsigned char* p = reinterpret_cast<const unsigned char*>(der.data());
    ECDSA_SIG* sig = d2i_ECDSA_SIG(nullptr, &p, static_cast<long>(der.size()));
    if (!sig) throw std::runtime_error("bad DER signature");
    std::string raw(64, '\0');
    BN_bn2binpad(ECDSA_SIG_get0_r(sig), reinterpret_cast<unsigned char*>(raw.data()), 32);
    BN_bn2binpad(ECDSA_SIG_get0_s(sig), reinterpret_cast<unsigned char*>(raw.data()) + 32, 32);
    ECDSA_SIG_free(sig);
    return raw;
  }

  std::shared_ptr<EVP_PKEY> key_;
  std::string kid_;
  std::string alg_;
};

inline nlohmann::json jwks_of(std::initializer_list<const TestKey*> keys) {
  nlohmann::json set = {{"keys", nlohmann::json::array()}};
  for (const TestKey* key : keys) set["keys"].push_back(key->jwk());
  return set;
}

}  // namespace perimeter::sim::jwt_test
