#include "proxy/upstream_connector.h"

#include <memory>

namespace perimeter::mcpguard {

const char* metric_kind(ConnectFailure failure) {
  switch (failure) {
    case ConnectFailure::kNotAllowed:
      return "not_allowed";
    case ConnectFailure::kTimeout:
      return "timeout";
    default:
      return "connect";
  }
}

bool address_allowed(const asio::ip::address& address, const std::vector<Cidr>& allowed) {
  std::array<std::uint8_t, 16> bytes{};
  if (address.is_v4()) {
    const auto v4 = address.to_v4().to_bytes();
    bytes[10] = 0xff;
    bytes[11] = 0xff;
    std::copy(v4.begin(), v4.end(), bytes.begin() + 12);
  } else {
    const auto v6 = address.to_v6().to_bytes();
    std::copy(v6.begin(), v6.end(), bytes.begin());
  }
  for (const auto& cidr : allowed) {
    if (cidr.contains(bytes)) return true;
  }
  return false;
}

std::vector<tcp::endpoint> allowed_endpoints(const tcp::resolver::results_type& resolved,
                                             const std::vector<Cidr>& allowed) {
  std::vector<tcp::endpoint> endpoints;
  for (const auto& entry : resolved) {
    if (address_allowed(entry.endpoint().address(), allowed)) endpoints.push_back(entry.endpoint());
  }
  return endpoints;
}

void UpstreamConnector::async_connect(TcpSocket& socket, const RouteConfig& route,
                                      Handler handler) {
  auto shared_handler = std::make_shared<Handler>(std::move(handler));
  std::vector<Cidr> allowed = route.allowed_cidrs;
  std::string host = route.upstream.host;
  resolver_.async_resolve(
      route.upstream.host, route.upstream.port,
      [&socket, shared_handler, allowed = std::move(allowed), host = std::move(host)](
          const beast::error_code& error, const tcp::resolver::results_type& resolved) {
        if (error) {
          (*shared_handler)(ConnectFailure::kResolve,
                            "cannot resolve " + host + ": " + error.message());
          return;
        }
        auto endpoints = allowed_endpoints(resolved, allowed);
        if (endpoints.empty()) {
          std::string addresses;
          for (const auto& entry : resolved) {
            if (!addresses.empty()) addresses += ", ";
            addresses += entry.endpoint().address().to_string();
          }
          (*shared_handler)(ConnectFailure::kNotAllowed,
                            host + " resolves to " + addresses + ", outside allowed_cidrs");
          return;
        }
        asio::async_connect(socket, endpoints,
                            [&socket, shared_handler, host](const beast::error_code& connect_error,
                                                            const tcp::endpoint&) {
                              if (connect_error) {
                                (*shared_handler)(
                                    ConnectFailure::kConnect,
                                    "cannot connect to " + host + ": " + connect_error.message());
                                return;
                              }
                              beast::error_code ignored;
                              socket.set_option(tcp::no_delay(true), ignored);
                              (*shared_handler)(ConnectFailure::kNone, "");
                            });
      });
}

}  // namespace perimeter::mcpguard
