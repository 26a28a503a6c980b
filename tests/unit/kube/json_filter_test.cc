// The filtered parse builds what its filter keeps and nothing else, judges the text as the full
// parser does, and leaves a watch's ERROR Status whole.
#include "kube/json_filter.h"

#include <gtest/gtest.h>

#include "kube/api_error.h"
#include "kube/resource_client.h"

namespace perimeter::kube {
namespace {

using nlohmann::json;

const char* const kPod = R"({
  "kind": "Pod", "apiVersion": "v1",
  "metadata": {"name": "run-1", "namespace": "agents", "resourceVersion": "7",
               "labels": {"a": "1", "b": "2"},
               "managedFields": [{"manager": "m", "fieldsV1": {"f:spec": {"f:containers": {}}}}],
               "ownerReferences": [{"kind": "AgentEnvironment", "name": "e", "uid": "u",
                                    "apiVersion": "perimeter.dev/v1alpha1"},
                                   {"kind": "Other", "name": "o", "uid": "v"}]},
  "spec": {"containers": [{"name": "runner", "image": "i", "args": ["x", 1, 2.5, true, null]}]},
  "status": {"phase": "Running", "podIPs": [{"ip": "10.0.0.1"}],
             "containerStatuses": [{"name": "runner", "ready": true, "restartCount": 0}]}
})";

JsonFilter pod_filter() {
  return JsonFilter::members()
      .keep("kind")
      .keep("metadata", JsonFilter::members().keep("name").keep("labels").keep(
                            "ownerReferences", JsonFilter::members().keep("kind").keep("uid")))
      .keep("status", JsonFilter::members().keep("phase").keep("containerStatuses",
                                                               JsonFilter::members().keep("name")));
}

TEST(JsonFilterTest, BuildsOnlyTheKeptMembersAtEveryDepth) {
  const json filtered = parse_filtered(kPod, pod_filter());
  EXPECT_EQ(filtered, json::parse(R"({
    "kind": "Pod",
    "metadata": {"name": "run-1", "labels": {"a": "1", "b": "2"},
                 "ownerReferences": [{"kind": "AgentEnvironment", "uid": "u"},
                                     {"kind": "Other", "uid": "v"}]},
    "status": {"phase": "Running", "containerStatuses": [{"name": "runner"}]}
  })"));
}

TEST(JsonFilterTest, EverythingIsTheFullParse) {
  EXPECT_EQ(parse_filtered(kPod, JsonFilter::everything()), json::parse(kPod));
  const JsonFilter keep_spec_whole = JsonFilter::members().keep("spec");
  EXPECT_EQ(parse_filtered(kPod, keep_spec_whole), json({{"spec", json::parse(kPod)["spec"]}}));
}

TEST(JsonFilterTest, ScalarsAndArraysOfScalarsAreKeptByAnyFilter) {
  EXPECT_EQ(parse_filtered("[1, \"a\", null, 2.5, false]", JsonFilter::members()),
            json::parse("[1, \"a\", null, 2.5, false]"));
  EXPECT_EQ(parse_filtered("\"text\"", JsonFilter::members()), "text");
  // A member the filter describes as an object but which is a string is kept as it is.
  EXPECT_EQ(parse_filtered(R"({"status": "Failure"})",
                           JsonFilter::members().keep("status", JsonFilter::members())),
            json({{"status", "Failure"}}));
}

TEST(JsonFilterTest, TextThatIsNotJsonIsRefusedEvenInsideADroppedPart) {
  const JsonFilter name_only = JsonFilter::members().keep("name");
  EXPECT_TRUE(parse_filtered("", name_only).is_discarded());
  EXPECT_TRUE(parse_filtered(R"({"name": "a")", name_only).is_discarded());
  EXPECT_TRUE(parse_filtered(R"({"name": "a", "dropped": [1, 2,]})", name_only).is_discarded());
  EXPECT_TRUE(parse_filtered(R"({"name": "a", "dropped": {"x": tru}})", name_only).is_discarded());
  EXPECT_TRUE(parse_filtered(R"({"name": "a"} trailing)", name_only).is_discarded());
  EXPECT_EQ(parse_filtered(R"({"name": "a", "dropped": {"x": [{}]}})", name_only),
            json({{"name", "a"}}));
}

TEST(JsonFilterTest, AWatchEventIsDecodedThroughItsObjectsFilter) {
  const JsonFilter event_filter = watch_event_filter(pod_filter());
  const std::string line = std::string(R"({"type":"MODIFIED","object":)") + kPod + "}";
  const WatchEvent event = decode_watch_event(line, &event_filter);
  EXPECT_EQ(event.type, WatchEventType::kModified);
  EXPECT_EQ(event.object, parse_filtered(kPod, pod_filter()));
  EXPECT_FALSE(event.object["metadata"].contains("managedFields"));
  EXPECT_THROW(decode_watch_event(R"({"type":"MODIFIED","object":{"kind":"Pod",)", &event_filter),
               DecodeError);
}

TEST(JsonFilterTest, AWatchErrorKeepsItsWholeStatusWhateverTheObjectsFilter) {
  // A 410 Gone must still read as Gone (and be relisted), however little of a Pod is kept.
  const JsonFilter event_filter = watch_event_filter(pod_filter());
  const std::string line =
      R"({"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","metadata":{},)"
      R"j("status":"Failure","message":"too old resource version: 1 (5)","reason":"Expired",)j"
      R"("code":410}})";
  const WatchEvent event = decode_watch_event(line, &event_filter);
  ASSERT_EQ(event.type, WatchEventType::kError);
  EXPECT_EQ(event.object["code"], 410);
  EXPECT_EQ(event.object["reason"], "Expired");
  const auto error = ApiError::from_response(500, event.object.dump(), "watch pods");
  EXPECT_EQ(error.kind(), ErrorKind::kGone);
}

}  // namespace
}  // namespace perimeter::kube
