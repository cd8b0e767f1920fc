// The cluster tier on a real Redis Cluster (redis-server 7 in cluster mode,
// started by LocalRedisCluster on loopback): slot routing against Redis's own
// answer, the tier conformance suite, bad data, a dead master and its
// failover, and two caches (two nodes) sharing blocks through it.
#include "tiers/cluster/redis_tier.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <random>
#include <thread>

#include "cache/cache_manager.h"
#include "cache/prefix_hasher.h"
#include "tests/tiers/local_redis_cluster.h"
#include "tests/tiers/tier_conformance.h"
#include "tiers/cluster/redis_cluster.h"
#include "tiers/dram/dram_tier.h"

namespace kvtier {
namespace {

using testing::LocalRedisCluster;
using testing::LocalRedisClusterOptions;

// One three-master cluster per test process, started on first use.
LocalRedisCluster& SharedCluster() {
  static std::unique_ptr<LocalRedisCluster> cluster = [] {
    auto c = LocalRedisCluster::Start(LocalRedisClusterOptions{});
    if (!c.ok()) {
      ADD_FAILURE() << c.status();
      return std::unique_ptr<LocalRedisCluster>();
    }
    return std::move(*c);
  }();
  if (!cluster) std::abort();
  return *cluster;
}

RedisTierOptions TierOptions(const std::vector<std::string>& seeds, const std::string& prefix) {
  RedisTierOptions o;
  o.seeds = seeds;
  o.key_prefix = prefix;
  o.read_bytes_per_s = 1e9;  // calibration is tested by the conformance suite
  o.write_bytes_per_s = 1e9;
  return o;
}

std::string UniquePrefix() {
  std::random_device rd;
  return "kvt-test-" + std::to_string(rd()) + std::to_string(rd());
}

std::vector<std::byte> Bytes(size_t n, uint64_t seed) { return conformance::Payload(n, seed); }

TEST(RedisKeySlotTest, MatchesRedisItself) {
  // Redis Cluster specification's examples.
  EXPECT_EQ(RedisKeySlot("123456789"), 0x31C3 % 16384);
  EXPECT_EQ(RedisKeySlot("foo"), 12182);
  EXPECT_EQ(RedisKeySlot("{user1000}.following"), RedisKeySlot("{user1000}.followers"));
  EXPECT_EQ(RedisKeySlot("foo{}{bar}"), RedisKeySlot(std::string("foo{}{bar}")));
  EXPECT_EQ(RedisKeySlot("foo{{bar}}zap"), RedisKeySlot("{bar"));
  EXPECT_EQ(RedisKeySlot("foo{bar}{zap}"), RedisKeySlot("bar"));
  // And the server's own CLUSTER KEYSLOT, for keys of our shape and others.
  LocalRedisCluster& c = SharedCluster();
  std::mt19937 rng(5);
  for (int i = 0; i < 20; ++i) {
    std::string key = i % 2 ? "kvt:{" + BlockKey{rng(), rng()}.ToHex() + "}:" + std::to_string(i)
                            : "plain-" + std::to_string(rng());
    const std::string out = c.Cli(c.nodes()[0], {"CLUSTER", "KEYSLOT", key});
    EXPECT_EQ(std::to_string(RedisKeySlot(key)) + "\n", out) << key;
  }
}

TEST(RedisKeySlotTest, HostPortIsParsedOrRefused) {
  std::string host;
  int port = 0;
  ASSERT_TRUE(ParseHostPort("127.0.0.1:7000", &host, &port, "x").ok());
  EXPECT_EQ(host, "127.0.0.1");
  EXPECT_EQ(port, 7000);
  for (const char* bad : {"", "7000", ":7000", "host:", "host:0", "host:70000", "host:7x"}) {
    const Status s = ParseHostPort(bad, &host, &port, "seed");
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(s.message().find("seed"), std::string::npos) << s;
  }
}

TEST(RedisTierTest, BadOptionsAreRefused) {
  const std::vector<std::string> seeds = SharedCluster().nodes();
  RedisTierOptions o = TierOptions({}, "kvt");
  EXPECT_EQ(OpenRedisTier(o).status().code(), StatusCode::kInvalidArgument);
  o = TierOptions(seeds, "a{b");
  EXPECT_EQ(OpenRedisTier(o).status().code(), StatusCode::kInvalidArgument);
  o = TierOptions(seeds, "kvt");
  o.value_bytes = 100;
  EXPECT_EQ(OpenRedisTier(o).status().code(), StatusCode::kInvalidArgument);
  o = TierOptions({"not-a-seed"}, "kvt");
  EXPECT_EQ(OpenRedisTier(o).status().code(), StatusCode::kInvalidArgument);
  // Nobody listening: unavailable, after the connect timeout.
  o = TierOptions({"127.0.0.1:1"}, "kvt");
  EXPECT_EQ(OpenRedisTier(o).status().code(), StatusCode::kUnavailable);
}

// A truncated or altered value under one of our keys is a miss, counted as
// corruption, and the damaged block is removed from the store.
TEST(RedisTierTest, BadDataIsAMissAndACorruptionCount) {
  const std::vector<std::string> seeds = SharedCluster().nodes();
  RedisTierOptions o = TierOptions(seeds, UniquePrefix());
  o.value_bytes = 4096;  // 10,000 bytes: three values
  auto tier = OpenRedisTier(o).value();
  auto raw = RedisCluster::Connect(RedisClusterOptions{seeds}).value();
  const auto payload = Bytes(10000, 1);
  const BlockKey a{1, 1}, b{2, 2}, c{3, 3};
  for (const BlockKey& k : {a, b, c}) ASSERT_TRUE(WriteOne(*tier, k, payload, kNoExpiry).ok());

  auto set = [&](const std::string& key, std::string_view value) {
    const RedisCommand cmd{{"SET", key, value}, key};
    ASSERT_TRUE(raw->Run(std::span(&cmd, 1))[0].ok());
  };
  auto get = [&](const std::string& key) {
    const RedisCommand cmd{{"GET", key}, key};
    return std::string(raw->Run(std::span(&cmd, 1))[0]->str());
  };
  // a: its meta value cut short; b: one byte of its last value altered;
  // c: its middle value truncated.
  const std::vector<std::string> ka = RedisTierKeysForTesting(*tier, a, payload.size());
  const std::vector<std::string> kb = RedisTierKeysForTesting(*tier, b, payload.size());
  const std::vector<std::string> kc = RedisTierKeysForTesting(*tier, c, payload.size());
  ASSERT_EQ(kb.size(), 3u);
  set(ka[0], get(ka[0]).substr(0, 30));
  std::string last = get(kb[2]);
  last[7] ^= 1;
  set(kb[2], last);
  set(kc[1], get(kc[1]).substr(0, 100));

  for (const BlockKey& k : {a, b, c}) {
    std::vector<std::byte> buf(payload.size(), std::byte{0xee});
    const Result<uint64_t> n = ReadOne(*tier, k, buf);
    EXPECT_TRUE(n.status().IsCorruption()) << n.status();
    for (std::byte x : buf) {
      ASSERT_TRUE(x == std::byte{0} || x == std::byte{0xee}) << "a payload byte reached the reader";
    }
  }
  EXPECT_EQ(tier->Info().corruption_errors, 3u);
  // Removed: the next read is a plain miss.
  std::vector<std::byte> buf(payload.size());
  EXPECT_TRUE(ReadOne(*tier, b, buf).status().IsNotFound());
  EXPECT_EQ(get(kb[0]), "");
  // A value that is not ours at all under our key: a miss too.
  const BlockKey d{4, 4};
  set(RedisTierKeysForTesting(*tier, d, 1)[0], "hello");
  EXPECT_FALSE(ReadOne(*tier, d, buf).ok());
}

// Two nodes changing one block at once: one replaces it with other bytes
// over and over, the other refreshes its expiry (a read of its header, then
// a change). Every read is one version whole, and nothing is damaged: the
// expiry change once wrote the header it had read over the replacement's
// payload, a block that failed its checksum from then on.
TEST(RedisTierTest, AnExpiryChangeRacingAReplaceNeverMixesVersions) {
  const std::vector<std::string> seeds = SharedCluster().nodes();
  RedisTierOptions o = TierOptions(seeds, UniquePrefix());
  o.value_bytes = 4096;
  auto writer = OpenRedisTier(o).value();
  auto refresher = OpenRedisTier(o).value();
  const auto v1 = Bytes(40000, 1), v2 = Bytes(40000, 2);
  const BlockKey k{9, 9};
  const int64_t far = SystemClock()->NowMs() + 3'600'000;
  ASSERT_TRUE(WriteOne(*writer, k, v1, far).ok());
  std::atomic<bool> stop{false}, bad{false};
  std::thread replace([&] {
    for (int i = 0; i < 400 && !bad; ++i) {
      if (!WriteOne(*writer, k, i % 2 ? v1 : v2, far).ok()) bad = true;
    }
    stop = true;
  });
  std::thread refresh([&] {
    for (int64_t i = 0; !stop; ++i) {
      if (!refresher->SetExpiry(std::span(&k, 1), far + i).ok()) bad = true;
    }
  });
  std::vector<std::byte> buf(40000);
  int reads = 0;
  while (!stop) {
    const Result<uint64_t> n = ReadOne(*refresher, k, buf);
    ++reads;
    if (!n.ok() || (buf != v1 && buf != v2)) {
      ADD_FAILURE() << "read " << reads << ": " << n.status();
      bad = true;
      break;
    }
  }
  replace.join();
  refresh.join();
  EXPECT_FALSE(bad.load());
  EXPECT_EQ(writer->Info().corruption_errors + refresher->Info().corruption_errors, 0u);
  const Result<uint64_t> n = ReadOne(*writer, k, buf);
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_TRUE(buf == v1 || buf == v2);
}

// Two caches, each its own node (a DRAM tier over its own connection to the
// cluster): what one inserts, the other finds through the shared tier, the
// bytes identical; another namespace (tenant salt) finds nothing.
TEST(RedisTierTest, ABlockWrittenOnOneNodeIsAHitOnAnother) {
  const std::vector<std::string> seeds = SharedCluster().nodes();
  const std::string prefix = UniquePrefix();
  auto open = [&] {
    std::vector<TierSlot> slots;
    DramTierOptions d;
    d.capacity_bytes = 8 << 20;
    d.read_bytes_per_s = d.write_bytes_per_s = 1e10;
    slots.push_back({OpenDramTier(d).value(), NewLruPolicy()});
    slots.push_back({OpenRedisTier(TierOptions(seeds, prefix)).value(), NewLruPolicy()});
    CacheManagerOptions co;
    co.sweep_interval_ms = 0;
    co.background_promotion = false;
    co.background_shared_writes = false;
    return CacheManager::Open(std::move(slots), co).value();
  };
  auto node_a = open();
  auto node_b = open();
  Namespace ns;
  ns.model_id = "m";
  ns.model_revision = "r";
  ns.block_tokens = 16;
  ns.cache_salt = "tenant-a";
  PrefixHasher hasher(ns);
  std::vector<TokenId> tokens(16 * 6);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<TokenId>(i * 7 + 3);
  const std::vector<BlockKey> keys = hasher.Keys(tokens);
  std::vector<std::vector<std::byte>> payloads;
  for (size_t i = 0; i < keys.size(); ++i) {
    payloads.push_back(Bytes(20000 + i, i));
    ASSERT_TRUE(
        node_a
            ->Insert(keys[i], i ? std::optional(keys[i - 1]) : std::nullopt, payloads[i], kNoExpiry)
            .ok());
  }
  EXPECT_EQ(node_b->Lookup(keys).blocks, 0u) << "nothing is shared before the copies are written";
  EXPECT_EQ(node_a->RunSharedWrites(), keys.size());
  const PrefixHit hit = node_b->Lookup(keys);
  EXPECT_EQ(hit.blocks, keys.size());
  std::vector<std::vector<std::byte>> got(keys.size(), std::vector<std::byte>(30000));
  std::vector<std::span<std::byte>> dests(got.begin(), got.end());
  const std::vector<Result<uint64_t>> reads = node_b->ReadBatch(keys, dests);
  for (size_t i = 0; i < keys.size(); ++i) {
    ASSERT_TRUE(reads[i].ok()) << reads[i].status();
    got[i].resize(*reads[i]);
    EXPECT_EQ(got[i], payloads[i]) << i;
  }
  const CacheStats sb = node_b->Stats();
  EXPECT_EQ(sb.shared_adopted, keys.size());
  EXPECT_EQ(node_a->Stats().shared_writes, keys.size());
  // Another tenant's salt: other keys, nothing found.
  ns.cache_salt = "tenant-b";
  EXPECT_EQ(node_b->Lookup(PrefixHasher(ns).Keys(tokens)).blocks, 0u);
  // B dropping its view does not delete A's blocks from the store.
  ASSERT_TRUE(node_b->Erase(keys[0]).ok());
  auto node_c = open();
  EXPECT_EQ(node_c->Lookup(keys).blocks, keys.size());
}

// A node's share frees up as its blocks expire in the store: a full share
// takes new blocks again once the old ones' expiry has passed.
TEST(RedisTierTest, ExpiredBlocksFreeTheShare) {
  ManualClock clock;
  RedisTierOptions o = TierOptions(SharedCluster().nodes(), UniquePrefix());
  o.capacity_bytes = 4 * 10000;
  o.clock = &clock;
  auto tier = OpenRedisTier(o).value();
  const auto payload = Bytes(10000, 5);
  const int64_t expiry = clock.NowMs() + 60'000;
  for (uint64_t i = 0; i < 4; ++i) {
    ASSERT_TRUE(WriteOne(*tier, BlockKey{i, 7}, payload, i < 2 ? expiry : kNoExpiry).ok());
  }
  EXPECT_EQ(WriteOne(*tier, BlockKey{9, 7}, payload, kNoExpiry).code(),
            StatusCode::kResourceExhausted);
  clock.AdvanceMs(60'000);  // the two with an expiry are gone
  EXPECT_TRUE(WriteOne(*tier, BlockKey{9, 7}, payload, kNoExpiry).ok());
  EXPECT_TRUE(WriteOne(*tier, BlockKey{10, 7}, payload, kNoExpiry).ok());
  EXPECT_EQ(WriteOne(*tier, BlockKey{11, 7}, payload, kNoExpiry).code(),
            StatusCode::kResourceExhausted);
  EXPECT_EQ(tier->Info().used_bytes, 4u * 10000);
}

// A slot moving between masters (what resharding does): while it migrates,
// the old owner answers ASK for a key already moved and the tier asks the new
// one; once it has moved, MOVED sends the tier there and it reloads its map.
TEST(RedisTierTest, ASlotMovingBetweenMastersIsFollowed) {
  LocalRedisCluster& c = SharedCluster();
  RedisTierOptions o = TierOptions(c.nodes(), UniquePrefix());
  o.value_bytes = 4096;
  auto tier = OpenRedisTier(o).value();
  auto raw = RedisCluster::Connect(RedisClusterOptions{c.nodes()}).value();
  const auto payload = Bytes(10000, 3);  // three values, one slot (one hash tag)
  const BlockKey k{31, 41};
  ASSERT_TRUE(WriteOne(*tier, k, payload, kNoExpiry).ok());
  const std::vector<std::string> keys = RedisTierKeysForTesting(*tier, k, payload.size());
  const std::string slot = std::to_string(RedisKeySlot(keys[0]));
  const std::string src = raw->MasterOf(keys[0]);
  std::string dst;
  for (const std::string& m : raw->Masters()) {
    if (m != src) dst = m;
  }
  ASSERT_FALSE(dst.empty());
  auto id = [&](const std::string& node) {
    std::string s = c.Cli(node, {"CLUSTER", "MYID"});
    while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
    return s;
  };
  const std::string src_id = id(src), dst_id = id(dst);
  c.Cli(dst, {"CLUSTER", "SETSLOT", slot, "IMPORTING", src_id});
  c.Cli(src, {"CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id});
  std::vector<std::string> migrate = {
      "MIGRATE", dst.substr(0, dst.rfind(':')), dst.substr(dst.rfind(':') + 1), "", "0", "5000",
      "KEYS"};
  migrate.insert(migrate.end(), keys.begin(), keys.end());
  ASSERT_NE(c.Cli(src, migrate).find("OK"), std::string::npos);

  auto read = [&] {
    std::vector<std::byte> buf(payload.size());
    const Result<uint64_t> n = ReadOne(*tier, k, buf);
    EXPECT_TRUE(n.ok()) << n.status();
    EXPECT_EQ(buf, payload);
  };
  const uint64_t before = RedisTierStatsOf(*tier)->cluster.redirects;
  read();  // ASK: the block is on the importing master already
  const uint64_t after_ask = RedisTierStatsOf(*tier)->cluster.redirects;
  EXPECT_GT(after_ask, before) << "the ASK was not followed";
  for (const std::string& m : raw->Masters())
    c.Cli(m, {"CLUSTER", "SETSLOT", slot, "NODE", dst_id});
  read();  // MOVED: the map still names the old master
  EXPECT_GT(RedisTierStatsOf(*tier)->cluster.redirects, after_ask) << "the MOVED was not followed";
  read();  // the map was reloaded: straight there
}

// A dead master: reads of its slots are misses (kUnavailable, counted), never
// wrong bytes and never a hang; once a replica takes over, they hit again.
TEST(RedisTierTest, AMasterFailingOverIsMissesThenHitsAgain) {
  LocalRedisClusterOptions co;
  co.replicas = 1;
  co.node_timeout_ms = 1000;
  auto cluster = LocalRedisCluster::Start(co);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  RedisTierOptions o = TierOptions((*cluster)->nodes(), "kvt");
  o.command_timeout_ms = 500;
  auto tier = OpenRedisTier(o).value();
  auto raw = RedisCluster::Connect(RedisClusterOptions{(*cluster)->nodes()}).value();
  constexpr int kBlocks = 48;
  std::vector<std::vector<std::byte>> payloads;
  for (int i = 0; i < kBlocks; ++i) {
    payloads.push_back(Bytes(5000 + i, i));
    ASSERT_TRUE(
        WriteOne(*tier, BlockKey{static_cast<uint64_t>(i), 9}, payloads[i], kNoExpiry).ok());
  }
  const std::string victim = raw->MasterOf(RedisTierKeysForTesting(*tier, BlockKey{0, 9}, 1)[0]);
  ASSERT_FALSE(victim.empty());
  // Replication is asynchronous: what the replica has not received, a
  // failover loses (a miss, as a cache may). The test wants it all there.
  ASSERT_TRUE((*cluster)->WaitReplicated(victim, 30000));
  // Traffic all along: a reader that checks every byte it gets, from before
  // the kill until after the failover.
  std::atomic<bool> stop{false}, wrong{false};
  std::atomic<int> traffic_hits{0}, traffic_misses{0};
  std::thread traffic([&] {
    for (uint64_t n = 0; !stop.load(); ++n) {
      const int i = static_cast<int>(n % kBlocks);
      std::vector<std::byte> buf(6000);
      const Result<uint64_t> r = ReadOne(*tier, BlockKey{static_cast<uint64_t>(i), 9}, buf);
      if (r.ok()) {
        buf.resize(*r);
        if (buf != payloads[i]) wrong = true;
        ++traffic_hits;
      } else {
        ++traffic_misses;
      }
    }
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  (*cluster)->Kill(victim);

  std::string last_miss;
  auto read_all = [&](int* hits, int* misses) {
    *hits = *misses = 0;
    for (int i = 0; i < kBlocks; ++i) {
      std::vector<std::byte> buf(6000);
      const Result<uint64_t> n = ReadOne(*tier, BlockKey{static_cast<uint64_t>(i), 9}, buf);
      if (n.ok()) {
        buf.resize(*n);
        ASSERT_EQ(buf, payloads[i]) << "wrong bytes for block " << i;
        ++*hits;
      } else {
        ASSERT_TRUE(n.status().code() == StatusCode::kUnavailable || n.status().IsNotFound())
            << n.status();
        last_miss = n.status().ToString();
        ++*misses;
      }
    }
  };
  int hits = 0, misses = 0;
  read_all(&hits, &misses);
  EXPECT_GT(misses, 0) << "the dead master's blocks cannot be read";
  EXPECT_GT(hits, 0) << "the other masters keep serving";
  EXPECT_GT(tier->Info().io_errors, 0u);
  ASSERT_TRUE((*cluster)->WaitHealthy(30000)) << "no replica took over";
  for (int round = 0; round < 100; ++round) {
    read_all(&hits, &misses);
    if (misses == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_EQ(hits, kBlocks) << "after the failover every block reads again; last miss: "
                           << last_miss;
  stop = true;
  traffic.join();
  EXPECT_FALSE(wrong.load()) << "a read returned bytes other than the block's";
  EXPECT_GT(traffic_hits.load(), 0);
  EXPECT_GT(traffic_misses.load(), 0) << "the reader never saw the failover";
  EXPECT_GT(RedisTierStatsOf(*tier)->cluster.refreshes, 1u);
}

// Every node gone: each call fails within its timeout.
TEST(RedisTierTest, ADeadClusterIsAMissNotAHang) {
  auto cluster = LocalRedisCluster::Start(LocalRedisClusterOptions{});
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  RedisTierOptions o = TierOptions((*cluster)->nodes(), "kvt");
  o.command_timeout_ms = 300;
  auto tier = OpenRedisTier(o).value();
  const auto payload = Bytes(1000, 1);
  ASSERT_TRUE(WriteOne(*tier, BlockKey{1, 1}, payload, kNoExpiry).ok());
  for (const std::string& n : std::vector<std::string>((*cluster)->nodes())) (*cluster)->Kill(n);
  std::vector<std::byte> buf(1000);
  EXPECT_EQ(ReadOne(*tier, BlockKey{1, 1}, buf).status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(WriteOne(*tier, BlockKey{2, 2}, payload, kNoExpiry).code(), StatusCode::kUnavailable);
  const BlockKey k{1, 1};
  EXPECT_FALSE(tier->Stat(std::span(&k, 1))[0].has_value());
  EXPECT_GT(tier->Info().io_errors, 0u);
}

// A node that stops answering (a paused or frozen master: its sockets stay
// open) costs one command timeout, and is then not asked again for a moment:
// every connection pooled for it shares its fate. (Pooled connections were
// handed out before the back-off was checked, so each cost another timeout.)
TEST(RedisTierTest, ANodeThatStopsAnsweringIsNotAskedAgainThroughPooledConnections) {
  auto cluster = LocalRedisCluster::Start(LocalRedisClusterOptions{});
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  RedisClusterOptions o{(*cluster)->nodes()};
  o.command_timeout_ms = 300;
  auto client = RedisCluster::Connect(o).value();
  const std::string key = "kvt-pause:{k}";
  const std::string master = client->MasterOf(key);
  ASSERT_FALSE(master.empty());
  const RedisCommand set{{"SET", key, "v"}, key}, get{{"GET", key}, key};
  ASSERT_TRUE(client->Run(std::span(&set, 1))[0].ok());
  // Several connections to the master in the pool.
  std::vector<std::thread> warm;
  for (int t = 0; t < 6; ++t) {
    warm.emplace_back([&] {
      for (int i = 0; i < 20; ++i) (void)client->Run(std::span(&get, 1));
    });
  }
  for (std::thread& t : warm) t.join();
  ASSERT_GE(client->Stats().connects, 3u);

  (*cluster)->Cli(master, {"CLIENT", "PAUSE", "2000", "ALL"});
  const Result<RedisReply> first = client->Run(std::span(&get, 1))[0];
  EXPECT_EQ(first.status().code(), StatusCode::kUnavailable) << first.status();
  const Result<RedisReply> second = client->Run(std::span(&get, 1))[0];
  EXPECT_EQ(second.status().code(), StatusCode::kUnavailable) << second.status();
  EXPECT_NE(second.status().message().find("failed a moment ago"), std::string::npos)
      << "asked again through another pooled connection: " << second.status();
  // Answering again once the pause ends.
  bool back = false;
  for (int i = 0; i < 100 && !back; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    const Result<RedisReply> r = client->Run(std::span(&get, 1))[0];
    back = r.ok() && r->str() == "v";
  }
  EXPECT_TRUE(back);
}

// Nodes starting together calibrate the shared tier at the same time. Each
// measures it (one node's clean-up erased the other's sample blocks under
// the same keys mid-read: a read bandwidth of 0, which prices the tier out
// for the process's life), and no sample block is left in the store.
TEST(RedisTierTest, NodesCalibratingTogetherEachMeasureAndLeaveNothing) {
  const std::vector<std::string> seeds = SharedCluster().nodes();
  const std::string prefix = UniquePrefix();
  RedisTierOptions o = TierOptions(seeds, prefix);
  o.read_bytes_per_s = o.write_bytes_per_s = 0;  // measured
  for (int round = 0; round < 10; ++round) {
    std::vector<std::unique_ptr<Tier>> tiers(3);
    std::vector<std::thread> opening;
    for (size_t i = 0; i < tiers.size(); ++i) {
      opening.emplace_back([&, i] { tiers[i] = OpenRedisTier(o).value(); });
    }
    for (std::thread& t : opening) t.join();
    for (const auto& t : tiers) {
      EXPECT_GT(t->Info().read_bytes_per_s, 0) << "round " << round;
      EXPECT_GT(t->Info().write_bytes_per_s, 0) << "round " << round;
    }
  }
  auto raw = RedisCluster::Connect(RedisClusterOptions{seeds}).value();
  const std::string pattern = prefix + ":*";
  for (const std::string& master : raw->Masters()) {
    const std::string_view scan[] = {"SCAN", "0", "MATCH", pattern, "COUNT", "100000"};
    const Result<RedisReply> r = raw->RunOn(master, scan);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->at(1).size(), 0u) << "sample blocks left on " << master;
  }
}

struct RedisFactory {
  static constexpr const char* kName = "RedisCluster";
  static constexpr bool kPersistent = true;
  static Result<std::unique_ptr<Tier>> Open(const std::string& dir, uint64_t capacity,
                                            Clock* clock) {
    RedisTierOptions o;
    o.seeds = SharedCluster().nodes();
    o.key_prefix = "kvt-" + std::to_string(std::hash<std::string>()(dir));
    o.capacity_bytes = capacity;
    o.clock = clock;
    // Blocks of several values (the conformance payloads are up to 40000
    // bytes): a replace must be atomic across them.
    o.value_bytes = 4096;
    return OpenRedisTier(o);
  }
  static Status Corrupt(Tier& tier, const BlockKey& key) {
    KVTIER_ASSIGN_OR_RETURN(auto raw,
                            RedisCluster::Connect(RedisClusterOptions{SharedCluster().nodes()}));
    const std::string meta = RedisTierKeysForTesting(tier, key, 1)[0];
    const RedisCommand get{{"GET", meta}, meta};
    const std::vector<Result<RedisReply>> got = raw->Run(std::span(&get, 1));
    if (!got[0].ok()) return got[0].status();
    std::string v(got[0]->str());
    if (v.size() < 60) return Status::NotFound("no such block");
    v[v.size() - 1] ^= 0x40;
    const RedisCommand set{{"SET", meta, v}, meta};
    return raw->Run(std::span(&set, 1))[0].status();
  }
};

}  // namespace

namespace conformance {
using RedisTiers = ::testing::Types<RedisFactory>;
INSTANTIATE_TYPED_TEST_SUITE_P(Tiers, TierConformanceTest, RedisTiers, FactoryNames);
}  // namespace conformance

}  // namespace kvtier
