// The two checks that keep a user who may only create AgentEnvironments from having the operator
// send a Secret's value to a server of theirs.
#include "controllers/agentenvironment/key_release.h"

#include <gtest/gtest.h>

namespace perimeter::agentenvironment {
namespace {

using nlohmann::json;

AgentEnvironment environment(const std::string& api_base_url) {
  AgentEnvironment env;
  env.name = "payments";
  env.namespace_ = "agents";
  env.environment_id = "env_42";
  env.key_secret_name = "payments-key";
  env.api_base_url = api_base_url;
  return env;
}

json secret(json labels, json annotations = json::object()) {
  return {{"metadata",
           {{"name", "payments-key"},
            {"namespace", "agents"},
            {"labels", std::move(labels)},
            {"annotations", std::move(annotations)}}},
          {"data", {{"environment-key", "c2stYW50LWtleQ=="}}}};
}

TEST(ApiOriginTest, ParsesSchemeHostAndPortWithDefaults) {
  EXPECT_EQ(parse_api_origin("https://api.anthropic.com")->str(), "https://api.anthropic.com");
  EXPECT_EQ(parse_api_origin("https://API.Anthropic.COM/v1/")->str(), "https://api.anthropic.com");
  EXPECT_EQ(parse_api_origin("HTTPS://api.anthropic.com:443")->port, 443);
  EXPECT_EQ(parse_api_origin("http://127.0.0.1:8080?x=1")->str(), "http://127.0.0.1:8080");
  EXPECT_EQ(parse_api_origin("http://[::1]:9")->str(), "http://[::1]:9");
  EXPECT_EQ(parse_api_origin("http://[::1]")->port, 80);
}

TEST(ApiOriginTest, RefusesWhatCouldBeReadAsAnotherHost) {
  for (const char* url :
       {"https://api.anthropic.com@evil.example", "https://user:pw@api.anthropic.com",
        "https://api.anthropic.com\\@evil.example", "https://api.anthropic.com.",
        "https://api..anthropic.com", "https://api.anthropic.com:0",
        "https://api.anthropic.com:99999", "https://api.anthropic.com:443:1",
        "https://%61pi.anthropic.com", "https:// api.anthropic.com", "ftp://api.anthropic.com",
        "https://", "https://[::1", "https://[nothost]:1", "//evil"}) {
    std::string why;
    EXPECT_FALSE(parse_api_origin(url, &why).has_value()) << url;
    EXPECT_FALSE(why.empty()) << url;
  }
}

TEST(ApiHostAllowListTest, AllowsExactOriginsOnly) {
  const auto official = ApiHostAllowList::official();
  EXPECT_TRUE(official.allows(*parse_api_origin("https://api.anthropic.com/")));
  // Look-alikes: another host, scheme or port is another origin.
  for (const char* url :
       {"https://api.anthropic.com.evil.example", "https://evil.example/api.anthropic.com",
        "http://api.anthropic.com", "https://api.anthropic.com:8443", "https://anthropic.com",
        "https://xapi.anthropic.com"}) {
    EXPECT_FALSE(official.allows(*parse_api_origin(url))) << url;
  }
  const auto local = ApiHostAllowList::parse(" https://api.anthropic.com , http://127.0.0.1:8080 ");
  EXPECT_TRUE(local.allows(*parse_api_origin("http://127.0.0.1:8080/")));
  EXPECT_FALSE(local.allows(*parse_api_origin("http://127.0.0.1:8081")));
  EXPECT_EQ(local.describe(), "https://api.anthropic.com, http://127.0.0.1:8080");
  EXPECT_EQ(ApiHostAllowList::parse("").describe(), "none");
}

TEST(ApiHostAllowListTest, AnEntryThatIsNotAnOriginIsRefusedAtStartUp) {
  EXPECT_THROW(ApiHostAllowList::parse("api.anthropic.com"), std::invalid_argument);
  EXPECT_THROW(ApiHostAllowList::parse("https://api.anthropic.com/v1"), std::invalid_argument);
  EXPECT_THROW(ApiHostAllowList::parse("https://a@api.anthropic.com"), std::invalid_argument);
}

TEST(CheckApiHostTest, NamesTheHostAndWhatToDo) {
  const auto allowed = ApiHostAllowList::official();
  EXPECT_FALSE(check_api_host(environment("https://api.anthropic.com"), allowed));
  const auto refused = check_api_host(environment("https://collector.evil.example/"), allowed);
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->reason, "ApiHostNotAllowed");
  EXPECT_NE(refused->message.find("https://collector.evil.example"), std::string::npos);
  EXPECT_NE(refused->message.find("--allowed-api-hosts"), std::string::npos);
  const auto malformed = check_api_host(environment("https://api.anthropic.com@evil"), allowed);
  ASSERT_TRUE(malformed);
  EXPECT_EQ(malformed->reason, "InvalidApiBaseUrl");
}

TEST(CheckKeySecretTest, AnUnmarkedSecretIsNeverSent) {
  const auto env = environment("https://api.anthropic.com");
  for (const json& labels : {json::object(), json{{"perimeter.dev/environment-key", "false"}},
                             json{{"perimeter.dev/environment-key", "yes"}}}) {
    const auto refused = check_key_secret(secret(labels), env);
    ASSERT_TRUE(refused) << labels.dump();
    EXPECT_EQ(refused->reason, "SecretNotMarked");
    EXPECT_NE(refused->message.find("kubectl -n agents label secret payments-key "
                                    "perimeter.dev/environment-key=true"),
              std::string::npos)
        << refused->message;
  }
  EXPECT_TRUE(check_key_secret(json::object(), env));
  EXPECT_FALSE(check_key_secret(secret({{"perimeter.dev/environment-key", "true"}}), env));
}

TEST(CheckKeySecretTest, AKeyMarkedForOtherEnvironmentsIsNotSentForThisOne) {
  const auto env = environment("https://api.anthropic.com");
  const json mark = {{"perimeter.dev/environment-key", "true"}};
  EXPECT_FALSE(
      check_key_secret(secret(mark, {{"perimeter.dev/environment-ids", "env_1, env_42"}}), env));
  const auto refused =
      check_key_secret(secret(mark, {{"perimeter.dev/environment-ids", "env_1,env_420"}}), env);
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->reason, "SecretNotForEnvironment");
  EXPECT_NE(refused->message.find("env_42"), std::string::npos);
}

}  // namespace
}  // namespace perimeter::agentenvironment
