// The memory store API the SDK's worker calls, through the router: headers, who may call (a live
// item's sessions token, never the environment key), read-only attachments, the sha preconditions,
// pages, and what the admin view shows a store holds afterwards.
#include <gtest/gtest.h>

#include "agentapi/work_secret.h"
#include "core/fake_clock.h"
#include "core/fake_random.h"
#include "pki/hmac.h"
#include "sim/router.h"

namespace perimeter::sim {
namespace {

using nlohmann::json;

std::string token_of(const std::string& secret) {
  return agentapi::decode_work_secret(secret).sessions_token;
}

constexpr const char* kScenario = R"(
name: memories
memory_stores:
  - name: notes
    description: what the agent learnt
    memories:
      /a.md: "alpha\n"
      /dir/b.md: "beta\n"
      /dir/c.md: "gamma\n"
  - name: handbook
    access: read_only
    mount_path: /mnt/memory/handbook
    memories:
      /rules.md: "be kind\n"
steps:
  - tool: bash
    input: {command: "true"}
  - tool: bash
    input: {command: "true"}
    remote_memory:
      - {store: notes, path: /a.md, content: "alpha from elsewhere\n"}
      - {store: notes, path: /dir/c.md, delete: true}
)";

class MemoryStoresTest : public ::testing::Test {
 protected:
  MemoryStoresTest()
      : simulator_(SimulatorOptions{}, clock_, random_),
        faults_(fault_random_),
        router_(simulator_, faults_, metrics_) {
    environment_ = simulator_.create_environment("m", "env-key")["id"];
    const json enqueued =
        reply(simulator_.enqueue_session(environment_, parse_scenario(kScenario)));
    session_ = enqueued["session_id"];
    const json item = reply(simulator_.poll(environment_, "env-key", "w", std::nullopt));
    work_ = item["id"];
    token_ = token_of(item["secret"]);
    EXPECT_EQ(simulator_.ack(environment_, work_, "env-key").status, 200);
    const json resources = reply(simulator_.retrieve_session(session_, token_))["resources"];
    notes_ = resources[0]["memory_store_id"];
    handbook_ = resources[1]["memory_store_id"];
  }
  static json reply(const ApiReply& r) { return json::parse(r.body); }
  ApiReply call(const std::string& method, const std::string& path, const json& body = nullptr,
                const std::string& token = "") {
    ApiRequest request;
    request.method = method;
    const std::size_t query = path.find('?');
    request.path = path.substr(0, query);
    if (query != std::string::npos) {
      std::string rest = path.substr(query + 1);
      while (!rest.empty()) {
        const std::size_t amp = rest.find('&');
        const std::string pair = rest.substr(0, amp);
        const std::size_t eq = pair.find('=');
        request.query[pair.substr(0, eq)] = pair.substr(eq + 1);
        rest = amp == std::string::npos ? "" : rest.substr(amp + 1);
      }
    }
    request.headers = {{"authorization", "Bearer " + (token.empty() ? token_ : token)},
                       {"anthropic-beta", "agent-memory-2026-07-22"},
                       {"anthropic-version", "2023-06-01"}};
    if (!body.is_null()) request.body = body.dump();
    return router_.route(request).reply;
  }
  std::string memories(const std::string& store) {
    return "/v1/memory_stores/" + store + "/memories";
  }
  json listed(const std::string& store) {
    const ApiReply r = call("GET", memories(store) + "?view=full&limit=20");
    EXPECT_EQ(r.status, 200) << r.body;
    return reply(r)["data"];
  }
  json admin(const std::string& store) { return reply(simulator_.memory_store_admin_view(store)); }

  testing::FakeClock clock_;
  testing::FakeRandom random_;
  testing::FakeRandom fault_random_{0.99};
  Simulator simulator_;
  Faults faults_;
  SimMetrics metrics_;
  ApiRouter router_;
  std::string environment_, session_, work_, token_, notes_, handbook_;
};

TEST_F(MemoryStoresTest, TheSessionNamesItsStoresAsTheSdksMemoryStoreResources) {
  const json resources = reply(simulator_.retrieve_session(session_, token_))["resources"];
  ASSERT_EQ(resources.size(), 2u);
  EXPECT_EQ(resources[0]["type"], "memory_store");
  EXPECT_EQ(resources[0]["name"], "notes");
  EXPECT_EQ(resources[0]["access"], "read_write");
  EXPECT_TRUE(resources[0]["mount_path"].is_null());
  EXPECT_EQ(resources[0]["description"], "what the agent learnt");
  EXPECT_EQ(resources[1]["access"], "read_only");
  EXPECT_EQ(resources[1]["mount_path"], "/mnt/memory/handbook");
  EXPECT_EQ(notes_.rfind("memstore_", 0), 0u);
}

TEST_F(MemoryStoresTest, ListsByPathWithContentOnlyInTheFullViewAndPagesWithACursor) {
  const json basic = reply(call("GET", memories(notes_) + "?view=basic&limit=2"));
  ASSERT_EQ(basic["data"].size(), 2u);
  EXPECT_EQ(basic["data"][0]["path"], "/a.md");
  EXPECT_EQ(basic["data"][1]["path"], "/dir/b.md");
  EXPECT_FALSE(basic["data"][0].contains("content"));
  EXPECT_EQ(basic["data"][0]["content_sha256"], pki::sha256_hex("alpha\n"));
  EXPECT_EQ(basic["data"][0]["content_size_bytes"], 6);
  ASSERT_TRUE(basic["next_page"].is_string());
  const json rest = reply(call("GET", memories(notes_) + "?view=full&limit=2&page=" +
                                          basic["next_page"].get<std::string>()));
  ASSERT_EQ(rest["data"].size(), 1u);
  EXPECT_EQ(rest["data"][0]["path"], "/dir/c.md");
  EXPECT_EQ(rest["data"][0]["content"], "gamma\n");
  EXPECT_TRUE(rest["next_page"].is_null());
  EXPECT_EQ(call("GET", memories(notes_) + "?limit=101").status, 400);
}

TEST_F(MemoryStoresTest, TheEnvironmentKeyAndOtherCredentialsAreRefused) {
  const ApiReply by_key = call("GET", memories(notes_), nullptr, "env-key");
  EXPECT_EQ(by_key.status, 401);
  EXPECT_EQ(reply(by_key)["error"]["type"], "authentication_error");
  EXPECT_NE(by_key.body.find("environment key"), std::string::npos);
  EXPECT_EQ(call("GET", memories(notes_), nullptr, "made-up").status, 401);
  EXPECT_EQ(call("GET", memories("memstore_unknown")).status, 404);
  // The memory beta is required.
  ApiRequest request;
  request.method = "GET";
  request.path = memories(notes_);
  request.headers = {{"authorization", "Bearer " + token_},
                     {"anthropic-beta", "managed-agents-2026-04-01"},
                     {"anthropic-version", "2023-06-01"}};
  EXPECT_EQ(router_.route(request).reply.status, 400);
  // Once its item is stopped, the token opens nothing.
  EXPECT_EQ(simulator_.stop(environment_, work_, token_, true).status, 200);
  EXPECT_EQ(call("GET", memories(notes_)).status, 401);
}

TEST_F(MemoryStoresTest, CreatesUpdatesAndDeletesUnderTheirShaPreconditions) {
  const ApiReply created =
      call("POST", memories(notes_), {{"path", "/new.md"}, {"content", "n\n"}});
  ASSERT_EQ(created.status, 200) << created.body;
  const json memory = reply(created);
  EXPECT_EQ(memory["content_sha256"], pki::sha256_hex("n\n"));
  const ApiReply twice = call("POST", memories(notes_), {{"path", "/new.md"}, {"content", "x"}});
  EXPECT_EQ(twice.status, 409);
  EXPECT_EQ(reply(twice)["error"]["type"], "memory_path_conflict_error");
  EXPECT_EQ(call("POST", memories(notes_), {{"path", "../up.md"}, {"content", "x"}}).status, 400);
  EXPECT_EQ(call("POST", memories(notes_),
                 {{"path", "/big.md"}, {"content", std::string(100 * 1024 + 1, 'x')}})
                .status,
            413);

  const std::string id = memory["id"];
  const json stale = {{"content", "n2\n"},
                      {"precondition", {{"type", "content_sha256"}, {"content_sha256", "beef"}}}};
  const ApiReply refused = call("POST", memories(notes_) + "/" + id, stale);
  EXPECT_EQ(refused.status, 409);
  EXPECT_EQ(reply(refused)["error"]["type"], "memory_precondition_failed_error");
  const json fresh = {
      {"content", "n2\n"},
      {"precondition", {{"type", "content_sha256"}, {"content_sha256", pki::sha256_hex("n\n")}}}};
  const ApiReply updated = call("POST", memories(notes_) + "/" + id, fresh);
  ASSERT_EQ(updated.status, 200) << updated.body;
  EXPECT_EQ(reply(updated)["content_sha256"], pki::sha256_hex("n2\n"));
  EXPECT_NE(reply(updated)["memory_version_id"], memory["memory_version_id"]);
  const ApiReply full = call("GET", memories(notes_) + "/" + id + "?view=full");
  EXPECT_EQ(reply(full)["content"], "n2\n");

  EXPECT_EQ(call("DELETE",
                 memories(notes_) + "/" + id + "?expected_content_sha256=" + pki::sha256_hex("n\n"))
                .status,
            409);
  const ApiReply deleted =
      call("DELETE",
           memories(notes_) + "/" + id + "?expected_content_sha256=" + pki::sha256_hex("n2\n"));
  ASSERT_EQ(deleted.status, 200);
  EXPECT_EQ(reply(deleted), json({{"type", "memory_deleted"}, {"id", id}}));
  EXPECT_EQ(call("GET", memories(notes_) + "/" + id).status, 404);

  // The admin view: what the store holds, and every change with who made it and how it went.
  const json view = admin(notes_);
  ASSERT_EQ(view["memories"].size(), 3u);
  EXPECT_EQ(view["memories"][0]["path"], "/a.md");
  EXPECT_EQ(view["memories"][0]["content"], "alpha\n");
  std::vector<std::string> ops;
  for (const json& entry : view["history"]) {
    ops.push_back(entry["op"].get<std::string>() + " " +
                  std::to_string(entry["status"].get<int>()));
  }
  EXPECT_EQ(ops, (std::vector<std::string>{"seed 200", "seed 200", "seed 200", "create 200",
                                           "create 409", "create 400", "create 413", "update 409",
                                           "update 200", "delete 409", "delete 200"}));
  EXPECT_EQ(view["history"][3]["actor"], work_);
}

TEST_F(MemoryStoresTest, AStoreAttachedReadOnlyIsReadButNeverWritten) {
  const json data = listed(handbook_);
  ASSERT_EQ(data.size(), 1u);
  EXPECT_EQ(data[0]["content"], "be kind\n");
  const std::string id = data[0]["id"];
  EXPECT_EQ(call("POST", memories(handbook_), {{"path", "/x.md"}, {"content", "x"}}).status, 403);
  EXPECT_EQ(call("POST", memories(handbook_) + "/" + id, {{"content", "x"}}).status, 403);
  EXPECT_EQ(call("DELETE", memories(handbook_) + "/" + id).status, 403);
  EXPECT_EQ(admin(handbook_)["memories"][0]["content"], "be kind\n");
}

TEST_F(MemoryStoresTest, AStepsRemoteChangesLandWhenItsCallIsEmitted) {
  EXPECT_EQ(listed(notes_).size(), 3u);
  // Answer the first call: the second is emitted, with the other writer's changes before it.
  const json events = reply(simulator_.list_events(session_, token_, 100, ""))["data"];
  std::string first;
  for (const json& event : events) {
    if (event["type"] == "agent.tool_use") first = event["id"];
  }
  const json result = {{"type", "user.tool_result"},
                       {"tool_use_id", first},
                       {"content", json::array({{{"type", "text"}, {"text", ""}}})}};
  ASSERT_EQ(simulator_.send_events(session_, token_, {{"events", {result}}}).status, 200);
  const json after = listed(notes_);
  ASSERT_EQ(after.size(), 2u);
  EXPECT_EQ(after[0]["content"], "alpha from elsewhere\n");
  EXPECT_EQ(after[1]["path"], "/dir/b.md");
  const json history = admin(notes_)["history"];
  EXPECT_EQ(history[3]["op"], "remote_write");
  EXPECT_EQ(history[4]["op"], "remote_delete");
}

TEST_F(MemoryStoresTest, ScenariosNameOnlyTheirStoresAndCleanPaths) {
  EXPECT_THROW(parse_scenario("name: x\nsteps:\n  - tool: bash\n    remote_memory:\n"
                              "      - {store: nope, path: /a, content: x}\n"),
               ScenarioError);
  EXPECT_THROW(parse_scenario("name: x\nmemory_stores:\n  - name: s\n    memories:\n"
                              "      a.md: x\nsteps: []\n"),
               ScenarioError);
  EXPECT_THROW(
      parse_scenario("name: x\nmemory_stores:\n  - name: s\n    access: write\nsteps: []\n"),
      ScenarioError);
}

}  // namespace
}  // namespace perimeter::sim
