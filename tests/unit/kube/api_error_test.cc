#include "kube/api_error.h"

#include <gtest/gtest.h>

namespace perimeter::kube {
namespace {

std::string status_body(int code, const std::string& reason, const std::string& message,
                        const std::string& details = "{}") {
  return R"({"kind":"Status","apiVersion":"v1","status":"Failure","code":)" + std::to_string(code) +
         R"(,"reason":")" + reason + R"(","message":")" + message + R"(","details":)" + details +
         "}";
}

TEST(ApiErrorTest, KeepsTheServersStatus) {
  const auto body =
      status_body(404, "NotFound", "pods x not found", R"({"name":"x","kind":"pods"})");
  const auto error = ApiError::from_response(404, body, "get pods.v1 /api/v1/namespaces/a/pods/x");
  EXPECT_EQ(error.kind(), ErrorKind::kNotFound);
  EXPECT_EQ(error.code(), 404);
  EXPECT_EQ(error.reason(), "NotFound");
  EXPECT_EQ(error.status_message(), "pods x not found");
  EXPECT_EQ(error.details()["name"], "x");
  EXPECT_EQ(error.raw_body(), body);
  EXPECT_TRUE(error.body_is_status());
  EXPECT_NE(std::string(error.what()).find("get pods.v1"), std::string::npos);
  EXPECT_NE(std::string(error.what()).find("not found"), std::string::npos);
  EXPECT_TRUE(is_not_found(error));
}

TEST(ApiErrorTest, TellsConflictFromAlreadyExistsThoughBothAre409) {
  const auto conflict = ApiError::from_response(
      409, status_body(409, "Conflict", "the object has been modified"), "update");
  const auto exists =
      ApiError::from_response(409, status_body(409, "AlreadyExists", "already exists"), "create");
  EXPECT_EQ(conflict.kind(), ErrorKind::kConflict);
  EXPECT_TRUE(is_conflict(conflict));
  EXPECT_FALSE(is_already_exists(conflict));
  EXPECT_EQ(exists.kind(), ErrorKind::kAlreadyExists);
  EXPECT_TRUE(is_already_exists(exists));
  EXPECT_FALSE(is_conflict(exists));
}

TEST(ApiErrorTest, TellsGoneInvalidTooManyRequestsForbiddenUnauthorizedApart) {
  EXPECT_EQ(ApiError::from_response(410, status_body(410, "Expired", "too old"), "w").kind(),
            ErrorKind::kGone);
  EXPECT_EQ(ApiError::from_response(422, status_body(422, "Invalid", "bad"), "c").kind(),
            ErrorKind::kInvalid);
  const auto throttled = ApiError::from_response(
      429, status_body(429, "TooManyRequests", "slow down", R"({"retryAfterSeconds":3})"), "c");
  EXPECT_EQ(throttled.kind(), ErrorKind::kTooManyRequests);
  EXPECT_EQ(throttled.retry_after_seconds(), 3);
  EXPECT_EQ(ApiError::from_response(403, status_body(403, "Forbidden", "no"), "c").kind(),
            ErrorKind::kForbidden);
  EXPECT_EQ(ApiError::from_response(401, status_body(401, "Unauthorized", "who"), "c").kind(),
            ErrorKind::kUnauthorized);
}

TEST(ApiErrorTest, WatchErrorStatusCodeWinsOverTheHttpStatus) {
  // A watch reports 410 inside an ERROR event on a stream that answered 200.
  const auto error = ApiError::from_response(
      200, status_body(410, "Expired", "too old resource version: 5 (9)"), "watch");
  EXPECT_EQ(error.code(), 410);
  EXPECT_TRUE(is_gone(error));
}

TEST(ApiErrorTest, ABodyThatIsNotAStatusIsKeptAsRawText) {
  const std::string html = "<html><body>502 Bad Gateway</body></html>";
  const auto error = ApiError::from_response(502, html, "get pods");
  EXPECT_FALSE(error.body_is_status());
  EXPECT_EQ(error.raw_body(), html);
  EXPECT_EQ(error.code(), 502);
  EXPECT_EQ(error.kind(), ErrorKind::kUnknown);
  EXPECT_NE(std::string(error.what()).find("502 Bad Gateway"), std::string::npos);
}

TEST(ApiErrorTest, FallsBackToTheHttpCodeWhenTheStatusHasNoReason) {
  const auto error = ApiError::from_response(404, R"({"kind":"Status","code":404})", "get");
  EXPECT_EQ(error.kind(), ErrorKind::kNotFound);
  EXPECT_EQ(ApiError::from_response(409, "conflict", "x").kind(), ErrorKind::kConflict);
}

TEST(ApiErrorTest, TruncatesHugeBodiesInMessages) {
  const std::string huge(10000, 'x');
  const auto error = ApiError::from_response(500, huge, "get");
  EXPECT_LT(std::string(error.what()).size(), 400u);
  EXPECT_EQ(error.raw_body().size(), huge.size());
}

}  // namespace
}  // namespace perimeter::kube
