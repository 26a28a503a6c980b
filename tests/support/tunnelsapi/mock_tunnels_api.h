#pragma once

#include <gmock/gmock.h>

#include "tunnelsapi/access_token_source.h"
#include "tunnelsapi/tunnels_api.h"

namespace perimeter::testing {

// gMock of the Tunnels API client, for the McpTunnel controller's unit tests (use as
// StrictMock<MockTunnelsApi>). The client's own tests use MockHttpTransport
// (agentapi/mock_agent_api.h).
class MockTunnelsApi : public tunnelsapi::TunnelsApi {
 public:
  MOCK_METHOD(tunnelsapi::Tunnel, create_tunnel, (const std::string&), (override));
  MOCK_METHOD(tunnelsapi::Tunnel, retrieve_tunnel, (const std::string&), (override));
  MOCK_METHOD(tunnelsapi::TunnelPage, list_tunnels, (bool, int, const std::string&), (override));
  MOCK_METHOD(tunnelsapi::TunnelToken, reveal_token, (const std::string&), (override));
  MOCK_METHOD(tunnelsapi::TunnelToken, rotate_token, (const std::string&, const std::string&),
              (override));
  MOCK_METHOD(tunnelsapi::Tunnel, archive_tunnel, (const std::string&), (override));
  MOCK_METHOD(tunnelsapi::TunnelCertificate, create_certificate,
              (const std::string&, const std::string&), (override));
  MOCK_METHOD(tunnelsapi::TunnelCertificatePage, list_certificates,
              (const std::string&, bool, int, const std::string&), (override));
  MOCK_METHOD(tunnelsapi::TunnelCertificate, retrieve_certificate,
              (const std::string&, const std::string&), (override));
  MOCK_METHOD(tunnelsapi::TunnelCertificate, archive_certificate,
              (const std::string&, const std::string&), (override));
};

class MockAccessTokenSource : public tunnelsapi::AccessTokenSource {
 public:
  MOCK_METHOD(tunnelsapi::Secret, access_token, (), (override));
  MOCK_METHOD(void, invalidate, (const tunnelsapi::Secret&), (override));
};

}  // namespace perimeter::testing
