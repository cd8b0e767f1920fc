// The multi-tier replay's cluster mode: one node without a shared tier is
// the single-node replay exactly; prefix routing keeps conversations whole;
// random routing loses the hits a shared tier gives back; the network's
// bytes, the fetch latency and the costs add up; and the scenario's
// "cluster" object is read, or refused naming the field.
#include "replay/cluster_replay.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <iomanip>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "cache/placement.h"
#include "replay/tier_replay.h"

namespace kvtier {
namespace {

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

// With 16-token blocks and 64 MiB of KV per token, a block is exactly 1 GiB:
// a tier of N GiB holds N blocks.
constexpr int kBlockTokens = 16;
constexpr double kBytesPerToken = 64.0 * 1024 * 1024;

Trace CsvTrace(const std::string& csv) {
  std::istringstream in(csv);
  TraceOptions o;
  o.format = TraceFormat::kCsv;
  o.block_tokens = kBlockTokens;
  return std::move(ParseTrace(in, "t", o).value());
}

// A scenario of tiers {name, GiB, GB/s, $/GiB-month}, the first on top, and
// a shared tier when `shared` is given (its "cluster" object's fields).
struct T {
  std::string name;
  double gib, gbps, price;
};
std::string ScenarioJson(const std::vector<T>& tiers, const std::string& shared = "") {
  std::ostringstream j;
  j << std::setprecision(17);
  j << R"({"name": "s", "model": {"kv_bytes_per_token": )" << kBytesPerToken
    << R"(, "active_params": 1e9}, "gpu": {"prefill_flops_per_s": 1e12, "usd_per_hour": 3.6},)"
    << R"( "tiers": [)";
  for (size_t i = 0; i < tiers.size(); ++i) {
    j << (i ? "," : "") << R"({"name": ")" << tiers[i].name << R"(", "capacity_gib": )"
      << tiers[i].gib << R"(, "read_gb_per_s": )" << tiers[i].gbps << R"(, "usd_per_gib_month": )"
      << tiers[i].price << "}";
  }
  j << "]";
  if (!shared.empty()) j << R"(, "cluster": {"shared_tier": {)" << shared << "}}";
  j << "}";
  return j.str();
}

TierScenario Scenario(const std::vector<T>& tiers, const std::string& shared = "") {
  Result<TierScenario> s = ParseTierScenario(ScenarioJson(tiers, shared), "s.json");
  EXPECT_TRUE(s.ok()) << s.status().ToString();
  return std::move(s).value();
}

// A shared tier of `gib` GiB at 1000 GB/s (a block in 1.07 ms, well under
// its 32 ms of prefill), `latency_ms` a fetch, $3/GiB-month.
constexpr double kSharedGbps = 1000;
std::string SharedTier(double gib, double latency_ms = 1) {
  std::ostringstream j;
  j << R"("name": "redis", "capacity_gib": )" << gib << R"(, "read_gb_per_s": )" << kSharedGbps
    << R"(, "latency_ms": )" << latency_ms << R"(, "usd_per_gib_month": 3)";
  return j.str();
}

ClusterReplayOptions Nodes(int n, const std::string& routing = "prefix") {
  ClusterReplayOptions o;
  o.nodes = n;
  EXPECT_TRUE(ParseClusterRouting(routing, &o).ok()) << routing;
  return o;
}

// `conversations` conversations of `turns` turns, one turn a second, their
// turns interleaved; each turn repeats the last and adds two blocks. With
// `system`, every request starts with the same block (a shared system
// prompt), as every request of the Mooncake trace does.
Trace Conversations(int conversations, int turns, bool system) {
  std::ostringstream csv;
  int64_t t = 0;
  for (int turn = 0; turn < turns; ++turn) {
    for (int c = 0; c < conversations; ++c) {
      csv << t << ",c" << c << ",";
      if (system) csv << "sys;";
      for (int b = 0; b < 2 * (turn + 1); ++b) csv << (b ? ";" : "") << "c" << c << "b" << b;
      csv << "\n";
      t += 1000;
    }
  }
  return CsvTrace(csv.str());
}

uint64_t InfinitePrefixHits(const Trace& t) {
  std::vector<bool> seen(t.distinct_blocks, false);
  uint64_t hits = 0;
  for (const TraceRequest& r : t.requests) {
    bool run = true;
    for (uint32_t i = 0; i < r.num_blocks; ++i) {
      const uint32_t id = t.blocks[r.first_block + i];
      run = run && seen[id];
      hits += run;
      seen[id] = true;
    }
  }
  return hits;
}

void ExpectSameAsSingleNode(const Trace& trace, const TierScenario& sc) {
  Result<TierReplayResult> single = ReplayTiers(trace, sc);
  Result<ClusterReplayResult> one = ReplayCluster(trace, sc, Nodes(1));
  ASSERT_TRUE(single.ok()) << single.status().ToString();
  ASSERT_TRUE(one.ok()) << one.status().ToString();
  EXPECT_EQ(one->requests, single->requests);
  EXPECT_EQ(one->block_refs, single->block_refs);
  EXPECT_EQ(one->block_hits, single->block_hits);
  EXPECT_EQ(one->hit_tokens, single->hit_tokens);
  ASSERT_EQ(one->tier_hit_blocks.size(), single->tiers.size());
  for (size_t i = 0; i < single->tiers.size(); ++i) {
    EXPECT_EQ(one->tier_hit_blocks[i], single->tiers[i].hit_blocks) << single->tiers[i].name;
  }
  EXPECT_EQ(one->promotions, single->promotions);
  EXPECT_EQ(one->demotions, single->demotions);
  EXPECT_EQ(one->remat_drops, single->remat_drops);
  EXPECT_EQ(one->drops, single->drops);
  EXPECT_DOUBLE_EQ(one->tiered.gpu_s, single->tiered.gpu_s);
  EXPECT_DOUBLE_EQ(one->tiered.tier_usd, single->tiered.tier_usd);
  EXPECT_DOUBLE_EQ(one->tiered.tier_usd_used, single->tiered.tier_usd_used);
  EXPECT_DOUBLE_EQ(one->tiered.usd_per_mtok(), single->tiered.usd_per_mtok());
  EXPECT_DOUBLE_EQ(one->tiered.usd_per_mtok_used(), single->tiered.usd_per_mtok_used());
  EXPECT_DOUBLE_EQ(one->tiered.mean_ttft_s, single->tiered.mean_ttft_s);
  EXPECT_DOUBLE_EQ(one->no_cache.usd_per_mtok(), single->no_cache.usd_per_mtok());
  EXPECT_DOUBLE_EQ(one->ttft_saved_s, single->ttft_saved_s);
  EXPECT_EQ(one->network_bytes(), 0);
  EXPECT_EQ(one->shared_hit_blocks, 0u);
  EXPECT_DOUBLE_EQ(one->busiest_node_token_share, 1.0);
}

// A stack under pressure (promotions, demotions, drops), and one that holds
// everything: the same hits, per tier, and the same costs to the last bit.
TEST(ClusterReplayTest, OneNodeWithoutASharedTierIsTheSingleNodeReplay) {
  const Trace trace = Conversations(6, 4, /*system=*/true);
  ExpectSameAsSingleNode(
      trace, Scenario({{"hbm", 2, 1000, 20}, {"dram", 3, 100, 3}, {"flash", 9, 10, 0.1}}));
  ExpectSameAsSingleNode(trace, Scenario({{"hbm", 200, 1000, 20}}));
}

// The same on the first 3000 requests of the Mooncake trace, through a lean
// Llama-3-8B stack that drops and demotes; skipped without the shared data.
TEST(ClusterReplayTest, OneNodeIsTheSingleNodeReplayOnTheMooncakeTrace) {
  const char* env = std::getenv("KVTIER_SHARED_DATA");
  const std::string path = std::string(env != nullptr ? env : "../shared/data") +
                           "/traces/mooncake_fast25/conversation_trace.jsonl";
  Result<Trace> trace = ReadTrace(path, TraceOptions{});
  if (!trace.ok()) GTEST_SKIP() << "no " << path;
  trace->requests.resize(3000);
  Result<TierScenario> sc = ParseTierScenario(R"({
      "model": {"layers": 32, "kv_heads": 8, "head_dim": 128, "active_params": 8e9},
      "tiers": [{"name": "hbm", "capacity_gib": 16, "read_gb_per_s": 2000, "usd_per_gib_month": 22.8},
                {"name": "dram", "capacity_gib": 128, "read_gb_per_s": 50, "usd_per_gib_month": 3},
                {"name": "flash", "capacity_gib": 256, "read_gb_per_s": 6, "usd_per_gib_month": 0.1}]})",
                                              "lean.json");
  ASSERT_TRUE(sc.ok()) << sc.status().ToString();
  ExpectSameAsSingleNode(*trace, *sc);
}

// Every request starts with the same system block: routing by the first
// block sends them all to one node (the hits of one node, the load of
// one); routing by the first two blocks spreads the conversations and keeps
// each one's turns together, so with tiers that hold everything no hit is
// lost at any N, and no byte crosses the network.
TEST(ClusterReplayTest, PrefixRoutingKeepsEachConversationOnOneNode) {
  const Trace trace = Conversations(40, 4, /*system=*/true);
  const TierScenario sc = Scenario({{"hbm", 1000, 1000, 1}});
  const uint64_t all = InfinitePrefixHits(trace);
  Result<ClusterReplayResult> one = ReplayCluster(trace, sc, Nodes(1));
  ASSERT_TRUE(one.ok()) << one.status().ToString();
  EXPECT_EQ(one->block_hits, all);
  for (int n : {2, 4, 8}) {
    Result<ClusterReplayResult> first = ReplayCluster(trace, sc, Nodes(n, "prefix"));
    ASSERT_TRUE(first.ok()) << first.status().ToString();
    EXPECT_EQ(first->block_hits, all);
    EXPECT_DOUBLE_EQ(first->busiest_node_token_share, 1.0) << "the system block's owner";
    Result<ClusterReplayResult> conv = ReplayCluster(trace, sc, Nodes(n, "prefix:2"));
    ASSERT_TRUE(conv.ok()) << conv.status().ToString();
    // Only the system block is missed once more per node that sees it.
    EXPECT_GE(conv->block_hits, all - static_cast<uint64_t>(n - 1));
    EXPECT_LT(conv->busiest_node_token_share, 0.75) << n << " nodes";
    EXPECT_EQ(conv->network_bytes(), 0);
    ASSERT_EQ(conv->node_requests.size(), static_cast<size_t>(n));
    uint64_t served = 0;
    for (uint64_t q : conv->node_requests) served += q;
    EXPECT_EQ(served, trace.requests.size());
  }
}

// Random routing scatters a conversation's turns over the nodes: without a
// shared tier most reuse is lost; with one, a node that misses adopts the
// blocks another node wrote through, and nearly all of it comes back, over
// the network. With prefix routing and the shared tier, N nodes lose
// nothing against one.
TEST(ClusterReplayTest, RandomRoutingLosesHitsThatASharedTierGivesBack) {
  const Trace trace = Conversations(40, 4, /*system=*/false);
  const uint64_t all = InfinitePrefixHits(trace);
  const TierScenario local = Scenario({{"hbm", 1000, 1000, 1}});
  const TierScenario shared = Scenario({{"hbm", 1000, 1000, 1}}, SharedTier(4000));
  Result<ClusterReplayResult> lost = ReplayCluster(trace, local, Nodes(4, "random"));
  Result<ClusterReplayResult> kept = ReplayCluster(trace, shared, Nodes(4, "random"));
  Result<ClusterReplayResult> prefix = ReplayCluster(trace, shared, Nodes(4, "prefix"));
  ASSERT_TRUE(lost.ok() && kept.ok() && prefix.ok());
  EXPECT_LT(lost->block_hits, all / 2);
  EXPECT_EQ(lost->network_bytes(), 0);
  EXPECT_GE(kept->block_hits, all * 95 / 100);
  EXPECT_GT(kept->shared_hit_blocks, 0u);
  EXPECT_GT(kept->shared_adopted, 0u);
  EXPECT_GT(kept->network_fetch_bytes, 0);
  EXPECT_GT(kept->token_hit_ratio(), lost->token_hit_ratio());
  EXPECT_GT(kept->mean_ttft_saved_s(), lost->mean_ttft_saved_s());
  EXPECT_EQ(prefix->block_hits, all);
  EXPECT_EQ(prefix->shared_hit_blocks, 0u) << "each conversation's blocks are on its node";
}

// The network's bytes: every block inserted is copied to the shared tier (a
// whole page, 1 GiB here), and every hit from it is fetched (its tokens).
TEST(ClusterReplayTest, NetworkBytesAreTheSharedTiersTraffic) {
  const Trace trace = Conversations(10, 3, /*system=*/false);
  const TierScenario sc = Scenario({{"hbm", 1000, 1000, 1}}, SharedTier(4000));
  Result<ClusterReplayResult> r = ReplayCluster(trace, sc, Nodes(4, "random"));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->shared_write_failures + r->shared_write_skips, 0u);
  // Every distinct block is inserted once somewhere, and a node that
  // adopted a block does not insert it again.
  EXPECT_EQ(r->shared_writes, trace.distinct_blocks);
  EXPECT_DOUBLE_EQ(r->shared_write_through_bytes, trace.distinct_blocks * kGiB);
  EXPECT_GE(r->network_write_bytes, r->shared_write_through_bytes);
  EXPECT_DOUBLE_EQ(r->network_fetch_bytes, r->shared_hit_tokens * kBytesPerToken);
  EXPECT_DOUBLE_EQ(r->network_bytes(),
                   r->network_fetch_bytes + r->network_copy_bytes + r->network_write_bytes);
  // One node and no shared tier: nothing crosses.
  Result<ClusterReplayResult> alone =
      ReplayCluster(trace, Scenario({{"hbm", 1000, 1000, 1}}), Nodes(1));
  ASSERT_TRUE(alone.ok());
  EXPECT_EQ(alone->network_bytes(), 0);
}

// A block fetched from the shared tier costs the latency plus its bytes over
// the bandwidth, of GPU time and of TTFT.
TEST(ClusterReplayTest, SharedFetchesPayTheLatency) {
  const Trace trace = Conversations(10, 3, /*system=*/false);
  Result<ClusterReplayResult> fast = ReplayCluster(
      trace, Scenario({{"hbm", 1000, 1000, 1}}, SharedTier(4000, 0)), Nodes(4, "random"));
  Result<ClusterReplayResult> slow = ReplayCluster(
      trace, Scenario({{"hbm", 1000, 1000, 1}}, SharedTier(4000, 50)), Nodes(4, "random"));
  ASSERT_TRUE(fast.ok() && slow.ok());
  ASSERT_EQ(fast->shared_hit_blocks, slow->shared_hit_blocks);
  ASSERT_GT(fast->shared_hit_blocks, 0u);
  EXPECT_NEAR(slow->tiered.gpu_s - fast->tiered.gpu_s, fast->shared_hit_blocks * 0.050, 1e-9);
  EXPECT_NEAR(fast->ttft_saved_s - slow->ttft_saved_s, fast->shared_hit_blocks * 0.050, 1e-9);
  // Without latency: prefill of the misses, and the hits' bytes at the
  // shared tier's bandwidth and the local (hbm) one's, 1000 GB/s both.
  const double s_per_token = 2 * 1e9 / 1e12;
  const double shared_fetch_s = fast->shared_hit_tokens * kBytesPerToken / (kSharedGbps * 1e9);
  const double local_fetch_s =
      (fast->hit_tokens - fast->shared_hit_tokens) * kBytesPerToken / 1000e9;
  EXPECT_NEAR(fast->tiered.gpu_s,
              (fast->tokens - fast->hit_tokens) * s_per_token + shared_fetch_s + local_fetch_s,
              1e-9);
}

// The local stack is provisioned once per node, the shared tier once.
TEST(ClusterReplayTest, CostsCountEveryNodesTiersAndTheSharedTierOnce) {
  const Trace trace = Conversations(10, 3, /*system=*/false);
  const TierScenario sc =
      Scenario({{"hbm", 100, 1000, 20}, {"dram", 400, 100, 3}}, SharedTier(800));
  Result<ClusterReplayResult> one = ReplayCluster(trace, sc, Nodes(1));
  Result<ClusterReplayResult> four = ReplayCluster(trace, sc, Nodes(4));
  ASSERT_TRUE(one.ok() && four.ok());
  const double duration_s = one->duration_s;
  const double local = (CostPerSecond(100 * kGiB, 20) + CostPerSecond(400 * kGiB, 3)) * duration_s;
  const double shared = CostPerSecond(800 * kGiB, 3) * duration_s;
  EXPECT_NEAR(one->local_tier_usd, local, local * 1e-12);
  EXPECT_NEAR(four->local_tier_usd, 4 * local, local * 1e-12);
  EXPECT_NEAR(one->shared_tier_usd, shared, shared * 1e-12);
  EXPECT_NEAR(four->shared_tier_usd, shared, shared * 1e-12);
  EXPECT_DOUBLE_EQ(four->tiered.tier_usd, four->local_tier_usd + four->shared_tier_usd);
  EXPECT_DOUBLE_EQ(four->tiered.tier_usd_used,
                   four->local_tier_usd_used + four->shared_tier_usd_used);
  EXPECT_GT(four->shared_tier_usd_used, 0);
  EXPECT_LE(four->shared_tier_usd_used, four->shared_tier_usd);
  EXPECT_GT(four->tiered.usd_per_mtok(), one->tiered.usd_per_mtok()) << "three more stacks";
  EXPECT_DOUBLE_EQ(four->no_cache.usd_per_mtok(), one->no_cache.usd_per_mtok());
}

// A node's share of the shared tier is 1/N of it: a full share refuses
// further copies (counted), and a share under one block is refused.
TEST(ClusterReplayTest, EachNodeWritesOnlyItsShareOfTheSharedTier) {
  const Trace trace = Conversations(10, 3, /*system=*/false);
  Result<ClusterReplayResult> r =
      ReplayCluster(trace, Scenario({{"hbm", 1000, 1000, 1}}, SharedTier(8)), Nodes(4, "random"));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_GT(r->shared_write_failures, 0u);
  EXPECT_LE(r->shared_writes, 8u);
  EXPECT_LE(r->shared_peak_used_bytes, 8 * kGiB);
  Result<ClusterReplayResult> tiny =
      ReplayCluster(trace, Scenario({{"hbm", 1000, 1000, 1}}, SharedTier(3)), Nodes(4, "random"));
  ASSERT_FALSE(tiny.ok());
  EXPECT_EQ(tiny.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(tiny.status().message().find("a node's share"), std::string::npos)
      << tiny.status().message();
}

// The write-through copies expire max_ttl_s after they are written: past it
// a node that misses finds nothing in the shared tier. One request, then
// eight more for the same blocks ten seconds later, spread over two nodes.
TEST(ClusterReplayTest, SharedCopiesExpireAfterTheMaximumTtl) {
  std::string csv = "0,a,x;y\n";
  for (int i = 0; i < 8; ++i) csv += "10000,a,x;y\n";
  const Trace trace = CsvTrace(csv);
  auto replay = [&](int max_ttl_s) {
    const std::string shared = SharedTier(100) + R"(, "max_ttl_s": )" + std::to_string(max_ttl_s);
    Result<ClusterReplayResult> r =
        ReplayCluster(trace, Scenario({{"hbm", 100, 1000, 1}}, shared), Nodes(2, "random"));
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return std::move(r).value();
  };
  const ClusterReplayResult kept = replay(3600);
  ASSERT_GT(kept.node_requests[0], 0u);
  ASSERT_GT(kept.node_requests[1], 0u);
  EXPECT_EQ(kept.block_hits, 16u) << "every later request hits";
  EXPECT_GE(kept.shared_hit_blocks, 2u);
  // Expired: the other node's first request misses and computes them.
  const ClusterReplayResult expired = replay(5);
  EXPECT_EQ(expired.block_hits, 14u);
  EXPECT_EQ(expired.shared_hit_blocks, 0u);
}

TEST(ClusterReplayTest, ReplaysAreDeterministic) {
  const Trace trace = Conversations(20, 4, /*system=*/true);
  const TierScenario sc = Scenario({{"hbm", 4, 1000, 20}, {"dram", 20, 100, 3}}, SharedTier(64));
  Result<ClusterReplayResult> a = ReplayCluster(trace, sc, Nodes(4, "random"));
  Result<ClusterReplayResult> b = ReplayCluster(trace, sc, Nodes(4, "random"));
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->block_hits, b->block_hits);
  EXPECT_EQ(a->tier_hit_blocks, b->tier_hit_blocks);
  EXPECT_EQ(a->node_requests, b->node_requests);
  EXPECT_EQ(a->network_bytes(), b->network_bytes());
  EXPECT_EQ(a->tiered.usd_per_mtok_used(), b->tiered.usd_per_mtok_used());
}

TEST(ClusterReplayTest, RefusesBadOptions) {
  const Trace trace = Conversations(2, 2, false);
  const TierScenario sc = Scenario({{"hbm", 100, 1000, 1}});
  for (int n : {0, -1, kMaxClusterNodes + 1}) {
    ClusterReplayOptions o;
    o.nodes = n;
    Result<ClusterReplayResult> r = ReplayCluster(trace, sc, o);
    ASSERT_FALSE(r.ok()) << n;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  }
}

TEST(ClusterReplayTest, ParsesRoutings) {
  ClusterReplayOptions o;
  ASSERT_TRUE(ParseClusterRouting("random", &o).ok());
  EXPECT_EQ(o.routing, ClusterRouting::kRandom);
  EXPECT_EQ(ClusterRoutingName(o), "random");
  ASSERT_TRUE(ParseClusterRouting("prefix:3", &o).ok());
  EXPECT_EQ(o.routing, ClusterRouting::kPrefix);
  EXPECT_EQ(o.prefix_blocks, 3);
  EXPECT_EQ(ClusterRoutingName(o), "prefix:3");
  ASSERT_TRUE(ParseClusterRouting("prefix", &o).ok());
  EXPECT_EQ(o.prefix_blocks, 1);
  EXPECT_EQ(ClusterRoutingName(o), "prefix");
  for (const char* bad : {"", "hash", "prefix:", "prefix:0", "prefix:-2", "prefix:x", "Prefix"}) {
    const Status s = ParseClusterRouting(bad, &o);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(s.message().find("prefix:K"), std::string::npos) << s.message();
  }
}

TEST(ClusterScenarioTest, ReadsTheClusterObjectWithDefaults) {
  const TierScenario none = Scenario({{"hbm", 1, 1, 1}});
  EXPECT_FALSE(none.shared_tier.has_value());
  const TierScenario s = Scenario(
      {{"hbm", 1, 1, 1}},
      R"("name": "redis", "capacity_gib": 1024, "read_gb_per_s": 10, "latency_ms": 0.2, "usd_per_gib_month": 3.0)");
  ASSERT_TRUE(s.shared_tier.has_value());
  EXPECT_EQ(s.shared_tier->name, "redis");
  EXPECT_EQ(s.shared_tier->capacity_bytes, 1024 * kGiB);
  EXPECT_EQ(s.shared_tier->read_bytes_per_s, 10e9);
  EXPECT_DOUBLE_EQ(s.shared_tier->latency_s, 0.0002);
  EXPECT_EQ(s.shared_tier->usd_per_gib_month, 3.0);
  EXPECT_EQ(s.shared_tier->policy, "lru");
  EXPECT_EQ(s.shared_tier->max_ttl_ms, 3'600'000) << "kvtierd's cap";
  const TierScenario d = Scenario(
      {{"hbm", 1, 1, 1}}, R"("capacity_gib": 8, "read_gb_per_s": 1, "usd_per_gib_month": 0)");
  EXPECT_EQ(d.shared_tier->name, "cluster");
  EXPECT_EQ(d.shared_tier->latency_s, 0);
  // A cluster object without a shared tier: the nodes share nothing.
  Result<TierScenario> bare = ParseTierScenario(
      R"({"model": {"kv_bytes_per_token": 1024, "active_params": 1e9}, "cluster": {},
          "tiers": [{"name": "hbm", "capacity_gib": 1, "read_gb_per_s": 1, "usd_per_gib_month": 1}]})",
      "bare.json");
  ASSERT_TRUE(bare.ok()) << bare.status().ToString();
  EXPECT_FALSE(bare->shared_tier.has_value());
}

TEST(ClusterScenarioTest, RefusesMalformedClusterObjectsNamingTheField) {
  const std::string head =
      R"({"model": {"kv_bytes_per_token": 1024, "active_params": 1e9},
          "tiers": [{"name": "hbm", "capacity_gib": 1, "read_gb_per_s": 1, "usd_per_gib_month": 1}],
          "cluster": )";
  const std::string ok_fields = R"("capacity_gib": 8, "read_gb_per_s": 1, "usd_per_gib_month": 3)";
  auto shared = [&](const std::string& fields) {
    return head + R"({"shared_tier": {)" + fields + "}}}";
  };
  const std::vector<std::pair<std::string, std::string>> cases = {
      {head + "3}", "cluster must be an object"},
      {head + R"({"shard": {}}})", "cluster.shard is not a field"},
      {head + R"({"shared_tier": []}})", "cluster.shared_tier must be an object"},
      {shared(R"("read_gb_per_s": 1, "usd_per_gib_month": 3)"),
       "cluster.shared_tier.capacity_gib is required"},
      {shared(R"("capacity_gib": 8, "read_gb_per_s": 0, "usd_per_gib_month": 3)"),
       "cluster.shared_tier.read_gb_per_s must be a finite number > 0"},
      {shared(R"("capacity_gib": "big", "read_gb_per_s": 1, "usd_per_gib_month": 3)"),
       "cluster.shared_tier.capacity_gib must be a number"},
      {shared(ok_fields + R"(, "latency_ms": -1)"),
       "cluster.shared_tier.latency_ms must be a finite number >= 0"},
      {shared(R"("capacity_gib": 8, "read_gb_per_s": 1)"),
       "cluster.shared_tier.usd_per_gib_month is required"},
      {shared(ok_fields + R"(, "policy": "mru")"),
       "cluster.shared_tier.policy 'mru' is not an eviction policy"},
      {shared(ok_fields + R"(, "admission": "bloom")"),
       "cluster.shared_tier.admission 'bloom' is not an admission filter"},
      {shared(ok_fields + R"(, "name": "hbm")"),
       "cluster.shared_tier.name 'hbm' is the name of a local tier"},
      {shared(ok_fields + R"(, "max_ttl_s": -1)"),
       "cluster.shared_tier.max_ttl_s must be a finite number >= 0"},
      {shared(ok_fields + R"(, "bandwidth": 3)"), "cluster.shared_tier.bandwidth is not a field"},
  };
  for (const auto& [json, want] : cases) {
    Result<TierScenario> s = ParseTierScenario(json, "bad.json");
    ASSERT_FALSE(s.ok()) << json;
    EXPECT_EQ(s.status().code(), StatusCode::kInvalidArgument) << json;
    EXPECT_NE(s.status().message().find(want), std::string::npos)
        << json << "\n  -> " << s.status().message();
    EXPECT_NE(s.status().message().find("bad.json"), std::string::npos) << s.status().message();
  }
}

// A scenario built in code, as ReplayCluster takes it, is checked as a file's.
TEST(ClusterScenarioTest, ValidatesASharedTierBuiltInCode) {
  TierScenario s = Scenario({{"hbm", 1, 1, 1}});
  s.shared_tier = ScenarioSharedTier{};
  EXPECT_EQ(ValidateTierScenario(s).code(), StatusCode::kInvalidArgument) << "no capacity";
  s.shared_tier->capacity_bytes = kGiB;
  s.shared_tier->read_bytes_per_s = 1e9;
  EXPECT_TRUE(ValidateTierScenario(s).ok()) << ValidateTierScenario(s).ToString();
  s.shared_tier->latency_s = -1;
  EXPECT_EQ(ValidateTierScenario(s).code(), StatusCode::kInvalidArgument);
  s.shared_tier->latency_s = 0;
  s.shared_tier->name = "hbm";
  EXPECT_NE(ValidateTierScenario(s).message().find("name of a local tier"), std::string::npos);
  s.shared_tier->name = "cluster";
  s.shared_tier->policy = "mru";
  EXPECT_NE(ValidateTierScenario(s).message().find("unknown eviction policy 'mru'"),
            std::string::npos);
}

}  // namespace
}  // namespace kvtier
