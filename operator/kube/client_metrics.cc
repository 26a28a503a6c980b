#include "kube/client_metrics.h"

namespace perimeter::kube {

ClientMetrics::ClientMetrics(prometheus::Registry& registry)
    : requests_(prometheus::BuildCounter()
                    .Name("perimeter_kube_requests_total")
                    .Help("Kubernetes API requests by verb and HTTP status code")
                    .Register(registry)),
      decode_errors_(prometheus::BuildCounter()
                         .Name("perimeter_kube_decode_errors_total")
                         .Help("Kubernetes API answers or watch lines that did not decode")
                         .Register(registry)),
      retries_(prometheus::BuildCounter()
                   .Name("perimeter_kube_retries_total")
                   .Help("Kubernetes API calls sent again, by verb and reason")
                   .Register(registry)) {}

void ClientMetrics::count_request(const std::string& verb, const std::string& code) {
  requests_.Add({{"verb", verb}, {"code", code}}).Increment();
}

void ClientMetrics::count_decode_error(const std::string& source) {
  decode_errors_.Add({{"source", source}}).Increment();
}

void ClientMetrics::count_retry(const std::string& verb, const std::string& reason) {
  retries_.Add({{"verb", verb}, {"reason", reason}}).Increment();
}

}  // namespace perimeter::kube
