#pragma once

// The assignment service's TLS (docs/warm-pool.md, "The assignment channel"): a CA kept with its
// key in one Secret in the operator's namespace, which every replica loads (the first to start
// makes it), and the serving certificate issued from it for the Service's DNS names, kept in
// memory only and issued again before it expires. Warm pods trust that CA alone: it goes into
// each warm pod's own Secret as ca.crt.

#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "core/backoff.h"
#include "core/log.h"
#include "core/random.h"
#include "kube/resource_client.h"
#include "pki/pki.h"

namespace perimeter::agentenvironment {

// Where the assignment service is reached: the Service in the operator's namespace.
struct AssignmentServiceAddress {
  std::string service_name = "perimeter-assignment";
  std::string namespace_ = "perimeter-system";
  std::string cluster_domain = "cluster.local";
  int port = 8443;
  // An IP address of the operator's host that warm pods reach directly (an operator run outside
  // the cluster, as `make run` and the real-node tests run it): when set, warm pods ask
  // https://<address>:<port> and the certificate names it besides the Service's names.
  std::string direct_address{};
};
// <service>.<namespace>.svc and <service>.<namespace>.svc.<cluster domain>: the names the
// serving certificate is for.
std::vector<std::string> assignment_service_dns_names(const AssignmentServiceAddress& address);
// https://<service>.<namespace>.svc:<port>, or https://<direct address>:<port> when there is one:
// what a warm pod is told to ask.
std::string assignment_service_url(const AssignmentServiceAddress& address);

struct AssignmentCa {
  pki::Certificate certificate;
  pki::PrivateKey key;
};

// The CA Secret's keys.
inline constexpr const char* kAssignmentCaCertField = "ca.crt";
inline constexpr const char* kAssignmentCaKeyField = "ca.key";
// How long a CA the operator makes is valid. The CA is not rotated (docs/warm-pool.md): a new one
// would leave every warm pod started before it trusting the old one.
inline constexpr std::chrono::hours kAssignmentCaLifetime{24 * 365 * 10};

// The CA in Secret `secret_name` in `ns`, made and stored when there is none. Both replicas call
// this at start; the one whose create loses reads the winner's. Throws std::invalid_argument
// naming the Secret and the reason when the Secret holds no usable CA (a field missing or not
// parsing, a key that is not the certificate's, not a CA, expired or expiring within a serving
// certificate's lifetime): the operator does not start with a CA no warm pod could use.
AssignmentCa load_or_create_assignment_ca(kube::ResourceClient& secrets, const std::string& ns,
                                          const std::string& secret_name, pki::TimePoint now);

struct AssignmentServingCertificate {
  std::string chain_pem{};
  std::string key_pem{};  // a secret: memory only
  pki::TimePoint not_after{};
  // When to issue the next one: two thirds into this one's life.
  pki::TimePoint renew_at{};
};
// How long a serving certificate is valid.
inline constexpr std::chrono::hours kAssignmentServingLifetime{24 * 7};

// A serving certificate for the Service's DNS names with a fresh P-256 key, signed by `ca`; it
// never outlives the CA.
AssignmentServingCertificate issue_assignment_serving_certificate(
    const AssignmentCa& ca, const AssignmentServiceAddress& address, pki::TimePoint now);

// Keeps the serving certificate fresh: at its renew_at a new one is issued from the CA and handed
// to `install` (AssignmentServer::replace_certificate). A failure to issue or install is logged,
// counted (`count("error")`, else `count("renewed")`) and tried again after a jittered backoff
// (10 s doubling to 10 min), well before the current one expires.
class ServingCertificateRenewal {
 public:
  using Install = std::function<void(const AssignmentServingCertificate&)>;
  using Count = std::function<void(std::string_view result)>;
  ServingCertificateRenewal(std::shared_ptr<const AssignmentCa> ca,
                            AssignmentServiceAddress address, pki::TimePoint first_renew_at,
                            Install install, Count count, Logger logger,
                            RandomSource& random = SystemRandom::instance());
  ~ServingCertificateRenewal();
  ServingCertificateRenewal(const ServingCertificateRenewal&) = delete;
  ServingCertificateRenewal& operator=(const ServingCertificateRenewal&) = delete;

  // One step, for tests and the thread: renews when `now` is at or past the due time, and returns
  // when the next step is due.
  pki::TimePoint step(pki::TimePoint now);

  // A thread (named "assign-cert") that steps at each due time on the wall clock. stop() ends it;
  // both are idempotent.
  void start();
  void stop();

 private:
  std::shared_ptr<const AssignmentCa> ca_;
  AssignmentServiceAddress address_;
  pki::TimePoint due_;
  Install install_;
  Count count_;
  Logger logger_;
  Backoff backoff_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;  // guarded by mutex_
  std::thread thread_;
};

}  // namespace perimeter::agentenvironment
