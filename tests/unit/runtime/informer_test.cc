#include "runtime/informer.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <condition_variable>

#include "core/capturing_log_sink.h"
#include "core/fake_random.h"
#include "kube/metric_value.h"
#include "kube/mock_transport.h"

namespace perimeter::runtime {
namespace {

using nlohmann::json;
using perimeter::testing::FakeResponseStream;
using perimeter::testing::json_response;
using perimeter::testing::metric_value;
using ::testing::_;
using ::testing::InSequence;
using ::testing::Return;
using ::testing::StrictMock;

MATCHER_P(PathHas, fragment, "") {
  return arg.path_and_query.find(fragment) != std::string::npos;
}

std::string pod_json(const std::string& name, const std::string& rv) {
  return json{{"kind", "Pod"},
              {"apiVersion", "v1"},
              {"metadata", {{"namespace", "a"}, {"name", name}, {"resourceVersion", rv}}}}
      .dump();
}

std::string event_line(const std::string& type, const std::string& object) {
  return R"({"type":")" + type + R"(","object":)" + object + "}";
}

std::string list_body(const std::string& rv, const std::vector<std::string>& items) {
  std::string out = R"({"kind":"PodList","metadata":{"resourceVersion":")" + rv + R"("},"items":[)";
  for (size_t i = 0; i < items.size(); ++i) out += (i ? "," : "") + items[i];
  return out + "]}";
}

// Records handler calls so a test can wait for them.
struct Recorder {
  std::mutex mutex;
  std::condition_variable changed;
  std::vector<std::string> calls;
  void record(const std::string& call) {
    std::lock_guard lock(mutex);
    calls.push_back(call);
    changed.notify_all();
  }
  bool wait_for_count(size_t count) {
    std::unique_lock lock(mutex);
    return changed.wait_for(lock, std::chrono::seconds(10), [&] { return calls.size() >= count; });
  }
  EventHandlers handlers() {
    return {[this](const ObjectPtr& o) {
              record("add " + (*o)["metadata"]["name"].get<std::string>());
            },
            [this](const ObjectPtr&, const ObjectPtr& o) {
              record("update " + (*o)["metadata"]["name"].get<std::string>() + "@" +
                     (*o)["metadata"]["resourceVersion"].get<std::string>());
            },
            [this](const ObjectPtr& o) {
              record("delete " + (*o)["metadata"]["name"].get<std::string>());
            }};
  }
};

class InformerTest : public ::testing::Test {
 protected:
  InformerTest() {
    options.ns = "a";
    options.backoff =
        BackoffPolicy{std::chrono::milliseconds(1), std::chrono::milliseconds(2), 2.0, 0.0};
  }
  std::unique_ptr<Informer> make_informer() {
    auto informer =
        std::make_unique<Informer>(pods, options, metrics, Logger("informer", log_sink), random);
    informer->add_handlers(recorder.handlers());
    return informer;
  }
  // A watch that never ends on its own: stop() cancels it.
  std::unique_ptr<kube::ResponseStream> open_forever_stream(std::vector<std::string> lines) {
    return std::make_unique<FakeResponseStream>(
        perimeter::testing::stream_script(std::move(lines), false));
  }

  prometheus::Registry registry;
  kube::ClientMetrics client_metrics{registry};
  RuntimeMetrics metrics{registry};
  StrictMock<perimeter::testing::MockTransport> transport;
  kube::ResourceClient pods{transport, kube::resources::pods(), client_metrics};
  InformerOptions options;
  std::shared_ptr<perimeter::testing::CapturingLogSink> log_sink =
      std::make_shared<perimeter::testing::CapturingLogSink>();
  perimeter::testing::FakeRandom random;
  Recorder recorder;
};

TEST_F(InformerTest, ListsThenWatchesFromTheListsVersionAndAppliesEvents) {
  {
    InSequence in_order;
    EXPECT_CALL(transport, send(PathHas("/api/v1/namespaces/a/pods?limit=500")))
        .WillOnce(Return(json_response(200, list_body("10", {pod_json("p1", "9")}))));
    EXPECT_CALL(transport,
                open_stream(PathHas("watch=true&resourceVersion=10&allowWatchBookmarks=true")))
        .WillOnce([&](const kube::HttpRequest&) {
          return open_forever_stream(
              {event_line("ADDED", pod_json("p2", "11")),
               event_line("MODIFIED", pod_json("p1", "12")),
               event_line("BOOKMARK", R"({"kind":"Pod","metadata":{"resourceVersion":"14"}})"),
               event_line("DELETED", pod_json("p2", "15"))});
        });
  }
  auto informer = make_informer();
  informer->start();
  ASSERT_TRUE(informer->wait_for_sync(std::chrono::seconds(10)));
  ASSERT_TRUE(recorder.wait_for_count(4));
  informer->stop();
  EXPECT_EQ(recorder.calls,
            (std::vector<std::string>{"add p1", "add p2", "update p1@12", "delete p2"}));
  EXPECT_EQ(informer->store().size(), 1u);
  EXPECT_EQ((*informer->store().get("a/p1"))["metadata"]["resourceVersion"], "12");
  EXPECT_EQ(informer->resource_version(), "15");
}

TEST_F(InformerTest, AHandlerThatThrowsIsLoggedAndTheOthersStillGetEveryEvent) {
  {
    InSequence in_order;
    EXPECT_CALL(transport, send(PathHas("/api/v1/namespaces/a/pods?limit=500")))
        .WillOnce(Return(json_response(200, list_body("10", {pod_json("p1", "9")}))));
    EXPECT_CALL(transport, open_stream(PathHas("watch=true&resourceVersion=10")))
        .WillOnce([&](const kube::HttpRequest&) {
          return open_forever_stream({event_line("ADDED", pod_json("p2", "11")),
                                      event_line("MODIFIED", pod_json("p1", "12"))});
        });
  }
  auto informer =
      std::make_unique<Informer>(pods, options, metrics, Logger("informer", log_sink), random);
  // A controller's handler with a bug: it must not end the informer's thread (and the process).
  informer->add_handlers({[](const ObjectPtr&) { throw std::runtime_error("handler bug"); },
                          [](const ObjectPtr&, const ObjectPtr&) { throw 42; }, nullptr});
  informer->add_handlers(recorder.handlers());
  informer->start();
  ASSERT_TRUE(informer->wait_for_sync(std::chrono::seconds(10)));
  ASSERT_TRUE(recorder.wait_for_count(3));
  informer->stop();
  EXPECT_EQ(recorder.calls, (std::vector<std::string>{"add p1", "add p2", "update p1@12"}));
  const auto lines = log_sink->lines();
  EXPECT_TRUE(std::any_of(lines.begin(), lines.end(), [](const std::string& line) {
    return line.find("event handler failed") != std::string::npos &&
           line.find("handler bug") != std::string::npos;
  }));
}

TEST_F(InformerTest, GoneDuringTheWatchRelistsAndReportsDeletesMissedMeanwhile) {
  {
    InSequence in_order;
    EXPECT_CALL(transport, send(_))
        .WillOnce(Return(
            json_response(200, list_body("10", {pod_json("p1", "9"), pod_json("p2", "9")}))));
    EXPECT_CALL(transport, open_stream(PathHas("resourceVersion=10")))
        .WillOnce([&](const kube::HttpRequest&) {
          return open_forever_stream({event_line(
              "ERROR", R"({"kind":"Status","code":410,"reason":"Expired","message":"too old"})")});
        });
    EXPECT_CALL(transport, send(_))
        .WillOnce(Return(json_response(200, list_body("30", {pod_json("p1", "25")}))));
    EXPECT_CALL(transport, open_stream(PathHas("resourceVersion=30")))
        .WillOnce([&](const kube::HttpRequest&) { return open_forever_stream({}); });
  }
  auto informer = make_informer();
  informer->start();
  ASSERT_TRUE(recorder.wait_for_count(4));
  informer->stop();
  EXPECT_EQ(recorder.calls,
            (std::vector<std::string>{"add p1", "add p2", "update p1@25", "delete p2"}));
  EXPECT_EQ(metric_value(registry, "perimeter_watch_restarts_total",
                         {{"resource", "pods.v1"}, {"reason", "gone"}}),
            1);
}

TEST_F(InformerTest, AWatchRefusedWithGoneRelists) {
  {
    InSequence in_order;
    EXPECT_CALL(transport, send(_)).WillOnce(Return(json_response(200, list_body("10", {}))));
    EXPECT_CALL(transport, open_stream(_))
        .WillOnce(::testing::Throw(kube::ApiError::from_response(
            410, R"({"kind":"Status","code":410,"reason":"Expired"})", "watch")));
    EXPECT_CALL(transport, send(_))
        .WillOnce(Return(json_response(200, list_body("20", {pod_json("p1", "19")}))));
    EXPECT_CALL(transport, open_stream(PathHas("resourceVersion=20")))
        .WillOnce([&](const kube::HttpRequest&) { return open_forever_stream({}); });
  }
  auto informer = make_informer();
  informer->start();
  ASSERT_TRUE(recorder.wait_for_count(1));
  informer->stop();
  EXPECT_EQ(recorder.calls, (std::vector<std::string>{"add p1"}));
}

TEST_F(InformerTest, AnUndecodableLineIsCountedAndForcesARelistNotAStaleCache) {
  {
    InSequence in_order;
    EXPECT_CALL(transport, send(_))
        .WillOnce(Return(json_response(200, list_body("10", {pod_json("p1", "9")}))));
    EXPECT_CALL(transport, open_stream(_)).WillOnce([&](const kube::HttpRequest&) {
      return open_forever_stream({R"({"type":"MODIFIED","object":{"kind":"Pod","metad)"});
    });
    // The relist shows the change the broken line carried.
    EXPECT_CALL(transport, send(_))
        .WillOnce(Return(json_response(200, list_body("12", {pod_json("p1", "11")}))));
    EXPECT_CALL(transport, open_stream(PathHas("resourceVersion=12")))
        .WillOnce([&](const kube::HttpRequest&) { return open_forever_stream({}); });
  }
  auto informer = make_informer();
  informer->start();
  ASSERT_TRUE(recorder.wait_for_count(2));
  informer->stop();
  EXPECT_EQ(recorder.calls, (std::vector<std::string>{"add p1", "update p1@11"}));
  EXPECT_EQ(metric_value(registry, "perimeter_kube_decode_errors_total", {{"source", "watch"}}), 1);
  EXPECT_EQ(metric_value(registry, "perimeter_watch_restarts_total",
                         {{"resource", "pods.v1"}, {"reason", "decode_error"}}),
            1);
}

TEST_F(InformerTest, AnObjectOfTheWrongKindIsRejectedAndRelisted) {
  {
    InSequence in_order;
    EXPECT_CALL(transport, send(_)).WillOnce(Return(json_response(200, list_body("10", {}))));
    EXPECT_CALL(transport, open_stream(_)).WillOnce([&](const kube::HttpRequest&) {
      return open_forever_stream({event_line(
          "ADDED",
          R"({"kind":"Secret","metadata":{"namespace":"a","name":"s","resourceVersion":"11"}})")});
    });
    EXPECT_CALL(transport, send(_))
        .WillOnce(Return(json_response(200, list_body("12", {pod_json("p1", "12")}))));
    EXPECT_CALL(transport, open_stream(_)).WillOnce([&](const kube::HttpRequest&) {
      return open_forever_stream({});
    });
  }
  auto informer = make_informer();
  informer->start();
  ASSERT_TRUE(recorder.wait_for_count(1));
  informer->stop();
  EXPECT_EQ(recorder.calls, (std::vector<std::string>{"add p1"}));
  EXPECT_EQ(informer->store().get("a/s"), nullptr);
}

TEST_F(InformerTest, ConnectionFailuresBackOffThenRecoverAndAClosedWatchResumes) {
  {
    InSequence in_order;
    EXPECT_CALL(transport, send(_)).WillOnce(::testing::Throw(kube::TransportError("refused")));
    EXPECT_CALL(transport, send(_))
        .WillOnce(Return(json_response(200, list_body("10", {pod_json("p1", "9")}))));
    // The server ends this watch normally: the next one resumes from the last version seen.
    EXPECT_CALL(transport, open_stream(PathHas("resourceVersion=10")))
        .WillOnce([&](const kube::HttpRequest&) {
          return std::make_unique<FakeResponseStream>(perimeter::testing::stream_script(
              {event_line("MODIFIED", pod_json("p1", "13"))}, true));
        });
    EXPECT_CALL(transport, open_stream(PathHas("resourceVersion=13")))
        .WillOnce([&](const kube::HttpRequest&) { return open_forever_stream({}); });
  }
  auto informer = make_informer();
  informer->start();
  ASSERT_TRUE(recorder.wait_for_count(2));
  // Wait until the resumed watch is open before stopping.
  for (int i = 0; i < 1000 && metric_value(registry, "perimeter_watch_restarts_total",
                                           {{"resource", "pods.v1"}, {"reason", "closed"}}) < 1;
       ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  informer->stop();
  EXPECT_EQ(recorder.calls, (std::vector<std::string>{"add p1", "update p1@13"}));
  EXPECT_EQ(metric_value(registry, "perimeter_watch_restarts_total",
                         {{"resource", "pods.v1"}, {"reason", "error"}}),
            1);
}

}  // namespace
}  // namespace perimeter::runtime

namespace perimeter::runtime {
namespace {

TEST_F(InformerTest, TheTransformAppliesToListedAndWatchedObjects) {
  const auto with_fields = [](const std::string& name, const std::string& rv) {
    auto object = json::parse(pod_json(name, rv));
    object["metadata"]["managedFields"] = json::array({{{"manager", "kubectl"}}});
    return object.dump();
  };
  {
    InSequence in_order;
    EXPECT_CALL(transport, send(_))
        .WillOnce(Return(json_response(200, list_body("10", {with_fields("p1", "9")}))));
    EXPECT_CALL(transport, open_stream(_)).WillOnce([&](const kube::HttpRequest&) {
      return open_forever_stream({event_line("ADDED", with_fields("p2", "11"))});
    });
  }
  options.transform = strip_managed_fields;
  auto informer = make_informer();
  informer->start();
  ASSERT_TRUE(recorder.wait_for_count(2));
  informer->stop();
  ASSERT_EQ(informer->store().size(), 2u);
  for (const auto& object : informer->store().list()) {
    EXPECT_FALSE((*object)["metadata"].contains("managedFields")) << object->dump();
    EXPECT_TRUE((*object)["metadata"].contains("resourceVersion"));
  }
}

}  // namespace
}  // namespace perimeter::runtime
