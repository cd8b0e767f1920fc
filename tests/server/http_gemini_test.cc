// The Gemini dialect of kvtierd's HTTP API (server/http/gemini_api.cc) on a
// real kvtierd: named caches (create, get, list by pages, patch, delete),
// generateContent and streamGenerateContent from a cache, bad input and
// other tenants' caches refused with Google's error shape, changing nothing;
// and the strict Duration / Timestamp readers (server/http/gemini_time.h).
#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "server/http/gemini_time.h"
#include "tests/server/daemon_client.h"
#include "tests/server/daemon_process.h"

namespace kvtier {
namespace {

using nlohmann::json;
using testing::DaemonProcess;
using testing::TempDir;

constexpr char kAlice[] = "alice-key-0123456789abcdef";
constexpr char kBob[] = "bob-key-0123456789abcdef00";

// ---- Duration and Timestamp ----

TEST(GeminiTimeTest, DurationsAreSecondsWithAnS) {
  EXPECT_EQ(*http::ParseDurationMs("3600s", "ttl"), 3600000);
  EXPECT_EQ(*http::ParseDurationMs("1.5s", "ttl"), 1500);
  EXPECT_EQ(*http::ParseDurationMs("0.000000001s", "ttl"), 0);
  EXPECT_EQ(*http::ParseDurationMs("60.123456789s", "ttl"), 60123);
  for (const char* bad : {"", "s", "3600", "60m", "1h", "-5s", "+5s", ".5s", "5.s", " 5s", "5s ",
                          "1.0000000001s", "1e3s", "9999999999999s"}) {
    Result<int64_t> r = http::ParseDurationMs(bad, "ttl");
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(r.status().message().find("ttl: \""), std::string::npos) << r.status().message();
  }
}

TEST(GeminiTimeTest, TimestampsAreRfc3339) {
  EXPECT_EQ(*http::ParseTimestampMs("1970-01-01T00:00:00Z", "t"), 0);
  EXPECT_EQ(*http::ParseTimestampMs("2026-01-02T03:04:05.678Z", "t"), 1767323045678);
  EXPECT_EQ(*http::ParseTimestampMs("2026-01-02T04:04:05.678123+01:00", "t"), 1767323045678);
  EXPECT_EQ(*http::ParseTimestampMs("2026-01-02t02:34:05.678-00:30", "t"), 1767323045678);
  EXPECT_EQ(*http::ParseTimestampMs("2024-02-29T00:00:00z", "t"), 1709164800000);
  for (const char* bad :
       {"", "tomorrow", "2026-01-02", "2026-01-02T03:04:05", "2026-01-02 03:04:05Z",
        "2026-13-01T00:00:00Z", "2025-02-29T00:00:00Z", "2026-01-02T24:00:00Z",
        "2026-01-02T03:60:00Z", "2026-01-02T03:04:60Z", "2026-01-02T03:04:05.Z",
        "2026-01-02T03:04:05.1234567890Z", "2026-01-02T03:04:05+1:00", "2026-01-02T03:04:05+01",
        "2026-01-02T03:04:05Zjunk", "+026-01-02T03:04:05Z", "1767323045"}) {
    Result<int64_t> r = http::ParseTimestampMs(bad, "expireTime");
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_NE(r.status().message().find("expireTime: \""), std::string::npos)
        << r.status().message();
  }
}

TEST(GeminiTimeTest, FormatsAsGoogleDoes) {
  EXPECT_EQ(http::FormatTimestamp(0), "1970-01-01T00:00:00Z");
  EXPECT_EQ(http::FormatTimestamp(1767323045678), "2026-01-02T03:04:05.678Z");
  EXPECT_EQ(http::FormatTimestamp(1767323045000), "2026-01-02T03:04:05Z");
  EXPECT_EQ(http::FormatTimestamp(1767323045007), "2026-01-02T03:04:05.007Z");
  for (int64_t ms : {int64_t{1}, int64_t{1709164800000}, int64_t{4102444799999}}) {
    EXPECT_EQ(*http::ParseTimestampMs(http::FormatTimestamp(ms), "t"), ms);
  }
}

// ---- the API on a real kvtierd ----

// An answer: its status, body and, when the body is JSON, the JSON.
struct Answer {
  int status = 0;
  std::string body;
  json j;
};

class GeminiApiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = TempDir("gemini");
    std::filesystem::create_directories(dir_);
    std::ofstream(dir_ + "/keys") << kAlice << " alice\n" << kBob << " bob\n";
    daemon_ = std::make_unique<DaemonProcess>();
    ASSERT_TRUE(
        daemon_->Start(dir_ + "/data", {"--model-preset", "tiny-8k", "--api-keys", dir_ + "/keys",
                                        "--metrics-listen", "", "--http-listen", "127.0.0.1:0"}));
    port_ = testing::HttpPortOf(*daemon_, kAlice);
    ASSERT_GT(port_, 0);
  }
  void TearDown() override {
    if (daemon_) {
      EXPECT_EQ(daemon_->Stop(SIGTERM), 0);
    }
    std::filesystem::remove_all(dir_);
  }

  // `method` on `path` with `body` (JSON, or raw if a string) as `key`
  // (in x-goog-api-key; "" sends none).
  Answer Call(const std::string& method, const std::string& path, const json& body = nullptr,
              const std::string& key = kAlice) {
    httplib::Client client("127.0.0.1", port_);
    client.set_read_timeout(120, 0);
    httplib::Headers headers;
    if (!key.empty()) headers.emplace("x-goog-api-key", key);
    const std::string text = body.is_string() ? body.get<std::string>() : body.dump();
    httplib::Result r = method == "GET"      ? client.Get(path.c_str(), headers)
                        : method == "DELETE" ? client.Delete(path.c_str(), headers)
                        : method == "PATCH"
                            ? client.Patch(path.c_str(), headers, text, "application/json")
                            : client.Post(path.c_str(), headers, text, "application/json");
    Answer a;
    if (!r) {
      ADD_FAILURE() << method << " " << path << ": " << httplib::to_string(r.error());
      return a;
    }
    a.status = r->status;
    a.body = r->body;
    a.j = json::parse(r->body, nullptr, false);
    return a;
  }

  // Google's error shape with `code` and `status`; its message.
  static std::string ExpectError(const Answer& a, int code, const std::string& status) {
    EXPECT_EQ(a.status, code) << a.body;
    EXPECT_EQ(a.j["error"]["code"], code) << a.body;
    EXPECT_EQ(a.j["error"]["status"], status) << a.body;
    return a.j["error"].value("message", "");
  }

  static json CacheBody(const std::string& ttl = "3600s") {
    return {{"model", "models/tiny-8k"},
            {"displayName", "story"},
            {"systemInstruction", {{"parts", {{{"text", "You tell short stories."}}}}}},
            {"contents",
             {{{"role", "user"}, {"parts", {{{"text", "Once upon a time there was a fox."}}}}},
              {{"role", "model"}, {"parts", {{{"text", "The fox lived in a wood."}}}}}}},
            {"ttl", ttl}};
  }

  json CreateCache(const std::string& key = kAlice) {
    Answer a = Call("POST", "/v1beta/cachedContents", CacheBody(), key);
    EXPECT_EQ(a.status, 200) << a.body;
    return a.j;
  }

  // The tenant's list, one page as large as it gets.
  json List(const std::string& key = kAlice) {
    Answer a = Call("GET", "/v1beta/cachedContents?pageSize=1000", nullptr, key);
    EXPECT_EQ(a.status, 200) << a.body;
    return a.j;
  }

  static json GenerateBody(const std::string& cache) {
    json body = {{"contents", {{{"role", "user"}, {"parts", {{{"text", "What did it eat?"}}}}}}},
                 {"generationConfig", {{"maxOutputTokens", 8}, {"temperature", 0}}}};
    if (!cache.empty()) body["cachedContent"] = cache;
    return body;
  }

  std::string dir_;
  int port_ = 0;
  std::unique_ptr<DaemonProcess> daemon_;
};

int64_t Ms(const json& timestamp) {
  return *http::ParseTimestampMs(timestamp.get<std::string>(), "timestamp");
}

TEST_F(GeminiApiTest, CreateGetPatchDelete) {
  const json cache = CreateCache();
  const std::string name = cache["name"];
  EXPECT_EQ(name.rfind("cachedContents/", 0), 0u) << cache;
  EXPECT_EQ(cache["model"], "models/tiny-8k");
  EXPECT_EQ(cache["displayName"], "story");
  EXPECT_GT(cache["usageMetadata"]["totalTokenCount"].get<int64_t>(), 10);
  EXPECT_EQ(Ms(cache["expireTime"]) - Ms(cache["createTime"]), 3600 * 1000);
  EXPECT_EQ(cache["updateTime"], cache["createTime"]);

  Answer got = Call("GET", "/v1beta/" + name);
  ASSERT_EQ(got.status, 200) << got.body;
  EXPECT_EQ(got.j, cache);

  const int64_t before = Ms(cache["expireTime"]);
  Answer ttl = Call("PATCH", "/v1beta/" + name + "?updateMask=ttl", {{"ttl", "7200s"}});
  ASSERT_EQ(ttl.status, 200) << ttl.body;
  EXPECT_GT(Ms(ttl.j["expireTime"]), before);
  EXPECT_EQ(ttl.j["createTime"], cache["createTime"]);
  EXPECT_GE(Ms(ttl.j["updateTime"]), Ms(cache["createTime"]));

  const std::string at = http::FormatTimestamp(Ms(cache["createTime"]) + 2 * 86400 * 1000 + 500);
  Answer expire = Call("PATCH", "/v1beta/" + name + "?updateMask=expireTime", {{"expireTime", at}});
  ASSERT_EQ(expire.status, 200) << expire.body;
  EXPECT_EQ(expire.j["expireTime"], at);
  EXPECT_EQ(Call("GET", "/v1beta/" + name).j["expireTime"], at);

  Answer deleted = Call("DELETE", "/v1beta/" + name);
  ASSERT_EQ(deleted.status, 200) << deleted.body;
  EXPECT_EQ(deleted.j, json::object());
  ExpectError(Call("GET", "/v1beta/" + name), 404, "NOT_FOUND");
  ExpectError(Call("DELETE", "/v1beta/" + name), 404, "NOT_FOUND");
  EXPECT_TRUE(List()["cachedContents"].empty());
}

TEST_F(GeminiApiTest, ListsByPages) {
  // Listed oldest first: by create time, then by name (caches made within
  // one millisecond tie on time).
  std::vector<std::pair<int64_t, std::string>> made;
  for (int i = 0; i < 5; ++i) {
    const json c = CreateCache();
    made.emplace_back(Ms(c["createTime"]), c["name"]);
  }
  std::sort(made.begin(), made.end());
  std::vector<std::string> names;
  for (const auto& m : made) names.push_back(m.second);
  std::vector<std::string> seen;
  std::string token;
  int pages = 0;
  do {
    Answer a = Call(
        "GET", "/v1beta/cachedContents?pageSize=2" + (token.empty() ? "" : "&pageToken=" + token));
    ASSERT_EQ(a.status, 200) << a.body;
    EXPECT_LE(a.j["cachedContents"].size(), 2u);
    for (const json& c : a.j["cachedContents"]) seen.push_back(c["name"]);
    token = a.j.value("nextPageToken", "");
    ++pages;
  } while (!token.empty() && pages < 10);
  EXPECT_EQ(pages, 3);
  EXPECT_EQ(seen, names);
  EXPECT_EQ(List()["cachedContents"].size(), 5u);
  EXPECT_FALSE(List().contains("nextPageToken"));

  // A page resumes after the token's cache even when caches before it went.
  Answer first = Call("GET", "/v1beta/cachedContents?pageSize=2");
  ASSERT_EQ(Call("DELETE", "/v1beta/" + names[0]).status, 200);
  Answer second = Call("GET", "/v1beta/cachedContents?pageSize=2&pageToken=" +
                                  first.j["nextPageToken"].get<std::string>());
  ASSERT_EQ(second.status, 200) << second.body;
  EXPECT_EQ(second.j["cachedContents"][0]["name"], names[2]);

  ExpectError(Call("GET", "/v1beta/cachedContents?pageSize=-1"), 400, "INVALID_ARGUMENT");
  ExpectError(Call("GET", "/v1beta/cachedContents?pageSize=two"), 400, "INVALID_ARGUMENT");
  const std::string bad = ExpectError(Call("GET", "/v1beta/cachedContents?pageToken=nonsense"), 400,
                                      "INVALID_ARGUMENT");
  EXPECT_NE(bad.find("pageToken"), std::string::npos) << bad;
}

TEST_F(GeminiApiTest, GeneratesFromACachedContent) {
  const json cache = CreateCache();
  Answer a = Call("POST", "/v1beta/models/tiny-8k:generateContent", GenerateBody(cache["name"]));
  ASSERT_EQ(a.status, 200) << a.body;
  const json& usage = a.j["usageMetadata"];
  EXPECT_EQ(usage["cachedContentTokenCount"], cache["usageMetadata"]["totalTokenCount"]);
  EXPECT_GT(usage["promptTokenCount"].get<int64_t>(),
            usage["cachedContentTokenCount"].get<int64_t>());
  EXPECT_EQ(
      usage["totalTokenCount"].get<int64_t>(),
      usage["promptTokenCount"].get<int64_t>() + usage["candidatesTokenCount"].get<int64_t>());
  const json& candidate = a.j["candidates"][0];
  EXPECT_EQ(candidate["content"]["role"], "model");
  EXPECT_TRUE(candidate["content"]["parts"][0]["text"].is_string());
  EXPECT_TRUE(candidate["finishReason"] == "STOP" || candidate["finishReason"] == "MAX_TOKENS")
      << a.body;
  EXPECT_EQ(candidate["index"], 0);
  EXPECT_EQ(a.j["modelVersion"], "tiny-8k");

  // The key may come as ?key= too; "models/tiny-8k" in the path is not a model.
  Answer by_query =
      Call("POST", std::string("/v1beta/models/tiny-8k:generateContent?key=") + kAlice,
           GenerateBody(""), "");
  ASSERT_EQ(by_query.status, 200) << by_query.body;
  EXPECT_EQ(by_query.j["usageMetadata"]["cachedContentTokenCount"], 0);
  ExpectError(Call("POST", "/v1beta/models/other:generateContent", GenerateBody("")), 404,
              "NOT_FOUND");
}

TEST_F(GeminiApiTest, StreamsServerSentEvents) {
  const json cache = CreateCache();
  const std::string path = "/v1beta/models/tiny-8k:streamGenerateContent";
  const std::string refused =
      ExpectError(Call("POST", path, GenerateBody(cache["name"])), 400, "INVALID_ARGUMENT");
  EXPECT_NE(refused.find("alt=sse"), std::string::npos) << refused;

  Answer unary =
      Call("POST", "/v1beta/models/tiny-8k:generateContent", GenerateBody(cache["name"]));
  ASSERT_EQ(unary.status, 200) << unary.body;
  Answer a = Call("POST", path + "?alt=sse", GenerateBody(cache["name"]));
  ASSERT_EQ(a.status, 200) << a.body;
  std::string text;
  json last;
  size_t events = 0;
  for (size_t at = 0; at < a.body.size();) {
    const size_t end = a.body.find("\r\n\r\n", at);
    ASSERT_NE(end, std::string::npos) << a.body;
    const std::string event = a.body.substr(at, end - at);
    ASSERT_EQ(event.rfind("data: ", 0), 0u) << event;
    last = json::parse(event.substr(6));
    text += last["candidates"][0]["content"]["parts"][0]["text"].get<std::string>();
    ++events;
    at = end + 4;
  }
  ASSERT_GE(events, 1u);
  EXPECT_EQ(text, unary.j["candidates"][0]["content"]["parts"][0]["text"]);  // greedy
  EXPECT_EQ(last["usageMetadata"], unary.j["usageMetadata"]);
  EXPECT_EQ(last["candidates"][0]["finishReason"], unary.j["candidates"][0]["finishReason"]);
}

TEST_F(GeminiApiTest, BadInputChangesNothing) {
  const json cache = CreateCache();
  const std::string name = cache["name"];
  const json before = List();
  const auto expect_invalid = [&](const Answer& a, const std::string& field) {
    const std::string message = ExpectError(a, 400, "INVALID_ARGUMENT");
    EXPECT_NE(message.find(field), std::string::npos) << message;
  };
  for (const char* ttl : {"10m", "-5s", "3600", "1.5s", "30s", "604801s", "abc"}) {
    expect_invalid(Call("POST", "/v1beta/cachedContents", CacheBody(ttl)), "ttl");
    expect_invalid(Call("PATCH", "/v1beta/" + name + "?updateMask=ttl", {{"ttl", ttl}}), "ttl");
  }
  for (const std::string& at :
       std::vector<std::string>{"tomorrow", "2026-13-01T00:00:00Z", "2000-01-01T00:00:00Z",
                                http::FormatTimestamp(Ms(cache["createTime"]) + 8 * 86400000LL)}) {
    json body = CacheBody();
    body.erase("ttl");
    body["expireTime"] = at;
    expect_invalid(Call("POST", "/v1beta/cachedContents", body), "expireTime");
    expect_invalid(
        Call("PATCH", "/v1beta/" + name + "?updateMask=expireTime", {{"expireTime", at}}),
        "expireTime");
  }
  json both = CacheBody();
  both["expireTime"] = http::FormatTimestamp(Ms(cache["createTime"]) + 86400000);
  expect_invalid(Call("POST", "/v1beta/cachedContents", both), "expireTime");
  expect_invalid(
      Call("PATCH", "/v1beta/" + name + "?updateMask=displayName", {{"displayName", "x"}}),
      "updateMask");
  expect_invalid(Call("PATCH", "/v1beta/" + name + "?updateMask=ttl", {{"expireTime", "x"}}),
                 "ttl");
  json role = CacheBody();
  role["contents"][0]["role"] = "system";
  expect_invalid(Call("POST", "/v1beta/cachedContents", role), "contents[0].role");
  json image = CacheBody();
  image["contents"][0]["parts"][0] = {{"inlineData", {{"mimeType", "image/png"}}}};
  expect_invalid(Call("POST", "/v1beta/cachedContents", image), "contents[0].parts[0]");
  expect_invalid(Call("POST", "/v1beta/cachedContents", json("{not json")), "JSON");
  json model = CacheBody();
  model["model"] = "models/gemini-2.0-flash";
  ExpectError(Call("POST", "/v1beta/cachedContents", model), 404, "NOT_FOUND");
  expect_invalid(Call("POST", "/v1beta/models/tiny-8k:generateContent",
                      {{"contents", json::array()}, {"cachedContent", name}}),
                 "contents");
  json model_first = GenerateBody(name);
  model_first["contents"][0]["role"] = "model";
  expect_invalid(Call("POST", "/v1beta/models/tiny-8k:generateContent", model_first),
                 "contents[0].role");
  json config = GenerateBody(name);
  config["generationConfig"]["maxOutputTokens"] = "many";
  expect_invalid(Call("POST", "/v1beta/models/tiny-8k:generateContent", config),
                 "generationConfig.maxOutputTokens");

  const json after = List();
  EXPECT_EQ(after, before);
  EXPECT_EQ(Call("GET", "/v1beta/" + name).j, cache);
}

TEST_F(GeminiApiTest, AnotherTenantsCacheIsNotFound) {
  const json cache = CreateCache();
  const std::string name = cache["name"];
  const json before = List();
  ExpectError(Call("GET", "/v1beta/" + name, nullptr, kBob), 404, "NOT_FOUND");
  ExpectError(Call("PATCH", "/v1beta/" + name + "?updateMask=ttl", {{"ttl", "7200s"}}, kBob), 404,
              "NOT_FOUND");
  ExpectError(Call("DELETE", "/v1beta/" + name, nullptr, kBob), 404, "NOT_FOUND");
  ExpectError(Call("POST", "/v1beta/models/tiny-8k:generateContent", GenerateBody(name), kBob), 404,
              "NOT_FOUND");
  ExpectError(Call("POST", "/v1beta/models/tiny-8k:streamGenerateContent?alt=sse",
                   GenerateBody(name), kBob),
              404, "NOT_FOUND");
  EXPECT_TRUE(List(kBob)["cachedContents"].empty());
  EXPECT_EQ(List(), before);
  EXPECT_EQ(Call("GET", "/v1beta/" + name).j, cache);
}

TEST_F(GeminiApiTest, WrongAndMissingKeysAreUnauthenticated) {
  const json cache = CreateCache();
  const json before = List();
  for (const std::string& key : {std::string(), std::string("wrong-key-0123456789abcdef")}) {
    ExpectError(Call("POST", "/v1beta/cachedContents", CacheBody(), key), 401, "UNAUTHENTICATED");
    ExpectError(Call("GET", "/v1beta/cachedContents", nullptr, key), 401, "UNAUTHENTICATED");
    ExpectError(Call("DELETE", "/v1beta/" + cache["name"].get<std::string>(), nullptr, key), 401,
                "UNAUTHENTICATED");
    ExpectError(Call("POST", "/v1beta/models/tiny-8k:generateContent", GenerateBody(""), key), 401,
                "UNAUTHENTICATED");
  }
  ExpectError(Call("GET", "/v1beta/cachedContents?key=wrong-key-0123456789abcdef", nullptr, ""),
              401, "UNAUTHENTICATED");
  EXPECT_EQ(List(), before);
}

}  // namespace
}  // namespace kvtier
