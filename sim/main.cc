// perimeter-sim: a local stand-in for the Managed Agents work-queue and sessions API.
//   perimeter-sim serve [--port N] [--port-file F] [--lease-ttl-seconds S] [--reclaim-ms MS]
//                       [--faults JSON] [--api-base-url URL] [--log-level L] [--address IP]
//                       [--oidc-issuer-url URL] [--oidc-issuer ISS] [--oidc-ca-file F]
//                       [--access-token-ttl-seconds S] [--tunnel-domain-suffix D]
//                       [--tls-cert-file F --tls-key-file F]
//   perimeter-sim create-environment --url URL [--name N] [--key K]
//   perimeter-sim enqueue --url URL --environment ENV --scenario FILE [--count N]
//   perimeter-sim enqueue-healthcheck --url URL --environment ENV [--count N]
//   perimeter-sim results --url URL (--session ID | --environment ENV)
//   perimeter-sim session --url URL --session ID
//   perimeter-sim next-turn --url URL --session ID
//   perimeter-sim terminate --url URL --session ID
//   perimeter-sim stats --url URL --environment ENV --key KEY
//   perimeter-sim faults --url URL [JSON]
//   perimeter-sim follow --url URL --environment ENV [--sessions N] [--interval-ms MS] [--once]
#include <cpprest/http_client.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ssl/context.hpp>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <thread>

#include "core/backoff.h"
#include "core/clock.h"
#include "core/log.h"
#include "core/random.h"
#include "core/shutdown_signal.h"
#include "pki/pki.h"
#include "sim/http_server.h"
#include "sim/oidc_verifier.h"
#include "sim/pki_ca_inspector.h"
#include "sim/router.h"
#include "sim/session_follower.h"
#include "sim/simulator.h"
#include "sim/tunnels.h"

namespace {

using perimeter::sim::parse_int;

int usage(const std::string& why) {
  std::cerr
      << "perimeter-sim: " << why << "\n"
      << "usage: perimeter-sim serve|create-environment|create-organization|"
         "create-federation-rule|enqueue|enqueue-healthcheck|results|session|next-turn|terminate|"
         "stats|faults|follow "
         "[--flag value...] (see docs/simulator.md)\n";
  return 2;
}

// Flags as --name value pairs; positional arguments are kept in order.
struct Args {
  std::map<std::string, std::string> flags;
  std::vector<std::string> positional;
  bool parse(int argc, char** argv, int first, std::string* error) {
    for (int i = first; i < argc; ++i) {
      std::string arg = argv[i];
      if (arg.rfind("--", 0) == 0) {
        if (i + 1 >= argc) {
          *error = "flag " + arg + " needs a value";
          return false;
        }
        flags[arg.substr(2)] = argv[++i];
      } else {
        positional.push_back(arg);
      }
    }
    return true;
  }
  std::string get(const std::string& name, const std::string& fallback = "") const {
    auto it = flags.find(name);
    return it == flags.end() ? fallback : it->second;
  }
};

int serve(const Args& args) {
  perimeter::ShutdownSignal signals;  // before any thread starts
  perimeter::LogLevel level = perimeter::LogLevel::kInfo;
  if (!perimeter::parse_log_level(args.get("log-level", "info"), &level)) {
    return usage("--log-level must be debug, info, warn or error");
  }
  perimeter::Logger logger("perimeter-sim", perimeter::StderrSink::instance(), level);
  perimeter::sim::SimulatorOptions options;
  std::int64_t value = 0;
  if (auto text = args.get("lease-ttl-seconds"); !text.empty()) {
    if (!parse_int(text, &value) || value < 1) return usage("--lease-ttl-seconds must be >= 1");
    options.default_lease_ttl = std::chrono::seconds(value);
    options.min_lease_ttl = std::min(options.min_lease_ttl, options.default_lease_ttl);
  }
  if (auto text = args.get("reclaim-ms"); !text.empty()) {
    if (!parse_int(text, &value) || value < 0) return usage("--reclaim-ms must be >= 0");
    options.default_reclaim_older_than = std::chrono::milliseconds(value);
  }
  std::int64_t port = 0;
  if (auto text = args.get("port", "0"); !parse_int(text, &port) || port < 0 || port > 65535) {
    return usage("--port must be 0..65535");
  }
  options.api_base_url = args.get("api-base-url");
  // Loopback unless told otherwise: runner pods on the local real node reach the host only
  // through their bridge's gateway address, which is what they are given there.
  const std::string address = args.get("address", "127.0.0.1");
  boost::system::error_code bad_address;
  boost::asio::ip::make_address(address, bad_address);
  if (bad_address) return usage("--address must be an IP address, got '" + address + "'");

  perimeter::sim::Simulator simulator(options, perimeter::SystemClock::instance(),
                                      perimeter::SystemRandom::instance());
  perimeter::sim::Faults faults(perimeter::SystemRandom::instance());
  if (auto text = args.get("faults"); !text.empty()) {
    std::string error;
    auto patch = nlohmann::json::parse(text, nullptr, false);
    if (patch.is_discarded() || !faults.update(patch, &error)) {
      return usage("--faults: " + (error.empty() ? "not valid JSON" : error));
    }
  }
  perimeter::sim::TunnelOptions tunnel_options;
  if (auto text = args.get("access-token-ttl-seconds"); !text.empty()) {
    if (!parse_int(text, &value) || value < 1) {
      return usage("--access-token-ttl-seconds must be >= 1");
    }
    tunnel_options.access_token_ttl = std::chrono::seconds(value);
  }
  if (auto text = args.get("tunnel-domain-suffix"); !text.empty()) {
    tunnel_options.domain_suffix = text;
  }
  perimeter::sim::PkiCaInspector ca_inspector;
  perimeter::sim::TunnelService tunnels(tunnel_options, perimeter::SystemClock::instance(),
                                        perimeter::SystemRandom::instance(), ca_inspector);
  // The workload identity issuer: where its discovery document is fetched (the local
  // apiserver's own URL) and the `iss` its tokens carry (its --service-account-issuer), which
  // differ; the issuer defaults to the URL, as for a public OIDC provider.
  if (auto issuer_url = args.get("oidc-issuer-url"); !issuer_url.empty()) {
    if (issuer_url.rfind("https://", 0) != 0 && issuer_url.rfind("http://", 0) != 0) {
      return usage("--oidc-issuer-url must be an http(s) URL");
    }
    const std::string issuer = args.get("oidc-issuer", issuer_url);
    const std::string ca_file = args.get("oidc-ca-file");
    if (!ca_file.empty() && !std::ifstream(ca_file)) {
      return usage("--oidc-ca-file: cannot read " + ca_file);
    }
    tunnels.register_issuer(issuer,
                            std::make_shared<perimeter::sim::DiscoveryKeySource>(
                                issuer, issuer_url, ca_file, perimeter::SystemClock::instance()));
    logger.info("workload identity issuer", {{"issuer", issuer}, {"discovery_url", issuer_url}});
  } else if (!args.get("oidc-issuer").empty() || !args.get("oidc-ca-file").empty()) {
    return usage("--oidc-issuer and --oidc-ca-file need --oidc-issuer-url");
  }
  // HTTPS instead of HTTP, with a certificate (chain) and key in PEM files: the API at a host
  // name, as the egress gateway and clients that verify it need (docs/simulator.md, "TLS").
  const std::string tls_cert_file = args.get("tls-cert-file");
  const std::string tls_key_file = args.get("tls-key-file");
  std::unique_ptr<boost::asio::ssl::context> tls;
  if (tls_cert_file.empty() != tls_key_file.empty()) {
    return usage("--tls-cert-file and --tls-key-file go together");
  }
  if (!tls_cert_file.empty()) {
    try {
      // Read with the shared certificate module first, so that a file that is not a
      // certificate, or a key that is not the certificate's, is named before any client comes.
      const auto certificate = perimeter::pki::read_certificate_file(tls_cert_file);
      const auto key = perimeter::pki::read_private_key_file(tls_key_file);
      if (!certificate.matches(key)) {
        return usage("--tls-key-file is not the key of the certificate in --tls-cert-file");
      }
      tls = std::make_unique<boost::asio::ssl::context>(boost::asio::ssl::context::tls_server);
      tls->set_options(boost::asio::ssl::context::default_workarounds |
                       boost::asio::ssl::context::no_sslv2 | boost::asio::ssl::context::no_sslv3 |
                       boost::asio::ssl::context::no_tlsv1 | boost::asio::ssl::context::no_tlsv1_1);
      tls->use_certificate_chain_file(tls_cert_file);
      tls->use_private_key_file(tls_key_file, boost::asio::ssl::context::pem);
      logger.info("serving TLS",
                  {{"certificate", certificate.subject()},
                   {"names", nlohmann::json(certificate.dns_names())},
                   {"not_after_unix", std::chrono::duration_cast<std::chrono::seconds>(
                                          certificate.not_after().time_since_epoch())
                                          .count()}});
    } catch (const std::exception& e) {
      return usage(std::string("--tls-cert-file/--tls-key-file: ") + e.what());
    }
  }
  perimeter::sim::SimMetrics metrics;
  perimeter::sim::ApiRouter router(simulator, faults, metrics, &tunnels);
  boost::asio::io_context io(1);
  std::unique_ptr<perimeter::sim::HttpServer> server;
  try {
    server = std::make_unique<perimeter::sim::HttpServer>(io, router, simulator, metrics, logger,
                                                          static_cast<std::uint16_t>(port), address,
                                                          tls.get());
  } catch (const std::exception& e) {
    logger.error("cannot listen", {{"address", address}, {"port", port}, {"error", e.what()}});
    return 1;
  }
  server->start();
  const bool v6 = address.find(':') != std::string::npos;
  const std::string url = std::string(tls ? "https://" : "http://") +
                          (v6 ? "[" + address + "]" : address) + ":" +
                          std::to_string(server->port());
  if (auto port_file = args.get("port-file"); !port_file.empty()) {
    // Written to a temporary name then renamed, so a reader never sees half a number.
    const std::string temporary = port_file + ".tmp";
    std::ofstream(temporary) << server->port() << "\n";
    std::rename(temporary.c_str(), port_file.c_str());
  }
  std::cout << nlohmann::json({{"event", "listening"}, {"port", server->port()}, {"url", url}})
            << std::endl;
  logger.info("listening", {{"url", url}});

  std::thread loop([&io] { io.run(); });
  const int signal = signals.wait();
  logger.info("shutting down", {{"signal", signal}});
  boost::asio::post(io, [&server] { server->stop(); });
  loop.join();
  return 0;
}

// ---- the CLI: thin calls to the admin API ----

int call(const std::string& base, const web::http::method& method, const std::string& path,
         const std::string& body, const std::map<std::string, std::string>& headers = {}) {
  try {
    web::http::client::http_client_config config;
    config.set_timeout(std::chrono::seconds(30));
    web::http::client::http_client client(utility::conversions::to_string_t(base), config);
    web::http::http_request request(method);
    request.set_request_uri(utility::conversions::to_string_t(path));
    for (const auto& [name, value] : headers) request.headers().add(name, value);
    if (!body.empty()) request.set_body(body, "application/json");
    auto response = client.request(request).get();
    const std::string text = response.extract_utf8string(true).get();
    std::cout << text << std::endl;
    return response.status_code() < 300 ? 0 : 1;
  } catch (const std::exception& e) {
    std::cerr << "perimeter-sim: request to " << base << path << " failed: " << e.what() << "\n";
    return 1;
  }
}

// Prints each tool result as it is recorded and each session as it finishes, until `sessions`
// sessions have finished (0: until killed) or, with `once`, after one snapshot; then the table.
// Exit 0 when every session finished with exactly its scripted results.
int follow(const std::string& base, const std::string& environment, std::int64_t sessions,
           std::chrono::milliseconds interval, bool once) {
  perimeter::sim::SessionFollower follower;
  perimeter::Backoff backoff({.initial = interval, .max = std::chrono::seconds(10)},
                             perimeter::SystemRandom::instance());
  web::http::client::http_client_config config;
  config.set_timeout(std::chrono::seconds(10));
  web::http::client::http_client client(utility::conversions::to_string_t(base), config);
  const std::string path = "/admin/environments/" + environment + "/results";
  while (sessions == 0 || follower.sessions_finished() < static_cast<size_t>(sessions)) {
    std::string failure;
    try {
      auto response = client.request(web::http::methods::GET, path).get();
      const std::string body = response.extract_utf8string(true).get();
      if (response.status_code() != 200) {
        failure = "HTTP " + std::to_string(response.status_code()) + ": " + body;
      } else {
        auto snapshot = nlohmann::json::parse(body, nullptr, false);
        if (snapshot.is_discarded()) failure = "a results body that is not JSON: " + body;
        for (const auto& line : follower.update(snapshot)) std::cout << line << "\n";
        std::cout.flush();
      }
    } catch (const std::exception& e) {
      failure = e.what();
    }
    if (failure.empty()) {
      if (once) break;
      backoff.reset();
      std::this_thread::sleep_for(interval);
    } else {
      auto delay = backoff.next();
      std::cerr << "perimeter-sim follow: " << base << path << ": " << failure << " (retry in "
                << delay.count() << " ms)\n";
      std::this_thread::sleep_for(delay);
    }
  }
  std::cout << "\n" << follower.table();
  return follower.all_matched() ? 0 : 1;
}

int cli(const std::string& command, const Args& args) {
  const std::string url = args.get("url", "http://127.0.0.1:8787");
  if (command == "create-environment") {
    return call(url, web::http::methods::POST, "/admin/environments",
                nlohmann::json({{"name", args.get("name")}, {"key", args.get("key")}}).dump());
  }
  if (command == "create-organization") {
    return call(url, web::http::methods::POST, "/admin/organizations",
                nlohmann::json({{"name", args.get("name")}}).dump());
  }
  if (command == "create-federation-rule") {
    const std::string organization = args.get("organization");
    const std::string issuer = args.get("issuer");
    const std::string subject = args.get("subject");
    if (organization.empty() || issuer.empty() || subject.empty())
      return usage("create-federation-rule needs --organization, --issuer and --subject");
    nlohmann::json rule = {{"organization_id", organization},
                           {"issuer", issuer},
                           {"audience", args.get("audience", "https://api.anthropic.com")},
                           {"subjects", {subject}}};
    if (auto account = args.get("service-account-id"); !account.empty()) {
      rule["service_account_id"] = account;
    }
    return call(url, web::http::methods::POST, "/admin/federation_rules", rule.dump());
  }
  if (command == "enqueue") {
    const std::string environment = args.get("environment");
    const std::string file = args.get("scenario");
    if (environment.empty() || file.empty())
      return usage("enqueue needs --environment and --scenario");
    std::ifstream in(file);
    if (!in) return usage("cannot read scenario file " + file);
    std::stringstream text;
    text << in.rdbuf();
    std::int64_t count = 1;
    if (!parse_int(args.get("count", "1"), &count) || count < 1)
      return usage("--count must be >= 1");
    int status = 0;
    for (std::int64_t i = 0; i < count; ++i) {
      status |=
          call(url, web::http::methods::POST, "/admin/environments/" + environment + "/sessions",
               nlohmann::json({{"scenario_yaml", text.str()}}).dump());
    }
    return status;
  }
  if (command == "enqueue-healthcheck") {
    const std::string environment = args.get("environment");
    if (environment.empty()) return usage("enqueue-healthcheck needs --environment");
    std::int64_t count = 1;
    if (!parse_int(args.get("count", "1"), &count) || count < 1)
      return usage("--count must be >= 1");
    int status = 0;
    for (std::int64_t i = 0; i < count; ++i) {
      status |= call(url, web::http::methods::POST,
                     "/admin/environments/" + environment + "/healthchecks", "");
    }
    return status;
  }
  if (command == "session" || command == "next-turn" || command == "terminate") {
    const std::string session = args.get("session");
    if (session.empty()) return usage(command + " needs --session");
    if (command == "session") {
      return call(url, web::http::methods::GET, "/admin/sessions/" + session, "");
    }
    return call(
        url, web::http::methods::POST,
        "/admin/sessions/" + session + (command == "next-turn" ? "/next_turn" : "/terminate"), "");
  }
  if (command == "results") {
    if (auto session = args.get("session"); !session.empty()) {
      return call(url, web::http::methods::GET, "/admin/sessions/" + session + "/results", "");
    }
    if (auto environment = args.get("environment"); !environment.empty()) {
      return call(url, web::http::methods::GET, "/admin/environments/" + environment + "/results",
                  "");
    }
    return usage("results needs --session or --environment");
  }
  if (command == "stats") {
    const std::string environment = args.get("environment");
    const std::string key = args.get("key");
    if (environment.empty() || key.empty()) return usage("stats needs --environment and --key");
    return call(url, web::http::methods::GET, "/v1/environments/" + environment + "/work/stats", "",
                {{"Authorization", "Bearer " + key},
                 {"anthropic-beta", "managed-agents-2026-04-01"},
                 {"anthropic-version", "2023-06-01"}});
  }
  if (command == "follow") {
    const std::string environment = args.get("environment");
    if (environment.empty()) return usage("follow needs --environment");
    std::int64_t sessions = 0, interval = 500;
    if (!parse_int(args.get("sessions", "0"), &sessions) || sessions < 0)
      return usage("--sessions must be >= 0");
    if (!parse_int(args.get("interval-ms", "500"), &interval) || interval < 50)
      return usage("--interval-ms must be >= 50");
    const std::string once = args.get("once", "false");
    if (once != "true" && once != "false") return usage("--once takes true or false");
    return follow(url, environment, sessions, std::chrono::milliseconds(interval), once == "true");
  }
  if (command == "faults") {
    if (args.positional.empty()) return call(url, web::http::methods::GET, "/admin/faults", "");
    return call(url, web::http::methods::POST, "/admin/faults", args.positional[0]);
  }
  return usage("unknown command `" + command + "`");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return usage("missing command");
  const std::string command = argv[1];
  Args args;
  std::string error;
  if (!args.parse(argc, argv, 2, &error)) return usage(error);
  if (command == "serve") return serve(args);
  return cli(command, args);
}
