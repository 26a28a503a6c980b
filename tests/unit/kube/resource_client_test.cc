#include "kube/resource_client.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "kube/api_error.h"
#include "kube/metric_value.h"
#include "kube/mock_transport.h"

namespace perimeter::kube {
namespace {

using nlohmann::json;
using perimeter::testing::json_response;
using perimeter::testing::metric_value;
using ::testing::_;
using ::testing::AllOf;
using ::testing::Field;
using ::testing::Return;
using ::testing::StrictMock;

MATCHER_P2(RequestIs, method, path, "") {
  return arg.method == method && arg.path_and_query == path;
}

class ResourceClientTest : public ::testing::Test {
 protected:
  prometheus::Registry registry;
  ClientMetrics metrics{registry};
  StrictMock<perimeter::testing::MockTransport> transport;
  ResourceClient pods{transport, resources::pods(), metrics};
  ResourceClient leases{transport, resources::leases(), metrics};
};

TEST_F(ResourceClientTest, GetBuildsTheCorePathAndCountsTheRequest) {
  EXPECT_CALL(transport, send(RequestIs("GET", "/api/v1/namespaces/a/pods/p1")))
      .WillOnce(Return(json_response(200, R"({"kind":"Pod","metadata":{"name":"p1"}})")));
  EXPECT_EQ(pods.get("a", "p1")["metadata"]["name"], "p1");
  EXPECT_EQ(
      metric_value(registry, "perimeter_kube_requests_total", {{"verb", "get"}, {"code", "200"}}),
      1);
}

TEST_F(ResourceClientTest, AnAnswerFilterBuildsOnlyWhatItKeepsButNeverOfAnError) {
  const JsonFilter uid_only =
      JsonFilter::members().keep("metadata", JsonFilter::members().keep("uid"));
  EXPECT_CALL(transport, send(RequestIs("GET", "/api/v1/namespaces/a/pods/p1")))
      .WillOnce(Return(json_response(
          200, R"({"kind":"Pod","metadata":{"name":"p1","uid":"u1","managedFields":[{}]},)"
               R"("spec":{"containers":[{"name":"runner"}]}})")));
  RequestOptions request;
  request.answer = &uid_only;
  EXPECT_EQ(pods.get("a", "p1", request), json({{"metadata", {{"uid", "u1"}}}}));

  EXPECT_CALL(transport, send(RequestIs("DELETE", "/api/v1/namespaces/a/pods/p1")))
      .WillOnce(Return(json_response(
          409, R"({"kind":"Status","code":409,"reason":"Conflict","message":"uid differs"})")));
  DeleteOptions nothing;
  const JsonFilter keep_nothing = JsonFilter::members();
  nothing.answer = &keep_nothing;
  try {
    pods.remove("a", "p1", nothing);
    FAIL() << "no error";
  } catch (const ApiError& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kConflict);
    EXPECT_EQ(e.status_message(), "uid differs");
  }
  EXPECT_CALL(transport, send(RequestIs("DELETE", "/api/v1/namespaces/a/pods/p1")))
      .WillOnce(Return(json_response(200, R"({"kind":"Pod","metadata":{"name":"p1"}})")));
  EXPECT_EQ(pods.remove("a", "p1", nothing), json::object());
}

TEST_F(ResourceClientTest, GroupedResourcesUseTheApisPrefix) {
  EXPECT_CALL(transport,
              send(RequestIs("GET", "/apis/coordination.k8s.io/v1/namespaces/a/leases/l")))
      .WillOnce(Return(json_response(200, R"({"kind":"Lease"})")));
  leases.get("a", "l");
}

TEST_F(ResourceClientTest, NotFoundKeepsTheStatusAndIsCounted) {
  EXPECT_CALL(transport, send(_))
      .WillOnce(Return(json_response(
          404,
          R"({"kind":"Status","code":404,"reason":"NotFound","message":"pods \"p\" not found"})")));
  try {
    pods.get("a", "p");
    FAIL() << "no error";
  } catch (const ApiError& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kNotFound);
    EXPECT_EQ(e.status_message(), "pods \"p\" not found");
  }
  EXPECT_EQ(
      metric_value(registry, "perimeter_kube_requests_total", {{"verb", "get"}, {"code", "404"}}),
      1);
}

constexpr const char* kThrottled =
    R"({"kind":"Status","code":429,"reason":"TooManyRequests","message":"too many requests",)"
    R"("details":{"retryAfterSeconds":2}})";

TEST_F(ResourceClientTest, ThrottledCallsWaitWhatTheServerSaysAndAreSentAgain) {
  std::vector<std::chrono::milliseconds> waits;
  pods.set_sleeper([&](std::chrono::milliseconds wait) { waits.push_back(wait); });
  EXPECT_CALL(transport, send(RequestIs("GET", "/api/v1/namespaces/a/pods/p1")))
      .WillOnce(Return(json_response(429, kThrottled)))
      .WillOnce(Return(json_response(200, R"({"kind":"Pod","metadata":{"name":"p1"}})")));
  EXPECT_EQ(pods.get("a", "p1")["metadata"]["name"], "p1");
  EXPECT_EQ(waits, std::vector<std::chrono::milliseconds>{std::chrono::seconds(2)});
  EXPECT_EQ(metric_value(registry, "perimeter_kube_retries_total",
                         {{"verb", "get"}, {"reason", "throttled"}}),
            1);
}

TEST_F(ResourceClientTest, ThrottlingThatDoesNotEndIsTheServersErrorAfterABoundedNumberOfTries) {
  std::vector<std::chrono::milliseconds> waits;
  pods.set_sleeper([&](std::chrono::milliseconds wait) { waits.push_back(wait); });
  EXPECT_CALL(transport, send(_)).Times(4).WillRepeatedly(Return(json_response(429, kThrottled)));
  try {
    pods.create("a", {{"metadata", {{"name", "p"}}}});
    FAIL() << "no error";
  } catch (const ApiError& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kTooManyRequests);
    EXPECT_EQ(e.status_message(), "too many requests");
  }
  EXPECT_EQ(waits.size(), 3u);
}

TEST_F(ResourceClientTest, AnAnswerThatIsNotJsonIsADecodeErrorWithAMetric) {
  EXPECT_CALL(transport, send(_)).WillOnce(Return(json_response(200, "<html>proxy</html>")));
  EXPECT_THROW(pods.get("a", "p"), DecodeError);
  EXPECT_EQ(metric_value(registry, "perimeter_kube_decode_errors_total", {{"source", "response"}}),
            1);
}

TEST_F(ResourceClientTest, AnErrorBodyThatIsNotAStatusIsCounted) {
  EXPECT_CALL(transport, send(_)).WillOnce(Return(json_response(503, "upstream down")));
  try {
    pods.get("a", "p");
    FAIL();
  } catch (const ApiError& e) {
    EXPECT_EQ(e.raw_body(), "upstream down");
  }
  EXPECT_EQ(
      metric_value(registry, "perimeter_kube_decode_errors_total", {{"source", "error_body"}}), 1);
}

TEST_F(ResourceClientTest, TransportFailuresAreCountedAsErrors) {
  EXPECT_CALL(transport, send(_)).WillOnce(::testing::Throw(TransportError("refused")));
  EXPECT_THROW(pods.get("a", "p"), TransportError);
  EXPECT_EQ(
      metric_value(registry, "perimeter_kube_requests_total", {{"verb", "get"}, {"code", "error"}}),
      1);
}

TEST_F(ResourceClientTest, ListEncodesSelectorsAndFollowsContinueTokens) {
  EXPECT_CALL(transport,
              send(RequestIs("GET",
                             "/api/v1/namespaces/a/pods?labelSelector=app%3Dweb%2Ctier%21%3Ddb"
                             "&fieldSelector=status.phase%3DRunning&limit=2")))
      .WillOnce(Return(json_response(
          200,
          R"({"metadata":{"resourceVersion":"10","continue":"tok 1"},"items":[{"n":1},{"n":2}]})")));
  EXPECT_CALL(transport,
              send(RequestIs("GET",
                             "/api/v1/namespaces/a/pods?labelSelector=app%3Dweb%2Ctier%21%3Ddb"
                             "&fieldSelector=status.phase%3DRunning&limit=2&continue=tok%201")))
      .WillOnce(
          Return(json_response(200, R"({"metadata":{"resourceVersion":"10"},"items":[{"n":3}]})")));
  ListOptions options;
  options.label_selector = "app=web,tier!=db";
  options.field_selector = "status.phase=Running";
  options.limit = 2;
  const auto all = pods.list_all("a", options);
  ASSERT_EQ(all["items"].size(), 3u);
  EXPECT_EQ(all["items"][2]["n"], 3);
  EXPECT_EQ(all["metadata"]["resourceVersion"], "10");
  EXPECT_FALSE(all["metadata"].contains("continue"));
}

TEST_F(ResourceClientTest, AListWithoutItemsIsADecodeError) {
  EXPECT_CALL(transport, send(_)).WillOnce(Return(json_response(200, R"({"kind":"PodList"})")));
  EXPECT_THROW(pods.list("a"), DecodeError);
}

TEST_F(ResourceClientTest, WritesUseTheRightMethodsAndContentTypes) {
  const json pod = {{"apiVersion", "v1"}, {"kind", "Pod"}, {"metadata", {{"name", "p"}}}};
  EXPECT_CALL(transport, send(AllOf(RequestIs("POST", "/api/v1/namespaces/a/pods"),
                                    Field(&HttpRequest::body, pod.dump()))))
      .WillOnce(Return(json_response(201, pod.dump())));
  EXPECT_CALL(transport, send(RequestIs("PUT", "/api/v1/namespaces/a/pods/p")))
      .WillOnce(Return(json_response(200, pod.dump())));
  EXPECT_CALL(transport, send(RequestIs("PUT", "/api/v1/namespaces/a/pods/p/status")))
      .WillOnce(Return(json_response(200, pod.dump())));
  EXPECT_CALL(transport, send(AllOf(RequestIs("PATCH", "/api/v1/namespaces/a/pods/p"),
                                    Field(&HttpRequest::headers,
                                          ::testing::Contains(::testing::Pair(
                                              "Content-Type", "application/merge-patch+json"))))))
      .WillOnce(Return(json_response(200, pod.dump())));
  EXPECT_CALL(transport, send(AllOf(RequestIs("PATCH", "/api/v1/namespaces/a/pods/p"),
                                    Field(&HttpRequest::headers,
                                          ::testing::Contains(::testing::Pair(
                                              "Content-Type", "application/json-patch+json"))))))
      .WillOnce(Return(json_response(200, pod.dump())));
  EXPECT_CALL(
      transport,
      send(AllOf(
          RequestIs("PATCH",
                    "/api/v1/namespaces/a/pods/p/status?fieldManager=perimeter&force=true"),
          Field(&HttpRequest::headers, ::testing::Contains(::testing::Pair(
                                           "Content-Type", "application/apply-patch+yaml"))))))
      .WillOnce(Return(json_response(200, pod.dump())));
  pods.create("a", pod);
  pods.update("a", pod);
  pods.update_status("a", pod);
  pods.merge_patch("a", "p", {{"metadata", {{"labels", {{"x", "y"}}}}}});
  pods.json_patch("a", "p", json::array({{{"op", "remove"}, {"path", "/metadata/labels/x"}}}));
  pods.apply_status("a", pod, ApplyOptions{"perimeter", true});
}

TEST_F(ResourceClientTest, DeleteSendsPreconditionsAndPropagationPolicy) {
  EXPECT_CALL(transport, send(RequestIs("DELETE", "/api/v1/namespaces/a/pods/p")))
      .WillOnce([](const HttpRequest& request) {
        const auto body = json::parse(request.body);
        EXPECT_EQ(body["preconditions"]["uid"], "u-1");
        EXPECT_EQ(body["preconditions"]["resourceVersion"], "7");
        EXPECT_EQ(body["propagationPolicy"], "Foreground");
        return json_response(200, R"({"kind":"Status","status":"Success"})");
      });
  DeleteOptions options;
  options.precondition_uid = "u-1";
  options.precondition_resource_version = "7";
  options.propagation_policy = "Foreground";
  pods.remove("a", "p", options);
}

TEST_F(ResourceClientTest, ApplyWithoutFieldManagerOrNameIsRefusedBeforeAnyRequest) {
  EXPECT_THROW(pods.apply("a", {{"metadata", {{"name", "p"}}}}, ApplyOptions{}),
               std::invalid_argument);
  EXPECT_THROW(pods.apply("a", {{"kind", "Pod"}}, ApplyOptions{"m", false}), std::invalid_argument);
}

TEST_F(ResourceClientTest, WatchDecodesEventsAndRejectsBadLines) {
  auto script = perimeter::testing::stream_script(
      {R"({"type":"ADDED","object":{"kind":"Pod","metadata":{"name":"p"}}})", "",
       R"({"type":"BOOKMARK","object":{"kind":"Pod","metadata":{"resourceVersion":"12"}}})",
       R"({"type":"ADDED","obj)"});
  EXPECT_CALL(transport,
              open_stream(RequestIs("GET",
                                    "/api/v1/namespaces/a/pods?watch=true&resourceVersion=5"
                                    "&allowWatchBookmarks=true&timeoutSeconds=60")))
      .WillOnce([&](const HttpRequest&) {
        return std::make_unique<perimeter::testing::FakeResponseStream>(script);
      });
  WatchOptions options;
  options.resource_version = "5";
  options.timeout_seconds = 60;
  auto watch = pods.watch("a", options);
  auto first = watch->next();
  ASSERT_TRUE(first);
  EXPECT_EQ(first->type, WatchEventType::kAdded);
  auto second = watch->next();
  ASSERT_TRUE(second);
  EXPECT_EQ(second->type, WatchEventType::kBookmark);
  EXPECT_EQ(second->object["metadata"]["resourceVersion"], "12");
  EXPECT_THROW(watch->next(), DecodeError);
  EXPECT_EQ(metric_value(registry, "perimeter_kube_decode_errors_total", {{"source", "watch"}}), 1);
  EXPECT_FALSE(watch->next());
}

TEST_F(ResourceClientTest, WatchRefusedWithGoneKeepsTheStatus) {
  EXPECT_CALL(transport, open_stream(_))
      .WillOnce(::testing::Throw(ApiError::from_response(
          410, R"({"kind":"Status","code":410,"reason":"Expired","message":"too old"})", "watch")));
  try {
    pods.watch("a", WatchOptions{});
    FAIL();
  } catch (const ApiError& e) {
    EXPECT_TRUE(is_gone(e));
  }
  EXPECT_EQ(
      metric_value(registry, "perimeter_kube_requests_total", {{"verb", "watch"}, {"code", "410"}}),
      1);
}

TEST(WatchEventDecodeTest, RejectsUnknownTypesAndMissingObjects) {
  EXPECT_THROW(decode_watch_event(R"({"type":"EXPLODED","object":{}})"), DecodeError);
  EXPECT_THROW(decode_watch_event(R"({"type":"ADDED"})"), DecodeError);
  EXPECT_THROW(decode_watch_event(R"({"type":"ADDED","object":"string"})"), DecodeError);
  EXPECT_THROW(decode_watch_event(R"([1,2])"), DecodeError);
  EXPECT_EQ(decode_watch_event(R"({"type":"ERROR","object":{"kind":"Status","code":410}})").type,
            WatchEventType::kError);
}

TEST(ResourceTypeTest, PathsForNamespacedAndClusterScopedResources) {
  EXPECT_EQ(resources::pods().path(""), "/api/v1/pods");
  EXPECT_EQ(resources::namespaces().path("ignored", "n"), "/api/v1/namespaces/n");
  EXPECT_EQ(resources::deployments().path("a", "d", "status"),
            "/apis/apps/v1/namespaces/a/deployments/d/status");
  EXPECT_EQ(resources::by_plural("leases")->kind, "Lease");
  EXPECT_FALSE(resources::by_plural("widgets"));
  EXPECT_EQ(ObjectKey::parse("a/b"), (ObjectKey{"a", "b"}));
  EXPECT_EQ(ObjectKey::parse("cluster-thing").str(), "cluster-thing");
}

}  // namespace
}  // namespace perimeter::kube
