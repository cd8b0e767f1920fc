// The block API for engines' connectors against a real kvtierd (issue 19,
// docs/block-api.md): BatchLookup without side effects and with leases,
// Exists, BatchGet and BatchPut with a status per block, Release, the
// same-host shared-memory path, namespace checks, and each call's bad input.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "cache/namespace.h"
#include "common/checksum.h"
#include "proto/client.h"
#include "tests/server/daemon_client.h"
#include "tests/server/daemon_process.h"

namespace kvtier {
namespace {

using testing::AsBytes;
using testing::Bytes;
using testing::ClientFor;
using testing::DaemonProcess;
using testing::TempDir;

constexpr char kAlice[] = "alice-key-0123456789";
constexpr char kBob[] = "bob-key-0123456789ab";
constexpr char kAdmin[] = "admin-key-0123456789";
constexpr int kBlockTokens = 16;
constexpr size_t kBlockBytes = 4096;

class BlockBatchTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = TempDir("block_batch");
    std::filesystem::create_directories(dir_);
    std::ofstream(dir_ + "/keys") << kAlice << " alice\n"
                                  << kBob << " bob\n"
                                  << kAdmin << " ops admin\n";
    ASSERT_TRUE(daemon_.Start(
        dir_ + "/data", {"--api-keys", dir_ + "/keys", "--dram-bytes", "64M", "--no-engine",
                         "--block-tokens", std::to_string(kBlockTokens), "--max-lease-ms", "10000",
                         "--max-tenant-leases", "2", "--metrics-listen", "", "--http-listen", "",
                         "--shm-socket", dir_ + "/kvtierd.sock", "--shm-max-region-bytes", "1M"}))
        << daemon_.exit_code();
    alice_ = ClientFor(daemon_, kAlice);
    bob_ = ClientFor(daemon_, kBob);
  }
  void TearDown() override {
    daemon_.Stop(SIGTERM);
    std::filesystem::remove_all(dir_);
  }

  static std::vector<int32_t> Tokens(int blocks, int32_t start = 1) {
    std::vector<int32_t> t(static_cast<size_t>(blocks * kBlockTokens));
    for (size_t i = 0; i < t.size(); ++i) t[i] = start + static_cast<int32_t>(i);
    return t;
  }

  // The visible keys of every full block of `tokens`, from the daemon.
  std::vector<BlockKey> KeysOf(Client& c, const std::vector<int32_t>& tokens,
                               const v1::Namespace& ns = {}) {
    v1::BatchLookupRequest req;
    *req.mutable_namespace_() = ns;
    req.mutable_token_ids()->Add(tokens.begin(), tokens.end());
    req.set_return_keys(true);
    Result<v1::BatchLookupResponse> r = c.BatchLookup(req);
    EXPECT_TRUE(r.ok()) << r.status();
    std::vector<BlockKey> keys;
    if (r.ok()) {
      for (const std::string& k : r->keys()) keys.push_back(*BlockKey::FromBytes(k));
    }
    return keys;
  }

  // Puts a chain of blocks (payload i: Bytes(kBlockBytes, seed + i)).
  void PutChain(Client& c, const std::vector<BlockKey>& keys, uint32_t seed,
                const v1::Namespace& ns = {}) {
    std::vector<std::string> payloads;
    for (size_t i = 0; i < keys.size(); ++i) payloads.push_back(Bytes(kBlockBytes, seed + i));
    std::vector<BatchPutItem> items;
    for (size_t i = 0; i < keys.size(); ++i) {
      BatchPutItem item{keys[i], std::nullopt, AsBytes(payloads[i])};
      if (i > 0) item.parent = keys[i - 1];
      item.tokens = kBlockTokens;
      items.push_back(item);
    }
    v1::BatchPutHeader h;
    *h.mutable_namespace_() = ns;
    Result<v1::BatchPutResponse> r = c.BatchPut(h, items);
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_EQ(r->results_size(), static_cast<int>(keys.size()));
    for (const auto& res : r->results()) ASSERT_EQ(res.code(), 0) << res.message();
  }

  // A raw connection to the daemon's shared-memory socket (-1 on failure).
  int ConnectShmSocket() const {
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    const std::string path = dir_ + "/kvtierd.sock";
    std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      ::close(fd);
      return -1;
    }
    return fd;
  }

  v1::BatchGetRequest GetOf(const std::vector<BlockKey>& keys) {
    v1::BatchGetRequest req;
    for (const BlockKey& k : keys) req.add_keys(k.ToByteString());
    return req;
  }

  std::string dir_;
  DaemonProcess daemon_;
  std::unique_ptr<Client> alice_, bob_;
};

TEST_F(BlockBatchTest, BatchPutThenBatchLookupAndBatchGetRoundTrip) {
  const std::vector<int32_t> tokens = Tokens(4);
  const std::vector<BlockKey> keys = KeysOf(*alice_, tokens);
  ASSERT_EQ(keys.size(), 4u);
  PutChain(*alice_, {keys.begin(), keys.begin() + 3}, 100);

  v1::BatchLookupRequest look;
  look.mutable_token_ids()->Add(tokens.begin(), tokens.end());
  Result<v1::BatchLookupResponse> hit = alice_->BatchLookup(look);
  ASSERT_TRUE(hit.ok()) << hit.status();
  EXPECT_EQ(hit->query_blocks(), 4u);
  EXPECT_EQ(hit->hit_blocks(), 3u);
  EXPECT_EQ(hit->hit_tokens(), 3u * kBlockTokens);
  ASSERT_EQ(hit->hits_size(), 3);
  EXPECT_EQ(hit->hits(0).key(), keys[0].ToByteString());
  EXPECT_EQ(hit->hits(2).size_bytes(), kBlockBytes);
  EXPECT_FALSE(hit->hits(0).tier().empty());
  EXPECT_TRUE(hit->lease_id().empty());

  // The missing block fails alone; the others come back whole.
  Result<std::vector<BatchFetched>> got = alice_->BatchGet(GetOf({keys[0], keys[3], keys[2]}));
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_EQ(got->size(), 3u);
  ASSERT_TRUE((*got)[0].status.ok()) << (*got)[0].status;
  EXPECT_EQ((*got)[0].payload, Bytes(kBlockBytes, 100));
  EXPECT_TRUE((*got)[1].status.IsNotFound()) << (*got)[1].status;
  ASSERT_TRUE((*got)[2].status.ok());
  EXPECT_EQ((*got)[2].payload, Bytes(kBlockBytes, 102));
  EXPECT_EQ((*got)[2].info.payload_xxh3(), Checksum64(AsBytes((*got)[2].payload)));

  v1::ExistsRequest ex;
  for (const BlockKey& k : keys) ex.add_keys(k.ToByteString());
  Result<v1::ExistsResponse> exists = alice_->Exists(ex);
  ASSERT_TRUE(exists.ok()) << exists.status();
  EXPECT_EQ(std::vector<bool>(exists->exists().begin(), exists->exists().end()),
            (std::vector<bool>{true, true, true, false}));

  // Another tenant sees none of it, by tokens or by alice's keys.
  Result<v1::BatchLookupResponse> other = bob_->BatchLookup(look);
  ASSERT_TRUE(other.ok());
  EXPECT_EQ(other->hit_blocks(), 0u);
  Result<std::vector<BatchFetched>> stolen = bob_->BatchGet(GetOf({keys[0]}));
  ASSERT_TRUE(stolen.ok());
  EXPECT_TRUE((*stolen)[0].status.IsNotFound());
}

// BatchLookup is not a use: it counts no lookup and refreshes nothing.
TEST_F(BlockBatchTest, BatchLookupHasNoSideEffects) {
  const std::vector<int32_t> tokens = Tokens(2);
  const std::vector<BlockKey> keys = KeysOf(*alice_, tokens);
  PutChain(*alice_, keys, 7);
  auto admin = ClientFor(daemon_, kAdmin);
  Result<v1::StatsResponse> before = admin->Stats();
  ASSERT_TRUE(before.ok());
  v1::BatchLookupRequest look;
  look.mutable_token_ids()->Add(tokens.begin(), tokens.end());
  for (int i = 0; i < 5; ++i) ASSERT_EQ(alice_->BatchLookup(look)->hit_blocks(), 2u);
  Result<v1::StatsResponse> after = admin->Stats();
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->lookups(), before->lookups());
  EXPECT_EQ(after->lookup_hit_blocks(), before->lookup_hit_blocks());
  EXPECT_EQ(after->reads(), before->reads());
}

// Fewer tokens than one block name no block: nothing found, nothing read
// (the hasher once read a block's worth past such a request's tokens), and
// the daemon answers the next request as before.
TEST_F(BlockBatchTest, ALookupShorterThanABlockFindsNothing) {
  const std::vector<int32_t> tokens = Tokens(1);
  PutChain(*alice_, KeysOf(*alice_, tokens), 7);
  for (int n : {1, 3, kBlockTokens - 1}) {
    v1::BatchLookupRequest look;
    look.mutable_token_ids()->Add(tokens.begin(), tokens.begin() + n);
    Result<v1::BatchLookupResponse> got = alice_->BatchLookup(look);
    ASSERT_TRUE(got.ok()) << n << " tokens: " << got.status();
    EXPECT_EQ(got->query_blocks(), 0u) << n;
    EXPECT_EQ(got->hit_blocks(), 0u) << n;
  }
  v1::BatchLookupRequest whole;
  whole.mutable_token_ids()->Add(tokens.begin(), tokens.end());
  EXPECT_EQ(alice_->BatchLookup(whole)->hit_blocks(), 1u);
}

TEST_F(BlockBatchTest, ALeaseKeepsItsBlocksUntilReleased) {
  const std::vector<int32_t> tokens = Tokens(3);
  const std::vector<BlockKey> keys = KeysOf(*alice_, tokens);
  PutChain(*alice_, keys, 1);
  v1::BatchLookupRequest look;
  look.mutable_token_ids()->Add(tokens.begin(), tokens.end());
  look.set_lease_ms(10000);
  Result<v1::BatchLookupResponse> leased = alice_->BatchLookup(look);
  ASSERT_TRUE(leased.ok()) << leased.status();
  ASSERT_EQ(leased->hit_blocks(), 3u);
  ASSERT_EQ(leased->lease_id().size(), 32u);
  EXPECT_GT(leased->lease_expire_time_ms(), 0);
  // Leased blocks cannot be deleted (nor evicted) under the engine.
  EXPECT_EQ(alice_->Delete(keys[1]).code(), StatusCode::kRetry);
  // Only its tenant can release it.
  EXPECT_TRUE(bob_->Release(leased->lease_id()).IsNotFound());
  EXPECT_TRUE(alice_->Release(leased->lease_id()).ok());
  EXPECT_TRUE(alice_->Release(leased->lease_id()).IsNotFound()) << "released once";
  EXPECT_TRUE(alice_->Delete(keys[1]).ok());
  // A lookup that hits nothing takes no lease.
  Result<v1::BatchLookupResponse> none = bob_->BatchLookup(look);
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->lease_id().empty());
}

TEST_F(BlockBatchTest, ALeasePastItsTimeIsReleasedByTheDaemon) {
  const std::vector<int32_t> tokens = Tokens(1);
  const std::vector<BlockKey> keys = KeysOf(*alice_, tokens);
  PutChain(*alice_, keys, 1);
  v1::BatchLookupRequest look;
  look.mutable_token_ids()->Add(tokens.begin(), tokens.end());
  look.set_lease_ms(300);
  Result<v1::BatchLookupResponse> leased = alice_->BatchLookup(look);
  ASSERT_TRUE(leased.ok()) << leased.status();
  ASSERT_FALSE(leased->lease_id().empty());
  EXPECT_EQ(alice_->Delete(keys[0]).code(), StatusCode::kRetry);
  Status deleted = Status::Retry("not yet");
  for (int i = 0; i < 200 && !deleted.ok(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    deleted = alice_->Delete(keys[0]);
  }
  EXPECT_TRUE(deleted.ok()) << deleted;
  EXPECT_TRUE(alice_->Release(leased->lease_id()).IsNotFound());
}

TEST_F(BlockBatchTest, LeasesAreBoundedPerTenant) {
  const std::vector<int32_t> tokens = Tokens(1);
  PutChain(*alice_, KeysOf(*alice_, tokens), 1);
  v1::BatchLookupRequest look;
  look.mutable_token_ids()->Add(tokens.begin(), tokens.end());
  look.set_lease_ms(10000);
  std::vector<std::string> held;
  for (int i = 0; i < 2; ++i) {
    Result<v1::BatchLookupResponse> r = alice_->BatchLookup(look);
    ASSERT_TRUE(r.ok()) << r.status();
    held.push_back(r->lease_id());
  }
  Result<v1::BatchLookupResponse> third = alice_->BatchLookup(look);
  EXPECT_EQ(third.status().code(), StatusCode::kResourceExhausted) << third.status();
  EXPECT_TRUE(alice_->Release(held[0]).ok());
  EXPECT_TRUE(alice_->BatchLookup(look).ok());
}

// One tenant cannot pin the cache full: by default its leases may pin a
// quarter of every tier's capacity together, so another tenant's writes
// still find blocks to evict. (Leases were bounded by count only: a few
// large blocks, leased, made every Put fail "no block can be evicted".)
// With peers too: the peer tier's nominal capacity (a petabyte, of which
// nothing is placed there) does not count.
class BlockLeaseBytesTest : public ::testing::TestWithParam<bool> {};
INSTANTIATE_TEST_SUITE_P(Peers, BlockLeaseBytesTest, ::testing::Bool());

TEST_P(BlockLeaseBytesTest, ATenantsLeasesPinAtMostAQuarterOfTheCache) {
  const std::string dir = TempDir("lease_bytes");
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/keys") << kAlice << " alice\n" << kBob << " bob\n";
  DaemonProcess d;
  // 1 MiB of DRAM and 1 MiB of RocksDB: 512 KiB for any one tenant's leases.
  std::vector<std::string> args = {"--api-keys",
                                   dir + "/keys",
                                   "--no-engine",
                                   "--dram-bytes",
                                   "1M",
                                   "--no-flash",
                                   "--rocks-bytes",
                                   "1M",
                                   "--block-tokens",
                                   std::to_string(kBlockTokens),
                                   "--metrics-listen",
                                   "",
                                   "--http-listen",
                                   ""};
  if (GetParam()) {
    // A peer that is not there: every local miss asks it and is refused.
    for (const char* a : {"--peers", "127.0.0.1:1", "--advertise", "127.0.0.1:2"})
      args.emplace_back(a);
  }
  ASSERT_TRUE(d.Start(dir + "/data", args)) << d.exit_code();
  auto alice = ClientFor(d, kAlice);
  auto bob = ClientFor(d, kBob);
  const size_t block = 128 << 10;
  auto put = [&](Client& c, int32_t first, int blocks) {
    std::vector<int32_t> tokens(static_cast<size_t>(blocks * kBlockTokens));
    for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = first + static_cast<int32_t>(i);
    v1::BatchLookupRequest look;
    look.mutable_token_ids()->Add(tokens.begin(), tokens.end());
    look.set_return_keys(true);
    Result<v1::BatchLookupResponse> r = c.BatchLookup(look);
    EXPECT_TRUE(r.ok()) << r.status();
    std::vector<std::string> payloads;
    std::vector<BatchPutItem> items;
    for (int i = 0; i < blocks; ++i) payloads.push_back(Bytes(block, first + i));
    for (int i = 0; i < blocks; ++i) {
      BatchPutItem item{*BlockKey::FromBytes(r->keys(i)), std::nullopt, AsBytes(payloads[i])};
      if (i > 0) item.parent = *BlockKey::FromBytes(r->keys(i - 1));
      items.push_back(item);
    }
    Result<v1::BatchPutResponse> p = c.BatchPut(v1::BatchPutHeader(), items);
    EXPECT_TRUE(p.ok()) << p.status();
    int stored = 0;
    if (p.ok()) {
      for (const auto& res : p->results()) stored += res.code() == 0;
    }
    return std::pair{tokens, stored};
  };
  // (Not a structured binding: clang 14 cannot capture one in a lambda.)
  const std::pair<std::vector<int32_t>, int> alices = put(*alice, 1, 6);
  const std::vector<int32_t>& tokens = alices.first;
  ASSERT_EQ(alices.second, 6);
  auto lease = [&](int blocks) {
    v1::BatchLookupRequest look;
    look.mutable_token_ids()->Add(tokens.begin(), tokens.begin() + blocks * kBlockTokens);
    look.set_lease_ms(10000);
    return alice->BatchLookup(look);
  };
  Result<v1::BatchLookupResponse> six = lease(6);  // 768 KiB
  EXPECT_EQ(six.status().code(), StatusCode::kResourceExhausted) << six.status();
  EXPECT_NE(six.status().message().find("leased bytes"), std::string::npos) << six.status();
  Result<v1::BatchLookupResponse> four = lease(4);  // 512 KiB
  ASSERT_TRUE(four.ok()) << four.status();
  EXPECT_EQ(four->hit_blocks(), 4u);
  EXPECT_FALSE(four->lease_id().empty());
  // Bob fills the rest of the cache: his writes evict what alice did not pin.
  EXPECT_EQ(put(*bob, 1000, 8).second, 8);
  EXPECT_EQ(d.Stop(SIGTERM), 0);
  std::filesystem::remove_all(dir);
}

// A block whose payload does not match its checksum, whose key is malformed
// or whose size is zero fails alone; the rest of the batch is stored.
TEST_F(BlockBatchTest, BatchPutRefusesBadBlocksOneByOne) {
  const std::vector<BlockKey> keys = KeysOf(*alice_, Tokens(3));
  const std::string good = Bytes(kBlockBytes, 1), bad = Bytes(kBlockBytes, 2);
  auto ctx = alice_->NewContext();
  v1::BatchPutResponse resp;
  auto writer = alice_->block_store().BatchPut(ctx.get(), &resp);
  v1::BatchPutRequest msg;
  msg.mutable_header();
  ASSERT_TRUE(writer->Write(msg));
  auto block = [&](const std::string& key, const std::string& payload, uint64_t xxh3) {
    v1::BatchPutBlock* b = msg.mutable_block();
    b->Clear();
    b->set_key(key);
    b->set_size_bytes(payload.size());
    b->set_payload_xxh3(xxh3);
    ASSERT_TRUE(writer->Write(msg));
    if (payload.empty()) return;
    msg.set_data(payload);
    ASSERT_TRUE(writer->Write(msg));
  };
  block(keys[0].ToByteString(), good, Checksum64(AsBytes(good)));
  block(keys[1].ToByteString(), bad, Checksum64(AsBytes(good)));  // altered in flight
  block("short", good, Checksum64(AsBytes(good)));
  block(keys[2].ToByteString(), "", 0);
  writer->WritesDone();
  ASSERT_TRUE(writer->Finish().ok());
  ASSERT_EQ(resp.results_size(), 4);
  EXPECT_EQ(resp.results(0).code(), 0) << resp.results(0).message();
  EXPECT_EQ(resp.results(1).code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(resp.results(1).message().find("payload_xxh3"), std::string::npos);
  EXPECT_EQ(resp.results(2).code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(resp.results(2).message().find("key"), std::string::npos);
  EXPECT_EQ(resp.results(3).code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(resp.results(3).message().find("size_bytes"), std::string::npos);
  v1::ExistsRequest ex;
  for (const BlockKey& k : keys) ex.add_keys(k.ToByteString());
  Result<v1::ExistsResponse> exists = alice_->Exists(ex);
  ASSERT_TRUE(exists.ok());
  EXPECT_EQ(std::vector<bool>(exists->exists().begin(), exists->exists().end()),
            (std::vector<bool>{true, false, false}));
}

// Blocks are found only in the namespace (model, revision, dtype, block
// size, layout, TP rank and size, salt) they were written in.
TEST_F(BlockBatchTest, AnotherLayoutNeverSeesTheBlocks) {
  v1::Namespace rank0;
  rank0.set_model_id("llama");
  rank0.set_kv_dtype("bf16");
  rank0.set_tp_size(2);
  rank0.set_tp_rank(0);
  const std::vector<int32_t> tokens = Tokens(2);
  const std::vector<BlockKey> keys = KeysOf(*alice_, tokens, rank0);
  PutChain(*alice_, keys, 5, rank0);
  for (auto change : std::vector<void (*)(v1::Namespace*)>{
           [](v1::Namespace* n) { n->set_tp_rank(1); },
           [](v1::Namespace* n) { n->set_kv_dtype("f16"); },
           [](v1::Namespace* n) { n->set_model_revision("r2"); },
           [](v1::Namespace* n) { n->set_layout_version(2); },
           [](v1::Namespace* n) { n->set_block_tokens(32); },
           [](v1::Namespace* n) { n->set_cache_salt("other"); }}) {
    v1::Namespace other = rank0;
    change(&other);
    v1::BatchLookupRequest look;
    *look.mutable_namespace_() = other;
    look.mutable_token_ids()->Add(tokens.begin(), tokens.end());
    Result<v1::BatchLookupResponse> r = alice_->BatchLookup(look);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->hit_blocks(), 0u) << other.ShortDebugString();
    v1::BatchGetRequest get = GetOf(keys);
    *get.mutable_namespace_() = other;
    Result<std::vector<BatchFetched>> got = alice_->BatchGet(get);
    ASSERT_TRUE(got.ok());
    for (const BatchFetched& b : *got)
      EXPECT_TRUE(b.status.IsNotFound()) << other.ShortDebugString();
  }
  v1::BatchLookupRequest same;
  *same.mutable_namespace_() = rank0;
  same.mutable_token_ids()->Add(tokens.begin(), tokens.end());
  EXPECT_EQ(alice_->BatchLookup(same)->hit_blocks(), 2u);
}

TEST_F(BlockBatchTest, SharedMemoryCarriesPayloadsBothWays) {
  Result<v1::HealthResponse> health = alice_->Health();
  ASSERT_TRUE(health.ok());
  ASSERT_EQ(health->shm_socket(), dir_ + "/kvtierd.sock");
  Result<std::unique_ptr<ShmMapping>> region =
      ShmMapping::Open(health->shm_socket(), 1 << 20, kAlice);
  ASSERT_TRUE(region.ok()) << region.status();
  std::span<std::byte> shm = (*region)->bytes();
  ASSERT_EQ(shm.size(), 1u << 20);

  const std::vector<BlockKey> keys = KeysOf(*alice_, Tokens(3));
  std::vector<std::string> payloads;
  std::vector<BatchPutItem> items;
  for (size_t i = 0; i < keys.size(); ++i) payloads.push_back(Bytes(kBlockBytes, 40 + i));
  for (size_t i = 0; i < keys.size(); ++i) {
    std::memcpy(shm.data() + i * kBlockBytes, payloads[i].data(), kBlockBytes);
    BatchPutItem item{keys[i], i > 0 ? std::optional(keys[i - 1]) : std::nullopt,
                      AsBytes(payloads[i])};
    item.shm_offset = i * kBlockBytes;
    items.push_back(item);
  }
  Result<v1::BatchPutResponse> put = alice_->BatchPut({}, items, region->get());
  ASSERT_TRUE(put.ok()) << put.status();
  for (const auto& r : put->results()) ASSERT_EQ(r.code(), 0) << r.message();

  // Back into another part of the region, in reverse order; the last block's
  // offset leaves no room for it and it fails alone.
  std::memset(shm.data(), 0, shm.size());
  v1::BatchGetRequest get = GetOf(keys);
  const uint64_t base = 512 << 10;
  get.add_shm_offsets(base + 2 * kBlockBytes);
  get.add_shm_offsets(base + kBlockBytes);
  get.add_shm_offsets(shm.size() - kBlockBytes / 2);
  Result<std::vector<BatchFetched>> got = alice_->BatchGet(get, region->get());
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_TRUE((*got)[0].status.ok()) << (*got)[0].status;
  ASSERT_TRUE((*got)[1].status.ok()) << (*got)[1].status;
  EXPECT_TRUE((*got)[0].payload.empty()) << "the payload went through shared memory";
  EXPECT_EQ(std::memcmp(shm.data() + base + 2 * kBlockBytes, payloads[0].data(), kBlockBytes), 0);
  EXPECT_EQ(std::memcmp(shm.data() + base + kBlockBytes, payloads[1].data(), kBlockBytes), 0);
  EXPECT_EQ((*got)[2].status.code(), StatusCode::kInvalidArgument) << (*got)[2].status;

  // Another tenant cannot use alice's region, even knowing its id.
  v1::BatchGetRequest steal = GetOf({keys[0]});
  steal.set_shm_region((*region)->id());
  steal.add_shm_offsets(0);
  EXPECT_TRUE(bob_->BatchGet(steal).status().IsNotFound());

  // Closing the mapping gives the region back: its id no longer works.
  const std::string id = (*region)->id();
  region->reset();
  Status gone = Status::Ok();
  for (int i = 0; i < 200 && gone.ok(); ++i) {
    v1::BatchGetRequest again = GetOf({keys[0]});
    again.set_shm_region(id);
    again.add_shm_offsets(0);
    gone = alice_->BatchGet(again).status();
    if (gone.ok()) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_TRUE(gone.IsNotFound()) << gone;
}

// The daemon's resident shared memory (RssShmem of /proc/PID/status), bytes.
uint64_t ResidentShmemBytes(int pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string key;
  uint64_t kib = 0;
  while (in >> key) {
    if (key == "RssShmem:" && in >> kib) return kib * 1024;
    in.ignore(1 << 10, '\n');
  }
  return 0;
}

// A region's memory is allocated and mapped by the daemon before the client
// gets it: a page first touched by a BatchGet could otherwise be missing
// (SIGBUS in the daemon when memory is short) and costs a fault on the load's
// path. The client maps every page up front too.
TEST_F(BlockBatchTest, ARegionIsAllocatedAndMappedBeforeItIsHandedOut) {
  const uint64_t before = ResidentShmemBytes(daemon_.pid());
  Result<std::unique_ptr<ShmMapping>> region =
      ShmMapping::Open(dir_ + "/kvtierd.sock", 1 << 20, kAlice);
  ASSERT_TRUE(region.ok()) << region.status();
  EXPECT_GE(ResidentShmemBytes(daemon_.pid()), before + (1 << 20))
      << "the daemon's mapping of the region is resident";
  std::span<std::byte> bytes = (*region)->bytes();
  std::vector<unsigned char> resident(bytes.size() / 4096);
  ASSERT_EQ(::mincore(bytes.data(), bytes.size(), resident.data()), 0) << std::strerror(errno);
  for (size_t i = 0; i < resident.size(); ++i) {
    ASSERT_TRUE(resident[i] & 1) << "page " << i << " of the client's mapping";
  }
}

// Each refusal carries its status code ("ERR <code> <why>"), mapped as a
// call's would be; a malformed line gets one too.
TEST_F(BlockBatchTest, BadHandshakesGetNoRegion) {
  const std::string sock = dir_ + "/kvtierd.sock";
  Result<std::unique_ptr<ShmMapping>> bad_key =
      ShmMapping::Open(sock, 4096, "not-a-key-0123456789");
  EXPECT_EQ(bad_key.status().code(), StatusCode::kPermissionDenied) << bad_key.status();
  EXPECT_NE(bad_key.status().message().find("UNAUTHENTICATED"), std::string::npos);
  EXPECT_EQ(ShmMapping::Open(sock, 4096, "").status().code(), StatusCode::kPermissionDenied)
      << "this daemon has API keys";
  Result<std::unique_ptr<ShmMapping>> big = ShmMapping::Open(sock, 2 << 20, kAlice);
  EXPECT_EQ(big.status().code(), StatusCode::kInvalidArgument) << big.status();
  EXPECT_NE(big.status().message().find("outside"), std::string::npos) << big.status();
  EXPECT_EQ(ShmMapping::Open(sock, 0, kAlice).status().code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(ShmMapping::Open(sock, 4096, kAlice).ok()) << "and a good one still works";
}

// A handshake has five seconds to arrive, however it trickles in: a client
// sending a byte every half second (no newline) was never timed out, and
// held one of the few pending-handshake places for a quarter of an hour.
TEST_F(BlockBatchTest, ATricklingHandshakeIsClosedAfterItsTimeout) {
  const int fd = ConnectShmSocket();
  ASSERT_GE(fd, 0);
  bool closed = false;
  int sent = 0;
  for (; sent < 20 && !closed; ++sent) {  // ten seconds at most
    if (::send(fd, "K", 1, MSG_NOSIGNAL) != 1) {
      closed = true;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    char c;
    closed = ::recv(fd, &c, 1, MSG_DONTWAIT) == 0;
  }
  ::close(fd);
  EXPECT_TRUE(closed) << "still open after " << sent << " bytes, one each half second";
}

// A client that keeps the region's descriptor after closing the socket
// keeps no memory: the daemon frees the pages when the region ends. (It
// stopped counting the region, but the pages stayed allocated for as long
// as the client held the descriptor: a way past --shm-max-bytes.)
TEST_F(BlockBatchTest, ARegionLetGoHoldsNoMemoryEvenIfItsDescriptorIsKept) {
  const int sock = ConnectShmSocket();
  ASSERT_GE(sock, 0);
  const std::string hello = std::string("KVTIER-SHM/1 1048576 ") + kAlice + "\n";
  ASSERT_EQ(::send(sock, hello.data(), hello.size(), MSG_NOSIGNAL),
            static_cast<ssize_t>(hello.size()));
  char line[256] = {};
  iovec iov{line, sizeof line - 1};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  ASSERT_GT(::recvmsg(sock, &msg, 0), 0);
  ASSERT_EQ(std::string(line).rfind("OK ", 0), 0u) << line;
  cmsghdr* c = CMSG_FIRSTHDR(&msg);
  ASSERT_NE(c, nullptr);
  int fd = -1;
  std::memcpy(&fd, CMSG_DATA(c), sizeof fd);
  struct stat st {};
  ASSERT_EQ(::fstat(fd, &st), 0);
  EXPECT_GE(static_cast<uint64_t>(st.st_blocks) * 512, uint64_t{1} << 20) << "allocated up front";
  ::close(sock);  // the region is let go; its descriptor is kept
  bool freed = false;
  for (int i = 0; i < 100 && !freed; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    ASSERT_EQ(::fstat(fd, &st), 0);
    freed = st.st_blocks == 0;
  }
  ::close(fd);
  EXPECT_TRUE(freed) << st.st_blocks * 512 << " bytes still allocated";
}

// One tenant holds at most half of the regions (and of their bytes): the
// other tenants still get theirs. (One key could take all 64.)
TEST_F(BlockBatchTest, OneTenantCannotTakeEveryRegion) {
  const std::string sock = dir_ + "/kvtierd.sock";
  std::vector<std::unique_ptr<ShmMapping>> held;
  Status refused = Status::Ok();
  for (int i = 0; i < 64 && refused.ok(); ++i) {
    Result<std::unique_ptr<ShmMapping>> m = ShmMapping::Open(sock, 4096, kAlice);
    if (m.ok()) {
      held.push_back(std::move(*m));
    } else {
      refused = m.status();
    }
  }
  EXPECT_EQ(held.size(), 32u);
  EXPECT_NE(refused.message().find("RESOURCE_EXHAUSTED"), std::string::npos) << refused;
  Result<std::unique_ptr<ShmMapping>> bobs = ShmMapping::Open(sock, 4096, kBob);
  EXPECT_TRUE(bobs.ok()) << bobs.status();
}

TEST_F(BlockBatchTest, BadInputIsRefusedAndChangesNothing) {
  const std::vector<int32_t> tokens = Tokens(1);
  const std::vector<BlockKey> keys = KeysOf(*alice_, tokens);
  auto code = [](const Status& s) { return s.code(); };
  v1::BatchLookupRequest neither;
  EXPECT_EQ(code(alice_->BatchLookup(neither).status()), StatusCode::kInvalidArgument);
  v1::BatchLookupRequest both;
  both.mutable_token_ids()->Add(tokens.begin(), tokens.end());
  both.add_keys(keys[0].ToByteString());
  EXPECT_EQ(code(alice_->BatchLookup(both).status()), StatusCode::kInvalidArgument);
  v1::BatchLookupRequest long_lease;
  long_lease.mutable_token_ids()->Add(tokens.begin(), tokens.end());
  long_lease.set_lease_ms(10001);
  Result<v1::BatchLookupResponse> r = alice_->BatchLookup(long_lease);
  EXPECT_EQ(code(r.status()), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("lease_ms"), std::string::npos);
  v1::BatchLookupRequest bad_key;
  bad_key.add_keys("0123");
  EXPECT_EQ(code(alice_->BatchLookup(bad_key).status()), StatusCode::kInvalidArgument);
  v1::BatchLookupRequest bad_ns;
  bad_ns.mutable_token_ids()->Add(tokens.begin(), tokens.end());
  bad_ns.mutable_namespace_()->set_block_tokens(17);
  EXPECT_EQ(code(alice_->BatchLookup(bad_ns).status()), StatusCode::kInvalidArgument);
  v1::ExistsRequest ex;
  ex.add_keys("x");
  EXPECT_EQ(code(alice_->Exists(ex).status()), StatusCode::kInvalidArgument);

  v1::BatchGetRequest get = GetOf(keys);
  get.set_chunk_bytes(8 << 20);
  EXPECT_EQ(code(alice_->BatchGet(get).status()), StatusCode::kInvalidArgument);
  get = GetOf(keys);
  get.add_shm_offsets(0);
  EXPECT_EQ(code(alice_->BatchGet(get).status()), StatusCode::kInvalidArgument)
      << "offsets without a region";
  get = GetOf(keys);
  get.set_shm_region("0123456789abcdef0123456789abcdef");
  get.add_shm_offsets(0);
  EXPECT_TRUE(alice_->BatchGet(get).status().IsNotFound()) << "an unknown region";
  Result<std::unique_ptr<ShmMapping>> region =
      ShmMapping::Open(dir_ + "/kvtierd.sock", 4096, kAlice);
  ASSERT_TRUE(region.ok());
  get = GetOf(keys);
  EXPECT_EQ(code(alice_->BatchGet(get, region->get()).status()), StatusCode::kInvalidArgument)
      << "a region without offsets";
  EXPECT_TRUE(alice_->Release("").IsNotFound());
  EXPECT_TRUE(alice_->Release("no-such-lease").IsNotFound());

  // A stream that does not start with a header, or sends data with no block.
  for (int variant = 0; variant < 2; ++variant) {
    auto ctx = alice_->NewContext();
    v1::BatchPutResponse resp;
    auto writer = alice_->block_store().BatchPut(ctx.get(), &resp);
    v1::BatchPutRequest msg;
    if (variant == 1) {
      msg.mutable_header();
      writer->Write(msg);
    }
    msg.set_data("stray bytes");
    writer->Write(msg);
    writer->WritesDone();
    EXPECT_EQ(writer->Finish().error_code(), grpc::StatusCode::INVALID_ARGUMENT) << variant;
  }
  // No key at all.
  v1::BatchLookupRequest look;
  look.mutable_token_ids()->Add(tokens.begin(), tokens.end());
  ClientOptions o;
  o.address = daemon_.address();
  Result<v1::BatchLookupResponse> keyless = Client(o).BatchLookup(look);
  EXPECT_EQ(keyless.status().code(), StatusCode::kPermissionDenied) << keyless.status();
  EXPECT_NE(keyless.status().message().find("UNAUTHENTICATED"), std::string::npos);
  // Nothing above stored anything.
  v1::ExistsRequest all;
  all.add_keys(keys[0].ToByteString());
  EXPECT_FALSE(alice_->Exists(all)->exists(0));
}

}  // namespace
}  // namespace kvtier
