// Warm runner pods on the real node under attack and under crashes (docs/warm-pool.md, issue 19):
// a pod that carries exactly what a live warm pod carries tries every session endpoint of the
// simulator with every credential it has and is refused each time; and an operator SIGKILLed
// at random points of warm assignment, with the runners of random warm pods SIGKILLed, must
// still serve every session exactly once. Seeds are printed; PERIMETER_E2E_SEED repeats a run's
// draws.
#include <gtest/gtest.h>
#include <openssl/sha.h>
#include <signal.h>
#include <sys/types.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "agentapi/work_secret.h"
#include "core/base64.h"
#include "kube/resource_client.h"
#include "real_node_e2e_fixture.h"

namespace perimeter::e2e {
namespace {

using nlohmann::json;
using std::chrono::milliseconds;
using std::chrono::seconds;

// What an attacker in a warm pod runs: every request a runner makes of the session endpoints,
// with each credential the pod holds, against a queued item and a running one. Each answer is one
// line "<credential> <request> <HTTP status>" on stdout and in the termination message.
// Arguments: API base URL, environment id, queued work and session ids, running work and session
// ids, then `attack` (the pod's own credentials) or `control <sessions token> <environment key>`
// (the same requests with the real credentials, where they change nothing: what must get past
// the credential check when a credential is good).
constexpr const char* kAttackScript = R"SH(
set -u
base=$1 env=$2 queued_work=$3 queued_session=$4 running_work=$5 running_session=$6 mode=$7
report() { echo "$*"; echo "$*" >> /dev/termination-log; }
call() {  # credential, request name, method, path[, JSON body]
  local credential=$1 name=$2 method=$3 path=$4
  local -a auth=() body=()
  case $credential in
    bearer) auth=(-H "Authorization: Bearer $token") ;;
    x-api-key) auth=(-H "x-api-key: $token") ;;
  esac
  [ "$method" = POST ] && body=(-H 'content-type: application/json' --data "$5")
  # A stream that opened would run until --max-time; curl still prints its status.
  local code
  code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 -X "$method" \
    -H 'anthropic-version: 2023-06-01' -H 'anthropic-beta: managed-agents-2026-04-01' \
    "${auth[@]}" "${body[@]}" "$base$path")
  report "$credential $name $code"
}
if [ -e /var/run/secrets/kubernetes.io/serviceaccount/token ]; then
  report "serviceaccount-token present"
else
  report "serviceaccount-token absent"
fi
report "env-names $(env | cut -d= -f1 | sort | tr '\n' ' ')"
report "healthz $(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$base/healthz")"
work=/v1/environments/$env/work
if [ "$mode" = control ]; then
  token=$8  # the running session's sessions token
  call bearer running.work.retrieve GET "$work/$running_work"
  call bearer running.session.retrieve GET "/v1/sessions/$running_session"
  call bearer running.events.list GET "/v1/sessions/$running_session/events"
  call bearer running.events.stream GET "/v1/sessions/$running_session/events/stream"
  # Past the credential check, refused for what they ask (nothing changes).
  call bearer running.work.heartbeat POST "$work/$running_work/heartbeat" '{}'
  call bearer running.events.send POST "/v1/sessions/$running_session/events" '{"events":[]}'
  call x-api-key running.session.retrieve GET "/v1/sessions/$running_session"
  token=$9  # the environment key
  call bearer work.stats GET "$work/stats"
  call bearer work.list GET "$work"
  call bearer running.work.ack POST "$work/$running_work/ack" '{}'
  exit 0
fi
token=$(cat "$PERIMETER_WARM_TOKEN_FILE")
# The image has no sha256sum: the test hashes what was tried against the pod's annotation.
report "token $token"
message='{"events":[{"type":"user.message","content":[{"type":"text","text":"from a warm pod"}]}]}'
for credential in none bearer x-api-key; do
  call "$credential" work.poll GET "$work/poll"
  call "$credential" work.list GET "$work"
  call "$credential" work.stats GET "$work/stats"
  for which in queued running; do
    if [ $which = queued ]; then w=$queued_work s=$queued_session; else w=$running_work s=$running_session; fi
    call "$credential" $which.work.retrieve GET "$work/$w"
    call "$credential" $which.work.ack POST "$work/$w/ack" '{}'
    call "$credential" $which.work.heartbeat POST "$work/$w/heartbeat" '{}'
    call "$credential" $which.work.stop POST "$work/$w/stop" '{"force":true}'
    call "$credential" $which.session.retrieve GET "/v1/sessions/$s"
    call "$credential" $which.events.list GET "/v1/sessions/$s/events"
    call "$credential" $which.events.stream GET "/v1/sessions/$s/events/stream"
    call "$credential" $which.events.send POST "/v1/sessions/$s/events" "$message"
  done
done
)SH";

std::string sha256_hex(const std::string& text) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(text.data()), text.size(), digest);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned char byte : digest) {
    out += kHex[byte >> 4];
    out += kHex[byte & 0xF];
  }
  return out;
}

// Requests per credential in the script: three of the queue, eight per item.
constexpr int kRequestsPerCredential = 3 + 2 * 8;

class WarmPoolRealNodeTest : public RealNodeE2eTest {
 protected:
  // The pods that hold an item: the warm pod it was assigned to, or a cold pod made for it.
  std::vector<json> pods_holding(const std::string& work_id) {
    std::vector<json> found;
    for (const auto& pod : list(kube::resources::pods())) {
      const auto annotations = pod["metadata"].value("annotations", json::object());
      if (annotations.value("perimeter.dev/assigned-work-id", "") == work_id ||
          annotations.value("perimeter.dev/work-id", "") == work_id) {
        found.push_back(pod);
      }
    }
    return found;
  }

  // Until the (re)started operator shows the pool in its metrics: its caches synced and its
  // reconciler ran, so the next item meets an operator at work rather than one starting.
  void wait_until_the_operator_reconciled_the_pool() {
    eventually(
        [&] {
          try {
            return operator_->metrics().find("perimeter_warm_pool_target{") != std::string::npos;
          } catch (const std::exception&) {
            return false;
          }
        },
        seconds(60), "the operator to reconcile the pool");
  }

  // The host pids of a pod's runner process (comm keeps 15 characters).
  static std::vector<pid_t> runner_pids_of(const json& pod) {
    std::vector<pid_t> pids;
    for (const pid_t pid : pod_processes(pod["metadata"]["uid"].get<std::string>())) {
      std::ifstream comm("/proc/" + std::to_string(pid) + "/comm");
      std::string command;
      std::getline(comm, command);
      if (command == "perimeter-runne") pids.push_back(pid);
    }
    return pids;
  }

  static int queued_to_starting(const json& view) {
    const auto transitions = view.value("transitions", json::array());
    return static_cast<int>(
        std::count(transitions.begin(), transitions.end(), json("queued->starting")));
  }

  // A pod made from `warm`'s spec with only its command replaced, labelled like it for the
  // environment's NetworkPolicy but without `app.kubernetes.io/managed-by`, so the operator never
  // takes it for one of its runner pods. Returns the pod once it ended (null if it never did).
  json run_as_warm_pod(const json& warm, const std::string& name,
                       const std::vector<std::string>& args) {
    json spec = warm["spec"];
    auto& container = spec["containers"][0];
    container["command"] = json::array({"bash", "-c", kAttackScript, "warm-attack"});
    container["args"] = args;
    json labels = warm["metadata"]["labels"];
    labels.erase("app.kubernetes.io/managed-by");
    auto pods = client(kube::resources::pods());
    pods->create(ns_, {{"apiVersion", "v1"},
                       {"kind", "Pod"},
                       {"metadata", {{"name", name}, {"labels", labels}}},
                       {"spec", spec}});
    json ended;
    eventually(
        [&] {
          ended = pods->get(ns_, name);
          return phase_of(ended) == "Succeeded" || phase_of(ended) == "Failed";
        },
        seconds(120), name + " to run to its end");
    return ended;
  }

  // The lines of a pod's termination message, "<first word>" -> "<the rest>" for the ones the
  // script reports once, and every "<credential> <request> <status>" line in order.
  struct Report {
    std::map<std::string, std::string> facts;
    std::vector<std::string> answers;
  };
  static Report report_of(const json& pod) {
    Report report;
    const auto statuses =
        pod.value("status", json::object()).value("containerStatuses", json::array());
    if (statuses.empty()) return report;
    const std::string message =
        statuses[0]["state"].value("terminated", json::object()).value("message", "");
    std::istringstream lines(message);
    for (std::string line; std::getline(lines, line);) {
      const auto space = line.find(' ');
      const std::string first = line.substr(0, space);
      const std::string rest = space == std::string::npos ? "" : line.substr(space + 1);
      if (first == "none" || first == "bearer" || first == "x-api-key") {
        report.answers.push_back(line);
      } else {
        report.facts[first] = rest;
      }
    }
    return report;
  }
};

// Issue 19: "a warm pod cannot reach the API's session endpoints before assignment (it has
// nothing to authenticate with)", performed from a pod carrying exactly what a live warm pod
// carries, under the same NetworkPolicy, against a queued item and a running one.
TEST_F(WarmPoolRealNodeTest, AWarmPodsCredentialsOpenNoSessionEndpointOfTheApi) {
  // The running session's one step waits for a file the test writes once the attack is over.
  const std::string held = R"(name: held-while-attacked
prompt: Wait until released.
steps:
  - tool: bash
    input: {command: "touch step-started; while [ ! -e released ]; do sleep 0.2; done; echo released"}
    expect: {is_error: false, text: "released"}
)";
  start_sim(60);
  create_environment(json::object(), {{"retention", {{"succeededSeconds", 3600}}},
                                      {"warmPool", {{"minReady", 2}, {"maxReady", 2}}}});
  start_operator_serving_warm_pods();
  ASSERT_TRUE(eventually([&] { return warm_pool_ready(2); }, seconds(180),
                         "the pool's two warm pods to be ready"));
  const Enqueued running = enqueue(held);
  json running_pod;
  ASSERT_TRUE(eventually(
      [&] {
        const auto pods = pods_holding(running.work_id);
        if (pods.size() != 1 || phase_of(pods[0]) != "Running") return false;
        running_pod = pods[0];
        return std::filesystem::exists(workspace_on_node(running_pod) + "/step-started");
      },
      seconds(180), "the held session to run on a warm pod"));
  ASSERT_EQ(running_pod["metadata"]["labels"].value("perimeter.dev/warm", ""), "true");
  // The operator stops so that an item can stay queued: it would claim one at once otherwise. Its
  // warm pods stay, waiting, with their credentials.
  operator_.reset();
  const Enqueued queued = enqueue(conformance_scenario("builtin-tools"));
  std::vector<json> warm = ready_unassigned_warm_pods();
  ASSERT_FALSE(warm.empty()) << "no live warm pod to copy";
  const json target = warm.front();
  const std::string target_name = target["metadata"]["name"];
  std::cout << "attacking as warm pod " << target_name << "\n";

  // What the warm pod carries, from its spec: no ServiceAccount token, no value from any Secret
  // in its env, and of Secrets only its own (token and CA) as a volume.
  EXPECT_FALSE(target["spec"].value("automountServiceAccountToken", true));
  for (const auto& container : target["spec"]["containers"]) {
    for (const auto& var : container.value("env", json::array())) {
      EXPECT_FALSE(var.contains("valueFrom")) << var.dump();
      const std::string name = var.value("name", "");
      EXPECT_EQ(name.find("WORK_SECRET"), std::string::npos) << name;
      EXPECT_EQ(name.find("KEY"), std::string::npos) << name;
      EXPECT_EQ(var.value("value", "").find("env-key"), std::string::npos) << var.dump();
    }
    EXPECT_FALSE(container.contains("envFrom")) << container.dump();
  }
  for (const auto& volume : target["spec"].value("volumes", json::array())) {
    EXPECT_FALSE(volume.contains("projected")) << volume.dump();
    if (!volume.contains("secret")) continue;
    EXPECT_EQ(volume["secret"].value("secretName", ""), target_name) << volume.dump();
  }
  const json own_secret = client(kube::resources::secrets())->get(ns_, target_name);
  std::set<std::string> keys;
  const json own_data = own_secret.value("data", json::object());
  for (const auto& [key, value] : own_data.items()) {
    keys.insert(key);
  }
  EXPECT_EQ(keys, (std::set<std::string>{"ca.crt", "token"}));

  const json queued_before = work_view(queued.work_id);
  const json running_before = work_view(running.work_id);
  ASSERT_EQ(queued_before.value("state", ""), "queued");
  ASSERT_EQ(running_before.value("state", ""), "active");
  const std::vector<std::string> ids = {sim_->url(),       environment_id_, queued.work_id,
                                        queued.session_id, running.work_id, running.session_id};
  std::vector<std::string> attack_args = ids;
  attack_args.push_back("attack");
  const json attacker = run_as_warm_pod(target, "attack-as-warm-pod", attack_args);
  ASSERT_EQ(phase_of(attacker), "Succeeded") << attacker["status"].dump();
  // Under the policy that holds the warm pod.
  const json policy = client(kube::resources::network_policies())->get(ns_, "agents-runners");
  for (const auto& [key, value] : policy["spec"]["podSelector"]["matchLabels"].items()) {
    EXPECT_EQ(attacker["metadata"]["labels"].value(key, ""), value) << key;
  }

  Report attack = report_of(attacker);
  for (const auto& [fact, value] : attack.facts) std::cout << fact << ": " << value << "\n";
  std::cout << "attack answers:\n";
  for (const auto& line : attack.answers) std::cout << "  " << line << "\n";
  EXPECT_EQ(attack.facts["serviceaccount-token"], "absent");
  EXPECT_NE(attack.facts["env-names"].find("PERIMETER_WARM_TOKEN_FILE"), std::string::npos);
  for (const char* name : {"ANTHROPIC_WORK_SECRET", "ANTHROPIC_WORK_ID", "ANTHROPIC_SESSION_ID",
                           "ANTHROPIC_API_KEY"}) {
    EXPECT_EQ(attack.facts["env-names"].find(name), std::string::npos) << name;
  }
  // The simulator was reachable from the pod, and the token tried was the warm pod's own.
  EXPECT_EQ(attack.facts["healthz"], "200");
  EXPECT_EQ(sha256_hex(attack.facts["token"]),
            target["metadata"]["annotations"].value("perimeter.dev/warm-token-sha256", "?"));
  ASSERT_EQ(attack.answers.size(), static_cast<size_t>(3 * kRequestsPerCredential));
  for (const auto& line : attack.answers) {
    const std::string status = line.substr(line.rfind(' ') + 1);
    EXPECT_TRUE(status == "401" || status == "403") << line;
  }
  // Nothing moved: the queued item is still queued, and the running one went through no
  // transition while it was attacked.
  const json queued_after = work_view(queued.work_id);
  const json running_after = work_view(running.work_id);
  EXPECT_EQ(queued_after.value("state", ""), "queued");
  EXPECT_EQ(queued_after["transitions"], queued_before["transitions"]);
  EXPECT_EQ(running_after.value("state", ""), "active");
  EXPECT_EQ(running_after["transitions"], running_before["transitions"]);

  // The control: the same script with the real credentials gets past the credential check of
  // each kind of endpoint (reads succeed; a heartbeat without its precondition, an empty event
  // list and an ack of an item already acknowledged are refused for what they ask, so nothing
  // changes), so the refusals above are the credentials', not the requests'. The simulator takes
  // no x-api-key on these endpoints whatever it holds (the API's own credential is a bearer), so
  // the attack's x-api-key lines show nothing about the token: the bearer lines are the proof.
  const json assigned_secret = client(kube::resources::secrets())
                                   ->get(ns_, running_pod["metadata"]["annotations"].value(
                                                  "perimeter.dev/assigned-secret", ""));
  std::string work_secret;
  ASSERT_TRUE(base64_decode_any(assigned_secret["data"].value("work-secret", ""), &work_secret));
  std::vector<std::string> control_args = ids;
  control_args.push_back("control");
  control_args.push_back(agentapi::decode_work_secret(work_secret).sessions_token);
  const json key_secret = client(kube::resources::secrets())->get(ns_, "env-key");
  std::string environment_key;
  ASSERT_TRUE(base64_decode_any(key_secret["data"].value("environment-key", ""), &environment_key));
  control_args.push_back(environment_key);
  const json controller = run_as_warm_pod(target, "attack-control", control_args);
  const Report control = report_of(controller);
  EXPECT_EQ(control.answers, (std::vector<std::string>{
                                 "bearer running.work.retrieve 200",
                                 "bearer running.session.retrieve 200",
                                 "bearer running.events.list 200",
                                 "bearer running.events.stream 200",
                                 "bearer running.work.heartbeat 400",
                                 "bearer running.events.send 400",
                                 "x-api-key running.session.retrieve 401",
                                 "bearer work.stats 200",
                                 "bearer work.list 200",
                                 "bearer running.work.ack 409",
                             }));

  // Released, and the operator back: both sessions are served once, as if nothing had happened.
  std::ofstream(workspace_on_node(running_pod) + "/released").put('\n');
  start_operator_serving_warm_pods();
  for (const Enqueued* session : {&running, &queued}) {
    SCOPED_TRACE(session->work_id);
    ASSERT_TRUE(
        eventually([&] { return work_view(session->work_id).value("state", "") == "stopped"; },
                   seconds(240), "the session to be served and its item stopped"));
    EXPECT_TRUE(results(session->session_id).value("all_matched", false))
        << results(session->session_id).dump(2);
    EXPECT_EQ(queued_to_starting(work_view(session->work_id)), 1)
        << work_view(session->work_id)["transitions"].dump();
  }
}

// Issue 19: "kill -9 of the operator at random points of warm assignment, ten times; a warm pod
// killed at random: every session served exactly once". Sessions arrive one by one while a pool
// is up; the operator is SIGKILLed 0 to 300 ms after each arrival (in its claim, made slower by
// the API's latency, its ack, its assignment patch, or the runner's confirm), and three times,
// while it is down, the runner of a random warm pod (assigned or not) is SIGKILLed in place.
// PERIMETER_E2E_SEED repeats a run's draws (docs/warm-pool.md, "The real-node kill test").
TEST_F(WarmPoolRealNodeTest,
       KillingTheOperatorDuringWarmAssignmentAndWarmPodsAtRandomServesEachSessionOnce) {
  constexpr int kSessions = 10;
  constexpr int kPodKills = 3;
  const char* seed_text = std::getenv("PERIMETER_E2E_SEED");
  const unsigned seed =
      seed_text != nullptr ? static_cast<unsigned>(std::stoul(seed_text)) : std::random_device{}();
  std::cout << "seed " << seed << " (PERIMETER_E2E_SEED=" << seed << " repeats the draws)\n";
  std::mt19937 random(seed);
  const std::string quick = R"(name: quick
prompt: Say something.
steps:
  - tool: bash
    input: {command: "sleep 2; echo served"}
    expect: {is_error: false, text: "served"}
)";
  start_sim(10);  // a lost attempt's lease lapses 10 s after its last beat
  create_environment(json::object(),
                     {{"maxConcurrentSessions", 8},
                      // An item polled by an operator killed before its ack comes back in 1 s.
                      {"poll", {{"reclaimOlderThanMs", 1000}}},
                      {"retention", {{"succeededSeconds", 3600}, {"failedSeconds", 3600}}},
                      {"warmPool", {{"minReady", 2}, {"maxReady", 3}}}});
  // 100 ms on every API reply spreads a claim (poll, ack) over a few hundred ms, so that kills
  // land inside it and not only after the assignment, which takes a few ms.
  ASSERT_EQ(
      testing::http_call(sim_->url(), "POST", "/admin/faults", json{{"latency_ms", 100}}.dump())
          .status,
      200);
  start_operator_serving_warm_pods();
  ASSERT_TRUE(eventually([&] { return warm_pool_ready(2); }, seconds(180),
                         "the pool's two warm pods to be ready"));
  wait_until_the_operator_reconciled_the_pool();

  std::vector<int> order(kSessions);
  for (int i = 0; i < kSessions; ++i) order[i] = i;
  std::shuffle(order.begin(), order.end(), random);
  const std::set<int> killing_a_pod(order.begin(), order.begin() + kPodKills);
  std::uniform_int_distribution<int> kill_after_ms(0, 300);
  std::uniform_int_distribution<int> next_after_ms(200, 1000);
  std::map<std::string, int> kills_landed;
  // Items whose operator died between the ack and the assignment: the claims sweep that makes
  // their pod runs every --orphan-sweep-seconds (60 by default), after this test's 10 s lease,
  // so the attempt may lapse unserved and the item be acknowledged once more.
  std::map<std::string, int> acked_unassigned;
  auto pods = client(kube::resources::pods());
  std::vector<Enqueued> sessions;
  // Warm pods whose runner the test killed. One killed unassigned can still be assigned after:
  // the kubelet reports the dead container a moment later, and until then the pod looks ready to
  // a claim (which the restarted operator makes with no held request from that runner to tell
  // it otherwise). Its item's attempt then lapses, and the item is served by another pod.
  std::set<std::string> killed_pods;
  const auto started = std::chrono::steady_clock::now();
  for (int i = 0; i < kSessions; ++i) {
    sessions.push_back(enqueue(quick));
    const int kill_after = kill_after_ms(random);
    std::this_thread::sleep_for(milliseconds(kill_after));
    operator_->kill9();
    // Where the kill landed, as the queue and the pods show it once the requests the operator
    // had in flight (100 ms late) have landed.
    std::this_thread::sleep_for(milliseconds(300));
    const std::string state = work_view(sessions.back().work_id).value("state", "");
    const bool held = !pods_holding(sessions.back().work_id).empty();
    const std::string landed = state == "queued"     ? "before the ack"
                               : state != "starting" ? "after the runner's first heartbeat"
                               : held ? "after the assignment, before the first heartbeat"
                                      : "after the ack, before the assignment";
    ++kills_landed[landed];
    if (state == "starting" && !held) ++acked_unassigned[sessions.back().work_id];
    std::cout << "session " << i << ": operator killed " << kill_after << " ms after enqueue, "
              << landed;
    if (killing_a_pod.count(i) != 0) {
      // Chosen while no operator runs, so no assignment lands in between. Its runner is killed
      // where it runs (a crash: no SIGTERM, whose graceful end would stop the item on purpose).
      std::vector<json> warm;
      for (const auto& pod : list(kube::resources::pods())) {
        if (pod["metadata"]["labels"].value("perimeter.dev/warm", "") == "true" &&
            phase_of(pod) == "Running" && !runner_pids_of(pod).empty()) {
          warm.push_back(pod);
        }
      }
      if (!warm.empty()) {
        const json victim =
            warm[std::uniform_int_distribution<std::size_t>(0, warm.size() - 1)(random)];
        const std::string assigned = victim["metadata"]
                                         .value("annotations", json::object())
                                         .value("perimeter.dev/assigned-work-id", "");
        for (const pid_t pid : runner_pids_of(victim)) ::kill(pid, SIGKILL);
        killed_pods.insert(victim["metadata"]["name"].get<std::string>());
        std::cout << "; killed the runner of warm pod "
                  << victim["metadata"]["name"].get<std::string>()
                  << (assigned.empty() ? " (unassigned)" : " (assigned " + assigned + ")");
      }
    }
    std::cout << "\n";
    start_operator_serving_warm_pods();
    wait_until_the_operator_reconciled_the_pool();
    std::this_thread::sleep_for(milliseconds(next_after_ms(random)));
  }
  for (const auto& [landed, count] : kills_landed) {
    std::cout << count << " kill(s) " << landed << "\n";
  }

  for (const auto& session : sessions) {
    SCOPED_TRACE(session.work_id);
    ASSERT_TRUE(
        eventually([&] { return work_view(session.work_id).value("state", "") == "stopped"; },
                   seconds(240), "every session to be served and its item stopped"));
  }
  std::cout << "all " << kSessions << " sessions served "
            << std::chrono::duration_cast<milliseconds>(std::chrono::steady_clock::now() - started)
                   .count()
            << " ms after the first arrival\n";
  int warm_served = 0;
  std::map<std::string, std::string> item_of_pod;
  for (const auto& session : sessions) {
    SCOPED_TRACE(session.work_id);
    const auto recorded = results(session.session_id);
    // all_matched: each call answered exactly once; nothing unexpected: no second runner's.
    EXPECT_TRUE(recorded.value("all_matched", false)) << recorded.dump(2);
    EXPECT_TRUE(recorded.value("unexpected", json::array()).empty()) << recorded.dump(2);
    const json view = work_view(session.work_id);
    const int attempts = queued_to_starting(view);
    const auto holding = pods_holding(session.work_id);
    int lost = 0;  // the pods holding it whose runner the test killed, before or after assignment
    for (const auto& pod : holding) {
      lost += killed_pods.count(pod["metadata"]["name"].get<std::string>()) > 0;
    }
    const int lapsed =
        acked_unassigned.count(session.work_id) ? acked_unassigned[session.work_id] : 0;
    // One acknowledgement per attempt: one, plus at most one per pod of it the test killed and
    // per operator kill between its ack and its assignment.
    EXPECT_GE(attempts, 1) << view["transitions"].dump();
    EXPECT_LE(attempts, 1 + lost + lapsed) << view["transitions"].dump();
    if (attempts > 1 + lost + lapsed) explain_item(session.work_id, holding);
    // One pod per attempt (a killed pod stays, Failed, with its assignment).
    EXPECT_EQ(static_cast<int>(holding.size()), attempts) << "pods per attempt";
    for (const auto& pod : holding) {
      const std::string name = pod["metadata"]["name"];
      EXPECT_EQ(item_of_pod.count(name), 0u) << name << " holds two items";
      item_of_pod[name] = session.work_id;
      if (pod["metadata"]["labels"].value("perimeter.dev/warm", "") == "true") ++warm_served;
    }
    std::cout << session.work_id << ": " << view["transitions"].dump() << ", " << holding.size()
              << " pod(s)\n";
  }
  std::cout << warm_served << " of the serving pods were warm\n";
}

}  // namespace
}  // namespace perimeter::e2e
