#include "controllers/agentenvironment/warm_assignment_listener.h"

#include "controllers/agentenvironment/runner_naming.h"
#include "core/clock.h"

namespace perimeter::agentenvironment {
namespace {

bool is_warm(const runtime::ObjectPtr& pod) {
  if (!pod || !pod->is_object()) return false;
  const auto metadata = pod->find("metadata");
  if (metadata == pod->end() || !metadata->is_object()) return false;
  const auto labels = metadata->find("labels");
  return labels != metadata->end() && labels->is_object() &&
         labels->contains(std::string(kLabelWarm));
}

AssignmentServerOptions server_options(const WarmAssignmentSettings& settings) {
  AssignmentServerOptions options;
  options.address = settings.bind_address;
  options.port = static_cast<std::uint16_t>(settings.listen_port);
  return options;
}

}  // namespace

WarmAssignmentMetrics::WarmAssignmentMetrics(prometheus::Registry& registry)
    : answers_total(prometheus::BuildCounter()
                        .Name("perimeter_warm_assignment_answers_total")
                        .Help("Decisions of the warm runners' assignment service, by outcome "
                              "(a held request is decided again at each wake and recheck)")
                        .Register(registry)),
      certificate_renewals_total(
          prometheus::BuildCounter()
              .Name("perimeter_warm_assignment_certificate_renewals_total")
              .Help("Renewals of the assignment service's serving certificate, by result")
              .Register(registry)) {}

AssignmentEndpoint warm_assignment_endpoint(const WarmAssignmentSettings& settings) {
  return {assignment_service_url(settings.service), settings.ca->certificate.pem()};
}

AssignmentPeer warm_assignment_peer(const WarmAssignmentSettings& settings) {
  return {settings.operator_pods, settings.listen_port, settings.service.direct_address};
}

WarmAssignmentListener::WarmAssignmentListener(const WarmAssignmentSettings& settings,
                                               const std::vector<runtime::Informer*>& pod_informers,
                                               runtime::Store& pod_store,
                                               kube::ResourceClient& secrets,
                                               kube::ResourceClient& pods, Logger logger)
    : logger_(std::move(logger)),
      directory_(pod_store, secrets, pods),
      service_(directory_, SystemClock::instance(),
               [metrics = settings.metrics](std::string_view outcome) {
                 if (metrics != nullptr) {
                   metrics->answers_total.Add({{"outcome", std::string(outcome)}}).Increment();
                 }
               }),
      first_certificate_(issue_assignment_serving_certificate(*settings.ca, settings.service,
                                                              std::chrono::system_clock::now())),
      server_(service_, first_certificate_.chain_pem, first_certificate_.key_pem, logger_,
              server_options(settings)),
      renewal_(
          settings.ca, settings.service, first_certificate_.renew_at,
          [this](const AssignmentServingCertificate& renewed) {
            server_.replace_certificate(renewed.chain_pem, renewed.key_pem);
          },
          [metrics = settings.metrics](std::string_view result) {
            if (metrics != nullptr) {
              metrics->certificate_renewals_total.Add({{"result", std::string(result)}})
                  .Increment();
            }
          },
          logger_) {
  // Not kept past the server's start: the key lives in the server's TLS context only.
  first_certificate_.key_pem.clear();
  // A warm pod assigned, finished or deleted: its held request is decided again now, not at the
  // next recheck.
  runtime::EventHandlers wake;
  wake.on_add = [this](const runtime::ObjectPtr& pod) {
    if (is_warm(pod)) server_.wake();
  };
  wake.on_update = [this](const runtime::ObjectPtr&, const runtime::ObjectPtr& pod) {
    if (is_warm(pod)) server_.wake();
  };
  wake.on_delete = [this](const runtime::ObjectPtr& pod) {
    if (is_warm(pod)) server_.wake();
  };
  for (auto* informer : pod_informers) informer->add_handlers(wake);
}

WarmAssignmentListener::~WarmAssignmentListener() {
  stop();
}

void WarmAssignmentListener::start() {
  server_.start();
  renewal_.start();
  logger_.info("assignment service: serving", {{"port", server_.port()}});
}

void WarmAssignmentListener::hand_over(WarmHandOver hand_over) {
  service_.hand_over(std::move(hand_over));
  server_.wake();
}

void WarmAssignmentListener::stop() {
  renewal_.stop();  // first: it installs into the server
  server_.stop();
}

}  // namespace perimeter::agentenvironment
