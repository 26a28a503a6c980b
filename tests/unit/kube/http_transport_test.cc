// The apiserver client's TLS set-up: with the cluster's CA configured, that CA is the only one
// trusted, as client-go does it.
#include "kube/http_transport.h"

#include <gtest/gtest.h>
#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>

#include <boost/asio/ssl.hpp>

#include "pki/pki.h"

namespace perimeter::kube {
namespace {

int trusted_certificates(boost::asio::ssl::context& ctx) {
  X509_STORE* store = SSL_CTX_get_cert_store(ctx.native_handle());
  int certificates = 0;
  STACK_OF(X509_OBJECT)* objects = X509_STORE_get0_objects(store);
  for (int i = 0; i < sk_X509_OBJECT_num(objects); ++i) {
    if (X509_OBJECT_get_type(sk_X509_OBJECT_value(objects, i)) == X509_LU_X509) ++certificates;
  }
  return certificates;
}

pki::Certificate cluster_ca() {
  const auto key = pki::PrivateKey::generate_ec_p256();
  pki::CaRequest request;
  request.common_name = "cluster-ca";
  request.lifetime = std::chrono::hours(1);
  return pki::issue_self_signed_ca(request, key, std::chrono::system_clock::now());
}

// What the HTTP library does to every connection's context before Perimeter's callback runs.
boost::asio::ssl::context library_default_context() {
  boost::asio::ssl::context ctx(boost::asio::ssl::context::sslv23);
  ctx.set_default_verify_paths();
  return ctx;
}

TEST(HttpTransportTlsTest, TheClustersCaIsTheOnlyOneTrusted) {
  auto ctx = library_default_context();
  ASSERT_GT(trusted_certificates(ctx), 1)
      << "this machine has no system CA bundle: the test would prove nothing";
  const auto ca = cluster_ca();
  configure_tls(ctx, ca.pem(), "", "");
  ASSERT_EQ(trusted_certificates(ctx), 1);
  X509_STORE_CTX* verify = X509_STORE_CTX_new();
  ASSERT_EQ(X509_STORE_CTX_init(verify, SSL_CTX_get_cert_store(ctx.native_handle()), ca.native(),
                                nullptr),
            1);
  EXPECT_EQ(X509_verify_cert(verify), 1) << "the cluster's CA is not trusted";
  X509_STORE_CTX_free(verify);
}

TEST(HttpTransportTlsTest, WithoutACaTheSystemsAreKept) {
  // A kubeconfig without certificate-authority-data relies on the system's trust (an apiserver
  // behind a publicly trusted certificate).
  auto ctx = library_default_context();
  const int system = trusted_certificates(ctx);
  configure_tls(ctx, "", "", "");
  EXPECT_EQ(trusted_certificates(ctx), system);
}

}  // namespace
}  // namespace perimeter::kube
