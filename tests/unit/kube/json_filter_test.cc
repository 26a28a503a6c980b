// The filtered parse builds what its filter keeps and nothing else, judges the text as the full
// parser does, and leaves a watch's ERROR Status whole.
#include "kube/json_filter.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

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

// What the filter keeps of a document the full parser built: the reference the one-pass reader
// (core/json_reader.h, escapes decoded, strings and keys read as views) must match.
json reference(const json& value, const JsonFilter& filter) {
  if (filter.keeps_everything()) return value;
  if (value.is_array()) {
    json out = json::array();
    for (const auto& element : value) out.push_back(reference(element, filter));
    return out;
  }
  if (!value.is_object()) return value;
  json out = json::object();
  for (const auto& [key, member] : value.items()) {
    if (const JsonFilter* kept = filter.member(key)) out[key] = reference(member, *kept);
  }
  return out;
}

TEST(JsonFilterTest, KeptTextIsTheFullParsersWhateverItsEscapesNumbersAndUnicode) {
  const JsonFilter filter =
      JsonFilter::members()
          .keep("kept")
          .keep("metadata", JsonFilter::members().keep("annotations").keep("name"))
          .keep("list", JsonFilter::members().keep("v"));
  const std::vector<std::string> documents = {
      R"({"kept": "plain", "dropped": "x"})",
      R"({"kept": "a \"quoted\" \\ back\/slash \b\f\n\r\t end"})",
      R"({"kept": "\u00e9\u4e2d\u0000\uD83D\uDE00 mixed \u002F"})",
      "{\"kept\": \"caf\xc3\xa9 \xe4\xb8\xad \xf0\x9f\x98\x80\"}",
      R"({"metadata": {"name": "n", "annotations": {"json": "{\"a\":[1,2]}", "x": "<\u003e&"}}})",
      R"({"dropped": "\u00e9 \"q\"", "metadata": {"labels": {"a": "\\"}, "name": "\t"}})",
      R"({"kept": [0, -0, 1, -1, 18446744073709551615, -9223372036854775808, 1e2, 1.5E-3,
                   -2.25e+10, 123456789012345678901234567890, 0.1, 9007199254740993]})",
      R"({"kept": [true, false, null, {}, [], [[]], {"a": {}}]})",
      R"({"list": [{"v": 1, "w": 2}, {"w": "\"", "v": "\u0041"}, 3, "s"]})",
      R"({"kept": 1, "kept": 2})",
      " \t\r\n{ \"kept\" : [ 1 , 2 ] } \n",
      R"("top-level \u00e9")",
      R"(42)",
  };
  for (const auto& text : documents) {
    SCOPED_TRACE(text);
    const json filtered = parse_filtered(text, filter);
    ASSERT_FALSE(filtered.is_discarded());
    EXPECT_EQ(filtered, reference(json::parse(text), filter));
    EXPECT_EQ(filtered.dump(), reference(json::parse(text), filter).dump());
    EXPECT_EQ(parse_filtered(text, JsonFilter::everything()), json::parse(text));
  }
}

TEST(JsonFilterTest, WhatTheFullParserRefusesIsRefusedWhereverItIs) {
  const JsonFilter filter = JsonFilter::members().keep("kept");
  const std::vector<std::string> refused = {
      R"({"kept": "\x"})",
      R"({"dropped": "\ud800"})",
      R"({"kept": "\udc00"})",
      R"({"dropped": "\ud800\u0041"})",
      R"({"kept": "\u12"})",
      "{\"kept\": \"a\x01\"}",
      "{\"dropped\": \"\xc0\xaf\"}",
      "{\"kept\": \"\xed\xa0\x80\"}",
      "{\"kept\": \"\xff\"}",
      R"({"kept": 01})",
      R"({"dropped": 1.})",
      R"({"kept": -})",
      R"({"kept": 1e})",
      R"({"dropped": 1e999})",
      R"({"kept": nul})",
      R"({"kept": [1,]})",
      R"({"kept": 1,})",
      R"({kept: 1})",
      R"({"kept" 1})",
      R"([1] [2])",
      "",
      "   ",
      R"({"kept": "open)",
      R"({"kept": [)",
  };
  for (const auto& text : refused) {
    SCOPED_TRACE(text);
    EXPECT_FALSE(json::accept(text)) << "the case itself is wrong";
    EXPECT_TRUE(parse_filtered(text, filter).is_discarded());
  }
  // What the one-pass reader leaves to nlohmann (a byte-order mark) is still read, as nlohmann
  // reads it.
  const auto before = filtered_parse_fallbacks();
  const std::string bom = "\xef\xbb\xbf{\"kept\": 1}";
  EXPECT_EQ(parse_filtered(bom, filter), json({{"kept", 1}}));
  EXPECT_EQ(filtered_parse_fallbacks(), before + 1);
}

// The apiserver's objects are read in one pass, keys holding escapes included: managedFields
// names list items by keys such as `k:{"name":"runner"}`, in every pod.
TEST(JsonFilterTest, AnApiserverPodIsReadInOnePass) {
  const std::string event =
      R"({"type":"MODIFIED","object":{"kind":"Pod","apiVersion":"v1","metadata":{"name":"run-1",)"
      R"("namespace":"agents","uid":"u-1","resourceVersion":"81","labels":{"a":"1"},)"
      R"("annotations":{"perimeter.dev/work-id":"work_1","note":"say \"hi\" \u003cb\u003e"},)"
      R"("managedFields":[{"manager":"perimeter-operator","operation":"Update","fieldsType":)"
      R"("FieldsV1","fieldsV1":{"f:spec":{"f:containers":{"k:{\"name\":\"runner\"}":{".":{},)"
      R"("f:env":{"k:{\"name\":\"ANTHROPIC_BASE_URL\"}":{".":{},"f:value":{}}}}}}}}]},)"
      R"("spec":{"containers":[{"name":"runner","image":"r:1"}]},"status":{"phase":"Running"}}})";
  const JsonFilter objects =
      JsonFilter::members()
          .keep("metadata",
                JsonFilter::members().keep("name").keep("annotations").keep("managedFields"))
          .keep("status");
  const JsonFilter event_filter = watch_event_filter(objects);
  const auto before = filtered_parse_fallbacks();
  const WatchEvent decoded = decode_watch_event(event, &event_filter);
  EXPECT_EQ(filtered_parse_fallbacks(), before) << "the event was read twice";
  const json whole = json::parse(event)["object"];
  EXPECT_EQ(decoded.object, reference(whole, objects));
  EXPECT_EQ(decoded.object["metadata"]["annotations"]["note"], "say \"hi\" <b>");
  EXPECT_TRUE(
      decoded.object["metadata"]["managedFields"][0]["fieldsV1"]["f:spec"]["f:containers"].contains(
          R"(k:{"name":"runner"})"));
  // Dropped, the same keys are only read through.
  EXPECT_EQ(parse_filtered(json::parse(event)["object"].dump(), JsonFilter::members().keep("kind")),
            json({{"kind", "Pod"}}));
  EXPECT_EQ(filtered_parse_fallbacks(), before);
}

}  // namespace
}  // namespace perimeter::kube
