#include "proxy/upstream_stream.h"

#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#include <boost/asio/ip/address.hpp>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace perimeter::mcpguard {

std::shared_ptr<ssl::context> make_upstream_tls_context(const RouteConfig& route) {
  auto context = std::make_shared<ssl::context>(ssl::context::tls_client);
  context->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                       ssl::context::no_sslv3 | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
  context->set_verify_mode(ssl::verify_peer);
  if (route.upstream_system_cas) context->set_default_verify_paths();
  if (route.upstream_ca_file.empty()) return context;
  std::ifstream file(route.upstream_ca_file, std::ios::binary);
  std::stringstream pem;
  pem << file.rdbuf();
  if (!file) {
    throw std::runtime_error("route " + route.name + ": cannot read upstream_ca_file " +
                             route.upstream_ca_file);
  }
  beast::error_code error;
  context->add_certificate_authority(asio::buffer(pem.str()), error);
  if (error || pem.str().find("-----BEGIN CERTIFICATE-----") == std::string::npos) {
    throw std::runtime_error("route " + route.name + ": upstream_ca_file " +
                             route.upstream_ca_file + " holds no usable PEM certificate" +
                             (error ? " (" + error.message() + ")" : std::string()));
  }
  return context;
}

void UpstreamStream::prepare_tls(ssl::context& context, const std::string& host) {
  tls_.emplace(socket_, context);
  SSL* tls = tls_->native_handle();
  beast::error_code not_an_address;
  asio::ip::make_address(host, not_an_address);
  // OpenSSL checks the name during verification, so a mismatch is a verify error that names
  // itself (hostname or IP address mismatch). SNI carries DNS names only (RFC 6066).
  const bool named = not_an_address
                         ? SSL_set_tlsext_host_name(tls, host.c_str()) == 1 &&
                               SSL_set1_host(tls, host.c_str()) == 1
                         : X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(tls), host.c_str()) == 1;
  if (!named) throw std::runtime_error("cannot name the TLS server " + host);
  tls_->set_verify_mode(ssl::verify_peer);
}

std::string UpstreamStream::tls_failure(const beast::error_code& error) {
  if (tls_) {
    const long verify = SSL_get_verify_result(tls_->native_handle());
    if (verify != X509_V_OK) {
      return std::string("certificate verify failed: ") + X509_verify_cert_error_string(verify);
    }
  }
  return error.message();
}

}  // namespace perimeter::mcpguard
