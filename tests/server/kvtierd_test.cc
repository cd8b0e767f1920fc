// Integration tests: a real kvtierd process on a loopback port, driven through
// the generated gRPC client (and the kvtier CLI binary).
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include <httplib.h>
#include "common/checksum.h"

#include "proto/client.h"
#include "server/auth.h"
#include "tests/server/daemon_process.h"

namespace kvtier {
namespace {

using testing::AsBytes;
using testing::Bytes;
using testing::DaemonProcess;
using testing::RunTool;
using testing::TempDir;

constexpr uint64_t kMaxBlock = 16 << 20;  // the suite's daemon runs with --max-block-bytes 16M

std::vector<int32_t> Tokens(int32_t first, int32_t last) {
  std::vector<int32_t> t;
  for (int32_t i = first; i <= last; ++i) t.push_back(i);
  return t;
}

class KvtierdTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(TempDir("kvtierd_suite"));
    daemon_ = new DaemonProcess();
    // Free tiers and a free engine: every cost is 0 (with a priced engine the
    // wait for a fetch would order the tiers by their measured bandwidth,
    // which a loaded machine can invert), so placement falls back to stack
    // order (top first, victims one tier down), the chain these tests check.
    // tests/cache covers the costs.
    ASSERT_TRUE(daemon_->Start(
        *dir_, {"--dram-bytes", "256M", "--max-block-bytes", "16M", "--dram-price", "0",
                "--flash-price", "0", "--rocks-price", "0", "--gpu-price", "0"}))
        << "kvtierd exited with " << daemon_->exit_code();
  }
  static void TearDownTestSuite() {
    EXPECT_EQ(daemon_->Stop(SIGTERM), 0);
    delete daemon_;
    std::filesystem::remove_all(*dir_);
    delete dir_;
  }
  void SetUp() override {
    ClientOptions o;
    o.address = daemon_->address();
    client_ = std::make_unique<Client>(o);
  }

  v1::StatsResponse Stats() {
    auto s = client_->Stats();
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? *s : v1::StatsResponse();
  }

  Result<v1::PutResponse> PutTokens(const std::vector<int32_t>& tokens, const std::string& data) {
    v1::PutHeader h;
    h.mutable_token_ids()->Add(tokens.begin(), tokens.end());
    return client_->Put(h, AsBytes(data));
  }

  // Sends a raw Put stream and returns the daemon's answer.
  grpc::Status RawPut(const std::vector<v1::PutRequest>& msgs) {
    auto ctx = client_->NewContext();
    v1::PutResponse resp;
    auto w = client_->block_store().Put(ctx.get(), &resp);
    for (const auto& m : msgs) {
      if (!w->Write(m)) break;
    }
    w->WritesDone();
    return w->Finish();
  }

  static v1::PutRequest Header(const v1::PutHeader& h) {
    v1::PutRequest r;
    *r.mutable_header() = h;
    return r;
  }
  static v1::PutRequest Data(const std::string& d) {
    v1::PutRequest r;
    r.set_data(d);
    return r;
  }

  static std::string* dir_;
  static DaemonProcess* daemon_;
  std::unique_ptr<Client> client_;
};

std::string* KvtierdTest::dir_ = nullptr;
DaemonProcess* KvtierdTest::daemon_ = nullptr;

TEST_F(KvtierdTest, HealthAndStatsAnswer) {
  auto h = client_->Health();
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_EQ(h->status(), "SERVING");
  EXPECT_EQ(h->listen(), daemon_->address());
  auto s = Stats();
  ASSERT_EQ(s.tiers_size(), 3);
  EXPECT_EQ(s.tiers(0).name(), "dram");
  EXPECT_EQ(s.tiers(0).capacity_bytes(), 256u << 20);
  EXPECT_FALSE(s.tiers(0).persistent());
  EXPECT_EQ(s.tiers(1).name(), "flash");
  EXPECT_EQ(s.tiers(1).capacity_bytes(), 64u << 20);
  EXPECT_TRUE(s.tiers(1).persistent());
  EXPECT_EQ(s.tiers(2).name(), "rocks");
  EXPECT_TRUE(s.tiers(2).persistent());
  for (const auto& t : s.tiers()) {
    EXPECT_GT(t.read_bytes_per_s(), 0) << t.name() << " was not calibrated";
    EXPECT_GT(t.write_bytes_per_s(), 0) << t.name() << " was not calibrated";
  }
  EXPECT_EQ(s.default_block_tokens(), 64u);
}

TEST_F(KvtierdTest, PutLookupGetRoundTripByTokens) {
  const auto prompt = Tokens(1000, 1000 + 3 * 64 + 9);  // 3 full blocks and a tail
  std::vector<std::string> payloads;
  std::vector<BlockKey> keys;
  for (int b = 0; b < 3; ++b) {
    payloads.push_back(Bytes(100'000 + b, b));
    auto r = PutTokens({prompt.begin(), prompt.begin() + (b + 1) * 64}, payloads.back());
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->block().tier(), "dram");
    keys.push_back(*BlockKey::FromBytes(r->block().key()));
  }
  v1::LookupRequest req;
  req.mutable_token_ids()->Add(prompt.begin(), prompt.end());
  req.set_return_keys(true);
  auto l = client_->Lookup(req);
  ASSERT_TRUE(l.ok()) << l.status();
  EXPECT_EQ(l->query_blocks(), 3u);
  EXPECT_EQ(l->hit_blocks(), 3u);
  EXPECT_EQ(l->hit_tokens(), 192u);
  ASSERT_EQ(l->keys_size(), 3);
  for (int b = 0; b < 3; ++b) {
    EXPECT_EQ(*BlockKey::FromBytes(l->keys(b)), keys[b]);
    EXPECT_EQ(l->hits(b).size_bytes(), payloads[b].size());
    auto g = client_->Get(keys[b]);
    ASSERT_TRUE(g.ok()) << g.status();
    EXPECT_EQ(g->payload, payloads[b]);
  }
  // A prompt that diverges inside block 1 hits only block 0.
  auto other = prompt;
  other[100] = 7;
  v1::LookupRequest req2;
  req2.mutable_token_ids()->Add(other.begin(), other.end());
  EXPECT_EQ(client_->Lookup(req2)->hit_blocks(), 1u);
  // Another namespace sees nothing.
  req2.mutable_namespace_()->set_cache_salt("tenant-b");
  req2.mutable_token_ids()->Clear();
  req2.mutable_token_ids()->Add(prompt.begin(), prompt.end());
  EXPECT_EQ(client_->Lookup(req2)->hit_blocks(), 0u);
}

TEST_F(KvtierdTest, LargeBlocksStreamInChunks) {
  const std::string big = Bytes(9 << 20, 42);  // 9 MiB: nine 1 MiB messages each way
  auto r = PutTokens(Tokens(5000, 5063), big);
  ASSERT_TRUE(r.ok()) << r.status();
  auto g = client_->Get(*BlockKey::FromBytes(r->block().key()));
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(g->payload.size(), big.size());
  EXPECT_TRUE(g->payload == big);
}

TEST_F(KvtierdTest, PutByKeyWithParentAndLookupByKeys) {
  BlockKey a{1, 2}, b{3, 4};
  v1::PutHeader h;
  h.set_key(a.ToByteString());
  ASSERT_TRUE(client_->Put(h, AsBytes(Bytes(5000, 1))).ok());
  h.set_key(b.ToByteString());
  h.set_parent_key(a.ToByteString());
  ASSERT_TRUE(client_->Put(h, AsBytes(Bytes(5000, 2))).ok());
  v1::LookupRequest req;
  for (BlockKey k : {a, b, BlockKey{9, 9}}) req.add_keys(k.ToByteString());
  auto l = client_->Lookup(req);
  ASSERT_TRUE(l.ok());
  EXPECT_EQ(l->hit_blocks(), 2u);
  EXPECT_EQ(l->hit_tokens(), 0u);
  ASSERT_TRUE(client_->Delete(b).ok());
  EXPECT_EQ(client_->Lookup(req)->hit_blocks(), 1u);
  EXPECT_TRUE(client_->Delete(b).IsNotFound());
}

// Expiry itself is tested with a controlled clock in cache_manager_test; here
// only that the daemon turns a TTL into an expiry time.
TEST_F(KvtierdTest, PutWithTtlReportsItsExpiry) {
  auto tokens = Tokens(7000, 7063);
  v1::PutHeader h;
  h.mutable_token_ids()->Add(tokens.begin(), tokens.end());
  h.set_ttl_seconds(3600);
  const int64_t before = std::chrono::duration_cast<std::chrono::milliseconds>(
                             std::chrono::system_clock::now().time_since_epoch())
                             .count();
  auto r = client_->Put(h, AsBytes(Bytes(100, 1)));
  ASSERT_TRUE(r.ok());
  EXPECT_GE(r->block().expire_time_ms(), before + 3'600'000);
}

TEST_F(KvtierdTest, APutOfACachedBlockKeepsItsBytes) {
  auto tokens = Tokens(8000, 8063);
  const std::string first = Bytes(7000, 1), second = Bytes(7000, 2);
  auto a = PutTokens(tokens, first);
  ASSERT_TRUE(a.ok()) << a.status();
  const uint64_t refreshes = Stats().refreshes();
  ASSERT_TRUE(PutTokens(tokens, second).ok());
  EXPECT_EQ(Stats().refreshes(), refreshes + 1);
  auto g = client_->Get(*BlockKey::FromBytes(a->block().key()));
  ASSERT_TRUE(g.ok());
  EXPECT_TRUE(g->payload == first);
}

// Every malformed or oversized request gets a clear status and changes nothing.
TEST_F(KvtierdTest, BadPutsAreRefusedAndChangeNothing) {
  const auto before = Stats();
  const std::string data = Bytes(1000, 1);
  v1::PutHeader ok;
  auto t = Tokens(1, 64);
  ok.mutable_token_ids()->Add(t.begin(), t.end());
  ok.set_size_bytes(data.size());

  struct Case {
    std::string name;
    std::vector<v1::PutRequest> msgs;
    grpc::StatusCode code;
    std::string says;
  };
  std::vector<Case> cases;
  cases.push_back({"empty stream", {}, grpc::StatusCode::INVALID_ARGUMENT, "header"});
  cases.push_back({"data first", {Data(data)}, grpc::StatusCode::INVALID_ARGUMENT, "header"});
  {
    v1::PutHeader h = ok;
    h.set_key(BlockKey{1, 1}.ToByteString());
    cases.push_back({"key and tokens",
                     {Header(h), Data(data)},
                     grpc::StatusCode::INVALID_ARGUMENT,
                     "exactly one of key and token_ids"});
  }
  {
    v1::PutHeader h = ok;
    h.clear_token_ids();
    cases.push_back({"no name",
                     {Header(h), Data(data)},
                     grpc::StatusCode::INVALID_ARGUMENT,
                     "exactly one of key and token_ids"});
    h.set_key(std::string(15, 'k'));
    cases.push_back(
        {"short key", {Header(h), Data(data)}, grpc::StatusCode::INVALID_ARGUMENT, "16 bytes"});
    h.set_key(BlockKey{5, 5}.ToByteString());
    h.set_parent_key("xx");
    cases.push_back({"short parent",
                     {Header(h), Data(data)},
                     grpc::StatusCode::INVALID_ARGUMENT,
                     "parent_key"});
  }
  {
    v1::PutHeader h = ok;
    h.mutable_token_ids()->RemoveLast();
    cases.push_back({"partial block",
                     {Header(h), Data(data)},
                     grpc::StatusCode::INVALID_ARGUMENT,
                     "whole number"});
    h = ok;
    h.set_token_ids(3, -5);
    cases.push_back({"negative token",
                     {Header(h), Data(data)},
                     grpc::StatusCode::INVALID_ARGUMENT,
                     "negative"});
    h = ok;
    h.set_parent_key(BlockKey{1, 1}.ToByteString());
    cases.push_back({"parent with tokens",
                     {Header(h), Data(data)},
                     grpc::StatusCode::INVALID_ARGUMENT,
                     "parent_key"});
  }
  {
    v1::PutHeader h = ok;
    h.set_size_bytes(0);
    cases.push_back({"zero size", {Header(h)}, grpc::StatusCode::INVALID_ARGUMENT, "size_bytes"});
    h.set_size_bytes(kMaxBlock + 1);
    cases.push_back({"too large",
                     {Header(h), Data(data)},
                     grpc::StatusCode::RESOURCE_EXHAUSTED,
                     "exceeds the limit"});
    h = ok;
    h.set_size_bytes(data.size() + 1);
    cases.push_back(
        {"short payload", {Header(h), Data(data)}, grpc::StatusCode::INVALID_ARGUMENT, "declared"});
    h.set_size_bytes(data.size() - 1);
    cases.push_back({"long payload",
                     {Header(h), Data(data)},
                     grpc::StatusCode::INVALID_ARGUMENT,
                     "longer than the declared"});
    h = ok;
    h.set_payload_xxh3(Checksum64(AsBytes(data)) ^ 1);
    cases.push_back(
        {"bad checksum", {Header(h), Data(data)}, grpc::StatusCode::INVALID_ARGUMENT, "checksum"});
    cases.push_back({"two headers",
                     {Header(ok), Header(ok), Data(data)},
                     grpc::StatusCode::INVALID_ARGUMENT,
                     "exactly one header"});
  }
  {
    v1::PutHeader h = ok;
    h.mutable_namespace_()->set_kv_dtype("int4");
    cases.push_back(
        {"bad dtype", {Header(h), Data(data)}, grpc::StatusCode::INVALID_ARGUMENT, "kv_dtype"});
    h = ok;
    h.mutable_namespace_()->set_block_tokens(48);
    cases.push_back({"bad block_tokens",
                     {Header(h), Data(data)},
                     grpc::StatusCode::INVALID_ARGUMENT,
                     "block_tokens"});
    h = ok;
    h.mutable_namespace_()->set_tp_rank(3);
    cases.push_back({"bad tp rank",
                     {Header(h), Data(data)},
                     grpc::StatusCode::INVALID_ARGUMENT,
                     "tensor-parallel"});
  }
  {
    const std::string huge = Bytes(6 << 20, 3);  // one message over the 4 MiB limit
    v1::PutHeader h = ok;
    h.set_size_bytes(huge.size());
    cases.push_back(
        {"oversized message", {Header(h), Data(huge)}, grpc::StatusCode::RESOURCE_EXHAUSTED, ""});
  }
  for (const Case& c : cases) {
    grpc::Status s = RawPut(c.msgs);
    EXPECT_EQ(s.error_code(), c.code) << c.name << ": " << s.error_message();
    EXPECT_NE(s.error_message().find(c.says), std::string::npos)
        << c.name << ": message '" << s.error_message() << "' does not say '" << c.says << "'";
  }
  const auto after = Stats();
  EXPECT_EQ(after.indexed_blocks(), before.indexed_blocks());
  EXPECT_EQ(after.inserts(), before.inserts());
  EXPECT_EQ(after.tiers(0).used_bytes(), before.tiers(0).used_bytes());
  EXPECT_TRUE(client_->Health().ok()) << "the daemon must survive every bad request";
}

TEST_F(KvtierdTest, BadLookupsGetsAndDeletesAreRefused) {
  const auto before = Stats();
  auto expect = [](grpc::Status s, grpc::StatusCode code, const std::string& says,
                   const std::string& name) {
    EXPECT_EQ(s.error_code(), code) << name << ": " << s.error_message();
    EXPECT_NE(s.error_message().find(says), std::string::npos) << name << ": " << s.error_message();
  };
  v1::LookupResponse lr;
  {
    v1::LookupRequest r;
    expect(client_->block_store().Lookup(client_->NewContext().get(), r, &lr),
           grpc::StatusCode::INVALID_ARGUMENT, "exactly one", "empty lookup");
    r.add_token_ids(1);
    r.add_keys(BlockKey{1, 1}.ToByteString());
    expect(client_->block_store().Lookup(client_->NewContext().get(), r, &lr),
           grpc::StatusCode::INVALID_ARGUMENT, "exactly one", "tokens and keys");
    r.clear_token_ids();
    r.add_keys("short");
    expect(client_->block_store().Lookup(client_->NewContext().get(), r, &lr),
           grpc::StatusCode::INVALID_ARGUMENT, "keys[1]", "short key");
    r.clear_keys();
    for (int i = 0; i < (1 << 20) + 1; ++i) r.add_token_ids(i % 100);
    expect(client_->block_store().Lookup(client_->NewContext().get(), r, &lr),
           grpc::StatusCode::RESOURCE_EXHAUSTED, "limit", "too many tokens");
  }
  {
    v1::GetRequest g;
    g.set_key("abc");
    v1::GetResponse msg;
    auto ctx = client_->NewContext();
    auto reader = client_->block_store().Get(ctx.get(), g);
    while (reader->Read(&msg)) {
    }
    expect(reader->Finish(), grpc::StatusCode::INVALID_ARGUMENT, "16 bytes", "get short key");
  }
  {
    v1::GetRequest g;
    g.set_key(BlockKey{77, 77}.ToByteString());
    g.set_chunk_bytes(5 << 20);
    v1::GetResponse msg;
    auto ctx = client_->NewContext();
    auto reader = client_->block_store().Get(ctx.get(), g);
    while (reader->Read(&msg)) {
    }
    expect(reader->Finish(), grpc::StatusCode::INVALID_ARGUMENT, "chunk_bytes", "huge chunk");
  }
  auto missing = client_->Get(BlockKey{77, 77});
  EXPECT_TRUE(missing.status().IsNotFound()) << missing.status();
  EXPECT_NE(missing.status().message().find("NOT_FOUND"), std::string::npos);
  v1::DeleteRequest d;
  d.set_key("x");
  v1::DeleteResponse dr;
  expect(client_->block_store().Delete(client_->NewContext().get(), d, &dr),
         grpc::StatusCode::INVALID_ARGUMENT, "16 bytes", "delete short key");
  EXPECT_TRUE(client_->Delete(BlockKey{77, 77}).IsNotFound());
  const auto after = Stats();
  EXPECT_EQ(after.indexed_blocks(), before.indexed_blocks());
  EXPECT_EQ(after.inserts(), before.inserts());
  EXPECT_TRUE(client_->Health().ok());
}

TEST_F(KvtierdTest, CliPutsLooksUpAndGetsTheSameBytes) {
  const std::string dir = TempDir("cli");
  const std::string in = dir + "/block.bin", out = dir + "/back.bin";
  const std::string payload = Bytes(300'000, 9);
  std::ofstream(in, std::ios::binary) << payload;
  const std::string addr = "--addr=" + daemon_->address();
  std::string text;
  ASSERT_EQ(
      RunTool("kvtier", {addr, "--json", "put", "--tokens", "9000..9063", "--file", in}, &text), 0)
      << text;
  auto put = nlohmann::json::parse(text);
  EXPECT_EQ(put["ok"], true);
  EXPECT_EQ(put["size_bytes"], payload.size());
  ASSERT_EQ(RunTool("kvtier", {addr, "--json", "lookup", "--tokens", "9000..9100"}, &text), 0);
  auto look = nlohmann::json::parse(text);
  EXPECT_EQ(look["hit_blocks"], 1);
  EXPECT_EQ(look["hits"][0]["key"], put["key"]);
  ASSERT_EQ(RunTool("kvtier", {addr, "get", "--key", put["key"], "--out", out}, &text), 0);
  std::ifstream back(out, std::ios::binary);
  std::string got((std::istreambuf_iterator<char>(back)), std::istreambuf_iterator<char>());
  EXPECT_TRUE(got == payload);
  ASSERT_EQ(RunTool("kvtier", {addr, "get", "--tokens", "9000..9063"}, &text), 0);
  EXPECT_TRUE(text == payload);
  EXPECT_EQ(RunTool("kvtier", {addr, "health"}, &text), 0);
  EXPECT_EQ(RunTool("kvtier", {addr, "--json", "stats"}, &text), 0);
  EXPECT_GE(nlohmann::json::parse(text)["indexed_blocks"].get<int>(), 1);
  EXPECT_EQ(RunTool("kvtier", {addr, "get", "--key", "nothex"}, &text), 2);
  EXPECT_EQ(RunTool("kvtier", {addr, "put", "--tokens", "1..10", "--file", in}, &text), 1);
  std::filesystem::remove_all(dir);
}

// kvtier explain against a daemon with its default economics: the block is
// where its last decision's costs say (the cheapest tier, as nothing is
// full), with its TTL, and lookups give its namespace a reuse estimate.
TEST(KvtierdProcessTest, ExplainShowsWhereABlockIsAndWhy) {
  const std::string dir = TempDir("explain");
  DaemonProcess d;
  ASSERT_TRUE(d.Start(dir, {"--dram-bytes", "64M", "--flash-bytes", "64M", "--no-engine"}));
  const std::string addr = "--addr=" + d.address();
  const std::string in = dir + "/block.bin";
  std::ofstream(in, std::ios::binary) << Bytes(100'000, 3);
  std::string text;
  ASSERT_EQ(
      RunTool("kvtier", {addr, "--json", "put", "--tokens", "1..64", "--ttl", "3600", "--file", in},
              &text),
      0)
      << text;
  const std::string key = nlohmann::json::parse(text)["key"];
  // The tier of least cost in `costs` among those allowed.
  auto cheapest = [](const nlohmann::json& costs) {
    std::string tier;
    double best = 0;
    for (const auto& c : costs) {
      EXPECT_GT(c["drain_time_s"].get<double>(), 0) << c.dump();
      if (c["allowed"] && (tier.empty() || c["cost_usd"].get<double>() < best)) {
        tier = c["tier"];
        best = c["cost_usd"];
      }
    }
    return tier;
  };
  ASSERT_EQ(RunTool("kvtier", {addr, "--json", "explain", key}, &text), 0) << text;
  auto x = nlohmann::json::parse(text);
  EXPECT_EQ(x["decision"], "placed");
  EXPECT_EQ(x["ttl_ms"], 3'600'000);
  EXPECT_EQ(x["block"]["size_bytes"], 100'000);
  EXPECT_NEAR(x["decision_idle_s"].get<double>(), 3600, 1) << "no history: T is the TTL";
  EXPECT_FALSE(x.contains("reuse_estimate_s"));
  EXPECT_EQ(x["reuse_probability"], 1.0) << "no history: assumed to come back";
  EXPECT_EQ(x["uses"], 0);
  ASSERT_EQ(x["decision_costs"].size(), 3u);
  EXPECT_EQ(x["block"]["tier"], cheapest(x["decision_costs"])) << x.dump();
  // Used again at once: its namespace now has a short reuse estimate, and
  // the block is kept, or promoted, where that makes it cheapest.
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(RunTool("kvtier", {addr, "lookup", "--tokens", "1..64"}, &text), 0) << text;
  }
  ASSERT_EQ(RunTool("kvtier", {addr, "--json", "explain", key}, &text), 0) << text;
  x = nlohmann::json::parse(text);
  ASSERT_TRUE(x.contains("reuse_estimate_s")) << x.dump();
  EXPECT_LT(x["reuse_estimate_s"].get<double>(), 600);
  EXPECT_EQ(x["uses"], 3) << x.dump();
  ASSERT_EQ(RunTool("kvtier", {addr, "explain", key}, &text), 0) << text;
  EXPECT_NE(text.find("with probability 1"), std::string::npos) << text;
  if (x["decision"] == "promoted") {
    // Promotion compares the tiers above with staying; it moved up to the
    // cheapest of those at the T it used.
    std::string best;
    double best_cost = 0;
    for (const auto& c : x["decision_costs"]) {
      if (c["tier"] == x["from_tier"]) break;
      if (c["allowed"] && (best.empty() || c["cost_usd"].get<double>() < best_cost)) {
        best = c["tier"];
        best_cost = c["cost_usd"];
      }
    }
    EXPECT_EQ(x["block"]["tier"], best) << x.dump();
  } else {
    EXPECT_EQ(x["decision"], "placed") << x.dump();
  }
  // The same as text, and the counters.
  ASSERT_EQ(RunTool("kvtier", {addr, "explain", "--key", key}, &text), 0);
  EXPECT_NE(text.find("last decision: "), std::string::npos) << text;
  EXPECT_NE(text.find("ttl: 3600 s"), std::string::npos) << text;
  ASSERT_EQ(RunTool("kvtier", {addr, "--json", "stats"}, &text), 0);
  auto stats = nlohmann::json::parse(text);
  EXPECT_EQ(stats["placed"], 1);
  EXPECT_EQ(stats["tiers"][0]["policy"], "lru");
  // Bad input: a key that is not cached, and one that is not a key.
  EXPECT_EQ(RunTool("kvtier", {addr, "--json", "explain", std::string(32, '0')}, &text), 1);
  EXPECT_NE(text.find("not cached"), std::string::npos) << text;
  EXPECT_EQ(RunTool("kvtier", {addr, "explain", "xyz"}, &text), 2);
  EXPECT_EQ(d.Stop(SIGTERM), 0);
  std::filesystem::remove_all(dir);
}

// kvtierd with API keys: every call needs a valid key, a key acts for its
// tenant only (its cache salt and its bills), admin calls need an admin key.
TEST(KvtierdProcessTest, ApiKeysAuthenticateAndScopeEveryCall) {
  const std::string dir = TempDir("auth");
  const std::string keys = dir + "/keys";
  std::filesystem::create_directories(dir);
  std::ofstream(keys) << "alice-key-0123456789 alice\nbob-key-0123456789ab bob\n"
                         "ops-key-0123456789abc ops admin\n"
                         "carol-key-0123456789 carol group=team\n"
                         "dave-key-0123456789a dave group=team\n";
  DaemonProcess d;
  ASSERT_TRUE(d.Start(dir, {"--api-keys", keys, "--dram-bytes", "64M", "--flash-bytes", "64M"}));
  auto client = [&](const std::string& key) {
    ClientOptions o;
    o.address = d.address();
    o.api_key = key;
    return std::make_unique<Client>(o);
  };
  auto anon = client(""), wrong = client("nobody-0123456789xyz"),
       alice = client("alice-key-0123456789"), bob = client("bob-key-0123456789ab"),
       ops = client("ops-key-0123456789abc");
  v1::GenerateRequest g;
  for (int i = 1; i <= 200; ++i) g.add_token_ids(i % 500 + 1);
  g.set_max_tokens(2);
  EXPECT_EQ(anon->Generate(g).status().code(), StatusCode::kPermissionDenied);
  v1::GenerateResponse resp;
  EXPECT_EQ(anon->GenerateRaw(g, &resp).error_code(), grpc::UNAUTHENTICATED);
  EXPECT_EQ(wrong->GenerateRaw(g, &resp).error_code(), grpc::UNAUTHENTICATED);
  g.set_tenant("bob");
  grpc::Status as_bob = alice->GenerateRaw(g, &resp);
  EXPECT_EQ(as_bob.error_code(), grpc::PERMISSION_DENIED) << as_bob.error_message();
  g.clear_tenant();
  // Alice's automatic prefix cache is hers: a second run hits, Bob's misses.
  ASSERT_TRUE(alice->Generate(g).ok());
  auto again = alice->Generate(g);
  ASSERT_TRUE(again.ok());
  EXPECT_GT(again->usage().cache_read_input_tokens(), 0u);
  auto bobs = bob->Generate(g);
  ASSERT_TRUE(bobs.ok());
  EXPECT_EQ(bobs->usage().cache_read_input_tokens(), 0u);
  // Tenants an operator put in one share group share their cache.
  auto carol = client("carol-key-0123456789"), dave = client("dave-key-0123456789a");
  ASSERT_TRUE(carol->Generate(g).ok());
  auto daves = dave->Generate(g);
  ASSERT_TRUE(daves.ok());
  EXPECT_GT(daves->usage().cache_read_input_tokens(), 0u);
  // Bills: each sees its own; asking for another tenant's is refused.
  v1::BillingReportRequest q;
  auto mine = alice->BillingReport(q);
  ASSERT_TRUE(mine.ok()) << mine.status();
  EXPECT_EQ(mine->total().requests(), 2u);
  q.set_tenant("alice");
  EXPECT_EQ(bob->BillingReport(q).status().code(), StatusCode::kPermissionDenied);
  // Blocks by tokens are the tenant's: Bob does not see Alice's block.
  v1::PutHeader h;
  for (int i = 0; i < 64; ++i) h.add_token_ids(7000 + i);
  const std::string payload(4096, 'a');
  ASSERT_TRUE(alice->Put(h, AsBytes(payload)).ok());
  v1::LookupRequest look;
  look.mutable_token_ids()->CopyFrom(h.token_ids());
  EXPECT_EQ(alice->Lookup(look)->hit_blocks(), 1u);
  EXPECT_EQ(bob->Lookup(look)->hit_blocks(), 0u);
  EXPECT_EQ(anon->Lookup(look).status().code(), StatusCode::kPermissionDenied);
  // Admin calls need an admin key; health needs none.
  EXPECT_FALSE(alice->Stats().ok());
  EXPECT_TRUE(ops->Stats().ok());
  EXPECT_TRUE(anon->Health().ok());
  EXPECT_EQ(d.Stop(SIGTERM), 0);
  std::filesystem::remove_all(dir);
}

// A config file stands for flags; the command line wins over it; a bad one
// stops kvtierd from starting.
TEST(KvtierdProcessTest, AConfigFileSetsFlagsAndTheCommandLineWins) {
  const std::string dir = TempDir("config");
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/keys") << "ops-key-0123456789abc ops admin\n";
  std::ofstream(dir + "/kvtierd.json")
      << R"({"dram-bytes": "64M", "flash-bytes": "64M", "no-engine": true, "api-keys": ")" << dir
      << R"(/keys", "sweep-interval-ms": 500})";
  DaemonProcess d;
  ASSERT_TRUE(d.Start(dir, {"--config", dir + "/kvtierd.json", "--dram-bytes", "32M"}));
  ClientOptions o;
  o.address = d.address();
  Client anon(o);
  EXPECT_FALSE(anon.Stats().ok()) << "the config's API keys are in force";
  o.api_key = "ops-key-0123456789abc";
  Client ops(o);
  auto s = ops.Stats();
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->tiers(0).capacity_bytes(), 32u << 20) << "the command line wins";
  EXPECT_FALSE(s->has_engine()) << "no-engine from the config";
  EXPECT_EQ(d.Stop(SIGTERM), 0);
  for (const char* bad : {R"([1, 2])", R"({"no-such-flag": 1})", R"({"dram-bytes": [1]})", "{"}) {
    std::ofstream(dir + "/bad.json") << bad;
    DaemonProcess b;
    EXPECT_FALSE(b.Start(dir + "/b", {"--config", dir + "/bad.json"})) << bad;
  }
  std::filesystem::remove_all(dir);
}

// Admission filters and policies from the config file run in the daemon:
// the stats name them, blocks still go in and come back; an unknown filter
// stops kvtierd from starting.
TEST(KvtierdProcessTest, AdmissionFiltersRunInTheDaemon) {
  const std::string dir = TempDir("admission");
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/kvtierd.json")
      << R"({"dram-bytes": "64M", "flash-bytes": "64M", "no-engine": true,
             "dram-admission": "ghost", "flash-admission": "tinylfu", "rocks-policy": "s3fifo"})";
  DaemonProcess d;
  ASSERT_TRUE(d.Start(dir, {"--config", dir + "/kvtierd.json"}));
  const std::string addr = "--addr=" + d.address();
  std::string text;
  ASSERT_EQ(RunTool("kvtier", {addr, "--json", "stats"}, &text), 0) << text;
  const auto stats = nlohmann::json::parse(text);
  std::vector<std::string> policies;
  for (const auto& t : stats["tiers"]) policies.push_back(t["policy"]);
  EXPECT_EQ(policies, (std::vector<std::string>{"lru+ghost", "lru+tinylfu", "s3fifo"}));
  EXPECT_EQ(stats["aged_out"], 0);
  const std::string in = dir + "/block.bin", back = dir + "/back.bin";
  std::ofstream(in, std::ios::binary) << Bytes(100'000, 5);
  ASSERT_EQ(RunTool("kvtier", {addr, "put", "--tokens", "1..64", "--file", in}, &text), 0) << text;
  ASSERT_EQ(RunTool("kvtier", {addr, "get", "--tokens", "1..64", "--out", back}, &text), 0) << text;
  std::ifstream a(in, std::ios::binary), b(back, std::ios::binary);
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(a), {}),
            std::string(std::istreambuf_iterator<char>(b), {}));
  EXPECT_EQ(d.Stop(SIGTERM), 0);
  DaemonProcess bad;
  EXPECT_FALSE(bad.Start(dir + "/bad", {"--no-engine", "--dram-admission", "bloom"}));
  std::filesystem::remove_all(dir);
}

// A Put every admission filter declines succeeds (a cache may decline a
// block) but its answer must not name a tier: the block is nowhere. Every
// tier is full and runs the ghost filter, so a never-seen key is refused
// (the filter's Bloom history lets ~3% of new keys in, hence several keys).
TEST(KvtierdProcessTest, APutTheFiltersDeclineNamesNoTier) {
  const std::string dir = TempDir("declined");
  DaemonProcess d;
  ASSERT_TRUE(d.Start(dir, {"--no-engine", "--no-flash", "--dram-bytes", "1M", "--rocks-bytes",
                            "1M", "--dram-admission", "ghost", "--rocks-admission", "ghost"}));
  ClientOptions o;
  o.address = d.address();
  Client c(o);
  const std::string payload(256 << 10, 'p');
  auto put = [&](uint64_t k) {
    v1::PutHeader h;
    h.set_key(BlockKey{9, k}.ToByteString());
    return c.Put(h, AsBytes(payload));
  };
  for (uint64_t k = 0; k < 16; ++k) ASSERT_TRUE(put(k).ok()) << "filling, block " << k;
  int declined = 0;
  for (uint64_t k = 1000; k < 1008; ++k) {
    auto r = put(k);
    ASSERT_TRUE(r.ok()) << r.status();
    auto back = c.Get(BlockKey{9, k});
    if (r->block().tier().empty()) {
      ++declined;
      EXPECT_TRUE(back.status().IsNotFound()) << "block " << k << ": " << back.status();
    } else {
      EXPECT_TRUE(back.ok()) << "block " << k << " stored in " << r->block().tier() << ": "
                             << back.status();
    }
  }
  EXPECT_GT(declined, 0) << "the full, filtered tiers took every new block";
  // The CLI says so, and the stats count the declined blocks.
  const std::string addr = "--addr=" + d.address(), in = dir + "/block.bin";
  std::ofstream(in, std::ios::binary) << payload;
  std::string text;
  bool cli_declined = false;
  for (uint64_t k = 2000; k < 2008 && !cli_declined; ++k) {
    ASSERT_EQ(
        RunTool("kvtier", {addr, "put", "--key", BlockKey{9, k}.ToHex(), "--file", in}, &text), 0)
        << text;
    cli_declined = text.starts_with("not stored: the cache declined");
    if (!cli_declined) {
      EXPECT_TRUE(text.starts_with("stored ")) << text;
    }
  }
  EXPECT_TRUE(cli_declined) << "the CLI never reported a declined block";
  ASSERT_EQ(RunTool("kvtier", {addr, "--json", "stats"}, &text), 0) << text;
  EXPECT_GE(nlohmann::json::parse(text)["admission_refusals"].get<int>(), declined + 1) << text;
  EXPECT_EQ(d.Stop(SIGTERM), 0);
  std::filesystem::remove_all(dir);
}

// With a certificate kvtierd serves over TLS: a client that trusts it gets
// answers, a plaintext client does not.
TEST(KvtierdProcessTest, TlsWhenACertificateIsConfigured) {
  const std::string dir = TempDir("tls");
  std::filesystem::create_directories(dir);
  const std::string cmd =
      "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost"
      " -addext subjectAltName=IP:127.0.0.1,DNS:localhost -keyout " +
      dir + "/key.pem -out " + dir + "/cert.pem >/dev/null 2>&1";
  if (std::system(cmd.c_str()) != 0) GTEST_SKIP() << "no openssl to make a test certificate";
  DaemonProcess d;
  ASSERT_TRUE(d.Start(dir, {"--no-engine", "--dram-bytes", "64M", "--flash-bytes", "64M",
                            "--tls-cert", dir + "/cert.pem", "--tls-key", dir + "/key.pem"}));
  std::ifstream in(dir + "/cert.pem");
  std::stringstream pem;
  pem << in.rdbuf();
  ClientOptions o;
  o.address = d.address();
  o.timeout_ms = 5000;
  Client plain(o);
  EXPECT_FALSE(plain.Health().ok());
  o.tls_ca_pem = pem.str();
  Client tls(o);
  auto h = tls.Health();
  EXPECT_TRUE(h.ok()) << h.status();
  std::string out;
  EXPECT_EQ(
      RunTool("kvtier", {"--addr", d.address(), "--tls-ca", dir + "/cert.pem", "health"}, &out), 0)
      << out;
  EXPECT_EQ(d.Stop(SIGTERM), 0);
  std::filesystem::remove_all(dir);
}

// Prometheus metrics on their own port: the cache's decisions, the tiers
// and the engine, scraped over real HTTP.
TEST(KvtierdProcessTest, MetricsAreServedOverHttp) {
  const std::string dir = TempDir("metrics");
  DaemonProcess d;
  ASSERT_TRUE(d.Start(
      dir, {"--dram-bytes", "64M", "--flash-bytes", "64M", "--metrics-listen", "127.0.0.1:0"}));
  ClientOptions o;
  o.address = d.address();
  Client c(o);
  v1::PutHeader h;
  for (int i = 0; i < 64; ++i) h.add_token_ids(i + 1);
  ASSERT_TRUE(c.Put(h, AsBytes(std::string(8192, 'k'))).ok());
  auto health = c.Health();
  ASSERT_TRUE(health.ok());
  const std::string m = health->metrics_listen();
  ASSERT_FALSE(m.empty());
  httplib::Client http(m.substr(0, m.rfind(':')), std::stoi(m.substr(m.rfind(':') + 1)));
  auto res = http.Get("/metrics");
  ASSERT_TRUE(res) << "no answer from " << m;
  EXPECT_EQ(res->status, 200);
  EXPECT_NE(res->body.find("# TYPE kvtier_cache_decisions_total counter"), std::string::npos);
  EXPECT_NE(res->body.find("# TYPE kvtier_cache_aged_out_total counter"), std::string::npos);
  EXPECT_NE(res->body.find("kvtier_cache_decisions_total{kind=\"placed\"} 1"), std::string::npos)
      << res->body;
  EXPECT_NE(res->body.find("kvtier_tier_capacity_bytes{tier=\"dram\"}"), std::string::npos);
  EXPECT_NE(res->body.find("kvtier_engine_requests_total"), std::string::npos);
  // Limits and faults (docs/operations.md).
  for (const char* family : {"kvtier_connections_open", "kvtier_connections_refused_total",
                             "kvtier_accept_descriptor_exhausted_total", "kvtier_streams_open",
                             "kvtier_streams_refused_total", "kvtier_streams_idle_cancelled_total",
                             "kvtier_store_no_space_errors_total{store=\"rocks\"} 0",
                             "kvtier_store_no_space_errors_total{store=\"ledger\"} 0",
                             "kvtier_store_recoveries_total{store=\"named_caches\"} 0",
                             "kvtier_rocks_quarantined_stores 0"}) {
    EXPECT_NE(res->body.find(family), std::string::npos) << family;
  }
  // A Generate shows in the billing counters and the latency histograms.
  v1::GenerateRequest g;
  for (int i = 1; i <= 70; ++i) g.add_token_ids(i);
  g.set_max_tokens(3);
  g.set_ignore_eos(true);
  ASSERT_TRUE(c.Generate(g).ok());
  res = http.Get("/metrics");
  ASSERT_TRUE(res);
  EXPECT_NE(res->body.find("kvtier_billed_requests_total 1"), std::string::npos) << res->body;
  EXPECT_NE(res->body.find("kvtier_billed_tokens_total{kind=\"output\"} 3"), std::string::npos);
  EXPECT_NE(res->body.find("kvtier_generate_ttft_seconds_count 1"), std::string::npos);
  // An explicitly given port that is taken stops a second daemon.
  DaemonProcess second;
  EXPECT_FALSE(second.Start(dir + "/second", {"--metrics-listen", m}));
  EXPECT_EQ(d.Stop(SIGTERM), 0);
  std::filesystem::remove_all(dir);
}

TEST(KvtierdProcessTest, HealthFailsWhenNoDaemonAnswers) {
  std::string text;
  // Nothing listens on port 1 of loopback: the call is refused at once.
  EXPECT_NE(RunTool("kvtier", {"--addr", "127.0.0.1:1", "--timeout-ms", "5000", "health"}, &text),
            0);
}

TEST(KvtierdProcessTest, SigtermShutsDownCleanly) {
  const std::string dir = TempDir("sigterm");
  DaemonProcess d;
  ASSERT_TRUE(d.Start(dir));
  std::string text;
  EXPECT_EQ(RunTool("kvtier", {"--addr", d.address(), "health"}, &text), 0);
  EXPECT_EQ(d.Stop(SIGTERM), 0);
  EXPECT_NE(RunTool("kvtier", {"--addr", d.address(), "--timeout-ms", "5000", "health"}, &text), 0);
  std::filesystem::remove_all(dir);
}

// DRAM victims move to flash and flash victims to RocksDB; after a restart
// the flash and cold blocks are found again (DRAM's are gone) and read back
// exactly. The client stays connected across each SIGTERM, as a serving
// engine would.
TEST(KvtierdProcessTest, FlashAndColdBlocksSurviveARestart) {
  const std::string dir = TempDir("restart");
  const std::vector<std::string> args = {"--dram-bytes",         "1M", "--flash-bytes", "1M",
                                         "--flash-region-bytes", "1M", "--dram-price",  "0",
                                         "--flash-price",        "0",  "--rocks-price", "0"};
  std::vector<std::string> payloads;
  std::vector<BlockKey> keys;
  std::vector<int32_t> prompt = Tokens(1, 64 * 16);
  {
    DaemonProcess d;
    ASSERT_TRUE(d.Start(dir, args));
    ClientOptions o;
    o.address = d.address();
    Client c(o);
    for (int b = 0; b < 16; ++b) {
      payloads.push_back(Bytes(200'000, 100 + b));
      v1::PutHeader h;
      h.mutable_token_ids()->Add(prompt.begin(), prompt.begin() + (b + 1) * 64);
      auto r = c.Put(h, AsBytes(payloads.back()));
      ASSERT_TRUE(r.ok()) << r.status();
      keys.push_back(*BlockKey::FromBytes(r->block().key()));
    }
    auto s = c.Stats();
    ASSERT_TRUE(s.ok());
    ASSERT_EQ(s->tiers_size(), 3);
    EXPECT_GT(s->tiers(1).blocks(), 0u) << "nothing was demoted to flash";
    EXPECT_GT(s->tiers(2).blocks(), 0u) << "nothing was demoted from flash to the cold tier";
    EXPECT_EQ(s->tiers(0).blocks() + s->tiers(1).blocks() + s->tiers(2).blocks(), 16u);
    EXPECT_GT(s->demotions(), 0u);
    EXPECT_EQ(s->demotion_failures(), 0u);
    ASSERT_EQ(d.Stop(SIGTERM), 0);
  }
  DaemonProcess d;
  ASSERT_TRUE(d.Start(dir, args));
  ClientOptions o;
  o.address = d.address();
  Client c(o);
  size_t found = 0;
  for (size_t b = 0; b < keys.size(); ++b) {
    auto g = c.Get(keys[b]);
    if (!g.ok()) {
      EXPECT_TRUE(g.status().IsNotFound()) << g.status();
      continue;
    }
    ++found;
    EXPECT_TRUE(g->payload == payloads[b]) << "block " << b;
  }
  auto s = c.Stats();
  ASSERT_TRUE(s.ok());
  EXPECT_GT(s->tiers(1).blocks(), 0u);
  EXPECT_GT(s->tiers(2).blocks(), 0u);
  EXPECT_EQ(found, s->tiers(1).blocks() + s->tiers(2).blocks())
      << "every flash and cold block is recovered";
  EXPECT_EQ(d.Stop(SIGTERM), 0);
  std::filesystem::remove_all(dir);
}

TEST(KvtierdProcessTest, OneDaemonPerDataDirectory) {
  const std::string dir = TempDir("lock");
  DaemonProcess a, b;
  ASSERT_TRUE(a.Start(dir));
  EXPECT_FALSE(b.Start(dir));
  EXPECT_EQ(b.exit_code(), 1);
  EXPECT_EQ(a.Stop(SIGTERM), 0);
  std::filesystem::remove_all(dir);
}

TEST(KvtierdProcessTest, BadFlagsExitWithUsage) {
  const std::string dir = TempDir("flags");
  DaemonProcess d;
  EXPECT_FALSE(d.Start(dir, {"--block-tokens", "48"}));
  EXPECT_EQ(d.exit_code(), 2);
  EXPECT_FALSE(d.Start(dir, {"--no-such-flag"}));
  EXPECT_EQ(d.exit_code(), 2);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace kvtier
