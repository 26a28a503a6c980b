#include "pki/pki.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <ctime>
#include <fstream>
#include <sstream>
#include <system_error>

namespace perimeter::pki {

void EvpPkeyDeleter::operator()(EVP_PKEY* key) const noexcept {
  EVP_PKEY_free(key);
}
void X509Deleter::operator()(X509* cert) const noexcept {
  X509_free(cert);
}

namespace {

// --- errors ----------------------------------------------------------------------------------

// Drains the thread's OpenSSL error queue into one line.
std::string openssl_errors() {
  std::string text;
  while (unsigned long code = ERR_get_error()) {
    char buffer[256];
    ERR_error_string_n(code, buffer, sizeof(buffer));
    text += (text.empty() ? "" : "; ") + std::string(buffer);
  }
  return text.empty() ? "unknown OpenSSL error" : text;
}

[[noreturn]] void fail(const std::string& what) {
  throw PkiError(what + ": " + openssl_errors());
}

void check(bool ok, const std::string& what) {
  if (!ok) fail(what);
}

// --- RAII for the OpenSSL types that stay inside this file ------------------------------------

template <auto Free>
struct Deleter {
  template <typename T>
  void operator()(T* object) const noexcept {
    Free(object);
  }
};
using Bio = std::unique_ptr<BIO, Deleter<BIO_free>>;
using Bignum = std::unique_ptr<BIGNUM, Deleter<BN_free>>;
using GeneralNames = std::unique_ptr<GENERAL_NAMES, Deleter<GENERAL_NAMES_free>>;
using GeneralName = std::unique_ptr<GENERAL_NAME, Deleter<GENERAL_NAME_free>>;
using BasicConstraints = std::unique_ptr<BASIC_CONSTRAINTS, Deleter<BASIC_CONSTRAINTS_free>>;
using BitString = std::unique_ptr<ASN1_BIT_STRING, Deleter<ASN1_BIT_STRING_free>>;
using OctetString = std::unique_ptr<ASN1_OCTET_STRING, Deleter<ASN1_OCTET_STRING_free>>;
using ExtendedKeyUsage = std::unique_ptr<EXTENDED_KEY_USAGE, Deleter<EXTENDED_KEY_USAGE_free>>;
using Extension = std::unique_ptr<X509_EXTENSION, Deleter<X509_EXTENSION_free>>;
using X509Ptr = std::unique_ptr<X509, X509Deleter>;
struct OpensslFree {
  void operator()(void* memory) const noexcept { OPENSSL_free(memory); }
};
using OpensslString = std::unique_ptr<char, OpensslFree>;
using OpensslBytes = std::unique_ptr<unsigned char, OpensslFree>;

Bio read_bio(std::string_view data) {
  Bio bio(BIO_new_mem_buf(data.data(), static_cast<int>(data.size())));
  check(bio != nullptr, "allocating a memory BIO");
  return bio;
}

Bio write_bio() {
  Bio bio(BIO_new(BIO_s_mem()));
  check(bio != nullptr, "allocating a memory BIO");
  return bio;
}

std::string contents(BIO* bio) {
  char* data = nullptr;
  const long size = BIO_get_mem_data(bio, &data);
  return std::string(data, static_cast<std::size_t>(size));
}

// Never prompt for a passphrase: an encrypted key is an error, not a terminal dialogue.
int no_passphrase(char*, int, int, void*) {
  return 0;
}

std::string hex(const unsigned char* bytes, std::size_t size) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string text;
  text.reserve(size * 2);
  for (std::size_t i = 0; i < size; ++i) {
    text += kDigits[bytes[i] >> 4];
    text += kDigits[bytes[i] & 0x0f];
  }
  return text;
}

std::string hex(const ASN1_OCTET_STRING* octets) {
  if (octets == nullptr) return "";
  return hex(ASN1_STRING_get0_data(octets), static_cast<std::size_t>(ASN1_STRING_length(octets)));
}

std::string lowercase(std::string_view text) {
  std::string lower(text);
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return lower;
}

TimePoint to_time_point(const ASN1_TIME* time) {
  std::tm tm{};
  check(time != nullptr && ASN1_TIME_to_tm(time, &tm) == 1, "reading a certificate time");
  return std::chrono::system_clock::from_time_t(timegm(&tm));
}

std::string rfc3339(TimePoint time) {
  const std::time_t seconds = std::chrono::system_clock::to_time_t(time);
  std::tm tm{};
  gmtime_r(&seconds, &tm);
  char buffer[32];
  std::strftime(buffer, sizeof(buffer), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buffer;
}

std::string name_text(const X509_NAME* name) {
  Bio bio = write_bio();
  check(X509_NAME_print_ex(bio.get(), name, 0, XN_FLAG_RFC2253) >= 0, "printing a name");
  return contents(bio.get());
}

// --- building certificates ---------------------------------------------------------------------

void set_random_serial(X509* cert) {
  unsigned char bytes[16];
  check(RAND_bytes(bytes, sizeof(bytes)) == 1, "drawing a serial number");
  bytes[0] &= 0x7f;  // positive, as RFC 5280 requires (so 127 random bits)
  Bignum serial(BN_bin2bn(bytes, sizeof(bytes), nullptr));
  check(
      serial != nullptr && BN_to_ASN1_INTEGER(serial.get(), X509_get_serialNumber(cert)) != nullptr,
      "setting the serial number");
}

void set_validity(X509* cert, TimePoint now, std::chrono::seconds backdate,
                  std::chrono::seconds lifetime) {
  if (lifetime <= std::chrono::seconds(0)) throw PkiError("a certificate's lifetime must be > 0");
  if (backdate < std::chrono::seconds(0)) throw PkiError("a certificate's backdate must be >= 0");
  const auto start = std::chrono::time_point_cast<std::chrono::seconds>(now - backdate);
  const auto end = std::chrono::time_point_cast<std::chrono::seconds>(now + lifetime);
  // ASN1_TIME_set picks UTCTime before 2050 and GeneralizedTime after, as RFC 5280 requires.
  check(ASN1_TIME_set(X509_getm_notBefore(cert), std::chrono::system_clock::to_time_t(start)) !=
            nullptr,
        "setting notBefore");
  check(
      ASN1_TIME_set(X509_getm_notAfter(cert), std::chrono::system_clock::to_time_t(end)) != nullptr,
      "setting notAfter");
}

void set_subject(X509* cert, const std::string& organization, const std::string& common_name) {
  X509_NAME* name = X509_get_subject_name(cert);
  auto add = [&](const char* field, const std::string& value) {
    if (value.empty()) return;
    check(X509_NAME_add_entry_by_txt(name, field, MBSTRING_UTF8,
                                     reinterpret_cast<const unsigned char*>(value.c_str()), -1, -1,
                                     0) == 1,
          std::string("setting the subject's ") + field);
  };
  add("O", organization);
  add("CN", common_name);
}

// An extension from OpenSSL's configuration syntax, with `issuer` as the issuer for keyid.
void add_extension(X509* cert, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  Extension extension(X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str()));
  check(extension != nullptr, std::string("building the extension ") + OBJ_nid2sn(nid));
  check(X509_add_ext(cert, extension.get(), -1) == 1,
        std::string("adding the extension ") + OBJ_nid2sn(nid));
}

bool valid_dns_name(const std::string& name) {
  if (name.empty() || name.size() > 253) return false;
  return std::all_of(name.begin(), name.end(), [](unsigned char c) {
    return std::isalnum(c) || c == '-' || c == '.' || c == '*' || c == '_';
  });
}

// Moves `name` into `names`, which frees it from then on.
void push_name(GENERAL_NAMES* names, GeneralName name, const char* what) {
  GENERAL_NAME* owned = name.release();
  if (sk_GENERAL_NAME_push(names, owned) <= 0) {
    GENERAL_NAME_free(owned);
    fail(what);
  }
}

// Subject Alternative Names built as structures, so no name can smuggle in a second entry the
// way a comma would in OpenSSL's "DNS:a,DNS:b" syntax.
void add_subject_alt_names(X509* cert, const std::vector<std::string>& dns_names,
                           const std::vector<std::string>& ip_addresses, bool critical) {
  if (dns_names.empty() && ip_addresses.empty()) return;
  GeneralNames names(GENERAL_NAMES_new());
  check(names != nullptr, "allocating subject alternative names");
  for (const auto& dns : dns_names) {
    if (!valid_dns_name(dns)) throw PkiError("not a DNS name for a certificate: '" + dns + "'");
    ASN1_IA5STRING* text = ASN1_IA5STRING_new();
    check(text != nullptr && ASN1_STRING_set(text, dns.data(), static_cast<int>(dns.size())) == 1,
          "building a DNS name");
    GeneralName name(GENERAL_NAME_new());
    check(name != nullptr, "allocating a subject alternative name");
    GENERAL_NAME_set0_value(name.get(), GEN_DNS, text);
    push_name(names.get(), std::move(name), "adding a DNS name");
  }
  for (const auto& ip : ip_addresses) {
    ASN1_OCTET_STRING* address = a2i_IPADDRESS(ip.c_str());
    if (address == nullptr) {
      ERR_clear_error();
      throw PkiError("not an IP address: '" + ip + "'");
    }
    GeneralName name(GENERAL_NAME_new());
    if (name == nullptr) ASN1_OCTET_STRING_free(address);
    check(name != nullptr, "allocating a subject alternative name");
    GENERAL_NAME_set0_value(name.get(), GEN_IPADD, address);
    push_name(names.get(), std::move(name), "adding an IP address");
  }
  check(X509_add1_ext_i2d(cert, NID_subject_alt_name, names.get(), critical ? 1 : 0,
                          X509V3_ADD_DEFAULT) == 1,
        "adding subject alternative names");
}

X509Ptr new_certificate(const PrivateKey& subject_key) {
  X509Ptr cert(X509_new());
  check(cert != nullptr, "allocating a certificate");
  check(X509_set_version(cert.get(), X509_VERSION_3) == 1, "setting the version");
  set_random_serial(cert.get());
  check(X509_set_pubkey(cert.get(), subject_key.native()) == 1, "setting the public key");
  return cert;
}

// --- reading extensions ---------------------------------------------------------------------

// The extension `nid` decoded, or null when absent; `critical` is -1 when absent, -2 when the
// extension occurs more than once, else 0 or 1.
template <typename T>
std::unique_ptr<T, void (*)(T*)> extension_of(const X509* cert, int nid, void (*free)(T*),
                                              int* critical = nullptr) {
  int found = 0;
  auto* value = static_cast<T*>(X509_get_ext_d2i(cert, nid, &found, nullptr));
  if (critical != nullptr) *critical = found;
  ERR_clear_error();  // an absent extension leaves nothing worth keeping
  return {value, free};
}

// Calls `visit` with each Subject Alternative Name of `type` (GEN_DNS, GEN_IPADD, ...), in order.
template <typename Visit>
void for_each_alt_name(const X509* cert, int type, Visit visit) {
  auto alt_names = extension_of(cert, NID_subject_alt_name, GENERAL_NAMES_free);
  if (!alt_names) return;
  for (int i = 0; i < sk_GENERAL_NAME_num(alt_names.get()); ++i) {
    const GENERAL_NAME* name = sk_GENERAL_NAME_value(alt_names.get(), i);
    if (name->type == type) visit(*name);
  }
}

// --- the Tunnels API's rules on a CA ----------------------------------------------------------

bool is_certificate_label(const std::string& label) {
  return label == "CERTIFICATE" || label == "X509 CERTIFICATE" || label == "TRUSTED CERTIFICATE";
}

std::optional<std::string> key_violation(const X509* cert) {
  const EVP_PKEY* key = X509_get0_pubkey(cert);
  if (key == nullptr) {
    ERR_clear_error();
    return "the certificate's public key does not parse";
  }
  const int type = EVP_PKEY_get_base_id(key);
  const int bits = EVP_PKEY_get_bits(key);
  if (type == EVP_PKEY_RSA || type == EVP_PKEY_RSA_PSS) {
    if (bits < 2048)
      return "the RSA key has " + std::to_string(bits) + " bits; at least 2048 are required";
    return std::nullopt;
  }
  if (type == EVP_PKEY_EC) {
    char group[80] = {0};
    std::size_t length = 0;
    if (EVP_PKEY_get_group_name(key, group, sizeof(group), &length) != 1) {
      ERR_clear_error();
      return "the ECDSA key's curve is not a named curve; P-256, P-384 or P-521 is required";
    }
    const int curve = OBJ_sn2nid(group);
    if (curve == NID_X9_62_prime256v1 || curve == NID_secp384r1 || curve == NID_secp521r1)
      return std::nullopt;
    return "the ECDSA key is on curve " + std::string(group) +
           "; P-256, P-384 or P-521 is required";
  }
  const char* name = OBJ_nid2sn(type);
  return "the key is " + std::string(name ? name : "of an unknown type") +
         "; RSA of at least 2048 bits or ECDSA on P-256 or stronger is required";
}

std::optional<std::string> signature_violation(const X509* cert) {
  int digest = NID_undef;
  int public_key = NID_undef;
  if (X509_get_signature_info(const_cast<X509*>(cert), &digest, &public_key, nullptr, nullptr) !=
      1) {
    ERR_clear_error();
    return "the certificate's signature algorithm is not one OpenSSL knows";
  }
  static constexpr int kStrongEnough[] = {NID_sha256,   NID_sha384,   NID_sha512,
                                          NID_sha3_256, NID_sha3_384, NID_sha3_512};
  if (std::find(std::begin(kStrongEnough), std::end(kStrongEnough), digest) !=
      std::end(kStrongEnough))
    return std::nullopt;
  const char* algorithm = OBJ_nid2ln(X509_get_signature_nid(cert));
  const char* hash = OBJ_nid2sn(digest);
  return "the certificate is signed with " + std::string(hash ? hash : "an unknown hash") + " (" +
         (algorithm ? algorithm : "unknown algorithm") + "); SHA-256 or stronger is required";
}

}  // namespace

// --- PrivateKey ------------------------------------------------------------------------------

PrivateKey PrivateKey::generate_ec_p256() {
  ERR_clear_error();
  EVP_PKEY* key = EVP_EC_gen("P-256");
  check(key != nullptr, "generating an ECDSA P-256 key");
  return PrivateKey(key);
}

PrivateKey PrivateKey::generate_rsa(int bits) {
  ERR_clear_error();
  EVP_PKEY* key = EVP_RSA_gen(static_cast<unsigned int>(bits));
  check(key != nullptr, "generating an RSA key of " + std::to_string(bits) + " bits");
  return PrivateKey(key);
}

PrivateKey PrivateKey::from_pem(std::string_view pem) {
  ERR_clear_error();
  Bio bio = read_bio(pem);
  EVP_PKEY* key = PEM_read_bio_PrivateKey(bio.get(), nullptr, no_passphrase, nullptr);
  check(key != nullptr, "reading a private key from PEM");
  return PrivateKey(key);
}

std::string PrivateKey::pem() const {
  Bio bio = write_bio();
  check(PEM_write_bio_PrivateKey(bio.get(), key_.get(), nullptr, nullptr, 0, nullptr, nullptr) == 1,
        "writing a private key as PEM");
  return contents(bio.get());
}

std::string PrivateKey::public_pem() const {
  Bio bio = write_bio();
  check(PEM_write_bio_PUBKEY(bio.get(), key_.get()) == 1, "writing a public key as PEM");
  return contents(bio.get());
}

// --- Certificate -----------------------------------------------------------------------------

Certificate Certificate::adopt(X509* cert) {
  if (cert == nullptr) throw PkiError("Certificate::adopt: null certificate");
  return Certificate(std::shared_ptr<X509>(cert, X509Deleter{}));
}

Certificate Certificate::from_pem(std::string_view pem) {
  ERR_clear_error();
  Bio bio = read_bio(pem);
  X509* cert = PEM_read_bio_X509(bio.get(), nullptr, no_passphrase, nullptr);
  check(cert != nullptr, "reading a certificate from PEM");
  return adopt(cert);
}

std::vector<Certificate> Certificate::all_from_pem(std::string_view pem) {
  ERR_clear_error();
  Bio bio = read_bio(pem);
  std::vector<Certificate> certificates;
  while (true) {
    X509* cert = PEM_read_bio_X509(bio.get(), nullptr, no_passphrase, nullptr);
    if (cert == nullptr) {
      const unsigned long last = ERR_peek_last_error();
      if (ERR_GET_LIB(last) == ERR_LIB_PEM && ERR_GET_REASON(last) == PEM_R_NO_START_LINE) {
        ERR_clear_error();  // the end of the input, not an error
        break;
      }
      fail("reading certificate " + std::to_string(certificates.size() + 1) + " from PEM");
    }
    certificates.push_back(adopt(cert));
  }
  return certificates;
}

std::string Certificate::pem() const {
  Bio bio = write_bio();
  check(PEM_write_bio_X509(bio.get(), cert_.get()) == 1, "writing a certificate as PEM");
  return contents(bio.get());
}

std::string Certificate::der() const {
  unsigned char* bytes = nullptr;
  const int size = i2d_X509(cert_.get(), &bytes);
  check(size > 0, "encoding a certificate as DER");
  OpensslBytes owned(bytes);
  return std::string(reinterpret_cast<const char*>(bytes), static_cast<std::size_t>(size));
}

std::string Certificate::fingerprint_sha256() const {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  check(X509_digest(cert_.get(), EVP_sha256(), digest, &size) == 1,
        "computing a certificate's SHA-256 fingerprint");
  return hex(digest, size);
}

std::string Certificate::serial_hex() const {
  Bignum serial(ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert_.get()), nullptr));
  check(serial != nullptr, "reading the serial number");
  if (BN_is_zero(serial.get())) return "0";
  OpensslString text(BN_bn2hex(serial.get()));
  check(text != nullptr, "printing the serial number");
  std::string lower = lowercase(text.get());
  // BN_bn2hex pads to whole bytes; the documented form has no leading zeros.
  const bool negative = !lower.empty() && lower[0] == '-';
  const std::size_t digits = negative ? 1 : 0;
  const std::size_t first = lower.find_first_not_of('0', digits);
  return (negative ? "-" : "") + lower.substr(first);
}

TimePoint Certificate::not_before() const {
  return to_time_point(X509_get0_notBefore(cert_.get()));
}

TimePoint Certificate::not_after() const {
  return to_time_point(X509_get0_notAfter(cert_.get()));
}

std::string Certificate::common_name() const {
  const X509_NAME* name = X509_get_subject_name(cert_.get());
  const int index = X509_NAME_get_index_by_NID(name, NID_commonName, -1);
  if (index < 0) return "";
  const ASN1_STRING* value = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, index));
  unsigned char* utf8 = nullptr;
  const int size = ASN1_STRING_to_UTF8(&utf8, value);
  check(size >= 0, "reading the subject's commonName");
  OpensslBytes owned(utf8);
  return std::string(reinterpret_cast<const char*>(utf8), static_cast<std::size_t>(size));
}

std::string Certificate::subject() const {
  return name_text(X509_get_subject_name(cert_.get()));
}

std::string Certificate::issuer() const {
  return name_text(X509_get_issuer_name(cert_.get()));
}

std::string Certificate::subject_key_id() const {
  return hex(X509_get0_subject_key_id(cert_.get()));
}

std::string Certificate::authority_key_id() const {
  return hex(X509_get0_authority_key_id(cert_.get()));
}

std::vector<std::string> Certificate::dns_names() const {
  std::vector<std::string> names;
  for_each_alt_name(cert_.get(), GEN_DNS, [&](const GENERAL_NAME& name) {
    const ASN1_STRING* text = name.d.dNSName;
    names.emplace_back(reinterpret_cast<const char*>(ASN1_STRING_get0_data(text)),
                       static_cast<std::size_t>(ASN1_STRING_length(text)));
  });
  return names;
}

std::vector<std::string> Certificate::ip_addresses() const {
  std::vector<std::string> addresses;
  for_each_alt_name(cert_.get(), GEN_IPADD, [&](const GENERAL_NAME& name) {
    const ASN1_OCTET_STRING* bytes = name.d.iPAddress;
    const int length = ASN1_STRING_length(bytes);
    const int family = length == 4 ? AF_INET : length == 16 ? AF_INET6 : 0;
    char text[INET6_ADDRSTRLEN] = {0};
    // Any other length is not an address (e.g. a name constraint's address/mask): not reported.
    if (family != 0 && inet_ntop(family, ASN1_STRING_get0_data(bytes), text, sizeof(text)))
      addresses.emplace_back(text);
  });
  return addresses;
}

bool Certificate::is_ca() const {
  auto constraints = extension_of(cert_.get(), NID_basic_constraints, BASIC_CONSTRAINTS_free);
  return constraints && constraints->ca;
}

bool Certificate::matches(const PrivateKey& key) const {
  const EVP_PKEY* public_key = X509_get0_pubkey(cert_.get());
  const bool same = public_key != nullptr && EVP_PKEY_eq(public_key, key.native()) == 1;
  ERR_clear_error();
  return same;
}

// --- issuing ---------------------------------------------------------------------------------

Certificate issue_self_signed_ca(const CaRequest& request, const PrivateKey& key, TimePoint now) {
  ERR_clear_error();
  if (request.common_name.empty()) throw PkiError("a CA needs a common name");
  X509Ptr cert = new_certificate(key);
  set_validity(cert.get(), now, request.backdate, request.lifetime);
  set_subject(cert.get(), request.organization, request.common_name);
  check(X509_set_issuer_name(cert.get(), X509_get_subject_name(cert.get())) == 1,
        "setting the issuer");
  std::string constraints = "critical,CA:TRUE";
  if (request.max_path_length) {
    if (*request.max_path_length < 0) throw PkiError("a CA's path length must be >= 0");
    constraints += ",pathlen:" + std::to_string(*request.max_path_length);
  }
  add_extension(cert.get(), cert.get(), NID_basic_constraints, constraints);
  add_extension(cert.get(), cert.get(), NID_key_usage,
                "critical,keyCertSign,cRLSign,digitalSignature");
  add_extension(cert.get(), cert.get(), NID_subject_key_identifier, "hash");
  check(X509_sign(cert.get(), key.native(), EVP_sha256()) > 0,
        "signing the CA certificate " + request.common_name);
  return Certificate::adopt(cert.release());
}

Certificate issue_certificate(const CertificateRequest& request, const PrivateKey& subject_key,
                              const Certificate& issuer_cert, const PrivateKey& issuer_key,
                              TimePoint now) {
  ERR_clear_error();
  if (!issuer_cert.is_ca())
    throw PkiError("the issuer " + issuer_cert.subject() + " is not a CA certificate");
  if (!issuer_cert.matches(issuer_key))
    throw PkiError("the issuer's key is not the key of " + issuer_cert.subject());
  if (issuer_cert.subject_key_id().empty())
    throw PkiError("the issuer " + issuer_cert.subject() +
                   " has no Subject Key Identifier to name as Authority Key Identifier");
  X509Ptr cert = new_certificate(subject_key);
  set_validity(cert.get(), now, request.backdate, request.lifetime);
  set_subject(cert.get(), request.organization, request.common_name);
  check(X509_set_issuer_name(cert.get(), X509_get_subject_name(issuer_cert.native())) == 1,
        "setting the issuer");
  add_extension(cert.get(), issuer_cert.native(), NID_basic_constraints, "critical,CA:FALSE");
  // keyEncipherment only means something for RSA (RFC 5480 forbids it on ECDSA keys).
  const bool rsa = EVP_PKEY_get_base_id(subject_key.native()) == EVP_PKEY_RSA;
  add_extension(cert.get(), issuer_cert.native(), NID_key_usage,
                rsa ? "critical,digitalSignature,keyEncipherment" : "critical,digitalSignature");
  const char* usage = request.usage == Usage::kServer   ? "serverAuth"
                      : request.usage == Usage::kClient ? "clientAuth"
                                                        : "serverAuth,clientAuth";
  add_extension(cert.get(), issuer_cert.native(), NID_ext_key_usage, usage);
  add_extension(cert.get(), issuer_cert.native(), NID_subject_key_identifier, "hash");
  add_extension(cert.get(), issuer_cert.native(), NID_authority_key_identifier, "keyid:always");
  // With an empty subject the names live only in the SAN, which RFC 5280 then makes critical.
  const bool empty_subject = request.common_name.empty() && request.organization.empty();
  add_subject_alt_names(cert.get(), request.dns_names, request.ip_addresses, empty_subject);
  check(X509_sign(cert.get(), issuer_key.native(), EVP_sha256()) > 0,
        "signing the certificate for " +
            (request.common_name.empty() ? std::string("(no common name)") : request.common_name));
  return Certificate::adopt(cert.release());
}

// --- the Tunnels API's rules -------------------------------------------------------------------

std::optional<std::string> tunnel_ca_violation(std::string_view pem) {
  ERR_clear_error();
  if (pem.size() > kTunnelCaMaxPemBytes)
    return "the PEM is " + std::to_string(pem.size()) + " bytes; at most " +
           std::to_string(kTunnelCaMaxPemBytes) + " are allowed";

  // Every PEM block, whatever its label, so a key or a second certificate cannot hide.
  Bio bio = read_bio(pem);
  int certificates = 0;
  std::string der;
  while (true) {
    char* label = nullptr;
    char* header = nullptr;
    unsigned char* data = nullptr;
    long length = 0;
    if (PEM_read_bio(bio.get(), &label, &header, &data, &length) != 1) {
      const unsigned long last = ERR_peek_last_error();
      const bool end =
          ERR_GET_LIB(last) == ERR_LIB_PEM && ERR_GET_REASON(last) == PEM_R_NO_START_LINE;
      const std::string why = end ? "" : openssl_errors();
      ERR_clear_error();
      if (!end) return "the PEM does not parse: " + why;
      break;
    }
    OpensslString owned_label(label);
    OpensslString owned_header(header);
    OpensslBytes owned_data(data);
    const std::string name(label);
    if (name.find("PRIVATE KEY") != std::string::npos)
      return "the PEM contains a private key (" + name + "); send the CA certificate only";
    if (!is_certificate_label(name))
      return "the PEM contains a " + name + " block; exactly one CERTIFICATE is allowed";
    ++certificates;
    der.assign(reinterpret_cast<const char*>(data), static_cast<std::size_t>(length));
  }
  if (certificates == 0) return "the PEM holds no certificate";
  if (certificates > 1)
    return "the PEM holds " + std::to_string(certificates) +
           " certificates; exactly one CA certificate is allowed";

  const auto* cursor = reinterpret_cast<const unsigned char*>(der.data());
  X509Ptr cert(d2i_X509(nullptr, &cursor, static_cast<long>(der.size())));
  if (cert == nullptr ||
      cursor != reinterpret_cast<const unsigned char*>(der.data()) + der.size()) {
    const std::string why = openssl_errors();
    return "the certificate does not parse: " + why;
  }

  int critical = -1;
  auto constraints =
      extension_of(cert.get(), NID_basic_constraints, BASIC_CONSTRAINTS_free, &critical);
  if (critical == -2) return "BasicConstraints occurs more than once";
  if (!constraints) return "no BasicConstraints extension; CA:TRUE (critical) is required";
  if (!constraints->ca) return "BasicConstraints says CA:FALSE; a CA certificate is required";
  if (critical != 1) return "BasicConstraints is not critical";

  auto key_id = extension_of(cert.get(), NID_subject_key_identifier, ASN1_OCTET_STRING_free);
  if (!key_id || ASN1_STRING_length(key_id.get()) == 0) return "no Subject Key Identifier";

  auto usage = extension_of(cert.get(), NID_key_usage, ASN1_BIT_STRING_free);
  if (!usage) return "no KeyUsage extension; keyCertSign is required";
  static constexpr int kKeyCertSignBit = 5;  // RFC 5280 4.2.1.3
  if (ASN1_BIT_STRING_get_bit(usage.get(), kKeyCertSignBit) != 1)
    return "KeyUsage does not include keyCertSign";

  if (auto why = key_violation(cert.get())) return why;
  if (auto why = signature_violation(cert.get())) return why;
  return std::nullopt;
}

std::optional<std::string> verify_server_certificate(const Certificate& leaf, const Certificate& ca,
                                                     std::string_view hostname,
                                                     std::optional<TimePoint> now) {
  ERR_clear_error();
  const std::string ca_key_id = ca.subject_key_id();
  if (ca_key_id.empty()) return "the CA has no Subject Key Identifier";
  const std::string leaf_authority = leaf.authority_key_id();
  if (leaf_authority.empty()) return "the certificate has no Authority Key Identifier";
  if (leaf_authority != ca_key_id)
    return "the certificate's Authority Key Identifier " + leaf_authority +
           " is not the CA's Subject Key Identifier " + ca_key_id;
  if (X509_NAME_cmp(X509_get_issuer_name(leaf.native()), X509_get_subject_name(ca.native())) != 0)
    return "the certificate's issuer " + leaf.issuer() + " is not the CA's subject " + ca.subject();
  EVP_PKEY* ca_public_key = X509_get0_pubkey(ca.native());
  const bool signed_by_ca =
      ca_public_key != nullptr && X509_verify(leaf.native(), ca_public_key) == 1;
  ERR_clear_error();
  if (!signed_by_ca) return "the CA's signature on the certificate does not verify";

  const std::string host = lowercase(hostname);
  const std::size_t dot = host.find('.');
  const std::string wildcard = dot == std::string::npos ? "" : "*" + host.substr(dot);
  const auto names = leaf.dns_names();
  if (names.empty()) return "the certificate has no DNS Subject Alternative Name";
  const bool covered = std::any_of(names.begin(), names.end(), [&](const std::string& name) {
    const std::string lower = lowercase(name);
    return lower == host || (!wildcard.empty() && dot > 0 && lower == wildcard);
  });
  if (!covered) {
    std::string listed;
    for (const auto& name : names) listed += (listed.empty() ? "" : ", ") + name;
    return "no Subject Alternative Name matches " + host + " (the certificate names " + listed +
           ")";
  }

  auto usages = extension_of(leaf.native(), NID_ext_key_usage, EXTENDED_KEY_USAGE_free);
  if (usages) {
    bool server_auth = false;
    for (int i = 0; i < sk_ASN1_OBJECT_num(usages.get()); ++i)
      server_auth =
          server_auth || OBJ_obj2nid(sk_ASN1_OBJECT_value(usages.get(), i)) == NID_server_auth;
    if (!server_auth) return "ExtendedKeyUsage does not include serverAuth";
  }

  if (now) {
    if (*now < leaf.not_before())
      return "the certificate is not valid before " + rfc3339(leaf.not_before());
    if (*now > leaf.not_after()) return "the certificate expired at " + rfc3339(leaf.not_after());
  }
  return std::nullopt;
}

// --- files -----------------------------------------------------------------------------------

namespace {

// strerror's text without strerror's shared buffer.
std::string error_text(int code) {
  return std::generic_category().message(code);
}

// Created with `mode` from the start, so a key is never readable by others, not even briefly.
void write_file(const std::string& path, const std::string& data, mode_t mode) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) throw PkiError("cannot write " + path + ": " + error_text(errno));
  auto close_and_throw = [&](const std::string& what) {
    const int saved = errno;
    ::close(fd);
    throw PkiError(what + " " + path + ": " + error_text(saved));
  };
  if (::fchmod(fd, mode) != 0) close_and_throw("cannot set the mode of");
  std::size_t written = 0;
  while (written < data.size()) {
    const ssize_t n = ::write(fd, data.data() + written, data.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) close_and_throw("cannot write");
    written += static_cast<std::size_t>(n);
  }
  if (::close(fd) != 0) throw PkiError("cannot write " + path + ": " + error_text(errno));
}

// What `parse` returns; a PkiError it throws names `path` first.
template <typename Parse>
auto with_path_in_errors(const std::string& path, Parse parse) {
  try {
    return parse();
  } catch (const PkiError& error) {
    throw PkiError(path + ": " + error.what());
  }
}

std::string read_file(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) throw PkiError("cannot read " + path + ": " + error_text(errno));
  std::ostringstream text;
  text << file.rdbuf();
  return text.str();
}

}  // namespace

void write_private_key_file(const std::string& path, const PrivateKey& key) {
  write_file(path, key.pem(), 0600);
}

void write_public_key_file(const std::string& path, const PrivateKey& key) {
  write_file(path, key.public_pem(), 0644);
}

void write_certificate_file(const std::string& path, const Certificate& cert) {
  write_file(path, cert.pem(), 0644);
}

PrivateKey read_private_key_file(const std::string& path) {
  return with_path_in_errors(path, [&] { return PrivateKey::from_pem(read_file(path)); });
}

Certificate read_certificate_file(const std::string& path) {
  return with_path_in_errors(path, [&] { return Certificate::from_pem(read_file(path)); });
}

}  // namespace perimeter::pki
