#include "controllers/agentenvironment/assignment_certificates.h"

#include <optional>
#include <stdexcept>

#include "core/base64.h"
#include "core/thread_name.h"
#include "kube/api_error.h"

namespace perimeter::agentenvironment {
namespace {

using nlohmann::json;

// notBefore this far back, so a runner whose clock is a little behind accepts a new certificate.
constexpr std::chrono::minutes kBackdate{5};

std::optional<std::string> field(const json& secret, const char* key) {
  const auto data = secret.value("data", json::object());
  if (!data.is_object() || !data.contains(key) || !data[key].is_string()) return std::nullopt;
  std::string decoded;
  if (!base64_decode_any(data[key].get<std::string>(), &decoded)) return std::nullopt;
  return decoded;
}

// The CA a Secret holds, or why it holds none usable.
AssignmentCa read_ca(const json& secret, const std::string& where, pki::TimePoint now) {
  const auto refuse = [&](const std::string& why) {
    return std::invalid_argument("Secret " + where + " holds no usable assignment CA: " + why +
                                 ". Delete the Secret to have the operator make one (warm pods "
                                 "started before then must be replaced), or put a CA in it");
  };
  const auto cert_pem = field(secret, kAssignmentCaCertField);
  const auto key_pem = field(secret, kAssignmentCaKeyField);
  if (!cert_pem || !key_pem) {
    throw refuse(std::string("it lacks ") + kAssignmentCaCertField + " or " +
                 kAssignmentCaKeyField);
  }
  std::optional<AssignmentCa> ca;
  try {
    ca.emplace(
        AssignmentCa{pki::Certificate::from_pem(*cert_pem), pki::PrivateKey::from_pem(*key_pem)});
  } catch (const pki::PkiError& error) {
    throw refuse(std::string("it does not parse: ") + error.what());
  }
  if (!ca->certificate.matches(ca->key)) {
    throw refuse(std::string(kAssignmentCaKeyField) + " is not the key of " +
                 kAssignmentCaCertField);
  }
  if (!ca->certificate.is_ca()) throw refuse("the certificate is not a CA");
  if (ca->certificate.subject_key_id().empty()) {
    throw refuse("the certificate has no Subject Key Identifier");
  }
  if (ca->certificate.not_after() < now + kAssignmentServingLifetime) {
    throw refuse("it expires within a serving certificate's lifetime");
  }
  return std::move(*ca);
}

json build_ca_secret(const std::string& ns, const std::string& name, const AssignmentCa& ca) {
  return {{"apiVersion", "v1"},
          {"kind", "Secret"},
          {"metadata",
           {{"name", name},
            {"namespace", ns},
            {"labels",
             {{"app.kubernetes.io/managed-by", "perimeter"},
              {"app.kubernetes.io/component", "warm-assignment"}}}}},
          {"type", "Opaque"},
          {"data",
           {{kAssignmentCaCertField, base64_encode(ca.certificate.pem())},
            {kAssignmentCaKeyField, base64_encode(ca.key.pem())}}}};
}

AssignmentCa issue_ca(pki::TimePoint now) {
  auto key = pki::PrivateKey::generate_ec_p256();
  pki::CaRequest request;
  request.common_name = "Perimeter warm assignment CA";
  request.organization = "Perimeter";
  request.lifetime = kAssignmentCaLifetime;
  request.backdate = kBackdate;
  request.max_path_length = 0;  // it signs the serving certificate only
  auto certificate = pki::issue_self_signed_ca(request, key, now);
  return AssignmentCa{std::move(certificate), std::move(key)};
}

}  // namespace

std::vector<std::string> assignment_service_dns_names(const AssignmentServiceAddress& address) {
  const std::string svc = address.service_name + "." + address.namespace_ + ".svc";
  return {svc, svc + "." + address.cluster_domain};
}

std::string assignment_service_url(const AssignmentServiceAddress& address) {
  std::string host = assignment_service_dns_names(address).front();
  if (!address.direct_address.empty()) {
    const bool ipv6 = address.direct_address.find(':') != std::string::npos;
    host = ipv6 ? "[" + address.direct_address + "]" : address.direct_address;
  }
  return "https://" + host + ":" + std::to_string(address.port);
}

AssignmentCa load_or_create_assignment_ca(kube::ResourceClient& secrets, const std::string& ns,
                                          const std::string& secret_name, pki::TimePoint now) {
  const std::string where = ns + "/" + secret_name;
  try {
    return read_ca(secrets.get(ns, secret_name), where, now);
  } catch (const kube::ApiError& e) {
    if (e.kind() != kube::ErrorKind::kNotFound) throw;
  }
  AssignmentCa made = issue_ca(now);
  try {
    secrets.create(ns, build_ca_secret(ns, secret_name, made));
    return made;
  } catch (const kube::ApiError& e) {
    if (e.kind() != kube::ErrorKind::kAlreadyExists) throw;
  }
  // Another replica made it first: use its CA, so that every replica's certificate is trusted.
  return read_ca(secrets.get(ns, secret_name), where, now);
}

AssignmentServingCertificate issue_assignment_serving_certificate(
    const AssignmentCa& ca, const AssignmentServiceAddress& address, pki::TimePoint now) {
  auto key = pki::PrivateKey::generate_ec_p256();
  pki::CertificateRequest request;
  request.dns_names = assignment_service_dns_names(address);
  request.common_name = request.dns_names.front();
  if (!address.direct_address.empty()) request.ip_addresses = {address.direct_address};
  request.backdate = kBackdate;
  request.usage = pki::Usage::kServer;
  const auto until_ca_expiry =
      std::chrono::duration_cast<std::chrono::seconds>(ca.certificate.not_after() - now);
  request.lifetime = std::min<std::chrono::seconds>(kAssignmentServingLifetime, until_ca_expiry);
  const auto certificate = pki::issue_certificate(request, key, ca.certificate, ca.key, now);
  AssignmentServingCertificate serving;
  serving.chain_pem = certificate.pem();
  serving.key_pem = key.pem();
  serving.not_after = certificate.not_after();
  serving.renew_at = now + (certificate.not_after() - now) * 2 / 3;
  return serving;
}

ServingCertificateRenewal::ServingCertificateRenewal(std::shared_ptr<const AssignmentCa> ca,
                                                     AssignmentServiceAddress address,
                                                     pki::TimePoint first_renew_at, Install install,
                                                     Count count, Logger logger,
                                                     RandomSource& random)
    : ca_(std::move(ca)),
      address_(std::move(address)),
      due_(first_renew_at),
      install_(std::move(install)),
      count_(std::move(count)),
      logger_(std::move(logger)),
      backoff_({std::chrono::seconds(10), std::chrono::minutes(10), 2.0, 0.2}, random) {}

ServingCertificateRenewal::~ServingCertificateRenewal() {
  stop();
}

pki::TimePoint ServingCertificateRenewal::step(pki::TimePoint now) {
  if (now < due_) return due_;
  try {
    const auto renewed = issue_assignment_serving_certificate(*ca_, address_, now);
    install_(renewed);
    due_ = renewed.renew_at;
    backoff_.reset();
    if (count_) count_("renewed");
    logger_.info("assignment service: serving certificate renewed",
                 {{"not_after", std::chrono::duration_cast<std::chrono::seconds>(
                                    renewed.not_after.time_since_epoch())
                                    .count()}});
  } catch (const std::exception& error) {
    due_ = now + backoff_.next();
    if (count_) count_("error");
    logger_.warn("assignment service: serving certificate not renewed; trying again",
                 {{"error", error.what()}});
  }
  return due_;
}

void ServingCertificateRenewal::start() {
  if (thread_.joinable()) return;
  thread_ = std::thread([this] {
    name_this_thread("assign-cert");
    std::unique_lock lock(mutex_);
    while (!stopping_) {
      lock.unlock();
      const auto next = step(std::chrono::system_clock::now());
      lock.lock();
      wake_.wait_until(lock, next, [this] { return stopping_; });
    }
  });
}

void ServingCertificateRenewal::stop() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

}  // namespace perimeter::agentenvironment
