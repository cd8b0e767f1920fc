// Tenant isolation on a real kvtierd (DESIGN §2): a tenant can neither read,
// delete, extend nor poison another tenant's blocks, whatever keys it knows,
// and cache salts come from the daemon's secret, not from public names.
#include <gtest/gtest.h>
#include <signal.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "cache/namespace.h"
#include "cache/prefix_hasher.h"
#include "proto/client.h"
#include "tests/server/daemon_client.h"
#include "tests/server/daemon_process.h"

namespace kvtier {
namespace {

using testing::AsBytes;
using testing::ClientFor;
using testing::DaemonProcess;
using testing::TempDir;

class TenantIsolationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = TempDir("isolation");
    std::filesystem::create_directories(dir_);
    std::ofstream(dir_ + "/keys") << "alice-key-0123456789 alice\n"
                                     "bob-key-0123456789ab bob\n"
                                     "carol-key-0123456789 carol group=team\n"
                                     "dave-key-0123456789a dave group=team\n"
                                     "mallory-key-01234567 group:team\n";
    Start();
  }
  void TearDown() override {
    if (daemon_) {
      EXPECT_EQ(daemon_->Stop(SIGTERM), 0);
    }
    std::filesystem::remove_all(dir_);
  }
  void Start(const std::vector<std::string>& extra = {}) {
    daemon_ = std::make_unique<DaemonProcess>();
    std::vector<std::string> args = {"--api-keys",    dir_ + "/keys", "--dram-bytes",   "64M",
                                     "--flash-bytes", "64M",          "--block-tokens", "16"};
    args.insert(args.end(), extra.begin(), extra.end());
    ASSERT_TRUE(daemon_->Start(dir_, args));
  }
  std::unique_ptr<Client> As(const std::string& key) { return ClientFor(*daemon_, key); }
  static v1::GenerateRequest Prompt() {
    v1::GenerateRequest g;
    for (int i = 0; i < 100; ++i) g.add_token_ids(100 + (i * 37) % 400);
    g.set_max_tokens(16);
    g.set_temperature(0);
    g.set_ignore_eos(true);
    return g;
  }
  static std::vector<int> Tokens(const v1::GenerateResponse& r) {
    return {r.token_ids().begin(), r.token_ids().end()};
  }

  std::string dir_;
  std::unique_ptr<DaemonProcess> daemon_;
};

// The attack of issue 16: Bob derives Alice's block keys from public values
// (the model and revision every response shows, and a salt equal to her
// name), and also learns the keys her own block calls return; he tries to
// read them, delete them and store junk under them. Alice's next greedy
// generation must still read her own KV and produce the same tokens.
TEST_F(TenantIsolationTest, ATenantCannotReadDeleteOrPoisonAnothersBlocks) {
  auto alice = As("alice-key-0123456789"), bob = As("bob-key-0123456789ab");
  const v1::GenerateRequest g = Prompt();
  auto first = alice->Generate(g);
  ASSERT_TRUE(first.ok()) << first.status();
  // The engine's namespace, from public values.
  const std::string model = first->model();
  Namespace pub;
  pub.model_id = model.substr(0, model.find('@'));
  pub.model_revision = model.substr(model.find('@') + 1);
  pub.block_tokens = 16;
  pub.cache_salt = "alice";
  const std::vector<TokenId> prompt(g.token_ids().begin(), g.token_ids().end());
  std::vector<BlockKey> guessed = PrefixHasher(pub).Keys(prompt);
  v1::Namespace engine_ns;
  engine_ns.set_model_id(pub.model_id);
  engine_ns.set_model_revision(pub.model_revision);
  // And the keys Alice's own calls see (leaked to Bob).
  v1::LookupRequest look;
  *look.mutable_namespace_() = engine_ns;
  look.mutable_token_ids()->CopyFrom(g.token_ids());
  look.set_return_keys(true);
  auto mine = alice->Lookup(look);
  ASSERT_TRUE(mine.ok()) << mine.status();
  ASSERT_EQ(mine->hit_blocks(), 100u / 16) << "Alice's generation cached her prompt's blocks";
  const uint64_t block_bytes = mine->hits(0).size_bytes();
  std::vector<BlockKey> targets = guessed;
  for (const std::string& k : mine->keys()) targets.push_back(*BlockKey::FromBytes(k));

  const std::string junk(block_bytes, '\x7f');
  for (const BlockKey& k : targets) {
    EXPECT_TRUE(bob->Get(k, engine_ns).status().IsNotFound()) << k.ToHex();
    EXPECT_TRUE(bob->Delete(k, engine_ns).IsNotFound()) << k.ToHex();
    v1::LookupRequest by_key;
    *by_key.mutable_namespace_() = engine_ns;
    by_key.add_keys(k.ToByteString());
    EXPECT_EQ(bob->Lookup(by_key)->hit_blocks(), 0u);
    v1::PutHeader h;
    *h.mutable_namespace_() = engine_ns;
    h.set_key(k.ToByteString());
    ASSERT_TRUE(bob->Put(h, AsBytes(junk)).ok());
  }
  // Bob now reads back his own junk under those keys, and nothing of Alice's.
  auto bobs = bob->Get(targets.back(), engine_ns);
  ASSERT_TRUE(bobs.ok());
  EXPECT_EQ(bobs->payload, junk);

  // Alice still has every block, reads her own bytes, and generates the same.
  auto still = alice->Lookup(look);
  ASSERT_TRUE(still.ok());
  EXPECT_EQ(still->hit_blocks(), 100u / 16);
  auto hers = alice->Get(*BlockKey::FromBytes(mine->keys(0)), engine_ns);
  ASSERT_TRUE(hers.ok()) << hers.status();
  EXPECT_NE(hers->payload, junk);
  auto second = alice->Generate(g);
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(second->cached_tokens(), 96u);
  EXPECT_EQ(Tokens(*second), Tokens(*first));
}

// A key is only meaningful in the namespace it was given out for: the same
// tenant naming it in another namespace reaches nothing.
TEST_F(TenantIsolationTest, AKeyNamesABlockOnlyInItsOwnNamespace) {
  auto alice = As("alice-key-0123456789");
  v1::PutHeader h;
  h.set_key(BlockKey{1, 2}.ToByteString());
  ASSERT_TRUE(alice->Put(h, AsBytes(std::string(4096, 'a'))).ok());
  EXPECT_TRUE(alice->Get(BlockKey{1, 2}).ok());
  v1::Namespace other;
  other.set_model_id("another-model");
  EXPECT_TRUE(alice->Get(BlockKey{1, 2}, other).status().IsNotFound());
  other.Clear();
  other.set_cache_salt("my-own-sub-salt");
  EXPECT_TRUE(alice->Get(BlockKey{1, 2}, other).status().IsNotFound());
}

// Re-putting a key another tenant holds neither replaces nor extends
// that tenant's block.
TEST_F(TenantIsolationTest, PuttingAnothersKeyDoesNotExtendItsExpiry) {
  auto alice = As("alice-key-0123456789"), bob = As("bob-key-0123456789ab");
  v1::PutHeader h;
  for (int i = 0; i < 16; ++i) h.add_token_ids(9000 + i);
  h.set_ttl_seconds(60);
  auto put = alice->Put(h, AsBytes(std::string(4096, 'a')));
  ASSERT_TRUE(put.ok()) << put.status();
  const int64_t expiry = put->block().expire_time_ms();
  ASSERT_GT(expiry, 0);
  v1::PutHeader again;
  again.set_key(put->block().key());
  again.set_ttl_seconds(3600);
  ASSERT_TRUE(bob->Put(again, AsBytes(std::string(4096, 'b'))).ok());
  auto back = alice->Get(*BlockKey::FromBytes(put->block().key()));
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->payload, std::string(4096, 'a'));
  EXPECT_LT(back->info.expire_time_ms(), expiry + 30'000) << "not pushed out to Bob's hour";
}

// Share groups: members share their cache; a tenant merely named
// "group:team" is not a member and gets nothing of it.
TEST_F(TenantIsolationTest, ATenantNamedLikeAGroupDoesNotGetTheGroupsSalt) {
  auto carol = As("carol-key-0123456789"), dave = As("dave-key-0123456789a"),
       mallory = As("mallory-key-01234567");
  const v1::GenerateRequest g = Prompt();
  ASSERT_TRUE(carol->Generate(g).ok());
  auto daves = dave->Generate(g);
  ASSERT_TRUE(daves.ok());
  EXPECT_EQ(daves->cached_tokens(), 96u);
  auto mallorys = mallory->Generate(g);
  ASSERT_TRUE(mallorys.ok());
  EXPECT_EQ(mallorys->cached_tokens(), 0u);
}

// Keys and salts are stable across a restart (the secret is kept in the data
// directory), and a secret that is lost re-keys everything: old blocks become
// misses, but named caches, which hold their tokens, stay readable and
// answer the same (their KV is recomputed). This is also the upgrade from a
// data directory written before secret salts existed.
//
// A block kept in DRAM does not outlive the process, and where a small block
// goes is the cost model's choice, which rests on the bandwidths the daemon
// measured at start-up (on a slow or loaded machine DRAM can be cheapest):
// DRAM is priced out here so that the block is on a durable tier.
TEST_F(TenantIsolationTest, KeysSurviveARestartAndNamedCachesSurviveANewSecret) {
  const std::vector<std::string> durable = {"--dram-price", "1000"};
  ASSERT_EQ(daemon_->Stop(SIGTERM), 0);
  Start(durable);
  auto alice = As("alice-key-0123456789");
  v1::PutHeader h;
  for (int i = 0; i < 16; ++i) h.add_token_ids(5000 + i);
  auto put = alice->Put(h, AsBytes(std::string(8192, 'z')));
  ASSERT_TRUE(put.ok());
  ASSERT_NE(put->block().tier(), "dram") << "the block must be on a tier that outlives a restart";
  v1::CreateCacheRequest create;
  for (int i = 0; i < 80; ++i) create.add_token_ids(50 + i);
  create.set_ttl_seconds(3600);
  v1::NamedCacheInfo info;
  grpc::Status created =
      alice->context_cache().CreateCache(alice->NewContext().get(), create, &info);
  ASSERT_TRUE(created.ok()) << created.error_message();
  const v1::NamedCacheInfo* cache = &info;
  v1::GenerateRequest g = Prompt();
  g.clear_token_ids();
  for (int i = 0; i < 8; ++i) g.add_token_ids(300 + i);
  g.set_cached_content(cache->name());
  auto before = alice->Generate(g);
  ASSERT_TRUE(before.ok()) << before.status();

  ASSERT_EQ(daemon_->Stop(SIGTERM), 0);
  Start(durable);
  alice = As("alice-key-0123456789");
  auto same = alice->Get(*BlockKey::FromBytes(put->block().key()));
  ASSERT_TRUE(same.ok()) << "the key a restart gives back is the same: " << same.status();
  EXPECT_EQ(same->payload, std::string(8192, 'z'));

  ASSERT_EQ(daemon_->Stop(SIGTERM), 0);
  std::filesystem::remove(dir_ + "/cache_secret");
  Start(durable);
  alice = As("alice-key-0123456789");
  EXPECT_TRUE(alice->Get(*BlockKey::FromBytes(put->block().key())).status().IsNotFound());
  auto after = alice->Generate(g);
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(Tokens(*after), Tokens(*before));
  EXPECT_EQ(after->usage().cache_read_input_tokens(), before->usage().cache_read_input_tokens());
  EXPECT_EQ(after->usage().cache_read_input_tokens(), 80u);
}

// A caller without a valid key learns nothing (it is refused before its
// request is read or checked) and holds nothing: 80 Put streams opened with
// no key and never written to leave the daemon's threads free for everyone
// else (the sync server has 64).
TEST_F(TenantIsolationTest, UnauthenticatedCallsLearnNothingAndHoldNothing) {
  auto anon = As(""), alice = As("alice-key-0123456789");
  v1::LookupRequest bad;  // both token_ids and keys: invalid, but first unauthenticated
  bad.add_token_ids(1);
  bad.add_keys("short");
  v1::LookupResponse resp;
  EXPECT_EQ(anon->block_store().Lookup(anon->NewContext().get(), bad, &resp).error_code(),
            grpc::UNAUTHENTICATED);

  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  std::vector<std::unique_ptr<grpc::ClientWriter<v1::PutRequest>>> streams;
  std::vector<v1::PutResponse> responses(80);
  for (int i = 0; i < 80; ++i) {
    contexts.push_back(anon->NewContext());
    streams.push_back(anon->block_store().Put(contexts.back().get(), &responses[i]));
  }
  EXPECT_TRUE(anon->Health().ok());
  v1::LookupRequest look;
  look.add_token_ids(1);
  EXPECT_TRUE(alice->Lookup(look).ok());
  for (auto& s : streams) EXPECT_EQ(s->Finish().error_code(), grpc::UNAUTHENTICATED);
}

}  // namespace
}  // namespace kvtier
