#pragma once

// perimeter_pki: the one place Perimeter makes and checks X.509 certificates with OpenSSL.
//
// Three users share it: the local cluster (its CA, the apiserver's serving certificate, the admin
// and kubelet client certificates), the McpTunnel controller (the tunnel CA it registers through
// the Tunnels API and the gateway's server certificate it signs), and the simulator's Tunnels API
// (which validates a registered CA and a server certificate against the service's rules).
//
// Conventions:
// - Every OpenSSL object is owned by RAII (std::unique_ptr with a deleter); callers never free.
// - Failures throw PkiError, whose what() carries OpenSSL's error queue. A private key's PEM never
//   appears in an error message, and nothing here logs.
// - Time is injected (`now`): nothing reads the wall clock, so tests set exact lifetimes.
// - Hex strings (fingerprints, serials, key identifiers) are lowercase without separators.
// - Serial numbers are 128 random bits (positive, from OpenSSL's CSPRNG).

#include <openssl/types.h>

#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace perimeter::pki {

using TimePoint = std::chrono::system_clock::time_point;

// An OpenSSL failure (or an input OpenSSL refused), with OpenSSL's error queue in what().
class PkiError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct EvpPkeyDeleter {
  void operator()(EVP_PKEY* key) const noexcept;
};
struct X509Deleter {
  void operator()(X509* cert) const noexcept;
};

// A private key (and its public half). Move-only: a secret has one owner.
class PrivateKey {
 public:
  // ECDSA on P-256 (prime256v1): what every Perimeter certificate uses.
  static PrivateKey generate_ec_p256();
  // RSA of `bits` bits; for keys a user brings, and for tests of the validation rules.
  static PrivateKey generate_rsa(int bits);
  // Parses an unencrypted private key in PEM (PKCS#8, or the traditional EC/RSA forms).
  // Throws PkiError without echoing the input.
  static PrivateKey from_pem(std::string_view pem);

  PrivateKey(PrivateKey&&) noexcept = default;
  PrivateKey& operator=(PrivateKey&&) noexcept = default;

  // The private key as unencrypted PKCS#8 PEM. A secret: store it only in 0600 files or Secrets.
  std::string pem() const;
  // The public key as SubjectPublicKeyInfo PEM ("BEGIN PUBLIC KEY").
  std::string public_pem() const;

  // The borrowed OpenSSL object, for code that must call OpenSSL directly (e.g. TLS contexts).
  EVP_PKEY* native() const { return key_.get(); }

 private:
  explicit PrivateKey(EVP_PKEY* key) : key_(key) {}
  std::unique_ptr<EVP_PKEY, EvpPkeyDeleter> key_;
};

// An X.509 certificate. Immutable once built, so copies share the OpenSSL object.
class Certificate {
 public:
  // Parses the first certificate in `pem`; throws PkiError if there is none.
  static Certificate from_pem(std::string_view pem);
  // Every certificate in `pem`, in order (a bundle); throws PkiError if one does not parse.
  static std::vector<Certificate> all_from_pem(std::string_view pem);
  // Takes ownership of `cert` (not null).
  static Certificate adopt(X509* cert);

  std::string pem() const;
  std::string der() const;
  // Lowercase hex SHA-256 of the DER: what the Tunnels API reports as `fingerprint`.
  std::string fingerprint_sha256() const;
  // The serial number as lowercase hex without leading zeros.
  std::string serial_hex() const;
  TimePoint not_before() const;
  TimePoint not_after() const;
  // The subject's commonName (the first one), or empty.
  std::string common_name() const;
  // The subject in one line, RFC 2253 ("CN=x,O=y").
  std::string subject() const;
  std::string issuer() const;
  // The Subject Key Identifier / the Authority Key Identifier's keyIdentifier, as lowercase hex;
  // empty when the extension (or the key id inside it) is absent.
  std::string subject_key_id() const;
  std::string authority_key_id() const;
  // Subject Alternative Names of type dNSName / iPAddress (IPv4 dotted, IPv6 RFC 5952 text).
  std::vector<std::string> dns_names() const;
  std::vector<std::string> ip_addresses() const;
  // BasicConstraints CA:TRUE.
  bool is_ca() const;
  // Whether the certificate's public key is `key`'s public half.
  bool matches(const PrivateKey& key) const;

  X509* native() const { return cert_.get(); }

 private:
  explicit Certificate(std::shared_ptr<X509> cert) : cert_(std::move(cert)) {}
  std::shared_ptr<X509> cert_;
};

// --- issuing ---------------------------------------------------------------------------------

struct CaRequest {
  std::string common_name{};
  std::string organization{};  // empty for none
  std::chrono::seconds lifetime{0};
  // notBefore = now - backdate, so peers whose clocks are a little behind accept it at once.
  std::chrono::seconds backdate{0};
  // BasicConstraints pathLenConstraint; none when empty. A tunnel CA signs leaves only: 0.
  std::optional<int> max_path_length{};
};

// A self-signed CA for `key`: BasicConstraints CA:TRUE (critical), KeyUsage keyCertSign, cRLSign,
// digitalSignature (critical), Subject Key Identifier (SHA-1 of the public key), signed with
// SHA-256. Valid from now - backdate to now + lifetime.
Certificate issue_self_signed_ca(const CaRequest& request, const PrivateKey& key, TimePoint now);

enum class Usage { kServer, kClient, kServerAndClient };

struct CertificateRequest {
  std::string common_name{};
  std::string organization{};               // empty for none
  std::vector<std::string> dns_names{};     // SAN dNSName entries ("*.example.com" allowed)
  std::vector<std::string> ip_addresses{};  // SAN iPAddress entries, IPv4 or IPv6 text
  std::chrono::seconds lifetime{0};
  std::chrono::seconds backdate{0};  // notBefore = now - backdate
  Usage usage = Usage::kServer;
};

// A leaf certificate for `subject_key`, signed directly by `issuer_cert`/`issuer_key` with
// SHA-256: BasicConstraints CA:FALSE (critical), KeyUsage digitalSignature (+ keyEncipherment for
// RSA keys) (critical), ExtendedKeyUsage from `usage`, its own Subject Key Identifier, Authority
// Key Identifier = the issuer's SKI, SANs from the request (none when both lists are empty;
// critical when the subject is empty). Valid from now - backdate to now + lifetime. Throws
// PkiError if `issuer_key` is not the key of `issuer_cert`, the issuer is not a CA or has no SKI,
// the lifetime is not positive, or a SAN is not a DNS name / IP address.
Certificate issue_certificate(const CertificateRequest& request, const PrivateKey& subject_key,
                              const Certificate& issuer_cert, const PrivateKey& issuer_key,
                              TimePoint now);

// --- the Tunnels API's rules (../shared/docs/mcp-tunnels.md, "Certificates") -----------------

inline constexpr std::size_t kTunnelCaMaxPemBytes = 8 * 1024;

// Why the Tunnels API refuses `pem` as a tunnel CA, or nullopt if it accepts it. The rules, in the
// order they are checked: PEM at most 8 KB; no private key in it; exactly one certificate;
// BasicConstraints CA:TRUE and critical; a Subject Key Identifier; KeyUsage with keyCertSign;
// RSA >= 2048 bits or ECDSA on P-256, P-384 or P-521; signature hash SHA-256 or stronger
// (SHA-2 or SHA-3 of 256 bits or more). Other PEM blocks (a public key, ...) are refused too.
// The reason is one sentence naming the rule, e.g. "BasicConstraints is not critical".
std::optional<std::string> tunnel_ca_violation(std::string_view pem);

// Why `leaf` is not a server certificate for `hostname` signed directly by `ca`, or nullopt if it
// is: its Authority Key Identifier equals the CA's SKI; the CA's signature on it verifies; a SAN
// dNSName equals `hostname` or is "*." + `hostname` without its first label (case-insensitive);
// ExtendedKeyUsage, if present, includes serverAuth. With `now`, also notBefore <= now <= notAfter.
std::optional<std::string> verify_server_certificate(const Certificate& leaf, const Certificate& ca,
                                                     std::string_view hostname,
                                                     std::optional<TimePoint> now = std::nullopt);

// --- files -----------------------------------------------------------------------------------

// Private keys are created 0600 (never readable by others, not even briefly); certificates and
// public keys 0644. An existing file is truncated (its mode is then set as well). Throw PkiError.
void write_private_key_file(const std::string& path, const PrivateKey& key);
void write_public_key_file(const std::string& path, const PrivateKey& key);
void write_certificate_file(const std::string& path, const Certificate& cert);
PrivateKey read_private_key_file(const std::string& path);
Certificate read_certificate_file(const std::string& path);

}  // namespace perimeter::pki
