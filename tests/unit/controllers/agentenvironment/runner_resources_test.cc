#include "controllers/agentenvironment/runner_resources.h"

#include <gtest/gtest.h>

#include "controllers/agentenvironment/runner_naming.h"

namespace perimeter::agentenvironment {
namespace {

nlohmann::json minimal_object() {
  return nlohmann::json::parse(R"({
    "apiVersion": "perimeter.dev/v1alpha1", "kind": "AgentEnvironment",
    "metadata": {"name": "payments", "namespace": "agents", "uid": "uid-1", "generation": 3},
    "spec": {"environmentId": "env_42", "environmentKeySecretRef": {"name": "payments-key"},
             "runner": {"image": "registry.example/perimeter-runner:1.0"}}
  })");
}

ClaimedSession session() {
  return {"work_Abc123", "sesn_777", "c2VjcmV0", "2026-11-23T06:00:00Z"};
}

const nlohmann::json* find_env(const nlohmann::json& container, const std::string& name) {
  for (const auto& var : container["env"]) {
    if (var["name"] == name) return &var;
  }
  return nullptr;
}

TEST(ParseAgentEnvironmentTest, AppliesTheSchemaDefaults) {
  const auto env = parse_agent_environment(minimal_object());
  EXPECT_EQ(env.name, "payments");
  EXPECT_EQ(env.namespace_, "agents");
  EXPECT_EQ(env.generation, 3);
  EXPECT_EQ(env.environment_id, "env_42");
  EXPECT_EQ(env.key_secret_name, "payments-key");
  EXPECT_EQ(env.key_secret_key, "environment-key");
  EXPECT_EQ(env.api_base_url, "https://api.anthropic.com");
  EXPECT_EQ(env.max_concurrent_sessions, 10);
  EXPECT_FALSE(env.suspend);
  EXPECT_EQ(env.poll_block_ms, 999);
  EXPECT_EQ(env.runner.image_pull_policy, "IfNotPresent");
  EXPECT_EQ(env.runner.workspace_size_limit, "1Gi");
  EXPECT_EQ(env.runner.active_deadline_seconds, 3600);
  EXPECT_FALSE(env.runner.service_account_name.has_value());
  EXPECT_EQ(env.retain_succeeded_seconds, 0);
  EXPECT_EQ(env.retain_failed_seconds, 86400);
}

TEST(ParseAgentEnvironmentTest, NamesTheFieldThatIsWrong) {
  auto object = minimal_object();
  object["spec"].erase("environmentId");
  EXPECT_THROW(
      {
        try {
          parse_agent_environment(object);
        } catch (const SpecError& e) {
          EXPECT_STREQ(e.what(), "spec.environmentId is required");
          throw;
        }
      },
      SpecError);

  object = minimal_object();
  object["spec"]["maxConcurrentSessions"] = "ten";
  try {
    parse_agent_environment(object);
    FAIL() << "a string limit was accepted";
  } catch (const SpecError& e) {
    EXPECT_NE(std::string(e.what()).find("spec.maxConcurrentSessions has the wrong type"),
              std::string::npos);
  }

  object = minimal_object();
  object["spec"]["runner"]["env"] = {{{"name", "ANTHROPIC_ENVIRONMENT_KEY"}, {"value", "x"}}};
  EXPECT_THROW(parse_agent_environment(object), SpecError);
  EXPECT_THROW(parse_agent_environment(nlohmann::json::array()), SpecError);
}

TEST(RunnerPodTest, CarriesTheEnvContractWithTheSecretByReference) {
  const auto env = parse_agent_environment(minimal_object());
  const auto pod = build_runner_pod(env, session());
  const auto& container = pod["spec"]["containers"][0];
  EXPECT_EQ(find_env(container, "ANTHROPIC_WORK_ID")->at("value"), "work_Abc123");
  EXPECT_EQ(find_env(container, "ANTHROPIC_ENVIRONMENT_ID")->at("value"), "env_42");
  EXPECT_EQ(find_env(container, "ANTHROPIC_SESSION_ID")->at("value"), "sesn_777");
  EXPECT_EQ(find_env(container, "ANTHROPIC_BASE_URL")->at("value"), "https://api.anthropic.com");
  const auto* secret = find_env(container, "ANTHROPIC_WORK_SECRET");
  ASSERT_NE(secret, nullptr);
  EXPECT_FALSE(secret->contains("value")) << "the work secret must never be a literal";
  EXPECT_EQ((*secret)["valueFrom"]["secretKeyRef"]["name"], runner_object_name("work_Abc123"));
  EXPECT_EQ(find_env(container, "ANTHROPIC_ENVIRONMENT_KEY"), nullptr)
      << "the environment key stays with the operator";
  EXPECT_EQ(pod.dump().find("c2VjcmV0"), std::string::npos);
}

TEST(RunnerPodTest, HasRestrictedSecurityDefaults) {
  const auto pod = build_runner_pod(parse_agent_environment(minimal_object()), session());
  const auto& spec = pod["spec"];
  EXPECT_EQ(spec["restartPolicy"], "Never");
  EXPECT_EQ(spec["automountServiceAccountToken"], false);
  EXPECT_EQ(spec["activeDeadlineSeconds"], 3600);
  EXPECT_FALSE(spec.contains("serviceAccountName"));
  EXPECT_EQ(spec["securityContext"]["runAsNonRoot"], true);
  EXPECT_EQ(spec["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
  const auto& security = spec["containers"][0]["securityContext"];
  EXPECT_EQ(security["allowPrivilegeEscalation"], false);
  EXPECT_EQ(security["readOnlyRootFilesystem"], true);
  EXPECT_EQ(security["capabilities"]["drop"], nlohmann::json::array({"ALL"}));
  EXPECT_EQ(spec["volumes"][0]["emptyDir"]["sizeLimit"], "1Gi");
  const auto& limits = spec["containers"][0]["resources"]["limits"];
  EXPECT_EQ(limits["cpu"], "1");
  EXPECT_EQ(limits["memory"], "1Gi");
}

TEST(RunnerPodTest, IsOwnedLabelledAndNamedFromTheWorkId) {
  const auto pod = build_runner_pod(parse_agent_environment(minimal_object()), session());
  const auto& metadata = pod["metadata"];
  EXPECT_EQ(metadata["name"], runner_object_name("work_Abc123"));
  EXPECT_EQ(metadata["namespace"], "agents");
  EXPECT_EQ(metadata["labels"]["perimeter.dev/environment"], "payments");
  EXPECT_EQ(metadata["labels"]["perimeter.dev/work-id"], "work_Abc123");
  EXPECT_EQ(metadata["labels"]["perimeter.dev/session-id"], "sesn_777");
  EXPECT_EQ(metadata["annotations"]["perimeter.dev/work-id"], "work_Abc123");
  const auto& owner = metadata["ownerReferences"][0];
  EXPECT_EQ(owner["kind"], "AgentEnvironment");
  EXPECT_EQ(owner["uid"], "uid-1");
  EXPECT_EQ(owner["controller"], true);
}

TEST(RunnerPodTest, CarriesTheAuditLevelWhichTheRunnerEnvCannotOverride) {
  auto object = minimal_object();
  auto pod = build_runner_pod(parse_agent_environment(object), session());
  EXPECT_EQ(find_env(pod["spec"]["containers"][0], "PERIMETER_AUDIT_LEVEL")->at("value"),
            "metadata");

  object["spec"]["audit"] = {{"level", "full"}};
  pod = build_runner_pod(parse_agent_environment(object), session());
  EXPECT_EQ(find_env(pod["spec"]["containers"][0], "PERIMETER_AUDIT_LEVEL")->at("value"), "full");

  object["spec"]["audit"] = {{"level", "everything"}};
  EXPECT_THROW(parse_agent_environment(object), SpecError);
  object = minimal_object();
  object["spec"]["runner"]["env"] = {{{"name", "PERIMETER_AUDIT_LEVEL"}, {"value", "full"}}};
  EXPECT_THROW(parse_agent_environment(object), SpecError);
}

TEST(RunnerPodTest, GivesMemoryStoresAWritableMntMemoryAndTheFlushItsGracePeriod) {
  const auto pod = build_runner_pod(parse_agent_environment(minimal_object()), session());
  const auto& spec = pod["spec"];
  auto named = [](const nlohmann::json& list, const std::string& name) {
    for (const auto& entry : list) {
      if (entry["name"] == name) return entry;
    }
    return nlohmann::json();
  };
  // A store's mount_path is /mnt/memory/<store>: the runner (uid 65532, fsGroup) creates it there.
  EXPECT_EQ(named(spec["containers"][0]["volumeMounts"], "memory"),
            nlohmann::json({{"name", "memory"}, {"mountPath", "/mnt/memory"}}));
  EXPECT_EQ(named(spec["volumes"], "memory"),
            nlohmann::json({{"name", "memory"}, {"emptyDir", {{"sizeLimit", "1Gi"}}}}));
  // SIGTERM can meet the final sync (30 s) and then the flush (30 s); the force-stop follows.
  EXPECT_EQ(spec["terminationGracePeriodSeconds"], 75);
}

TEST(RunnerPodTest, MountsTheApiCaConfigMapReadOnlyAndNamesItsFile) {
  auto object = minimal_object();
  auto pod = build_runner_pod(parse_agent_environment(object), session());
  EXPECT_EQ(find_env(pod["spec"]["containers"][0], "PERIMETER_API_CA_FILE"), nullptr);
  EXPECT_EQ(pod["spec"]["volumes"].size(), 3u) << "workspace, tmp and memory only";

  object["spec"]["apiCAConfigMapRef"] = {{"name", "api-ca"}, {"key", "bundle.pem"}};
  pod = build_runner_pod(parse_agent_environment(object), session());
  const auto& container = pod["spec"]["containers"][0];
  EXPECT_EQ(find_env(container, "PERIMETER_API_CA_FILE")->at("value"),
            "/etc/perimeter/api-ca/ca.crt");
  EXPECT_EQ(container["volumeMounts"].back(),
            nlohmann::json(
                {{"name", "api-ca"}, {"mountPath", "/etc/perimeter/api-ca"}, {"readOnly", true}}));
  EXPECT_EQ(pod["spec"]["volumes"].back(),
            nlohmann::json::parse(R"({"name": "api-ca", "configMap": {"name": "api-ca",
              "items": [{"key": "bundle.pem", "path": "ca.crt"}], "defaultMode": 292}})"));

  // The key defaults to ca.crt; one that is not a file name, or a template's own variable of
  // that name, is refused.
  object["spec"]["apiCAConfigMapRef"] = {{"name", "api-ca"}};
  EXPECT_EQ(parse_agent_environment(object).api_ca_config_map_key, "ca.crt");
  for (const char* bad : {"..", "../etc/passwd", "a/b", "."}) {
    object["spec"]["apiCAConfigMapRef"] = {{"name", "api-ca"}, {"key", bad}};
    EXPECT_THROW(parse_agent_environment(object), SpecError) << bad;
  }
  object["spec"]["apiCAConfigMapRef"] = {{"key", "ca.crt"}};
  EXPECT_THROW(parse_agent_environment(object), SpecError) << "the name is required";
  object = minimal_object();
  object["spec"]["runner"]["env"] = {{{"name", "PERIMETER_API_CA_FILE"}, {"value", "/x"}}};
  EXPECT_THROW(parse_agent_environment(object), SpecError);
}

TEST(RunnerPodTest, AppliesTheTemplateOverrides) {
  auto object = minimal_object();
  object["spec"]["runner"]["runtimeClassName"] = "gvisor";
  object["spec"]["runner"]["serviceAccountName"] = "runner";
  object["spec"]["runner"]["nodeSelector"] = {{"pool", "agents"}};
  object["spec"]["runner"]["env"] = {{{"name", "HTTPS_PROXY"}, {"value", "http://proxy:3128"}}};
  object["spec"]["runner"]["resources"] = {{"limits", {{"memory", "4Gi"}}}};
  object["spec"]["runner"]["workspaceSizeLimit"] = "10Gi";
  const auto pod = build_runner_pod(parse_agent_environment(object), session());
  const auto& spec = pod["spec"];
  EXPECT_EQ(spec["runtimeClassName"], "gvisor");
  EXPECT_EQ(spec["serviceAccountName"], "runner");
  EXPECT_EQ(spec["automountServiceAccountToken"], false);
  EXPECT_EQ(spec["nodeSelector"]["pool"], "agents");
  EXPECT_EQ(find_env(spec["containers"][0], "HTTPS_PROXY")->at("value"), "http://proxy:3128");
  EXPECT_EQ(spec["containers"][0]["resources"]["limits"]["memory"], "4Gi");
  EXPECT_EQ(spec["containers"][0]["resources"]["limits"]["cpu"], "1");
  EXPECT_EQ(spec["volumes"][0]["emptyDir"]["sizeLimit"], "10Gi");
}

TEST(RunnerPodTest, TemplateLabelsAndAnnotationsNeverOverrideTheOperatorsOwn) {
  auto object = minimal_object();
  object["spec"]["runner"]["podLabels"] = {{"team", "payments"},
                                           {"perimeter.dev/environment", "spoofed"}};
  object["spec"]["runner"]["podAnnotations"] = {{"sidecar.istio.io/inject", "false"},
                                                {"perimeter.dev/work-id", "spoofed"}};
  const auto pod = build_runner_pod(parse_agent_environment(object), session());
  const auto& metadata = pod["metadata"];
  EXPECT_EQ(metadata["labels"]["team"], "payments");
  EXPECT_EQ(metadata["labels"]["perimeter.dev/environment"], "payments");
  EXPECT_EQ(metadata["annotations"]["sidecar.istio.io/inject"], "false");
  EXPECT_EQ(metadata["annotations"]["perimeter.dev/work-id"], "work_Abc123");
}

TEST(SessionSecretTest, HoldsTheWorkSecretUnderTheRunnerName) {
  const auto secret = build_session_secret(parse_agent_environment(minimal_object()), session());
  EXPECT_EQ(secret["metadata"]["name"], runner_object_name("work_Abc123"));
  EXPECT_EQ(secret["stringData"]["work-secret"], "c2VjcmV0");
  EXPECT_FALSE(secret.value("immutable", false));
  EXPECT_EQ(secret["metadata"]["ownerReferences"][0]["uid"], "uid-1");
}

TEST(NetworkPolicyTest, DeniesIngressAndAllowsDnsAndPublicApiPortForAHostname) {
  const auto policy = build_network_policy(parse_agent_environment(minimal_object()));
  const auto& spec = policy["spec"];
  EXPECT_EQ(spec["policyTypes"], nlohmann::json::array({"Ingress", "Egress"}));
  EXPECT_TRUE(spec["ingress"].empty());
  EXPECT_EQ(spec["podSelector"]["matchLabels"]["perimeter.dev/environment"], "payments");
  ASSERT_EQ(spec["egress"].size(), 2u);
  EXPECT_EQ(spec["egress"][0]["ports"][0]["port"], 53);
  const auto& api = spec["egress"][1];
  EXPECT_EQ(api["ports"][0]["port"], 443);
  EXPECT_EQ(api["to"][0]["ipBlock"]["cidr"], "0.0.0.0/0");
  const auto& except = api["to"][0]["ipBlock"]["except"];
  for (const char* range : {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16"}) {
    EXPECT_NE(std::find(except.begin(), except.end(), range), except.end()) << range;
  }
}

TEST(NetworkPolicyTest, AllowsALiteralApiAddressExactly) {
  auto object = minimal_object();
  object["spec"]["apiBaseUrl"] = "http://10.96.4.7:8080/";
  const auto policy = build_network_policy(parse_agent_environment(object));
  const auto& api = policy["spec"]["egress"][1];
  EXPECT_EQ(api["to"][0]["ipBlock"]["cidr"], "10.96.4.7/32");
  EXPECT_EQ(api["ports"][0]["port"], 8080);
}

TEST(NetworkPolicyTest, ExceptsLinkLocalFromWideAllowedRanges) {
  auto object = minimal_object();
  object["spec"]["egress"]["allowedCIDRs"] = {"0.0.0.0/0", "10.20.0.0/16", "::/0", "128.0.0.0/1"};
  const auto policy = build_network_policy(parse_agent_environment(object));
  const auto& to = policy["spec"]["egress"][2]["to"];
  EXPECT_EQ(to[0]["ipBlock"]["except"], nlohmann::json::array({"169.254.0.0/16"}));
  EXPECT_FALSE(to[1]["ipBlock"].contains("except"));
  EXPECT_EQ(to[2]["ipBlock"]["except"], nlohmann::json::array({"fe80::/10"}));
  EXPECT_EQ(to[3]["ipBlock"]["except"], nlohmann::json::array({"169.254.0.0/16"}));
}

// A warm pool's runner pods reach the operator's assignment Service, and nothing else changes:
// without the peer the policy is what it was, with it exactly one rule is appended, in each mode.
TEST(NetworkPolicyTest, TheAssignmentPeerAddsExactlyOneEgressToTheOperatorsPods) {
  auto object = minimal_object();
  object["spec"]["egress"]["allowedCIDRs"] = {"10.20.0.0/16"};
  const auto env = parse_agent_environment(object);
  AssignmentPeer peer;
  peer.operator_pods = {"perimeter-system",
                        {{"app.kubernetes.io/name", "perimeter"},
                         {"app.kubernetes.io/instance", "perimeter"},
                         {"app.kubernetes.io/component", "operator"}}};
  peer.port = 8443;
  const nlohmann::json rule = {
      {"to",
       {{{"namespaceSelector",
          {{"matchLabels", {{"kubernetes.io/metadata.name", "perimeter-system"}}}}},
         {"podSelector",
          {{"matchLabels",
            {{"app.kubernetes.io/name", "perimeter"},
             {"app.kubernetes.io/instance", "perimeter"},
             {"app.kubernetes.io/component", "operator"}}}}}}}},
      {"ports", {{{"protocol", "TCP"}, {"port", 8443}}}}};

  RunnerEgress cilium;
  cilium.mode = EgressMode::kCiliumFqdn;
  for (const RunnerEgress& egress : {RunnerEgress{}, cilium}) {
    const auto without = build_network_policy(env, egress);
    EXPECT_EQ(build_network_policy(env, egress, std::nullopt).dump(), without.dump());
    auto expected = without;
    expected["spec"]["egress"].push_back(rule);
    EXPECT_EQ(build_network_policy(env, egress, peer).dump(), expected.dump());
  }

  // An operator outside the cluster is no pod: the one egress is to its address on that port.
  peer.direct_address = "10.178.52.1";
  auto expected = build_network_policy(env);
  expected["spec"]["egress"].push_back({{"to", {{{"ipBlock", {{"cidr", "10.178.52.1/32"}}}}}},
                                        {"ports", {{{"protocol", "TCP"}, {"port", 8443}}}}});
  EXPECT_EQ(build_network_policy(env, {}, peer).dump(), expected.dump());
}

}  // namespace
}  // namespace perimeter::agentenvironment

namespace perimeter::agentenvironment {
namespace {

AssignmentEndpoint assignment_endpoint() {
  return {"https://perimeter-assignment.perimeter-system.svc:8443", "-----BEGIN CERTIFICATE-----"};
}

TEST(WarmRunnerPodTest, IsTheSessionTemplateWithoutASessionAndWithItsOwnCredential) {
  auto object = minimal_object();
  object["spec"]["runner"]["env"] = {{{"name", "TEAM"}, {"value", "payments"}}};
  const auto env = parse_agent_environment(object);
  const auto cold = build_runner_pod(env, session());
  const auto warm = build_warm_runner_pod(env, "payments-warm-0a1b", "ab12", assignment_endpoint());

  // The same security context, limits and owner as a session's pod.
  for (const char* field : {"securityContext", "automountServiceAccountToken", "restartPolicy",
                            "terminationGracePeriodSeconds", "enableServiceLinks"}) {
    EXPECT_EQ(warm["spec"][field], cold["spec"][field]) << field;
  }
  // But no deadline: the kubelet counts it from the pod's start, and a warm pod starts long before
  // its session. The assignment sets it (docs/warm-pool.md "The deadline").
  EXPECT_TRUE(cold["spec"].contains("activeDeadlineSeconds"));
  EXPECT_FALSE(warm["spec"].contains("activeDeadlineSeconds")) << warm["spec"].dump();
  const auto& container = warm["spec"]["containers"][0];
  EXPECT_EQ(container["securityContext"], cold["spec"]["containers"][0]["securityContext"]);
  EXPECT_EQ(container["resources"], cold["spec"]["containers"][0]["resources"]);
  EXPECT_EQ(warm["metadata"]["ownerReferences"], cold["metadata"]["ownerReferences"]);
  // Selected by the environment's NetworkPolicy like every runner pod.
  for (const auto& [label, value] : runner_pod_selector(env)["matchLabels"].items()) {
    EXPECT_EQ(warm["metadata"]["labels"][label], value) << label;
  }
  EXPECT_EQ(warm["metadata"]["labels"][std::string(kLabelWarm)], "true");
  EXPECT_EQ(warm["metadata"]["annotations"][std::string(kAnnotationWarmTokenSha256)], "ab12");

  // No session, no secret: the three per-session variables come with the assignment.
  for (const char* absent : {"ANTHROPIC_WORK_ID", "ANTHROPIC_SESSION_ID", "ANTHROPIC_WORK_SECRET",
                             "ANTHROPIC_ENVIRONMENT_KEY"}) {
    EXPECT_EQ(find_env(container, absent), nullptr) << absent;
  }
  EXPECT_FALSE(warm["metadata"]["labels"].contains(std::string(kLabelWorkId)));
  EXPECT_EQ(find_env(container, "ANTHROPIC_ENVIRONMENT_ID")->at("value"), "env_42");
  EXPECT_EQ(find_env(container, "TEAM")->at("value"), "payments");
  EXPECT_EQ(find_env(container, "PERIMETER_WARM_ASSIGNMENT_URL")->at("value"),
            "https://perimeter-assignment.perimeter-system.svc:8443");
  EXPECT_EQ(find_env(container, "PERIMETER_WARM_TOKEN_FILE")->at("value"),
            "/etc/perimeter/warm/token");
  EXPECT_EQ(find_env(container, "PERIMETER_WARM_CA_FILE")->at("value"),
            "/etc/perimeter/warm/ca.crt");

  // Its own Secret, read-only, readable by the pod's group alone.
  const nlohmann::json* volume = nullptr;
  for (const auto& v : warm["spec"]["volumes"]) {
    if (v["name"] == "warm") volume = &v;
  }
  ASSERT_NE(volume, nullptr);
  EXPECT_EQ((*volume)["secret"]["secretName"], "payments-warm-0a1b");
  EXPECT_EQ((*volume)["secret"]["defaultMode"], 0440);
  bool mounted_read_only = false;
  for (const auto& mount : container["volumeMounts"]) {
    if (mount["name"] == "warm") mounted_read_only = mount["readOnly"] == true;
  }
  EXPECT_TRUE(mounted_read_only);
}

TEST(WarmRunnerPodTest, ItsSecretHoldsTheTokenAndTheCaAndNothingElse) {
  const auto env = parse_agent_environment(minimal_object());
  const auto secret =
      build_warm_pod_secret(env, "payments-warm-0a1b", "tok", assignment_endpoint());
  EXPECT_EQ(secret["metadata"]["name"], "payments-warm-0a1b");
  EXPECT_EQ(secret["metadata"]["namespace"], "agents");
  EXPECT_EQ(secret["immutable"], true);
  EXPECT_EQ(secret["stringData"],
            (nlohmann::json{{"token", "tok"}, {"ca.crt", "-----BEGIN CERTIFICATE-----"}}));
  EXPECT_EQ(secret["metadata"]["ownerReferences"],
            build_runner_pod(env, session())["metadata"]["ownerReferences"]);
}

TEST(WarmRunnerPodTest, IsRefusedWhereAPodNeedsItsSessionBeforeItStarts) {
  const auto env = parse_agent_environment(minimal_object());
  RunnerEgress gateway;
  gateway.mode = EgressMode::kGateway;
  EXPECT_THROW(build_warm_runner_pod(env, "w", "h", assignment_endpoint(), gateway), SpecError);

  auto object = minimal_object();
  object["spec"]["runner"]["workspace"] = {{"persistentVolumeClaim", nlohmann::json::object()}};
  EXPECT_THROW(
      build_warm_runner_pod(parse_agent_environment(object), "w", "h", assignment_endpoint()),
      SpecError);
}

}  // namespace
}  // namespace perimeter::agentenvironment
