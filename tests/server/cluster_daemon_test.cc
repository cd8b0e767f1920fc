// Scale-out end to end (DESIGN §10): three kvtierd processes over one real
// Redis Cluster (three masters, a replica each), sharing a cache secret. A
// prefix computed on one node is a hit on another, through the cluster tier;
// a block put on one node reads back, bytes identical, on another; tenants
// stay apart across nodes; a killed node leaves the others serving.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <set>
#include <thread>

#include <httplib.h>
#include "proto/cluster_client.h"
#include "proto/kvtier.grpc.pb.h"
#include "tests/free_port.h"
#include "tests/server/daemon_client.h"
#include "tests/tiers/local_redis_cluster.h"

namespace kvtier {
namespace {

using testing::ClientFor;
using testing::DaemonProcess;
using testing::LocalRedisCluster;
using testing::LocalRedisClusterOptions;
using testing::TempDir;

constexpr char kAlice[] = "alice-key-0123456789";
constexpr char kBob[] = "bob-key-0123456789ab";

// Several kvtierd processes and what the tests ask of them.
class NodesTest : public ::testing::Test {
 protected:
  void TearDown() override {
    for (auto& n : nodes_) {
      if (n->pid() > 0) n->Stop(SIGTERM);
    }
    nodes_.clear();
    std::filesystem::remove_all(dir_);
  }

  // The sum of a counter family's series (any labels) in node i's metrics;
  // -1 when it exports none.
  double Metric(int i, const std::string& family) {
    auto health = ClientFor(*nodes_[i], kAlice)->Health();
    if (!health.ok()) return -1;
    const std::string m = health->metrics_listen();
    httplib::Client http(m.substr(0, m.rfind(':')), std::stoi(m.substr(m.rfind(':') + 1)));
    auto res = http.Get("/metrics");
    if (!res) return -1;
    double sum = 0;
    bool any = false;
    for (size_t at = 0; (at = res->body.find("\n" + family, at)) != std::string::npos; ++at) {
      const size_t sp = res->body.find(' ', at + 1);
      const char next = res->body[at + 1 + family.size()];
      if (next != ' ' && next != '{') continue;
      sum += std::stod(res->body.substr(sp + 1));
      any = true;
    }
    return any ? sum : -1;
  }
  // Waits until node i has sent at least `n` copies to the shared tiers.
  bool AwaitSharedWrites(int i, double n) {
    for (int tries = 0; tries < 600; ++tries) {
      if (Metric(i, "kvtier_cache_shared_writes_total") >= n) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  }

  std::string dir_;
  std::vector<std::unique_ptr<DaemonProcess>> nodes_;
};

class ClusterDaemonTest : public NodesTest {
 protected:
  void SetUp() override {
    LocalRedisClusterOptions o;
    o.replicas = 1;
    auto c = LocalRedisCluster::Start(o);
    ASSERT_TRUE(c.ok()) << c.status();
    redis_ = std::move(*c);
    dir_ = TempDir("cluster_daemon");
    std::filesystem::create_directories(dir_);
    std::ofstream(dir_ + "/keys") << kAlice << " alice admin\n" << kBob << " bob\n";
    // One secret for every node: tenants' salts and keys agree across them.
    std::ofstream(dir_ + "/secret", std::ios::binary) << std::string(32, 'k');
    std::string seeds;
    for (const std::string& n : redis_->nodes()) seeds += (seeds.empty() ? "" : ",") + n;
    for (int i = 0; i < 3; ++i) {
      nodes_.push_back(std::make_unique<DaemonProcess>());
      ASSERT_TRUE(nodes_.back()->Start(
          dir_ + "/node" + std::to_string(i),
          {"--api-keys", dir_ + "/keys", "--cache-secret", dir_ + "/secret", "--cluster-redis",
           seeds, "--dram-bytes", "64M", "--no-flash", "--rocks-bytes", "64M", "--metrics-listen",
           "127.0.0.1:0", "--http-listen", ""}));
    }
  }
  void TearDown() override {
    NodesTest::TearDown();
    redis_.reset();
  }

  std::unique_ptr<LocalRedisCluster> redis_;
};

TEST_F(ClusterDaemonTest, APrefixComputedOnOneNodeIsAHitOnAnother) {
  v1::GenerateRequest g;
  for (int i = 1; i <= 300; ++i) g.add_token_ids(i % 400 + 3);
  g.set_max_tokens(4);
  auto on_a = ClientFor(*nodes_[0], kAlice)->Generate(g);
  ASSERT_TRUE(on_a.ok()) << on_a.status();
  EXPECT_EQ(on_a->usage().cache_read_input_tokens(), 0u);
  ASSERT_TRUE(AwaitSharedWrites(0, 4)) << "node A never shared its blocks";

  auto on_b = ClientFor(*nodes_[1], kAlice)->Generate(g);
  ASSERT_TRUE(on_b.ok()) << on_b.status();
  EXPECT_GE(on_b->usage().cache_read_input_tokens(), 256u) << "four 64-token blocks from A";
  EXPECT_EQ(on_b->token_ids_size(), on_a->token_ids_size());
  for (int i = 0; i < on_a->token_ids_size(); ++i) {
    EXPECT_EQ(on_b->token_ids(i), on_a->token_ids(i)) << i;
  }
  EXPECT_GE(Metric(1, "kvtier_cache_shared_adopted_total"), 4);
  auto stats = ClientFor(*nodes_[1], kAlice)->Stats();
  ASSERT_TRUE(stats.ok()) << stats.status();
  ASSERT_TRUE(stats->has_cluster());
  EXPECT_GT(stats->cluster().read_blocks(), 0u);
  EXPECT_GT(stats->cluster().commands(), 0u);
  EXPECT_GT(Metric(1, "kvtier_cluster_read_blocks_total"), 0);

  // Bob, on the third node: another tenant, another salt, nothing to read.
  auto bobs = ClientFor(*nodes_[2], kBob)->Generate(g);
  ASSERT_TRUE(bobs.ok()) << bobs.status();
  EXPECT_EQ(bobs->usage().cache_read_input_tokens(), 0u);
}

TEST_F(ClusterDaemonTest, ABlockPutOnOneNodeReadsBackOnAnotherAndOnlyForItsTenant) {
  const std::string payload = testing::Bytes(300'000, 7);  // a block of several Redis values
  v1::PutHeader h;
  h.set_key(BlockKey{77, 78}.ToByteString());
  auto put = ClientFor(*nodes_[0], kAlice)->Put(h, testing::AsBytes(payload));
  ASSERT_TRUE(put.ok()) << put.status();
  ASSERT_TRUE(AwaitSharedWrites(0, 1));
  auto got = ClientFor(*nodes_[2], kAlice)->Get(BlockKey{77, 78});
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->payload, payload);
  // Bob's view of the same visible key is another stored key: a miss.
  auto bobs = ClientFor(*nodes_[1], kBob)->Get(BlockKey{77, 78});
  EXPECT_EQ(bobs.status().code(), StatusCode::kNotFound) << bobs.status();

  // A node killed: the others keep serving (its blocks in the cluster tier too).
  nodes_[0]->Stop(SIGKILL);
  auto again = ClientFor(*nodes_[1], kAlice)->Get(BlockKey{77, 78});
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->payload, payload);
}

// Peer lookup without any shared store: three nodes told of each other.
class PeerDaemonTest : public NodesTest {
 protected:
  void SetUp() override {
    dir_ = TempDir("peer_daemon");
    std::filesystem::create_directories(dir_);
    std::ofstream(dir_ + "/keys") << kAlice << " alice admin\n" << kBob << " bob\n";
    std::ofstream(dir_ + "/secret", std::ios::binary) << std::string(32, 's');
    // Named before any starts (each is told of the others), so drawn below
    // the ephemeral range, and distinct.
    while (addrs_.size() < 3) {
      const std::string a = "127.0.0.1:" + std::to_string(testing::FreeLoopbackPort());
      if (std::find(addrs_.begin(), addrs_.end(), a) == addrs_.end()) addrs_.push_back(a);
    }
    for (int i = 0; i < 3; ++i) {
      std::string peers;
      for (int j = 0; j < 3; ++j) {
        if (j != i) peers += (peers.empty() ? "" : ",") + addrs_[j];
      }
      nodes_.push_back(std::make_unique<DaemonProcess>());
      ASSERT_TRUE(nodes_.back()->Start(
          dir_ + "/node" + std::to_string(i),
          {"--listen", addrs_[i], "--peers", peers, "--api-keys", dir_ + "/keys", "--cache-secret",
           dir_ + "/secret", "--dram-bytes", "64M", "--no-flash", "--rocks-bytes", "64M",
           "--metrics-listen", "127.0.0.1:0", "--http-listen", ""}));
    }
  }
  std::vector<std::string> addrs_;
};

TEST_F(PeerDaemonTest, AMissAsksTheOwnerAndADeadPeerIsAMissNotAHang) {
  v1::GenerateRequest g;
  for (int i = 1; i <= 20 * 64 + 5; ++i) g.add_token_ids((i * 7) % 500 + 3);
  g.set_max_tokens(3);
  auto on_a = ClientFor(*nodes_[0], kAlice)->Generate(g);
  ASSERT_TRUE(on_a.ok()) << on_a.status();
  // A's copies reach each block's owner (its own blocks stay where they are).
  ASSERT_TRUE(AwaitSharedWrites(0, 20));
  EXPECT_GT(Metric(0, "kvtier_peer_written_blocks_total"), 0);

  auto on_b = ClientFor(*nodes_[1], kAlice)->Generate(g);
  ASSERT_TRUE(on_b.ok()) << on_b.status();
  EXPECT_EQ(on_b->usage().cache_read_input_tokens(), 20u * 64) << "every full block, from peers";
  ASSERT_EQ(on_b->token_ids_size(), on_a->token_ids_size());
  for (int i = 0; i < on_a->token_ids_size(); ++i)
    EXPECT_EQ(on_b->token_ids(i), on_a->token_ids(i));
  EXPECT_GT(Metric(1, "kvtier_peer_read_blocks_total"), 0);
  // kvtier stats: per peer.
  auto stats = ClientFor(*nodes_[1], kAlice)->Stats();
  ASSERT_TRUE(stats.ok()) << stats.status();
  ASSERT_EQ(stats->peers_size(), 2);
  uint64_t read = 0;
  for (const v1::PeerNodeStats& p : stats->peers()) {
    EXPECT_NE(p.peer(), addrs_[1]);
    read += p.read_blocks();
  }
  EXPECT_GT(read, 0u);
  EXPECT_GT(stats->shared_adopted(), 0u);

  // Bob, same prompt: his keys are other keys; nothing of Alice's reaches him.
  auto bobs = ClientFor(*nodes_[1], kBob)->Generate(g);
  ASSERT_TRUE(bobs.ok()) << bobs.status();
  EXPECT_EQ(bobs->usage().cache_read_input_tokens(), 0u);

  // The Peer service is for nodes: a client's API key is not enough.
  {
    auto stub =
        v1::Peer::NewStub(grpc::CreateChannel(addrs_[0], grpc::InsecureChannelCredentials()));
    grpc::ClientContext ctx;
    ctx.AddMetadata("x-api-key", kAlice);
    ctx.AddMetadata("x-kvtier-peer", std::string(64, '0'));
    v1::PeerStatRequest req;
    req.add_keys(std::string(16, '\0'));
    v1::PeerStatResponse resp;
    EXPECT_EQ(stub->Stat(&ctx, req, &resp).error_code(), grpc::UNAUTHENTICATED);
  }

  // Node A dies: on C the blocks A owned are misses; the request still
  // succeeds, with the same tokens, and the dead peer is counted.
  nodes_[0]->Stop(SIGKILL);
  g.set_max_tokens(2);
  auto on_c = ClientFor(*nodes_[2], kAlice)->Generate(g);
  ASSERT_TRUE(on_c.ok()) << on_c.status();
  EXPECT_LT(on_c->usage().cache_read_input_tokens(), 20u * 64);
  EXPECT_EQ(on_c->token_ids(0), on_a->token_ids(0));
  EXPECT_GT(Metric(2, "kvtier_peer_errors_total"), 0);
}

// The C++ client's routing: blocks go to their owners and come back from
// them; any other node finds them too, through its peers.
TEST_F(PeerDaemonTest, TheClusterClientRoutesKeysToTheirOwners) {
  ClientOptions o;
  o.api_key = kAlice;
  o.timeout_ms = 60'000;
  ClusterClient cluster(addrs_, o);
  std::set<std::string> owners;
  std::vector<std::string> payloads;
  for (uint64_t i = 0; i < 12; ++i) {
    payloads.push_back(testing::Bytes(20'000 + i, static_cast<uint32_t>(i)));
    const BlockKey key{i + 1, 99};
    owners.insert(cluster.OwnerOf(key));
    ASSERT_TRUE(cluster.Put(key, v1::PutHeader(), testing::AsBytes(payloads[i])).ok());
  }
  EXPECT_GT(owners.size(), 1u) << "twelve keys all owned by one of three nodes";
  for (uint64_t i = 0; i < 12; ++i) {
    auto got = cluster.Get(BlockKey{i + 1, 99});
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(got->payload, payloads[i]);
  }
  // A node that is not the key's owner answers too, through its peers, once
  // the owner's copy has been sent on (in the background).
  for (uint64_t i = 0; i < 12; ++i) {
    const BlockKey key{i + 1, 99};
    int other = 0;
    while (addrs_[other] == cluster.OwnerOf(key)) ++other;
    Result<FetchedBlock> got = Status::NotFound("");
    for (int tries = 0; tries < 100 && !got.ok(); ++tries) {
      got = ClientFor(*nodes_[other], kAlice)->Get(key);
      if (!got.ok()) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(got->payload, payloads[i]);
  }
}

}  // namespace
}  // namespace kvtier
