// The audit trail of perimeter-runner run as in a pod (a child process with the env contract,
// against perimeter-sim): every tool call of a session has exactly one perimeter.audit.v1 line on
// stdout, matching what the simulator recorded; digests are checked with OpenSSL here, apart
// from the runner's code; no line holds the token, and at the default level none holds text.
#include <gtest/gtest.h>
#include <openssl/sha.h>
#include <sys/stat.h>

#include <sstream>

#include "runner_harness.h"

namespace perimeter {
namespace {

using namespace runner_harness;

struct Step {
  std::string tool;
  json input;
  std::string permission;  // allow, ask, deny
  std::string confirm;     // for ask
  std::string expect;      // YAML flow mapping, or empty
  // What its line must say.
  std::string decision;
  std::string outcome;
  json exit_code;  // null when not a finished bash command
};

// The steps of the session, with inputs as JSON (a YAML flow mapping reads them as they are).
std::vector<Step> steps() {
  return {
      {"bash",
       {{"command", "echo audited-output"}},
       "allow",
       "",
       "{is_error: false}",
       "allowed",
       "ok",
       0},
      {"bash",
       {{"command", "echo failing-output; (exit 3)"}},
       "allow",
       "",
       "{is_error: true}",
       "allowed",
       "error",
       3},
      {"write",
       {{"file_path", "a.txt"}, {"content", "written-content"}},
       "allow",
       "",
       "{is_error: false}",
       "allowed",
       "ok",
       nullptr},
      {"read",
       {{"file_path", "a.txt"}},
       "allow",
       "",
       "{is_error: false}",
       "allowed",
       "ok",
       nullptr},
      {"bash",
       {{"command", "echo confirmed-output"}},
       "ask",
       "allow",
       "{is_error: false}",
       "asked_and_confirmed",
       "ok",
       0},
      {"bash",
       {{"command", "touch refused-by-user"}},
       "ask",
       "deny",
       "",
       "denied",
       "denied",
       nullptr},
      {"write",
       {{"file_path", "denied.txt"}, {"content", "never"}},
       "deny",
       "",
       "",
       "denied",
       "denied",
       nullptr},
  };
}

std::string scenario_yaml(const std::string& name, const std::vector<Step>& steps) {
  std::string yaml = "name: " + name + "\nprompt: Do a few things worth auditing.\nsteps:\n";
  for (const Step& step : steps) {
    yaml += "  - tool: " + step.tool + "\n    input: " + step.input.dump() + "\n";
    if (step.permission != "allow") yaml += "    permission: " + step.permission + "\n";
    if (!step.confirm.empty()) yaml += "    confirm: " + step.confirm + "\n";
    if (!step.expect.empty()) yaml += "    expect: " + step.expect + "\n";
  }
  return yaml;
}

std::string sha256_of(const std::string& text) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(text.data()), text.size(), digest);
  std::ostringstream hex;
  for (unsigned char byte : digest) {
    static constexpr char kHex[] = "0123456789abcdef";
    hex << kHex[byte >> 4] << kHex[byte & 0xF];
  }
  return "sha256:" + hex.str();
}

std::vector<json> audit_lines(const std::string& stdout_text) {
  std::vector<json> lines;
  std::istringstream in(stdout_text);
  for (std::string line; std::getline(in, line);) {
    const json parsed = json::parse(line, nullptr, false);
    EXPECT_FALSE(parsed.is_discarded()) << "not a JSON line on stdout: " << line;
    if (!parsed.is_discarded()) lines.push_back(parsed);
  }
  return lines;
}

struct Served {
  Claimed claimed;
  json results;
  std::string stdout_text;
  std::string log;
};

Served serve(const SimProcess& sim, Environment& environment, const std::vector<Step>& steps,
             std::vector<std::string> extra_env) {
  TempDir dir;
  const std::string workdir = dir.path() + "/workspace";
  EXPECT_EQ(mkdir(workdir.c_str(), 0700), 0);
  Served served;
  served.claimed = environment.enqueue_and_claim(scenario_yaml("audit", steps));
  RunnerProcess runner(sim, environment.id(), served.claimed, workdir, std::move(extra_env));
  EXPECT_EQ(runner.wait(90s), 0) << runner.log();
  served.results = results_of(sim, served.claimed.session_id);
  served.stdout_text = runner.stdout_text();
  served.log = runner.log();
  return served;
}

TEST(RunnerAudit, EachCallOfASessionHasExactlyOneMetadataLineMatchingWhatTheApiRecorded) {
  SimProcess sim({"--lease-ttl-seconds", "4"});
  Environment environment(sim);
  const std::vector<Step> script = steps();
  const Served served = serve(sim, environment, script, {});
  expect_all_matched(served.results);
  const std::vector<json> lines = audit_lines(served.stdout_text);
  ASSERT_EQ(lines.size(), script.size()) << served.stdout_text;
  const agentapi::WorkSecret secret = agentapi::decode_work_secret(served.claimed.secret);
  for (std::size_t i = 0; i < script.size(); ++i) {
    SCOPED_TRACE("step " + std::to_string(i));
    const std::string tool_use_id = served.results["steps"][i]["tool_use_id"];
    ASSERT_FALSE(tool_use_id.empty());
    int count = 0;
    json line;
    for (const json& candidate : lines) {
      if (candidate.value("tool_use_id", "") == tool_use_id) {
        line = candidate;
        ++count;
      }
    }
    ASSERT_EQ(count, 1) << served.stdout_text;
    EXPECT_EQ(line["type"], "perimeter.audit.v1");
    EXPECT_EQ(line["level"], "metadata");
    EXPECT_EQ(line["session_id"], served.claimed.session_id);
    EXPECT_EQ(line["work_id"], served.claimed.work_id);
    EXPECT_EQ(line["environment_id"], environment.id());
    EXPECT_EQ(line["tool"], script[i].tool);
    EXPECT_EQ(line["event_type"], "agent.tool_use");
    EXPECT_EQ(line["input_sha256"], sha256_of(script[i].input.dump()));
    EXPECT_EQ(line["input_bytes"], script[i].input.dump().size());
    EXPECT_EQ(line["decision"], script[i].decision);
    EXPECT_EQ(line["outcome"], script[i].outcome);
    EXPECT_EQ(line["exit_code"], script[i].exit_code);
    EXPECT_GE(line["duration_ms"].get<long long>(), 0);
    const json& received = served.results["steps"][i]["received"];
    EXPECT_EQ(line["output_bytes"],
              received.is_null() ? 0 : received["text"].get<std::string>().size());
    EXPECT_FALSE(line.contains("input"));
    EXPECT_FALSE(line.contains("output"));
  }
  EXPECT_EQ(lines[5]["denied_by"], "user");
  EXPECT_EQ(lines[6]["denied_by"], "policy");
  // At the default level no text of the calls, and at no level the credential.
  for (const char* text : {"audited-output", "failing-output", "written-content",
                           "confirmed-output", "refused-by-user", "a.txt"}) {
    EXPECT_EQ(served.stdout_text.find(text), std::string::npos) << text;
  }
  EXPECT_EQ(served.stdout_text.find(secret.sessions_token), std::string::npos);
  EXPECT_EQ(served.stdout_text.find(served.claimed.secret), std::string::npos);
  // The operational log stays on stderr, apart.
  EXPECT_EQ(served.log.find("perimeter.audit.v1"), std::string::npos);
  expect_no_secret_logged(served.log, served.claimed);
}

TEST(RunnerAudit, TheFullLevelCarriesTextWithCredentialsRedacted) {
  SimProcess sim({"--lease-ttl-seconds", "4"});
  Environment environment(sim);
  const std::vector<Step> script = {
      {"bash",
       {{"command", "echo password=hunter2 AKIAIOSFODNN7EXAMPLE; echo ok-output"}},
       "allow",
       "",
       "{is_error: false}",
       "allowed",
       "ok",
       0}};
  const Served served = serve(sim, environment, script, {"PERIMETER_AUDIT_LEVEL=full"});
  expect_all_matched(served.results);
  const std::vector<json> lines = audit_lines(served.stdout_text);
  ASSERT_EQ(lines.size(), 1u) << served.stdout_text;
  EXPECT_EQ(lines[0]["level"], "full");
  EXPECT_EQ(lines[0]["input"]["command"], "echo password=[REDACTED] [REDACTED]; echo ok-output");
  EXPECT_EQ(lines[0]["output"], "password=[REDACTED] [REDACTED]\nok-output");
  EXPECT_EQ(lines[0]["input_sha256"], sha256_of(script[0].input.dump()));
  EXPECT_EQ(served.stdout_text.find("hunter2"), std::string::npos);
  const agentapi::WorkSecret secret = agentapi::decode_work_secret(served.claimed.secret);
  EXPECT_EQ(served.stdout_text.find(secret.sessions_token), std::string::npos);
}

TEST(RunnerAudit, AnUnknownLevelRefusesToStart) {
  SimProcess sim({"--lease-ttl-seconds", "4"});
  Environment environment(sim);
  TempDir dir;
  const std::string workdir = dir.path() + "/workspace";
  ASSERT_EQ(mkdir(workdir.c_str(), 0700), 0);
  const Claimed claimed = environment.enqueue_and_claim(scenario_yaml("audit", steps()));
  RunnerProcess runner(sim, environment.id(), claimed, workdir, {"PERIMETER_AUDIT_LEVEL=verbose"});
  EXPECT_EQ(runner.wait(30s), 2) << runner.log();
  EXPECT_NE(runner.log().find("PERIMETER_AUDIT_LEVEL must be 'metadata' or 'full', got 'verbose'"),
            std::string::npos)
      << runner.log();
  EXPECT_EQ(runner.stdout_text(), "");
}

}  // namespace
}  // namespace perimeter
