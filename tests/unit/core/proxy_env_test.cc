#include "core/proxy_env.h"

#include <gtest/gtest.h>

#include <map>

namespace perimeter {
namespace {

TEST(ProxyUrl, ReadsTheGatewayUrlTheOperatorWrites) {
  const ProxyUrl url = parse_proxy_url(
      "http://team-a~agents~sesn_01ABC:3f9a@perimeter-egress.perimeter-system.svc:3128");
  EXPECT_EQ(url.host, "perimeter-egress.perimeter-system.svc");
  EXPECT_EQ(url.port, "3128");
  EXPECT_EQ(url.authority(), "perimeter-egress.perimeter-system.svc:3128");
  ASSERT_TRUE(url.username.has_value());
  EXPECT_EQ(*url.username, "team-a~agents~sesn_01ABC");
  EXPECT_EQ(url.password, "3f9a");
  // base64("team-a~agents~sesn_01ABC:3f9a"), computed apart from this code.
  EXPECT_EQ(url.authorization(), "Basic dGVhbS1hfmFnZW50c35zZXNuXzAxQUJDOjNmOWE=");
  EXPECT_EQ(url.redacted(), "http://<redacted>@perimeter-egress.perimeter-system.svc:3128");
}

TEST(ProxyUrl, PercentDecodesTheUserInformation) {
  const ProxyUrl url = parse_proxy_url("http://team%2Da%7Eagents:p%40ss%3Aw%25rd@proxy:3128/");
  EXPECT_EQ(*url.username, "team-a~agents");
  EXPECT_EQ(url.password, "p@ss:w%rd");
  // base64("team-a~agents:p@ss:w%rd")
  EXPECT_EQ(url.authorization(), "Basic dGVhbS1hfmFnZW50czpwQHNzOnclcmQ=");
}

struct UrlCase {
  const char* text;
  const char* host;
  const char* port;
  const char* username;  // nullptr: no userinfo
  const char* password;
};

TEST(ProxyUrl, HostsPortsAndUserInformationTable) {
  const UrlCase cases[] = {
      {"http://proxy", "proxy", "80", nullptr, ""},
      {"http://proxy:3128", "proxy", "3128", nullptr, ""},
      {"HTTP://Proxy:3128/", "Proxy", "3128", nullptr, ""},
      {"proxy:3128", "proxy", "3128", nullptr, ""},  // no scheme: http://, as httpx reads it
      {"http://10.0.0.7:8080/ignored?q#f", "10.0.0.7", "8080", nullptr, ""},
      {"http://[fd00::1]:3128", "fd00::1", "3128", nullptr, ""},
      {"http://[::1]", "::1", "80", nullptr, ""},
      {"http://user@proxy:1", "proxy", "1", "user", ""},
      {"http://user:@proxy:65535", "proxy", "65535", "user", ""},
      {"http://:secret@proxy:3128", "proxy", "3128", "", "secret"},
      {"http://us%3Aer:p@w@proxy:3128", "proxy", "3128", "us:er", "p@w"},
  };
  for (const UrlCase& c : cases) {
    SCOPED_TRACE(c.text);
    const ProxyUrl url = parse_proxy_url(c.text);
    EXPECT_EQ(url.host, c.host);
    EXPECT_EQ(url.port, c.port);
    if (c.username == nullptr) {
      EXPECT_FALSE(url.username.has_value());
      EXPECT_FALSE(url.authorization().has_value());
    } else {
      ASSERT_TRUE(url.username.has_value());
      EXPECT_EQ(*url.username, c.username);
      EXPECT_EQ(url.password, c.password);
    }
  }
  EXPECT_EQ(parse_proxy_url("http://[fd00::1]:3128").authority(), "[fd00::1]:3128");
}

TEST(ProxyUrl, BadUrlsAreRefusedWithoutShowingTheirCredentials) {
  const char* bad[] = {
      "https://proxy:3128",              // TLS to the proxy: not supported
      "socks5://proxy:1080",             // not an HTTP proxy
      "http://",                         // no host
      "http://:3128",                    // no host
      "http://proxy:",                   // empty port
      "http://proxy:31x8",               // port not a number
      "http://proxy:0",                  // out of range
      "http://proxy:65536",              // out of range
      "http://proxy:123456",             // out of range
      "http://[fd00::1:3128",            // bracket not closed
      "http://[fd00::1]x:3128",          // junk after the bracket
      "http://us%zzer:topsecret@proxy",  // malformed escape
      "http://user:topsecret%4@proxy",   // truncated escape
      "http://user:topsecret@pro xy:1",  // space in the host
  };
  for (const char* text : bad) {
    SCOPED_TRACE(text);
    try {
      parse_proxy_url(text);
      ADD_FAILURE() << "accepted";
    } catch (const ProxyConfigError& error) {
      EXPECT_EQ(std::string(error.what()).find("topsecret"), std::string::npos) << error.what();
      EXPECT_NE(std::string(error.what()).find("proxy URL"), std::string::npos) << error.what();
    }
  }
}

struct NoProxyCase {
  const char* list;
  const char* host;
  const char* port;
  bool excluded;
};

TEST(NoProxy, Table) {
  const char* operator_list = "localhost,127.0.0.1,::1,.svc,.cluster.local,10.20.0.0/16";
  const NoProxyCase cases[] = {
      // The list the operator sets.
      {operator_list, "localhost", "443", true},
      {operator_list, "127.0.0.1", "8080", true},
      {operator_list, "::1", "443", true},
      {operator_list, "perimeter-egress.perimeter-system.svc", "3128", true},
      {operator_list, "svc", "443", true},  // a leading dot is optional: the name itself too
      {operator_list, "kubernetes.default.svc.cluster.local", "443", true},
      {operator_list, "10.20.3.4", "443", true},
      {operator_list, "10.21.0.1", "443", false},
      {operator_list, "api.anthropic.com", "443", false},
      {operator_list, "notsvc", "443", false},
      {operator_list, "127.0.0.2", "443", false},
      {operator_list, "mysvc.example", "443", false},
      // Names: the name and its subdomains, never a suffix of a label; case and trailing dots.
      {"example.com", "example.com", "443", true},
      {"example.com", "api.example.com", "443", true},
      {"example.com", "API.Example.COM.", "443", true},
      {"example.com", "badexample.com", "443", false},
      {"example.com", "example.com.evil", "443", false},
      {".example.com", "example.com", "443", true},
      {"*.example.com", "a.b.example.com", "443", true},
      {" Example.Com ,, other", "example.com", "443", true},
      // `*` alone excludes everything; inside a name it is not a wildcard.
      {"*", "api.anthropic.com", "443", true},
      {"foo, *", "api.anthropic.com", "443", true},
      {"api.*.com", "api.anthropic.com", "443", false},
      // Addresses and ranges; a name never matches an address or the reverse.
      {"192.168.1.10", "192.168.1.10", "443", true},
      {"192.168.1.10", "192.168.1.11", "443", false},
      {"192.168.0.0/16", "192.168.200.1", "443", true},
      {"fd00::/8", "fd12::1", "443", true},
      {"fd00::/8", "fe80::1", "443", false},
      {"[fd00::1]", "fd00::1", "443", true},
      {"localhost", "127.0.0.1", "443", false},
      {"10.0.0.0/8", "ten.example", "443", false},
      // host:port matches that port only.
      {"example.com:8443", "example.com", "8443", true},
      {"example.com:8443", "example.com", "443", false},
      {"10.1.2.3:443", "10.1.2.3", "443", true},
      {"[fd00::1]:443", "fd00::1", "443", true},
      {"[fd00::1]:443", "fd00::1", "80", false},
      // Nothing listed: nothing excluded; junk entries are ignored.
      {"", "localhost", "443", false},
      {"[broken, 10.0.0.1/8", "10.0.0.1", "443", false},
  };
  for (const NoProxyCase& c : cases) {
    SCOPED_TRACE(std::string(c.list) + " / " + c.host + ":" + c.port);
    EXPECT_EQ(NoProxy(c.list).excludes(c.host, c.port), c.excluded);
  }
}

using Env = std::map<std::string, std::string>;
ProxyEnvironment load(const Env& values) {
  return load_proxy_environment([&values](const char* name) -> std::optional<std::string> {
    auto it = values.find(name);
    if (it == values.end()) return std::nullopt;
    return it->second;
  });
}

TEST(ProxyEnvironment, NothingSetMeansDirect) {
  const ProxyEnvironment proxies = load({});
  EXPECT_EQ(proxies.proxy_for(true, "api.anthropic.com", "443"), nullptr);
  EXPECT_EQ(proxies.proxy_for(false, "api.anthropic.com", "80"), nullptr);
}

TEST(ProxyEnvironment, EachSchemeHasItsOwnVariableAndNoProxyExcludes) {
  const ProxyEnvironment proxies = load({{"HTTPS_PROXY", "http://egress:3128"},
                                         {"HTTP_PROXY", "http://plain:8080"},
                                         {"NO_PROXY", ".svc,127.0.0.1"}});
  ASSERT_NE(proxies.proxy_for(true, "api.anthropic.com", "443"), nullptr);
  EXPECT_EQ(proxies.proxy_for(true, "api.anthropic.com", "443")->host, "egress");
  EXPECT_EQ(proxies.proxy_for(false, "api.anthropic.com", "80")->host, "plain");
  EXPECT_EQ(proxies.proxy_for(true, "sim.team-a.svc", "443"), nullptr);
  EXPECT_EQ(proxies.proxy_for(false, "127.0.0.1", "9000"), nullptr);
}

TEST(ProxyEnvironment, HttpsProxyAloneLeavesHttpUrlsDirect) {
  const ProxyEnvironment proxies = load({{"HTTPS_PROXY", "http://egress:3128"}});
  EXPECT_NE(proxies.proxy_for(true, "api.anthropic.com", "443"), nullptr);
  EXPECT_EQ(proxies.proxy_for(false, "api.anthropic.com", "80"), nullptr);
}

TEST(ProxyEnvironment, LowerCaseWinsAndAnEmptyLowerCaseUnsets) {
  EXPECT_EQ(load({{"HTTPS_PROXY", "http://upper:1"}, {"https_proxy", "http://lower:2"}})
                .proxy_for(true, "h", "443")
                ->host,
            "lower");
  EXPECT_EQ(
      load({{"HTTPS_PROXY", "http://upper:1"}, {"https_proxy", ""}}).proxy_for(true, "h", "443"),
      nullptr);
  EXPECT_EQ(load({{"HTTPS_PROXY", ""}}).proxy_for(true, "h", "443"), nullptr);
  const ProxyEnvironment proxies =
      load({{"HTTPS_PROXY", "http://p:1"}, {"NO_PROXY", "h"}, {"no_proxy", "other"}});
  EXPECT_NE(proxies.proxy_for(true, "h", "443"), nullptr);
  EXPECT_EQ(proxies.proxy_for(true, "other", "443"), nullptr);
}

TEST(ProxyEnvironment, AllProxyServesASchemeWithoutItsOwnVariable) {
  const ProxyEnvironment proxies =
      load({{"ALL_PROXY", "http://all:1"}, {"https_proxy", "http://tls:2"}});
  EXPECT_EQ(proxies.proxy_for(true, "h", "443")->host, "tls");
  EXPECT_EQ(proxies.proxy_for(false, "h", "80")->host, "all");
}

TEST(ProxyEnvironment, ABadProxyUrlNamesTheVariableAndHidesThePassword) {
  try {
    load({{"HTTPS_PROXY", "http://user:topsecret@egress:31x8"}});
    FAIL() << "accepted";
  } catch (const ProxyConfigError& error) {
    const std::string message = error.what();
    EXPECT_NE(message.find("HTTPS_PROXY"), std::string::npos) << message;
    EXPECT_NE(message.find("egress:31x8"), std::string::npos) << message;
    EXPECT_EQ(message.find("topsecret"), std::string::npos) << message;
  }
  // A bad variable that is overridden is never read.
  EXPECT_NO_THROW(load({{"HTTPS_PROXY", "ftp://x"}, {"https_proxy", "http://ok:1"}}));
}

}  // namespace
}  // namespace perimeter
