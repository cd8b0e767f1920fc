// Integration tests of inference through kvtierd: a real daemon process with
// a real model, driven through gRPC and the kvtier CLI.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "proto/client.h"
#include "tests/server/daemon_client.h"
#include "tests/server/daemon_process.h"
#include "tests/shared_data.h"

namespace kvtier {
namespace {

using testing::ClientFor;
using testing::DaemonProcess;
using testing::RunTool;
using testing::TempDir;

TEST(GenerateTest, Stories260KGreedyThroughTheCliMatchesTheGoldenOutput) {
  SKIP_WITHOUT_STORIES260K();
  const Result<GreedyGolden> golden = LoadStories260KGolden();
  ASSERT_TRUE(golden.ok()) << golden.status();
  const std::string dir = TempDir("generate_golden");
  DaemonProcess d;
  ASSERT_TRUE(d.Start(dir, {"--model", Stories260KCheckpoint(), "--no-flash"})) << d.exit_code();
  std::string out;
  ASSERT_EQ(RunTool("kvtier",
                    {"--addr", d.address(), "generate", "--prompt", "", "--max-tokens", "256",
                     "--temperature", "0"},
                    &out),
            0)
      << out;
  EXPECT_EQ(out, golden->text + "\n");
  ASSERT_EQ(RunTool("kvtier",
                    {"--addr", d.address(), "--json", "generate", "--prompt", "", "--max-tokens",
                     "256", "--temperature", "0"},
                    &out),
            0);
  const nlohmann::json j = nlohmann::json::parse(out);
  EXPECT_EQ(j["token_ids"], nlohmann::json(golden->token_ids));
  EXPECT_EQ(j["finish_reason"], "length");
  EXPECT_EQ(j["prompt_tokens"], 1);
  EXPECT_EQ(d.Stop(SIGTERM), 0);
  std::filesystem::remove_all(dir);
}

class GenerateDaemonTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(TempDir("generate_suite"));
    daemon_ = new DaemonProcess();
    // No --model: kvtierd creates its default random-weight model.
    ASSERT_TRUE(daemon_->Start(*dir_, {"--dram-bytes", "128M"})) << daemon_->exit_code();
  }
  static void TearDownTestSuite() {
    EXPECT_EQ(daemon_->Stop(SIGTERM), 0);
    delete daemon_;
    std::filesystem::remove_all(*dir_);
    delete dir_;
  }
  void SetUp() override { client_ = ClientFor(*daemon_); }

  grpc::StatusCode Code(const v1::GenerateRequest& req) {
    v1::GenerateResponse resp;
    return client_->GenerateRaw(req, &resp).error_code();
  }

  static std::string* dir_;
  static DaemonProcess* daemon_;
  std::unique_ptr<Client> client_;
};

std::string* GenerateDaemonTest::dir_ = nullptr;
DaemonProcess* GenerateDaemonTest::daemon_ = nullptr;

// Generate streams: one message per batch of new tokens as they are
// sampled, then a last one with the rest (finish, usage) and no tokens.
TEST_F(GenerateDaemonTest, TokensStreamAndTheLastMessageCarriesTheUsage) {
  v1::GenerateRequest req;
  for (int i = 1; i <= 40; ++i) req.add_token_ids(i);
  req.set_max_tokens(12);
  req.set_ignore_eos(true);
  auto ctx = client_->NewContext();
  auto reader = client_->context_cache().Generate(ctx.get(), req);
  std::vector<v1::GenerateResponse> parts;
  for (v1::GenerateResponse m; reader->Read(&m);) parts.push_back(m);
  ASSERT_TRUE(reader->Finish().ok());
  ASSERT_GE(parts.size(), 2u);
  int tokens = 0;
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    EXPECT_GT(parts[i].token_ids_size(), 0);
    EXPECT_TRUE(parts[i].finish_reason().empty());
    tokens += parts[i].token_ids_size();
  }
  EXPECT_EQ(tokens, 12);
  const v1::GenerateResponse& last = parts.back();
  EXPECT_EQ(last.token_ids_size(), 0);
  EXPECT_EQ(last.finish_reason(), "length");
  EXPECT_EQ(last.usage().output_tokens(), 12u);
  EXPECT_EQ(last.usage().input_tokens() + last.usage().cache_read_input_tokens(), 40u);
  // An unknown model is refused by name.
  req.set_model("llama-70b");
  v1::GenerateResponse resp;
  grpc::Status s = client_->GenerateRaw(req, &resp);
  EXPECT_EQ(s.error_code(), grpc::NOT_FOUND);
  EXPECT_NE(s.error_message().find("unknown model 'llama-70b'"), std::string::npos);
}

// A stop string ends generation before it: the text stops where the string
// would start, the string is named, and the request is not run to max_tokens.
TEST_F(GenerateDaemonTest, AStopSequenceEndsTheTextBeforeIt) {
  v1::GenerateRequest req;
  req.set_prompt("Once upon a time");
  req.set_max_tokens(48);
  req.set_ignore_eos(true);
  auto free_run = client_->Generate(req);
  ASSERT_TRUE(free_run.ok()) << free_run.status();
  const std::string text = free_run->text();
  ASSERT_GE(text.size(), 8u) << text;
  const std::string stop = text.substr(text.size() / 2, 2);
  const std::string expected = text.substr(0, text.find(stop));
  req.add_stop_sequences(stop);
  req.add_stop_sequences("\x01never appears");
  auto stopped = client_->Generate(req);
  ASSERT_TRUE(stopped.ok()) << stopped.status();
  EXPECT_EQ(stopped->text(), expected);
  EXPECT_EQ(stopped->finish_reason(), "stop_sequence");
  EXPECT_EQ(stopped->stop_sequence(), stop);
  // How many tokens the engine generated before the cancellation reached it
  // depends on timing; the text and the reason do not.
  // Bad stop strings are refused by name.
  v1::GenerateRequest bad = req;
  bad.add_stop_sequences("");
  v1::GenerateResponse resp;
  grpc::Status s = client_->GenerateRaw(bad, &resp);
  EXPECT_EQ(s.error_code(), grpc::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("stop sequence"), std::string::npos) << s.error_message();
}

// A client that goes away mid-stream cancels its request: the engine stops
// generating for it long before max_tokens (8,000 tokens take seconds; the
// daemon notices the cancellation at its next message).
TEST(GenerateCancelTest, AClientThatGoesAwayCancelsItsRequest) {
  const std::string dir = TempDir("generate_cancel");
  DaemonProcess d;
  ASSERT_TRUE(d.Start(dir, {"--model-preset", "tiny-8k", "--no-flash"})) << d.exit_code();
  std::unique_ptr<Client> client = ClientFor(d);
  auto before = client->Stats();
  ASSERT_TRUE(before.ok()) << before.status();
  v1::GenerateRequest req;
  for (int i = 1; i <= 10; ++i) req.add_token_ids(i);
  req.set_max_tokens(8000);
  req.set_ignore_eos(true);
  auto ctx = client->NewContext();
  auto reader = client->context_cache().Generate(ctx.get(), req);
  v1::GenerateResponse first;
  ASSERT_TRUE(reader->Read(&first));
  ctx->TryCancel();
  (void)reader->Finish();
  // The daemon notices and the engine retires the request.
  Result<v1::StatsResponse> after = before;
  for (int i = 0; i < 600; ++i) {
    after = client->Stats();
    ASSERT_TRUE(after.ok()) << after.status();
    if (after->engine().cancelled() > before->engine().cancelled() &&
        after->engine().running() == 0) {
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(after->engine().cancelled(), before->engine().cancelled() + 1);
  EXPECT_EQ(after->engine().running(), 0);
  EXPECT_LT(after->engine().decode_tokens() - before->engine().decode_tokens(), 8000u);
  EXPECT_EQ(d.Stop(SIGTERM), 0);
  std::filesystem::remove_all(dir);
}

TEST_F(GenerateDaemonTest, TheDefaultModelServesAndASharedPrefixIsReadFromTheCache) {
  EXPECT_TRUE(std::filesystem::exists(*dir_ + "/models/tiny-8k/config.json"));
  EXPECT_TRUE(std::filesystem::exists(*dir_ + "/models/tiny-8k/tokenizer.bin"));
  std::string text;
  for (int i = 0; i < 14; ++i) text += "the quick brown fox " + std::to_string(i) + " jumps; ";
  v1::GenerateRequest req;
  req.set_prompt(text);
  req.set_max_tokens(8);
  req.set_ignore_eos(true);
  auto first = client_->Generate(req);
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_GE(first->prompt_tokens(), 128u);
  EXPECT_EQ(first->cached_tokens(), 0u);
  EXPECT_GE(first->cache_write_blocks(), first->prompt_tokens() / 64);
  EXPECT_EQ(first->token_ids_size(), 8);
  EXPECT_EQ(first->finish_reason(), "length");
  EXPECT_EQ(first->model().rfind("tiny-8k@", 0), 0u) << first->model();

  auto second = client_->Generate(req);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->cached_tokens(), (first->prompt_tokens() - 1) / 64 * 64);
  EXPECT_EQ(std::vector<int>(second->token_ids().begin(), second->token_ids().end()),
            std::vector<int>(first->token_ids().begin(), first->token_ids().end()));
  EXPECT_EQ(second->text(), first->text());

  // Another tenant shares nothing (a different cache salt).
  req.set_tenant("someone-else");
  auto other = client_->Generate(req);
  ASSERT_TRUE(other.ok());
  EXPECT_EQ(other->cached_tokens(), 0u);

  auto stats = client_->Stats();
  ASSERT_TRUE(stats.ok());
  ASSERT_TRUE(stats->has_engine());
  EXPECT_GE(stats->engine().requests(), 3u);
  EXPECT_GE(stats->engine().cached_tokens(), second->cached_tokens());
  EXPECT_EQ(stats->engine().running(), 0);
}

// 64 Generates at once (the engine's batch) are all served, and Health
// answers while they run: a stream holds a server thread, and the default
// limits leave threads for all of them and for unary calls.
// 256 Generates from one client are all served: none holds up another for
// a server thread (one connection carries 128 at a time; the test below
// holds 256 at once on four).
TEST_F(GenerateDaemonTest, TwoHundredFiftySixConcurrentGeneratesAreAllServed) {
  constexpr int kClients = 256;
  std::vector<std::thread> threads;
  std::vector<grpc::Status> results(kClients);
  for (int c = 0; c < kClients; ++c) {
    threads.emplace_back([&, c] {
      v1::GenerateRequest req;
      for (int i = 1; i <= 8; ++i) req.add_token_ids((c * 8 + i) % 500 + 1);
      req.set_max_tokens(8);
      req.set_ignore_eos(true);
      v1::GenerateResponse resp;
      results[c] = client_->GenerateRaw(req, &resp);
    });
  }
  auto health = client_->Health();
  for (auto& t : threads) t.join();
  EXPECT_TRUE(health.ok()) << health.status();
  for (int c = 0; c < kClients; ++c) {
    EXPECT_TRUE(results[c].ok()) << "client " << c << ": " << results[c].error_message();
  }
}

// Past --max-concurrent-requests a Generate is refused at once with a clear
// RESOURCE_EXHAUSTED (nothing queued); once one ends, the next is served.
TEST(GenerateLimitTest, RequestsPastTheLimitAreRefusedAtOnce) {
  const std::string dir = TempDir("generate_limit");
  DaemonProcess d;
  ASSERT_TRUE(d.Start(dir, {"--model-preset", "tiny-8k", "--no-flash", "--dram-bytes", "64M",
                            "--max-concurrent-requests", "2"}))
      << d.exit_code();
  std::unique_ptr<Client> client = ClientFor(d);
  v1::GenerateRequest long_req;
  for (int i = 1; i <= 10; ++i) long_req.add_token_ids(i);
  long_req.set_max_tokens(8000);
  long_req.set_ignore_eos(true);
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  std::vector<std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>>> running;
  for (int i = 0; i < 2; ++i) {
    contexts.push_back(client->NewContext());
    running.push_back(client->context_cache().Generate(contexts.back().get(), long_req));
    v1::GenerateResponse first;
    ASSERT_TRUE(running.back()->Read(&first));  // generating now
  }
  v1::GenerateRequest short_req;
  for (int i = 1; i <= 4; ++i) short_req.add_token_ids(i);
  short_req.set_max_tokens(2);
  v1::GenerateResponse resp;
  const grpc::Status refused = client->GenerateRaw(short_req, &resp);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_NE(refused.error_message().find("limit of 2 generation requests"), std::string::npos)
      << refused.error_message();
  for (auto& c : contexts) c->TryCancel();
  for (auto& r : running) (void)r->Finish();
  // The cancelled requests leave the engine, and their slots free up.
  grpc::Status served = client->GenerateRaw(short_req, &resp);
  for (int i = 0; i < 200 && !served.ok(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
    served = client->GenerateRaw(short_req, &resp);
  }
  EXPECT_TRUE(served.ok()) << served.error_message();
  EXPECT_EQ(d.Stop(SIGTERM), 0);
  std::filesystem::remove_all(dir);
}

// --max-concurrent-requests (256 by default) generation streams are held at
// once when clients bring them on enough connections (one connection carries
// --max-streams-per-connection, 128, and queues the rest in the client): the
// engine holds all 256 and the 257th is refused at once.
TEST(GenerateStreamsTest, TwoHundredFiftySixStreamsAreHeldAtOnceAndThe257thIsRefused) {
  const std::string dir = TempDir("generate_streams");
  DaemonProcess d;
  ASSERT_TRUE(d.Start(dir, {"--no-flash", "--dram-bytes", "64M"})) << d.exit_code();
  constexpr int kStreams = 256, kConnections = 4;
  std::vector<std::unique_ptr<Client>> clients;
  for (int c = 0; c < kConnections; ++c)
    clients.push_back(ClientFor(d, "", /*own_connection=*/true));
  v1::GenerateRequest long_req;
  for (int i = 1; i <= 10; ++i) long_req.add_token_ids(i);
  long_req.set_max_tokens(8000);
  long_req.set_ignore_eos(true);
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  std::vector<std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>>> streams;
  for (int i = 0; i < kStreams; ++i) {
    Client& c = *clients[i % kConnections];
    contexts.push_back(c.NewContext());
    streams.push_back(c.context_cache().Generate(contexts.back().get(), long_req));
  }
  int held = 0;
  for (int i = 0; i < 600 && held < kStreams; ++i) {
    Result<v1::StatsResponse> stats = clients[0]->Stats();
    ASSERT_TRUE(stats.ok()) << stats.status();
    held = stats->engine().running() + stats->engine().waiting();
    if (held < kStreams) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(held, kStreams);
  v1::GenerateRequest short_req;
  for (int i = 1; i <= 4; ++i) short_req.add_token_ids(i);
  short_req.set_max_tokens(2);
  v1::GenerateResponse resp;
  const grpc::Status refused = clients[0]->GenerateRaw(short_req, &resp);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << refused.error_message();
  for (auto& c : contexts) c->TryCancel();
  for (auto& s : streams) (void)s->Finish();
  EXPECT_EQ(d.Stop(SIGTERM), 0);
  std::filesystem::remove_all(dir);
}

TEST_F(GenerateDaemonTest, SeededSamplingIsReproducible) {
  v1::GenerateRequest req;
  req.add_token_ids(1);
  req.add_token_ids(300);
  req.set_max_tokens(12);
  req.set_temperature(1.0f);
  req.set_top_p(0.9f);
  req.set_seed(1234);
  req.set_ignore_eos(true);
  auto a = client_->Generate(req);
  auto b = client_->Generate(req);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->token_ids_size(), 12);
  EXPECT_EQ(std::vector<int>(a->token_ids().begin(), a->token_ids().end()),
            std::vector<int>(b->token_ids().begin(), b->token_ids().end()));
}

TEST_F(GenerateDaemonTest, BadRequestsAreRefusedAndChangeNothing) {
  const uint64_t before = client_->Stats()->engine().requests();
  v1::GenerateRequest none;
  EXPECT_EQ(Code(none), grpc::StatusCode::INVALID_ARGUMENT);
  v1::GenerateRequest both;
  both.set_prompt("hi");
  both.add_token_ids(1);
  EXPECT_EQ(Code(both), grpc::StatusCode::INVALID_ARGUMENT);
  v1::GenerateRequest bad_id;
  bad_id.add_token_ids(1);
  bad_id.add_token_ids(1 << 20);
  EXPECT_EQ(Code(bad_id), grpc::StatusCode::INVALID_ARGUMENT);
  v1::GenerateRequest negative;
  negative.add_token_ids(-5);
  EXPECT_EQ(Code(negative), grpc::StatusCode::INVALID_ARGUMENT);
  v1::GenerateRequest long_output;
  long_output.add_token_ids(1);
  long_output.set_max_tokens(1 << 30);
  EXPECT_EQ(Code(long_output), grpc::StatusCode::INVALID_ARGUMENT);
  v1::GenerateRequest hot;
  hot.add_token_ids(1);
  hot.set_temperature(-2);
  EXPECT_EQ(Code(hot), grpc::StatusCode::INVALID_ARGUMENT);
  v1::GenerateRequest huge;
  huge.set_prompt(std::string((1 << 20) + 1, 'a'));
  EXPECT_EQ(Code(huge), grpc::StatusCode::RESOURCE_EXHAUSTED);
  v1::GenerateRequest past_context;  // the default model's context is 8,192 tokens
  for (int i = 0; i < 9000; ++i) past_context.add_token_ids(5);
  EXPECT_EQ(Code(past_context), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(client_->Stats()->engine().requests(), before);
}

TEST(GenerateProcessTest, ADaemonWithoutAnEngineRefusesGenerate) {
  const std::string dir = TempDir("generate_noengine");
  DaemonProcess d;
  ASSERT_TRUE(d.Start(dir, {"--no-engine"})) << d.exit_code();
  auto client = ClientFor(d);
  v1::GenerateRequest req;
  req.add_token_ids(1);
  auto r = client->Generate(req);
  EXPECT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("UNIMPLEMENTED"), std::string::npos) << r.status();
  auto stats = client->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_FALSE(stats->has_engine());
  EXPECT_FALSE(std::filesystem::exists(dir + "/models"));
  EXPECT_EQ(d.Stop(SIGTERM), 0);
  std::filesystem::remove_all(dir);
}

TEST(GenerateProcessTest, AnUnloadableModelStopsTheDaemonWithAClearError) {
  const std::string dir = TempDir("generate_badmodel");
  std::filesystem::create_directories(dir + "/model");
  std::ofstream(dir + "/model/broken.bin") << "not a checkpoint";
  DaemonProcess d;
  EXPECT_FALSE(d.Start(dir + "/data", {"--model", dir + "/model/broken.bin"}));
  EXPECT_NE(d.exit_code(), 0);
  DaemonProcess missing;
  EXPECT_FALSE(missing.Start(dir + "/data2", {"--model", dir + "/nothing-here"}));
  std::filesystem::remove_all(dir);
}

}  // namespace
// The context-caching API over a real socket (DESIGN §6), on a random-weight
// model with an 8K context: breakpoints, usage with exact numbers, tenants,
// bad input.
class ContextCachingApiTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(TempDir("context_caching"));
    daemon_ = new DaemonProcess();
    ASSERT_TRUE(daemon_->Start(*dir_, {"--model-preset", "tiny-8k", "--dram-bytes", "256M",
                                       "--kv-bytes", "64M", "--min-cacheable-tokens", "1024"}))
        << daemon_->exit_code();
  }
  static void TearDownTestSuite() {
    EXPECT_EQ(daemon_->Stop(SIGTERM), 0);
    delete daemon_;
    std::filesystem::remove_all(*dir_);
    delete dir_;
  }
  void SetUp() override { client_ = ClientFor(*daemon_); }

  // A prompt of `n` token ids, different for each `seed`.
  static std::vector<int32_t> Prompt(size_t n, int seed) {
    std::vector<int32_t> p(n);
    for (size_t i = 0; i < n; ++i)
      p[i] = static_cast<int32_t>((i * 7919 + seed * 104729) % 509 + 1);
    return p;
  }
  // Segments split at `ends`, each marked with its TTL; the rest unmarked.
  static v1::GenerateRequest Request(const std::vector<int32_t>& prompt,
                                     const std::vector<std::pair<size_t, std::string>>& marks,
                                     const std::string& tenant = "") {
    v1::GenerateRequest req;
    size_t begin = 0;
    for (const auto& [end, ttl] : marks) {
      v1::Segment* s = req.add_segments();
      s->mutable_token_ids()->Add(prompt.begin() + begin, prompt.begin() + end);
      s->mutable_cache_control()->set_ttl(ttl);
      begin = end;
    }
    if (begin < prompt.size()) {
      req.add_segments()->mutable_token_ids()->Add(prompt.begin() + begin, prompt.end());
    }
    req.set_max_tokens(2);
    req.set_ignore_eos(true);
    req.set_tenant(tenant);
    return req;
  }
  v1::Usage UsageOf(const v1::GenerateRequest& req) {
    auto r = client_->Generate(req);
    EXPECT_TRUE(r.ok()) << r.status();
    if (!r.ok()) return {};
    const v1::Usage& u = r->usage();
    EXPECT_EQ(u.input_tokens() + u.cache_creation_input_tokens() + u.cache_read_input_tokens(),
              r->prompt_tokens())
        << "the parts sum to the prompt";
    EXPECT_EQ(u.cache_creation_input_tokens(), u.cache_creation().ephemeral_5m_input_tokens() +
                                                   u.cache_creation().ephemeral_1h_input_tokens());
    EXPECT_EQ(u.output_tokens(), 2u);
    return u;
  }

  static std::string* dir_;
  static DaemonProcess* daemon_;
  std::unique_ptr<Client> client_;
};

std::string* ContextCachingApiTest::dir_ = nullptr;
DaemonProcess* ContextCachingApiTest::daemon_ = nullptr;

TEST_F(ContextCachingApiTest, BreakpointsReportExactUsage) {
  const std::vector<int32_t> prompt = Prompt(5200, 1);
  const v1::GenerateRequest req = Request(prompt, {{3000, "1h"}, {5000, "5m"}});
  v1::Usage u = UsageOf(req);
  EXPECT_EQ(u.cache_creation().ephemeral_1h_input_tokens(), 3000u);
  EXPECT_EQ(u.cache_creation().ephemeral_5m_input_tokens(), 2000u);
  EXPECT_EQ(u.cache_read_input_tokens(), 0u);
  EXPECT_EQ(u.input_tokens(), 200u);
  u = UsageOf(req);
  EXPECT_EQ(u.cache_read_input_tokens(), 5000u);
  EXPECT_EQ(u.cache_creation_input_tokens(), 0u);
  EXPECT_EQ(u.input_tokens(), 200u);
  // A longer prompt sharing the prefix reads it and writes its own new part.
  std::vector<int32_t> longer = prompt;
  longer.resize(6000, 7);
  u = UsageOf(Request(longer, {{3000, "1h"}, {5000, "5m"}, {5800, "5m"}}));
  EXPECT_EQ(u.cache_read_input_tokens(), 5000u);
  EXPECT_EQ(u.cache_creation().ephemeral_5m_input_tokens(), 800u);
  EXPECT_EQ(u.input_tokens(), 200u);
}

TEST_F(ContextCachingApiTest, TenantsNeverHitEachOthersCache) {
  const std::vector<int32_t> prompt = Prompt(2100, 2);
  const auto marks = std::vector<std::pair<size_t, std::string>>{{2000, "5m"}};
  EXPECT_EQ(UsageOf(Request(prompt, marks, "alice")).cache_creation_input_tokens(), 2000u);
  const v1::Usage bob = UsageOf(Request(prompt, marks, "bob"));
  EXPECT_EQ(bob.cache_read_input_tokens(), 0u) << "another tenant's identical prompt misses";
  EXPECT_EQ(bob.cache_creation_input_tokens(), 2000u);
  EXPECT_EQ(UsageOf(Request(prompt, marks, "alice")).cache_read_input_tokens(), 2000u);
  EXPECT_EQ(UsageOf(Request(prompt, marks, "bob")).cache_read_input_tokens(), 2000u);
}

TEST_F(ContextCachingApiTest, BelowTheMinimumNothingIsCachedOrBilledAsCache) {
  const std::vector<int32_t> prompt = Prompt(900, 3);
  const v1::GenerateRequest req = Request(prompt, {{800, "1h"}});
  for (int i = 0; i < 2; ++i) {
    const v1::Usage u = UsageOf(req);
    EXPECT_EQ(u.input_tokens(), 900u);
    EXPECT_EQ(u.cache_creation_input_tokens() + u.cache_read_input_tokens(), 0u);
  }
}

TEST_F(ContextCachingApiTest, BadRequestsAreRefusedByNameAndChangeNothing) {
  const std::vector<int32_t> prompt = Prompt(3000, 4);
  auto before = client_->Stats();
  ASSERT_TRUE(before.ok());
  struct Case {
    v1::GenerateRequest req;
    grpc::StatusCode code;
    std::string says;
  };
  std::vector<Case> cases;
  cases.push_back({Request(prompt, {{1100, "5m"}, {2000, "1h"}}), grpc::INVALID_ARGUMENT,
                   "1h cache_control breakpoint may not follow a 5m"});
  cases.push_back(
      {Request(prompt, {{1100, "1h"}, {1200, "1h"}, {1300, "5m"}, {1400, "5m"}, {1500, "5m"}}),
       grpc::INVALID_ARGUMENT, "at most 4"});
  cases.push_back({Request(prompt, {{1100, "2h"}}), grpc::INVALID_ARGUMENT, "\"5m\" or \"1h\""});
  v1::GenerateRequest empty;
  empty.add_segments()->mutable_cache_control()->set_ttl("5m");
  cases.push_back({empty, grpc::INVALID_ARGUMENT, "exactly one of text and token_ids"});
  v1::GenerateRequest both = Request(prompt, {});
  both.add_token_ids(1);
  cases.push_back({both, grpc::INVALID_ARGUMENT, "exactly one of prompt, token_ids and segments"});
  v1::GenerateRequest huge;
  huge.add_segments()->set_text(std::string((1 << 20) + 1, 'a'));
  cases.push_back({huge, grpc::RESOURCE_EXHAUSTED, "exceeds the limit"});
  for (const Case& c : cases) {
    v1::GenerateResponse resp;
    grpc::Status s = client_->GenerateRaw(c.req, &resp);
    EXPECT_EQ(s.error_code(), c.code) << s.error_message();
    EXPECT_NE(s.error_message().find(c.says), std::string::npos) << s.error_message();
  }
  auto after = client_->Stats();
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->engine().requests(), before->engine().requests());
  EXPECT_EQ(after->inserts(), before->inserts());
}

// A scripted run of traffic for one tenant; the billing report (fields and
// all three renderings) equals the sum computed here from the usage each
// response reported, at the default prices, to the nano-dollar; a retried
// request id is billed once.
TEST_F(ContextCachingApiTest, TheBillingReportEqualsTheUsageOfEveryRequest) {
  const std::string tenant = "carol-" + std::to_string(::getpid());
  // Default prices per token in nano-dollars: input $3/MTok = 3000, 5m write
  // 1.25x = 3750, 1h write 2x = 6000, read 0.1x = 300, output $15/MTok = 15000.
  int64_t want_cost = 0, want_without = 0;
  uint64_t want_read = 0, want_prompt = 0;
  auto bill = [&](const v1::GenerateResponse& r) {
    const v1::Usage& u = r.usage();
    const int64_t cost = 3000 * int64_t(u.input_tokens()) +
                         3750 * int64_t(u.cache_creation().ephemeral_5m_input_tokens()) +
                         6000 * int64_t(u.cache_creation().ephemeral_1h_input_tokens()) +
                         300 * int64_t(u.cache_read_input_tokens()) +
                         15000 * int64_t(u.output_tokens());
    want_cost += cost;
    want_without += 3000 * int64_t(r.prompt_tokens()) + 15000 * int64_t(u.output_tokens());
    want_read += u.cache_read_input_tokens();
    want_prompt += r.prompt_tokens();
    return cost;
  };
  const std::vector<int32_t> doc = Prompt(3000, 5);
  std::vector<v1::GenerateRequest> script;
  script.push_back(Request(doc, {{2500, "1h"}}, tenant));
  script.push_back(Request(doc, {{2500, "1h"}}, tenant));
  script.push_back(Request(doc, {{1200, "1h"}, {2900, "5m"}}, tenant));
  std::vector<int32_t> other = Prompt(1500, 6);
  script.push_back(Request(other, {}, tenant));
  v1::GenerateRequest plain;
  plain.mutable_token_ids()->Add(other.begin(), other.end());
  plain.set_tenant(tenant);
  plain.set_max_tokens(3);
  script.push_back(plain);
  int n = 0;
  for (v1::GenerateRequest& req : script) {
    req.set_request_id("script-" + std::to_string(n++));
    auto r = client_->Generate(req);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->request_id(), req.request_id());
    const int64_t cost = bill(*r);
    char usd[32];
    std::snprintf(usd, sizeof usd, "%lld.%06lld", (long long)((cost + 500) / 1000 / 1000000),
                  (long long)((cost + 500) / 1000 % 1000000));
    EXPECT_EQ(r->cost_usd(), usd);
  }
  // A retry of the first request id: answered, not billed again.
  ASSERT_TRUE(client_->Generate(script[0]).ok());

  v1::BillingReportRequest q;
  q.set_tenant(tenant);
  q.set_group_by("model");
  q.set_format("json");
  auto rep = client_->BillingReport(q);
  ASSERT_TRUE(rep.ok()) << rep.status();
  ASSERT_EQ(rep->rows_size(), 1);
  EXPECT_EQ(rep->total().requests(), script.size());
  EXPECT_EQ(rep->total().cost_nanousd(), want_cost);
  EXPECT_EQ(rep->total().cost_without_cache_nanousd(), want_without);
  EXPECT_EQ(rep->total().savings_nanousd(), want_without - want_cost);
  EXPECT_EQ(rep->total().cache_read_input_tokens(), want_read);
  EXPECT_DOUBLE_EQ(rep->total().cache_hit_ratio(), double(want_read) / double(want_prompt));
  const nlohmann::json j = nlohmann::json::parse(rep->rendered());
  EXPECT_EQ(j["total"]["cost_nanousd"].get<int64_t>(), want_cost);
  // The CLI: table, CSV and JSON, by day.
  const std::string addr = "--addr=" + daemon_->address();
  std::string out;
  ASSERT_EQ(RunTool("kvtier",
                    {addr, "billing", "report", "--tenant", tenant, "--format", "csv", "--group-by",
                     "day"},
                    &out),
            0)
      << out;
  EXPECT_NE(out.find("total,"), std::string::npos) << out;
  char total_usd[32];
  std::snprintf(total_usd, sizeof total_usd, "%lld.%06lld",
                (long long)((want_cost + 500) / 1000 / 1000000),
                (long long)((want_cost + 500) / 1000 % 1000000));
  EXPECT_NE(out.find(total_usd), std::string::npos) << out << " lacks " << total_usd;
  ASSERT_EQ(RunTool("kvtier", {addr, "--json", "billing", "report", "--tenant", tenant}, &out), 0);
  EXPECT_EQ(nlohmann::json::parse(out)["total"]["cost_nanousd"].get<int64_t>(), want_cost);
  ASSERT_EQ(RunTool("kvtier", {addr, "billing", "report", "--tenant", tenant}, &out), 0);
  EXPECT_NE(out.find(total_usd), std::string::npos) << out;
  // Another tenant's report holds none of it; bad input is refused by name.
  q.set_tenant("nobody-" + std::to_string(::getpid()));
  auto none = client_->BillingReport(q);
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(none->total().requests(), 0u);
  q.set_group_by("week");
  v1::BillingReportResponse resp;
  grpc::Status bad = client_->billing().Report(client_->NewContext().get(), q, &resp);
  EXPECT_EQ(bad.error_code(), grpc::INVALID_ARGUMENT);
  EXPECT_NE(bad.error_message().find("group_by"), std::string::npos);
  EXPECT_EQ(RunTool("kvtier",
                    {addr, "billing", "report", "--tenant", tenant, "--from", "2026-13-01"}, &out),
            2);
}

// A daemon for the named-cache billing tests (its default price: storage at
// $1/MTok/h).
bool StartNamedCacheDaemon(const std::string& dir, DaemonProcess* d) {
  return d->Start(dir, {"--model-preset", "tiny-8k", "--dram-bytes", "128M", "--kv-bytes", "32M",
                        "--metrics-listen", ""});
}

// An hour-long cache of 1200 tokens for tenant acme.
v1::CreateCacheRequest HandbookRequest(const std::string& request_id) {
  v1::CreateCacheRequest req;
  req.set_tenant("acme");
  for (int i = 0; i < 1200; ++i) req.add_token_ids(i % 500 + 1);
  req.set_ttl_seconds(3600);
  req.set_request_id(request_id);
  return req;
}

// A CreateCache retried with its request_id (the answer was lost) returns
// the cache the first call created: one cache, its storage billed once.
TEST(NamedCacheApiTest, ACreateCacheRetriedWithItsRequestIdCreatesOneCache) {
  const std::string dir = TempDir("named_retry");
  DaemonProcess d;
  ASSERT_TRUE(StartNamedCacheDaemon(dir, &d)) << d.exit_code();
  auto c = ClientFor(d);
  v1::CreateCacheRequest req = HandbookRequest("create-handbook-1");
  v1::NamedCacheInfo first, retry, other;
  ASSERT_TRUE(c->context_cache().CreateCache(c->NewContext().get(), req, &first).ok());
  req.set_display_name("a retry may differ; the first call's cache is returned");
  ASSERT_TRUE(c->context_cache().CreateCache(c->NewContext().get(), req, &retry).ok());
  EXPECT_EQ(retry.name(), first.name());
  EXPECT_EQ(retry.expire_time_ms(), first.expire_time_ms());
  req.set_request_id("create-handbook-2");  // a new request is a new cache
  ASSERT_TRUE(c->context_cache().CreateCache(c->NewContext().get(), req, &other).ok());
  EXPECT_NE(other.name(), first.name());
  v1::ListCachesRequest list;
  list.set_tenant("acme");
  v1::ListCachesResponse caches;
  ASSERT_TRUE(c->context_cache().ListCaches(c->NewContext().get(), list, &caches).ok());
  EXPECT_EQ(caches.caches_size(), 2);
  v1::BillingReportRequest report;
  report.set_tenant("acme");
  auto billed = c->BillingReport(report);
  ASSERT_TRUE(billed.ok()) << billed.status();
  // Two caches of 1200 tokens for an hour at $1/MTok/h: $0.0012 each.
  EXPECT_EQ(billed->total().storage_nanousd(), 2 * 1'200'000);
  EXPECT_EQ(billed->total().input_tokens(), 2 * 1200u);
  EXPECT_EQ(d.Stop(SIGTERM), 0);
  std::filesystem::remove_all(dir);
}

// Every cache and every extension is billed, once, whatever request ids the
// client sends: a request id reused after its cache was deleted makes a new
// cache that is billed (the creation record was keyed by the client's id,
// so the ledger took it for a retry and dropped it); a client's id cannot
// take the place of kvtierd's own storage records ("storage/<name>/<time>"
// sent first made the extension's charge a duplicate); and concurrent
// extensions are charged for the time each added (each was charged for the
// whole extension from the same old expiry).
TEST(NamedCacheApiTest, EveryCacheAndEveryExtensionIsBilledOnce) {
  const std::string dir = TempDir("named_billing");
  DaemonProcess d;
  ASSERT_TRUE(StartNamedCacheDaemon(dir, &d)) << d.exit_code();
  auto c = ClientFor(d);
  v1::CreateCacheRequest req = HandbookRequest("handbook");
  v1::NamedCacheInfo first, second;
  ASSERT_TRUE(c->context_cache().CreateCache(c->NewContext().get(), req, &first).ok());
  v1::CacheRef ref;
  ref.set_tenant("acme");
  ref.set_name(first.name());
  v1::DeleteCacheResponse deleted;
  ASSERT_TRUE(c->context_cache().DeleteCache(c->NewContext().get(), ref, &deleted).ok());
  ASSERT_TRUE(c->context_cache().CreateCache(c->NewContext().get(), req, &second).ok());
  EXPECT_NE(second.name(), first.name());
  auto report = [&] {
    v1::BillingReportRequest r;
    r.set_tenant("acme");
    auto billed = c->BillingReport(r);
    EXPECT_TRUE(billed.ok()) << billed.status();
    return billed.ok() ? billed->total() : v1::BillingReportRow();
  };
  // Two caches of 1200 tokens for an hour at $1/MTok/h: $0.0012 each.
  EXPECT_EQ(report().input_tokens(), 2 * 1200u);
  EXPECT_EQ(report().storage_nanousd(), 2 * 1'200'000);

  // kvtierd's own record ids are not a client's to use.
  v1::GenerateRequest g;
  g.set_tenant("acme");
  g.add_token_ids(1);
  g.set_max_tokens(1);
  g.set_request_id("storage/" + second.name() + "/1");
  auto refused = c->Generate(g);
  EXPECT_EQ(refused.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(refused.status().message().find("request_id"), std::string::npos) << refused.status();
  req.set_request_id("create/x");
  v1::NamedCacheInfo info;
  EXPECT_EQ(c->context_cache().CreateCache(c->NewContext().get(), req, &info).error_code(),
            grpc::INVALID_ARGUMENT);

  // Eight concurrent extensions to two hours from now: about one hour more
  // in all (not eight).
  std::vector<std::thread> updates;
  std::atomic<int> ok{0};
  for (int i = 0; i < 8; ++i) {
    updates.emplace_back([&] {
      auto ci = ClientFor(d);
      v1::UpdateCacheRequest u;
      u.set_tenant("acme");
      u.set_name(second.name());
      u.set_ttl_seconds(7200);
      v1::NamedCacheInfo out;
      if (ci->context_cache().UpdateCache(ci->NewContext().get(), u, &out).ok()) ++ok;
    });
  }
  for (std::thread& t : updates) t.join();
  EXPECT_EQ(ok.load(), 8);
  const int64_t storage = report().storage_nanousd();
  // The extension: an hour and the seconds since the cache was made ($0.0012
  // an hour is 333 nano-USD a second).
  EXPECT_GE(storage, 3 * 1'200'000);
  EXPECT_LE(storage, 3 * 1'200'000 + 60 * 333) << "charged more than the time added";
  EXPECT_EQ(d.Stop(SIGTERM), 0);
  std::filesystem::remove_all(dir);
}

// Named caches over a real socket: created, used (billed as reads), durable
// across kill -9 and a restart, private to their tenant, gone after expiry.
TEST(NamedCacheApiTest, ANamedCacheSurvivesKill9AndIsGoneAfterItsTtl) {
  const std::string dir = TempDir("named_caches");
  const std::vector<std::string> args = {"--model-preset", "tiny-8k", "--dram-bytes", "128M",
                                         "--flash-bytes",  "64M",     "--kv-bytes",   "32M"};
  std::vector<int32_t> doc(1500), suffix(100);
  for (size_t i = 0; i < doc.size(); ++i) doc[i] = static_cast<int32_t>((i * 31) % 500 + 1);
  for (size_t i = 0; i < suffix.size(); ++i) suffix[i] = static_cast<int32_t>((i * 17) % 500 + 2);
  auto generate = [&](Client& c, const std::string& name, const std::string& tenant) {
    v1::GenerateRequest g;
    g.set_cached_content(name);
    g.mutable_token_ids()->Add(suffix.begin(), suffix.end());
    g.set_max_tokens(2);
    g.set_ignore_eos(true);
    g.set_tenant(tenant);
    return c.Generate(g);
  };
  std::string name, short_name;
  {
    DaemonProcess d;
    ASSERT_TRUE(d.Start(dir, args)) << d.exit_code();
    auto c = ClientFor(d);
    v1::CreateCacheRequest req;
    req.set_tenant("acme");
    req.mutable_token_ids()->Add(doc.begin(), doc.end());
    req.set_ttl_seconds(3600);
    req.set_display_name("handbook");
    v1::NamedCacheInfo info;
    grpc::Status s = c->context_cache().CreateCache(c->NewContext().get(), req, &info);
    ASSERT_TRUE(s.ok()) << s.error_message();
    name = info.name();
    EXPECT_EQ(name.rfind("cachedContents/", 0), 0u) << name;
    EXPECT_EQ(info.tokens(), 1500u);
    EXPECT_EQ(info.ttl_seconds(), 3600);
    // Storage for an hour: 1500 tokens at $1/MTok/h = $0.0015.
    EXPECT_EQ(info.storage_cost_usd(), "0.001500");
    auto r = generate(*c, name, "acme");
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->usage().cache_read_input_tokens(), 1500u);
    EXPECT_EQ(r->usage().input_tokens(), 100u);
    EXPECT_EQ(r->usage().cache_creation_input_tokens(), 0u);
    // A short-lived one, and bad requests refused by name.
    req.clear_ttl_seconds();
    req.set_expire_time_ms(std::chrono::duration_cast<std::chrono::milliseconds>(
                               std::chrono::system_clock::now().time_since_epoch())
                               .count() +
                           3000);
    ASSERT_TRUE(c->context_cache().CreateCache(c->NewContext().get(), req, &info).ok());
    short_name = info.name();
    req.set_ttl_seconds(600);  // both
    s = c->context_cache().CreateCache(c->NewContext().get(), req, &info);
    EXPECT_EQ(s.error_code(), grpc::INVALID_ARGUMENT);
    EXPECT_NE(s.error_message().find("exactly one of ttl_seconds and expire_time_ms"),
              std::string::npos);
    req.clear_expire_time_ms();
    req.set_ttl_seconds(10);  // below the minimum
    EXPECT_EQ(c->context_cache().CreateCache(c->NewContext().get(), req, &info).error_code(),
              grpc::INVALID_ARGUMENT);
    // Killed: no shutdown, no flush.
    d.Stop(SIGKILL);
  }
  DaemonProcess d;
  ASSERT_TRUE(d.Start(dir, args)) << d.exit_code();
  auto c = ClientFor(d);
  v1::CacheRef ref;
  ref.set_tenant("acme");
  ref.set_name(name);
  v1::NamedCacheInfo info;
  ASSERT_TRUE(c->context_cache().GetCache(c->NewContext().get(), ref, &info).ok());
  EXPECT_EQ(info.display_name(), "handbook");
  auto r = generate(*c, name, "acme");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->usage().cache_read_input_tokens(), 1500u);
  EXPECT_EQ(r->usage().input_tokens(), 100u);
  // Another tenant: as if it did not exist.
  ref.set_tenant("rival");
  grpc::Status other = c->context_cache().GetCache(c->NewContext().get(), ref, &info);
  EXPECT_EQ(other.error_code(), grpc::NOT_FOUND);
  EXPECT_EQ(generate(*c, name, "rival").status().code(), StatusCode::kNotFound);
  // The short one expires (its deadline was 3 s after creation).
  ref.set_tenant("acme");
  ref.set_name(short_name);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  grpc::Status got;
  do {
    got = c->context_cache().GetCache(c->NewContext().get(), ref, &info);
    if (!got.ok()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  } while (std::chrono::steady_clock::now() < deadline);
  EXPECT_EQ(got.error_code(), grpc::NOT_FOUND);
  // The CLI lists and deletes.
  const std::string addr = "--addr=" + d.address();
  std::string out;
  ASSERT_EQ(RunTool("kvtier", {addr, "--json", "--tenant", "acme", "cache", "list"}, &out), 0);
  const nlohmann::json list = nlohmann::json::parse(out);
  ASSERT_EQ(list["caches"].size(), 1u) << out;
  EXPECT_EQ(list["caches"][0]["name"], name);
  EXPECT_EQ(RunTool("kvtier", {addr, "--tenant", "acme", "cache", "delete", name}, &out), 0);
  EXPECT_EQ(RunTool("kvtier", {addr, "--tenant", "acme", "cache", "get", name}, &out), 1);
  EXPECT_EQ(d.Stop(SIGTERM), 0);
  std::filesystem::remove_all(dir);
}

}  // namespace kvtier
