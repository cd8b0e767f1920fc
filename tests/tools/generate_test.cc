// Integration tests of inference through kvtierd: a real daemon process with
// a real model, driven through gRPC and the kvtier CLI.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "proto/client.h"
#include "tests/tools/daemon_process.h"

namespace kvtier {
namespace {

using testing::DaemonProcess;
using testing::RunTool;
using testing::TempDir;

std::string Stories260KDir() {
  const char* env = std::getenv("KVTIER_SHARED_DATA");
  return std::string(env != nullptr ? env : "../shared/data") + "/models/stories260K";
}

std::unique_ptr<Client> ClientFor(const DaemonProcess& d) {
  ClientOptions o;
  o.address = d.address();
  o.timeout_ms = 120'000;
  return std::make_unique<Client>(o);
}

TEST(GenerateTest, Stories260KGreedyThroughTheCliMatchesTheGoldenOutput) {
  std::ifstream in(Stories260KDir() + "/greedy_t0_expected.json");
  if (!in) GTEST_SKIP() << "no stories260K under " << Stories260KDir();
  const nlohmann::json golden = nlohmann::json::parse(in);
  const std::string dir = TempDir("generate_golden");
  DaemonProcess d;
  ASSERT_TRUE(d.Start(dir, {"--model", Stories260KDir() + "/stories260K.bin", "--no-flash"}))
      << d.exit_code();
  std::string out;
  ASSERT_EQ(RunTool("kvtier",
                    {"--addr", d.address(), "generate", "--prompt", "", "--max-tokens", "256",
                     "--temperature", "0"},
                    &out),
            0)
      << out;
  EXPECT_EQ(out, golden["text"].get<std::string>() + "\n");
  ASSERT_EQ(RunTool("kvtier",
                    {"--addr", d.address(), "--json", "generate", "--prompt", "", "--max-tokens",
                     "256", "--temperature", "0"},
                    &out),
            0);
  const nlohmann::json j = nlohmann::json::parse(out);
  EXPECT_EQ(j["token_ids"], golden["generated_token_ids"]);
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
    return client_->context_cache().Generate(client_->NewContext().get(), req, &resp).error_code();
  }

  static std::string* dir_;
  static DaemonProcess* daemon_;
  std::unique_ptr<Client> client_;
};

std::string* GenerateDaemonTest::dir_ = nullptr;
DaemonProcess* GenerateDaemonTest::daemon_ = nullptr;

TEST_F(GenerateDaemonTest, TheDefaultModelServesAndASharedPrefixIsReadFromTheCache) {
  EXPECT_TRUE(std::filesystem::exists(*dir_ + "/models/tiny/config.json"));
  EXPECT_TRUE(std::filesystem::exists(*dir_ + "/models/tiny/tokenizer.bin"));
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
  EXPECT_EQ(first->model().rfind("tiny@", 0), 0u) << first->model();

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
  v1::GenerateRequest past_context;  // the tiny model's context is 512 tokens
  for (int i = 0; i < 600; ++i) past_context.add_token_ids(5);
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
}  // namespace kvtier
