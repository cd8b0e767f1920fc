// The Anthropic dialect of kvtierd's HTTP API as bytes on the wire: the SSE
// event sequence, bad input (each refused with its type and status, nothing
// recorded), limits, and a client that hangs up mid-stream. The SDK's view is
// tests/http/anthropic_sdk_test.py.
#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "proto/client.h"
#include "server/context_api.h"
#include "server/http/http_dialect.h"
#include "tests/server/daemon_client.h"
#include "tests/server/daemon_process.h"

namespace kvtier {
namespace {

using nlohmann::json;
using testing::ClientFor;
using testing::DaemonProcess;
using testing::TempDir;

constexpr char kAliceKey[] = "alice-key-0123456789abcdef";
constexpr char kAdminKey[] = "admin-key-0123456789abcdef";

class HttpAnthropicTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(TempDir("http_anthropic"));
    std::filesystem::create_directories(*dir_);
    std::ofstream(*dir_ + "/keys") << kAliceKey << " alice\n" << kAdminKey << " ops admin\n";
    daemon_ = new DaemonProcess();
    ASSERT_TRUE(
        daemon_->Start(*dir_ + "/data",
                       {"--model-preset", "tiny-8k", "--api-keys", *dir_ + "/keys", "--http-listen",
                        "127.0.0.1:0", "--http-max-body-bytes", "64K", "--metrics-listen", ""}))
        << daemon_->exit_code();
    port_ = testing::HttpPortOf(*daemon_, kAdminKey);
    ASSERT_GT(port_, 0);
  }
  static void TearDownTestSuite() {
    EXPECT_EQ(daemon_->Stop(SIGTERM), 0);
    delete daemon_;
    std::filesystem::remove_all(*dir_);
    delete dir_;
  }

  httplib::Client Http() {
    httplib::Client c("127.0.0.1", port_);
    c.set_read_timeout(120, 0);
    return c;
  }
  static httplib::Headers Key() { return {{"x-api-key", kAliceKey}}; }

  // Requests recorded in the ledger for alice.
  uint64_t Billed() {
    auto client = ClientFor(*daemon_, kAliceKey);
    v1::BillingReportRequest req;
    req.set_tenant("alice");
    Result<v1::BillingReportResponse> r = client->BillingReport(req);
    EXPECT_TRUE(r.ok()) << r.status();
    uint64_t n = 0;
    for (const auto& row : r->rows()) {
      if (row.group() != "total") n += row.requests();
    }
    return n;
  }

  static std::string* dir_;
  static DaemonProcess* daemon_;
  static int port_;
};

std::string* HttpAnthropicTest::dir_ = nullptr;
DaemonProcess* HttpAnthropicTest::daemon_ = nullptr;
int HttpAnthropicTest::port_ = 0;

json Body(bool stream) {
  return {{"model", "tiny-8k"},
          {"max_tokens", 6},
          {"temperature", 0},
          {"stream", stream},
          {"messages", {{{"role", "user"}, {"content", "Once upon a time"}}}}};
}

// The event names of an SSE body, in order, and each event's data.
std::vector<std::pair<std::string, json>> Events(const std::string& body) {
  std::vector<std::pair<std::string, json>> out;
  size_t at = 0;
  while (at < body.size()) {
    const size_t end = body.find("\n\n", at);
    if (end == std::string::npos) break;
    const std::string event = body.substr(at, end - at);
    at = end + 2;
    const size_t nl = event.find('\n');
    EXPECT_EQ(event.rfind("event: ", 0), 0u) << event;
    EXPECT_EQ(event.compare(nl + 1, 6, "data: "), 0) << event;
    out.emplace_back(event.substr(7, nl - 7), json::parse(event.substr(nl + 7)));
  }
  EXPECT_EQ(at, body.size()) << "the body ends with a whole event";
  return out;
}

TEST_F(HttpAnthropicTest, TheStreamIsAnthropicsEventSequenceWithTheSameTextAndUsage) {
  httplib::Client c = Http();
  auto unary = c.Post("/v1/messages", Key(), Body(false).dump(), "application/json");
  ASSERT_TRUE(unary);
  ASSERT_EQ(unary->status, 200) << unary->body;
  const json message = json::parse(unary->body);

  auto streamed = c.Post("/v1/messages", Key(), Body(true).dump(), "application/json");
  ASSERT_TRUE(streamed);
  ASSERT_EQ(streamed->status, 200) << streamed->body;
  EXPECT_EQ(streamed->get_header_value("Content-Type"), "text/event-stream");
  const auto events = Events(streamed->body);
  ASSERT_GE(events.size(), 5u);
  std::vector<std::string> names;
  std::string text;
  for (const auto& [name, data] : events) {
    if (name == "ping") continue;
    EXPECT_EQ(data["type"], name);
    names.push_back(name);
    if (name == "content_block_delta") {
      EXPECT_EQ(data["delta"]["type"], "text_delta");
      text += data["delta"]["text"].get<std::string>();
    }
  }
  EXPECT_EQ(names.front(), "message_start");
  EXPECT_EQ(names[1], "content_block_start");
  EXPECT_EQ(names[names.size() - 3], "content_block_stop");
  EXPECT_EQ(names[names.size() - 2], "message_delta");
  EXPECT_EQ(names.back(), "message_stop");
  EXPECT_EQ(text, message["content"][0]["text"]);
  const json& start = events.front().second["message"];
  EXPECT_EQ(start["usage"]["input_tokens"].get<uint64_t>() +
                start["usage"]["cache_read_input_tokens"].get<uint64_t>(),
            message["usage"]["input_tokens"].get<uint64_t>() +
                message["usage"]["cache_read_input_tokens"].get<uint64_t>());
  const json& delta = events[events.size() - 2].second;
  EXPECT_EQ(delta["usage"]["output_tokens"], message["usage"]["output_tokens"]);
  EXPECT_EQ(delta["delta"]["stop_reason"], message["stop_reason"]);
}

TEST_F(HttpAnthropicTest, BadInputGetsItsTypeAndStatusAndRecordsNothing) {
  httplib::Client c = Http();
  const uint64_t billed = Billed();
  struct Case {
    std::string body;
    int status;
    std::string type;
    std::string names;  // what the message must name
  };
  json no_max = Body(false);
  no_max.erase("max_tokens");
  json wrong_type = Body(false);
  wrong_type["max_tokens"] = "six";
  json bad_role = Body(false);
  bad_role["messages"][0]["role"] = "tool";
  json empty = Body(false);
  empty["messages"] = json::array();
  json empty_content = Body(false);
  empty_content["messages"][0]["content"] = "";
  json image = Body(false);
  image["messages"][0]["content"] = {{{"type", "image"}, {"source", json::object()}}};
  json bad_ttl = Body(false);
  bad_ttl["system"] = {
      {{"type", "text"}, {"text", "x"}, {"cache_control", {{"type", "ephemeral"}, {"ttl", "2h"}}}}};
  json unknown_model = Body(false);
  unknown_model["model"] = "claude-opus-4";
  json tools = Body(false);
  tools["tools"] = {{{"name", "f"}}};
  const std::vector<Case> cases = {
      {"{not json", 400, "invalid_request_error", "JSON"},
      {"[1,2]", 400, "invalid_request_error", "object"},
      {no_max.dump(), 400, "invalid_request_error", "max_tokens"},
      {wrong_type.dump(), 400, "invalid_request_error", "max_tokens"},
      {bad_role.dump(), 400, "invalid_request_error", "messages[0].role"},
      {empty.dump(), 400, "invalid_request_error", "messages"},
      {empty_content.dump(), 400, "invalid_request_error", "messages[0].content"},
      {image.dump(), 400, "invalid_request_error", "messages[0].content[0].type"},
      {bad_ttl.dump(), 400, "invalid_request_error", "ttl"},
      {unknown_model.dump(), 404, "not_found_error", "claude-opus-4"},
      {tools.dump(), 400, "invalid_request_error", "tools"},
  };
  for (const Case& k : cases) {
    auto r = c.Post("/v1/messages", Key(), k.body, "application/json");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, k.status) << k.body << " -> " << r->body;
    const json e = json::parse(r->body, nullptr, false);
    ASSERT_TRUE(e.is_object()) << r->body;
    EXPECT_EQ(e["type"], "error");
    EXPECT_EQ(e["error"]["type"], k.type) << r->body;
    EXPECT_NE(e["error"]["message"].get<std::string>().find(k.names), std::string::npos) << r->body;
  }
  // No key, a wrong key: authentication_error 401.
  for (const httplib::Headers& h :
       {httplib::Headers{}, httplib::Headers{{"x-api-key", "not-a-key-0123456789"}}}) {
    auto r = c.Post("/v1/messages", h, Body(false).dump(), "application/json");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 401);
    EXPECT_EQ(json::parse(r->body)["error"]["type"], "authentication_error");
  }
  // A key acting for another tenant (header x-kvtier-tenant): permission_error 403.
  {
    httplib::Headers h = Key();
    h.emplace("x-kvtier-tenant", "ops");
    auto r = c.Post("/v1/messages", h, Body(false).dump(), "application/json");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 403) << r->body;
    EXPECT_EQ(json::parse(r->body)["error"]["type"], "permission_error");
    EXPECT_NE(r->body.find("ops"), std::string::npos) << r->body;
    h.find("x-kvtier-tenant")->second = "alice";  // its own tenant: allowed
    auto own = c.Post("/v1/messages/count_tokens", h,
                      R"({"model":"tiny-8k","messages":[{"role":"user","content":"hi"}]})",
                      "application/json");
    ASSERT_TRUE(own);
    EXPECT_EQ(own->status, 200) << own->body;
  }
  // A body over --http-max-body-bytes: 413.
  json big = Body(false);
  big["messages"][0]["content"] = std::string(100 * 1024, 'a');
  auto r = c.Post("/v1/messages", Key(), big.dump(), "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 413);
  EXPECT_EQ(Billed(), billed) << "refused requests are not recorded";
  // And a good one is, once.
  auto ok = c.Post("/v1/messages", Key(), Body(false).dump(), "application/json");
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 200);
  EXPECT_EQ(Billed(), billed + 1);
}

// A client that hangs up mid-stream cancels its engine request.
TEST_F(HttpAnthropicTest, AClientThatHangsUpMidStreamCancelsItsRequest) {
  auto client = ClientFor(*daemon_, kAdminKey);
  Result<v1::StatsResponse> before = client->Stats();
  ASSERT_TRUE(before.ok()) << before.status();
  json body = Body(true);
  body["max_tokens"] = 8000;
  body["metadata"] = {{"user_id", "u1"}};
  httplib::Client c = Http();
  size_t received = 0;
  httplib::Request req;
  req.method = "POST";
  req.path = "/v1/messages";
  req.headers = Key();
  req.headers.emplace("Content-Type", "application/json");
  req.body = body.dump();
  req.content_receiver = [&](const char*, size_t n, uint64_t, uint64_t) {
    received += n;
    return received < 2000;  // hang up after a few events
  };
  httplib::Response res;
  httplib::Error error = httplib::Error::Success;
  EXPECT_FALSE(c.send(req, res, error)) << "the client hung up";
  Result<v1::StatsResponse> after = before;
  for (int i = 0; i < 600; ++i) {
    after = client->Stats();
    ASSERT_TRUE(after.ok());
    if (after->engine().cancelled() > before->engine().cancelled() &&
        after->engine().running() == 0) {
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(after->engine().cancelled(), before->engine().cancelled() + 1);
  EXPECT_LT(after->engine().decode_tokens() - before->engine().decode_tokens(), 8000u);
}

TEST_F(HttpAnthropicTest, CountTokensModelsAndHealth) {
  httplib::Client c = Http();
  json count = Body(false);
  count.erase("max_tokens");
  auto r = c.Post("/v1/messages/count_tokens", Key(), count.dump(), "application/json");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_GT(json::parse(r->body)["input_tokens"].get<int>(), 3);
  auto models = c.Get("/v1/models", {{"anthropic-version", "2023-06-01"}});
  ASSERT_TRUE(models);
  EXPECT_EQ(json::parse(models->body)["data"][0]["type"], "model");
  EXPECT_EQ(json::parse(models->body)["data"][0]["id"], "tiny-8k");
  auto openai = c.Get("/v1/models");
  ASSERT_TRUE(openai);
  EXPECT_EQ(json::parse(openai->body)["object"], "list");
  auto health = c.Get("/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
}

// A streaming request that holds its stream slot until release() (the client
// stops reading, then hangs up).
class HeldStream {
 public:
  HeldStream(int port, const std::string& key) {
    thread_ = std::thread([this, port, key] {
      httplib::Client c("127.0.0.1", port);
      c.set_read_timeout(120, 0);
      json body = Body(true);
      body["max_tokens"] = 8000;
      httplib::Request req;
      req.method = "POST";
      req.path = "/v1/messages";
      req.headers = {{"x-api-key", key}, {"Content-Type", "application/json"}};
      req.body = body.dump();
      req.content_receiver = [this](const char*, size_t, uint64_t, uint64_t) {
        started_ = true;
        while (!release_) std::this_thread::sleep_for(std::chrono::milliseconds(5));
        return false;
      };
      httplib::Response res;
      httplib::Error error = httplib::Error::Success;
      c.send(req, res, error);
      if (!started_) status_ = res.status;
      started_ = true;
    });
    while (!started_) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ~HeldStream() { release(); }
  void release() {
    release_ = true;
    if (thread_.joinable()) thread_.join();
  }
  // The status when the request was refused instead of streaming (0: it streams).
  int refused_status() const { return status_; }

 private:
  std::atomic<bool> started_{false};
  std::atomic<bool> release_{false};
  std::atomic<int> status_{0};
  std::thread thread_;
};

// With every stream slot of a tenant taken, its next request is
// rate_limit_error 429; with every slot of the daemon taken, anyone's is
// overloaded_error 529. Neither is recorded; both pass once slots free up.
TEST(HttpAnthropicLimitsTest, ATenantAtItsLimitIs429AndAFullDaemonIs529) {
  const std::string dir = TempDir("http_anthropic_limits");
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/keys") << kAliceKey << " alice\n"
                               << kAdminKey << " ops admin\n"
                               << "carol-key-0123456789abcdef carol\n";
  DaemonProcess daemon;
  ASSERT_TRUE(daemon.Start(dir + "/data", {"--model-preset", "tiny-8k", "--api-keys", dir + "/keys",
                                           "--http-listen", "127.0.0.1:0", "--max-streams", "2",
                                           "--max-tenant-streams", "1", "--metrics-listen", ""}))
      << daemon.exit_code();
  const int port = testing::HttpPortOf(daemon, kAdminKey);
  ASSERT_GT(port, 0);
  httplib::Client c("127.0.0.1", port);
  c.set_read_timeout(120, 0);
  auto post = [&](const char* key) {
    return c.Post("/v1/messages", {{"x-api-key", key}}, Body(false).dump(), "application/json");
  };
  {
    HeldStream alice(port, kAliceKey);
    ASSERT_EQ(alice.refused_status(), 0);
    auto r = post(kAliceKey);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 429) << r->body;
    EXPECT_EQ(json::parse(r->body)["error"]["type"], "rate_limit_error");
    EXPECT_NE(r->body.find("tenant alice"), std::string::npos) << r->body;

    HeldStream ops(port, kAdminKey);
    ASSERT_EQ(ops.refused_status(), 0);
    r = post("carol-key-0123456789abcdef");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 529) << r->body;
    EXPECT_EQ(json::parse(r->body)["error"]["type"], "overloaded_error");
  }
  // The held streams hung up: their slots free up once the daemon notices.
  int status = 0;
  for (int i = 0; i < 200 && status != 200; ++i) {
    auto r = post("carol-key-0123456789abcdef");
    ASSERT_TRUE(r);
    status = r->status;
    if (status != 200) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(status, 200);
  EXPECT_EQ(daemon.Stop(SIGTERM), 0);
  std::filesystem::remove_all(dir);
}

// A request refused because the daemon is at --max-concurrent-requests is a
// 429 (retry later); one refused for its size stays a 400.
// Hostile input on every dialect, on a daemon with the default body limit
// (4 MiB): a body nested a million deep (copying or printing it recursed a
// frame a level: the worker's stack, and the daemon, died), bytes that are
// not UTF-8 echoed into an error (printing threw: an empty 500), and paths
// that would each have grown the request counters' label set.
TEST(HttpHostileInputTest, DeepBodiesBadBytesAndRandomPathsAreRefusedAndTheDaemonLives) {
  const std::string dir = TempDir("http_hostile");
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/keys") << kAliceKey << " alice\n";
  DaemonProcess d;
  ASSERT_TRUE(
      d.Start(dir + "/data", {"--model-preset", "tiny-8k", "--api-keys", dir + "/keys",
                              "--http-listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"}))
      << d.exit_code();
  const int port = testing::HttpPortOf(d, kAliceKey);
  ASSERT_GT(port, 0);
  httplib::Client c("127.0.0.1", port);
  c.set_read_timeout(120, 0);
  const httplib::Headers keys = {{"x-api-key", kAliceKey},
                                 {"Authorization", std::string("Bearer ") + kAliceKey},
                                 {"x-goog-api-key", kAliceKey}};

  const int depth = 1'000'000;
  const std::string deep = std::string(depth, '[') + std::string(depth, ']');
  const std::string messages =
      R"({"model":"tiny-8k","max_tokens":4,"messages":[{"role":)" + deep + R"(,"content":"x"}]})";
  const std::string gemini = R"({"contents":[{"role":)" + deep + R"(,"parts":[{"text":"x"}]}]})";
  const std::vector<std::pair<std::string, std::string>> posts = {
      {"/v1/messages", messages},
      {"/v1/messages/count_tokens", messages},
      {"/v1/chat/completions", messages},
      {"/v1/completions", R"({"model":"tiny-8k","max_tokens":4,"prompt":)" + deep + "}"},
      {"/v1beta/models/tiny-8k:generateContent", gemini},
      {"/v1beta/models/tiny-8k:streamGenerateContent?alt=sse", gemini},
      {"/v1beta/cachedContents", R"({"model":"models/tiny-8k","contents":[{"role":)" + deep +
                                     R"(,"parts":[{"text":"x"}]}]})"}};
  for (const auto& [path, body] : posts) {
    auto r = c.Post(path, keys, body, "application/json");
    ASSERT_TRUE(r) << path << ": " << httplib::to_string(r.error()) << " (did the daemon die?)";
    EXPECT_EQ(r->status, 400) << path << " -> " << r->body;
    EXPECT_NE(r->body.find("nests deeper than"), std::string::npos) << path << " -> " << r->body;
  }

  // A prompt over the model's context, streamed: refused with 400 before the
  // answer starts (it was a 200 and an error event on two dialects).
  std::string words;
  for (int i = 0; i < 12000; ++i) words += "x y ";
  const json text = words;
  const std::vector<std::pair<std::string, std::string>> too_long = {
      {"/v1/messages", R"({"model":"tiny-8k","max_tokens":4,"stream":true,"messages":[)"
                       R"({"role":"user","content":)" +
                           text.dump() + "}]}"},
      {"/v1/chat/completions", R"({"model":"tiny-8k","max_tokens":4,"stream":true,"messages":[)"
                               R"({"role":"user","content":)" +
                                   text.dump() + "}]}"},
      {"/v1beta/models/tiny-8k:streamGenerateContent?alt=sse",
       R"({"contents":[{"role":"user","parts":[{"text":)" + text.dump() + "}]}]}"}};
  for (const auto& [path, body] : too_long) {
    auto r = c.Post(path, keys, body, "application/json");
    ASSERT_TRUE(r) << path;
    EXPECT_EQ(r->status, 400) << path << " -> " << r->body.substr(0, 300);
    EXPECT_NE(r->body.find("context"), std::string::npos) << path << " -> " << r->body;
  }

  // Bytes that are not UTF-8, echoed into the error: still the error, in JSON.
  struct Bad {
    std::string method, path;
    httplib::Headers headers;
    std::string body;
    int status;
  };
  httplib::Headers other_tenant = keys;
  other_tenant.emplace("x-kvtier-tenant", "\xff\xfe");
  const std::vector<Bad> bad = {
      {"POST", "/v1beta/models/%FF:generateContent", keys,
       R"({"contents":[{"role":"user","parts":[{"text":"x"}]}]})", 404},
      {"GET", "/v1beta/cachedContents?pageToken=%FF", keys, "", 400},
      {"POST", "/v1/messages", other_tenant,
       R"({"model":"tiny-8k","max_tokens":4,"messages":[{"role":"user","content":"x"}]})", 403},
  };
  for (const Bad& b : bad) {
    auto r = b.method == "GET" ? c.Get(b.path, b.headers)
                               : c.Post(b.path, b.headers, b.body, "application/json");
    ASSERT_TRUE(r) << b.path;
    EXPECT_EQ(r->status, b.status) << b.path << " -> " << r->body;
    EXPECT_TRUE(json::parse(r->body, nullptr, false).is_object()) << b.path << " -> " << r->body;
  }

  // Paths no route names: the counters' labels stay a fixed set.
  for (int i = 0; i < 40; ++i) {
    auto r = c.Get("/v1beta/models/x:" + std::to_string(i), keys);
    ASSERT_TRUE(r);
  }
  ASSERT_TRUE(c.Get("/v1beta/models/x:%FF", keys));
  auto health = c.Get("/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);

  auto client = ClientFor(d, kAliceKey);
  Result<v1::HealthResponse> h = client->Health();
  ASSERT_TRUE(h.ok()) << h.status();
  const std::string m = h->metrics_listen();
  httplib::Client metrics(m.substr(0, m.rfind(':')), std::stoi(m.substr(m.rfind(':') + 1)));
  auto scrape = metrics.Get("/metrics");
  ASSERT_TRUE(scrape);
  std::set<std::string> endpoints;
  const std::string family = "kvtier_http_requests_total{endpoint=\"";
  for (size_t at = scrape->body.find(family); at != std::string::npos;
       at = scrape->body.find(family, at + 1)) {
    const size_t from = at + family.size();
    endpoints.insert(scrape->body.substr(from, scrape->body.find('"', from) - from));
  }
  const std::set<std::string> fixed = {"GET /health",
                                       "GET /v1beta/cachedContents",
                                       "POST /v1/messages",
                                       "POST /v1/messages/count_tokens",
                                       "POST /v1/chat/completions",
                                       "POST /v1/completions",
                                       "POST /v1beta/models/{model}:generateContent",
                                       "POST /v1beta/models/{model}:streamGenerateContent",
                                       "POST /v1beta/cachedContents",
                                       "other"};
  for (const std::string& e : endpoints) EXPECT_EQ(fixed.count(e), 1u) << "endpoint label " << e;
  EXPECT_EQ(endpoints.count("other"), 1u);
  EXPECT_EQ(d.Stop(SIGTERM), 0);
  std::filesystem::remove_all(dir);
}

TEST(HttpErrorsTest, BusyIsA429AndTooBigIsA400) {
  const grpc::Status busy(grpc::StatusCode::RESOURCE_EXHAUSTED, "at the limit", kBusyDetail);
  const grpc::Status too_big(grpc::StatusCode::RESOURCE_EXHAUSTED, "prompt too long");
  EXPECT_EQ(http::HttpStatusOf(http::ErrorOf(busy).kind), 429);
  EXPECT_EQ(http::ErrorOf(busy).message, "at the limit");
  EXPECT_EQ(http::HttpStatusOf(http::ErrorOf(too_big).kind), 400);
}

}  // namespace
}  // namespace kvtier
