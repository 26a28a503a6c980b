#include "pki/pki.h"

#include <openssl/evp.h>
#include <openssl/x509.h>

namespace perimeter::pki {

void EvpPkeyDeleter::operator()(EVP_PKEY* key) const noexcept {
  EVP_PKEY_free(key);
}
void X509Deleter::operator()(X509* cert) const noexcept {
  X509_free(cert);
}

}  // namespace perimeter::pki
