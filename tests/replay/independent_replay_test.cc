// The independent-reference replay: every cached block reference is a hit,
// whatever comes before it in its request (as block caches and libCacheSim
// count).
#include "replay/independent_replay.h"

#include <gtest/gtest.h>

#include <list>
#include <random>
#include <sstream>
#include <unordered_map>

#include "cache/eviction_policy.h"

namespace kvtier {
namespace {

Trace ParseCsv(const std::string& text) {
  std::istringstream in(text);
  TraceOptions o;
  o.format = TraceFormat::kCsv;
  o.block_tokens = 16;
  return std::move(ParseTrace(in, "t", o).value());
}

// Chains that grow and branch at random: request r uses a random earlier
// chain's first blocks and then some of its own.
Trace RandomChains(uint32_t seed, int requests) {
  std::mt19937 rng(seed);
  std::string csv;
  for (int r = 0; r < requests; ++r) {
    const int base = static_cast<int>(rng() % (r + 1));
    const int shared = static_cast<int>(rng() % 5), own = 1 + static_cast<int>(rng() % 4);
    csv += std::to_string(r) + ",t,";
    for (int b = 0; b < shared; ++b)
      csv += "c" + std::to_string(base) + "." + std::to_string(b) + ";";
    for (int b = 0; b < own; ++b) {
      csv +=
          (b ? ";" : "") + std::string("c") + std::to_string(r) + "." + std::to_string(shared + b);
    }
    csv += "\n";
  }
  return ParseCsv(csv);
}

// LRU by the book, one reference at a time.
uint64_t ReferenceLruHits(const Trace& t, uint64_t size) {
  std::list<uint32_t> order;  // front = most recent
  std::unordered_map<uint32_t, std::list<uint32_t>::iterator> where;
  uint64_t hits = 0;
  for (const TraceRequest& req : t.requests) {
    for (uint32_t i = 0; i < req.num_blocks; ++i) {
      const uint32_t id = t.blocks[req.first_block + i];
      if (auto it = where.find(id); it != where.end()) {
        ++hits;
        order.erase(it->second);
      } else if (order.size() >= size) {
        where.erase(order.back());
        order.pop_back();
      }
      order.push_front(id);
      where[id] = order.begin();
    }
  }
  return hits;
}

// z is cached in request 2 but follows a miss: a hit here, not with
// prefix semantics.
TEST(IndependentReplayTest, CountsEveryCachedReference) {
  const Trace t = ParseCsv("time_ms,tenant,keys\n0,a,x;y;z\n5,a,x;q;z\n6,b,x;y\n");
  auto r = ReplayTraceIndependent(t, "lru", kInfiniteBlocks);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->block_refs, 8u);
  EXPECT_EQ(r->block_hits, 4u);  // x, z; x, y
  EXPECT_EQ(r->hit_tokens, 4u * 16);
  auto prefix = ReplayTrace(t, "lru", kInfiniteBlocks);
  ASSERT_TRUE(prefix.ok());
  EXPECT_EQ(prefix->block_hits, 3u);
}

TEST(IndependentReplayTest, LruMatchesTheTextbookLru) {
  for (uint32_t seed : {1u, 2u, 3u}) {
    const Trace t = RandomChains(seed, 300);
    for (uint64_t size : {1ull, 7ull, 40ull, 200ull}) {
      auto r = ReplayTraceIndependent(t, "lru", size);
      ASSERT_TRUE(r.ok());
      EXPECT_EQ(r->block_hits, ReferenceLruHits(t, size)) << "seed " << seed << " size " << size;
    }
  }
}

TEST(IndependentReplayTest, BeladyIsNeverBeaten) {
  for (uint32_t seed : {4u, 5u}) {
    const Trace t = RandomChains(seed, 400);
    for (uint64_t size : {3ull, 20ull, 100ull}) {
      auto opt = ReplayTraceIndependent(t, "belady", size);
      ASSERT_TRUE(opt.ok());
      for (const std::string& p : EvictionPolicyNames()) {
        auto online = ReplayTraceIndependent(t, p, size);
        ASSERT_TRUE(online.ok()) << p;
        EXPECT_LE(online->block_hits, opt->block_hits) << p << " size " << size;
      }
    }
  }
}

TEST(IndependentReplayTest, BadArgumentsAreRefused) {
  const Trace t = ParseCsv("time_ms,tenant,keys\n0,a,x\n");
  EXPECT_EQ(ReplayTraceIndependent(t, "nope", 4).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ReplayTraceIndependent(t, "lru", 0).status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kvtier
