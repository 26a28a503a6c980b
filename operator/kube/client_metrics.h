#pragma once

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/registry.h>

#include <string>

namespace perimeter::kube {

// The Kubernetes client's own metrics, registered once per process registry:
//   perimeter_kube_requests_total{verb,code}     every API call by verb and HTTP code ("error"
//                                                when no answer came back)
//   perimeter_kube_decode_errors_total{source}   answers or watch lines that did not decode
//   perimeter_kube_retries_total{verb,reason}    calls sent again (reason "throttled": a 429)
class ClientMetrics {
 public:
  explicit ClientMetrics(prometheus::Registry& registry);

  void count_request(const std::string& verb, const std::string& code);
  void count_decode_error(const std::string& source);
  void count_retry(const std::string& verb, const std::string& reason);

 private:
  prometheus::Family<prometheus::Counter>& requests_;
  prometheus::Family<prometheus::Counter>& decode_errors_;
  prometheus::Family<prometheus::Counter>& retries_;
};

}  // namespace perimeter::kube
