// Trace readers and the trace replay: parsing (with line-numbered errors),
// prefix semantics, Belady's bound, determinism, and the shared Mooncake
// trace's infinite-cache figure.
#include "replay/trace.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <random>
#include <sstream>

#include "cache/eviction_policy.h"
#include "replay/policy_replay.h"

namespace kvtier {
namespace {

std::string TracesDir() {
  const char* env = std::getenv("KVTIER_SHARED_DATA");
  return std::string(env != nullptr ? env : "../shared/data") + "/traces";
}

Result<Trace> Parse(const std::string& text, TraceFormat f, int block_tokens = 512,
                    int64_t shared = 0) {
  std::istringstream in(text);
  TraceOptions o;
  o.format = f;
  o.block_tokens = block_tokens;
  o.azure_shared_prefix_tokens = shared;
  return ParseTrace(in, "t", o);
}

std::vector<std::string> AllPolicies() {
  std::vector<std::string> p = EvictionPolicyNames();
  return p;
}

// A synthetic trace of chained prefix keys: conversations that grow turn by
// turn (each turn re-sends the history), interleaved at random.
Trace Conversations(uint32_t seed, int conversations, int turns) {
  std::mt19937 rng(seed);
  std::string csv;
  std::vector<int> turn(conversations, 0);
  int64_t t = 0;
  for (int done = 0; done < conversations * turns;) {
    const int c = static_cast<int>(rng() % conversations);
    if (turn[c] == turns) continue;
    const int blocks = 2 * (++turn[c]) + static_cast<int>(rng() % 2);
    csv += std::to_string(t++) + ",tenant" + std::to_string(c % 3) + ",";
    for (int b = 0; b < blocks; ++b) {
      csv += (b ? ";" : "") + std::to_string(c) + "." + std::to_string(b);
    }
    csv += "\n";
    ++done;
  }
  return std::move(Parse(csv, TraceFormat::kCsv, 16).value());
}

TEST(TraceTest, MooncakeConversationTraceHasTheKnownInfiniteCacheHitRatio) {
  const std::string path = TracesDir() + "/mooncake_fast25/conversation_trace.jsonl";
  TraceOptions o;
  auto trace = ReadTrace(path, o);
  if (!trace.ok() && trace.status().code() == StatusCode::kNotFound) {
    GTEST_SKIP() << "no " << path;
  }
  ASSERT_TRUE(trace.ok()) << trace.status();
  EXPECT_EQ(trace->requests.size(), 12031u);
  EXPECT_EQ(trace->distinct_blocks, 182790u);
  auto r = ReplayTrace(*trace, "lru", kInfiniteBlocks);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->block_refs, 288500u);
  EXPECT_EQ(r->block_hits, 105710u);  // 36.64 %
  // Belady is never beaten at any size, and every policy is bounded by the
  // infinite cache.
  for (double f : {0.01, 0.05, 0.2}) {
    const uint64_t size = static_cast<uint64_t>(f * trace->distinct_blocks);
    auto opt = ReplayTrace(*trace, "belady", size);
    ASSERT_TRUE(opt.ok());
    EXPECT_LE(opt->block_hits, r->block_hits);
    for (const std::string& p : AllPolicies()) {
      auto online = ReplayTrace(*trace, p, size);
      ASSERT_TRUE(online.ok());
      EXPECT_LE(online->block_hits, opt->block_hits) << p << " at " << size;
    }
  }
}

TEST(TraceTest, BeladyIsNeverBeatenOnSyntheticConversations) {
  for (uint32_t seed : {1u, 2u, 3u}) {
    const Trace t = Conversations(seed, 40, 8);
    for (uint64_t size : {8ull, 32ull, 100ull, 400ull}) {
      auto opt = ReplayTrace(t, "belady", size);
      ASSERT_TRUE(opt.ok());
      for (const std::string& p : AllPolicies()) {
        auto online = ReplayTrace(t, p, size);
        ASSERT_TRUE(online.ok());
        EXPECT_LE(online->block_hits, opt->block_hits) << p << " size " << size << " seed " << seed;
        EXPECT_LE(online->hit_tokens, opt->hit_tokens) << p;
      }
    }
  }
}

TEST(TraceTest, LruEqualsFifoWithoutReuseAndBothMissEverything) {
  // Azure's trace has no prefix hashes: without a synthetic shared prefix no
  // block is ever used twice.
  const std::string csv =
      "TIMESTAMP,ContextTokens,GeneratedTokens\r\n"
      "2023-11-16 18:17:03.9799600,2000,10\r\n"
      "2023-11-16 18:17:04.0000000,700,5\r\n"
      "2023-11-16 18:17:05.5000000,4096,1\r\n";
  auto t = Parse(csv, TraceFormat::kAzure, 512);
  ASSERT_TRUE(t.ok()) << t.status();
  for (uint64_t size : {1ull, 3ull, 100ull}) {
    auto lru = ReplayTrace(*t, "lru", size);
    auto fifo = ReplayTrace(*t, "fifo", size);
    ASSERT_TRUE(lru.ok() && fifo.ok());
    EXPECT_EQ(lru->block_hits, 0u);
    EXPECT_EQ(fifo->block_hits, 0u);
    EXPECT_EQ(lru->block_refs, fifo->block_refs);
  }
  // A shared prefix (labelled synthetic) makes the first full blocks shared.
  auto shared = Parse(csv, TraceFormat::kAzure, 512, 1024);
  ASSERT_TRUE(shared.ok());
  auto r = ReplayTrace(*shared, "lru", kInfiniteBlocks);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->block_hits, 3u);  // request 2 (700 tokens) has one full shared block; 3 has two
}

TEST(TraceTest, AzureTimesAndBlocks) {
  auto t = Parse(
      "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 23:59:59.5000000,513,1\n"
      "2023-11-17 00:00:00.2500000,512,2\n",
      TraceFormat::kAzure, 512);
  ASSERT_TRUE(t.ok()) << t.status();
  ASSERT_EQ(t->requests.size(), 2u);
  EXPECT_EQ(t->requests[0].time_ms, 0);
  EXPECT_EQ(t->requests[1].time_ms, 750);  // across midnight
  EXPECT_EQ(t->requests[0].num_blocks, 2u);
  EXPECT_EQ(t->BlockTokens(t->requests[0], 1), 1u);
  EXPECT_EQ(t->requests[1].num_blocks, 1u);
  EXPECT_EQ(t->distinct_blocks, 3u);
}

TEST(TraceTest, PrefixSemanticsCountOnlyTheLeadingCachedRun) {
  auto t = Parse("time_ms,tenant,keys\n0,a,x;y;z\n5,a,x;q;z\n6,b,x;y\n", TraceFormat::kCsv, 16);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->tenants.size(), 2u);
  auto r = ReplayTrace(*t, "lru", kInfiniteBlocks);
  ASSERT_TRUE(r.ok());
  // Request 2 hits x only (z is cached but follows a miss); request 3 hits x, y.
  EXPECT_EQ(r->block_hits, 3u);
  EXPECT_EQ(r->hit_tokens, 3u * 16);
  EXPECT_EQ(r->block_refs, 8u);
}

TEST(TraceTest, ReplaysAreDeterministic) {
  const Trace t = Conversations(9, 30, 6);
  for (const std::string& p : {std::string("arc"), std::string("s3fifo"), std::string("belady")}) {
    auto a = ReplayTrace(t, p, 50);
    auto b = ReplayTrace(t, p, 50);
    ASSERT_TRUE(a.ok() && b.ok());
    EXPECT_EQ(a->block_hits, b->block_hits) << p;
    EXPECT_EQ(a->hit_tokens, b->hit_tokens) << p;
  }
}

TEST(TraceTest, MalformedTracesNameTheLine) {
  auto expect_error = [](const Result<Trace>& r, const std::string& where) {
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(r.status().message().find(where), std::string::npos) << r.status();
  };
  const std::string good =
      R"({"timestamp": 0, "input_length": 600, "output_length": 1, "hash_ids": [0, 1]})";
  expect_error(Parse(good + "\n" + good + "\n{oops\n", TraceFormat::kMooncake), "t:3:");
  expect_error(
      Parse(R"({"timestamp": 0, "input_length": 6, "output_length": 1})", TraceFormat::kMooncake),
      "t:1: \"hash_ids\"");
  expect_error(
      Parse(R"({"timestamp": 0, "input_length": 6, "output_length": 1, "hash_ids": ["a"]})",
            TraceFormat::kMooncake),
      "t:1:");
  expect_error(Parse(R"({"timestamp": "0", "input_length": 6, "output_length": 1, "hash_ids": []})",
                     TraceFormat::kMooncake),
               "\"timestamp\"");
  expect_error(Parse(R"({"timestamp": 5, "input_length": 6, "output_length": 1, "hash_ids": [1]})"
                     "\n"
                     R"({"timestamp": 4, "input_length": 6, "output_length": 1, "hash_ids": [1]})",
                     TraceFormat::kMooncake),
               "t:2: timestamps must not decrease");
  expect_error(Parse("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-13-01 00:00:00,5,5\n",
                     TraceFormat::kAzure),
               "t:2: bad timestamp");
  expect_error(Parse("2023-11-16 18:17:03.9,5\n", TraceFormat::kAzure), "t:1:");
  expect_error(Parse("2023-11-16 18:17:03.9,-5,1\n", TraceFormat::kAzure), "t:1:");
  expect_error(Parse("0,a,x;y\n1,a\n", TraceFormat::kCsv), "t:2: expected");
  expect_error(Parse("0,a,x;;y\n", TraceFormat::kCsv), "t:1: empty block key");
  expect_error(Parse("zero,a,x\n", TraceFormat::kCsv), "t:1: time_ms");
  EXPECT_EQ(ReadTrace("/nonexistent/trace", TraceOptions{}).status().code(), StatusCode::kNotFound);
}

// Found by tests/fuzz/trace_fuzz (corpus/trace/regression-time-span): times
// are kept from the first request's, and a span past int64 overflowed.
TEST(TraceTest, TimesSpanningMoreThanInt64AreRefused) {
  for (TraceFormat f : {TraceFormat::kMooncake, TraceFormat::kCsv}) {
    const std::string text =
        f == TraceFormat::kCsv
            ? "-9000000000000000000,a,x\n9000000000000000000,a,y\n"
            : R"({"timestamp": -9000000000000000000, "input_length": 1, "output_length": 1, )"
              R"("hash_ids": [1]})"
              "\n"
              R"({"timestamp": 9000000000000000000, "input_length": 1, "output_length": 1, )"
              R"("hash_ids": [2]})";
    Result<Trace> t = Parse(text, f);
    ASSERT_FALSE(t.ok());
    EXPECT_EQ(t.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(t.status().message().find("t:2: timestamps span"), std::string::npos) << t.status();
  }
  // The widest span that fits is fine.
  Result<Trace> t = Parse("-4611686018427387904,a,x\n4611686018427387903,a,y\n", TraceFormat::kCsv);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->requests[1].time_ms, INT64_MAX);
}

TEST(TraceTest, SizesAreBlocksFractionsOrInf) {
  auto s = ParseTraceSizes("100,0.5,inf,1.0", 1000);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(*s, (std::vector<uint64_t>{100, 500, kInfiniteBlocks, 1000}));
  for (const char* bad : {"", "0", "-5", "1.5", "0.0", "abc", "10,", "2e"}) {
    EXPECT_FALSE(ParseTraceSizes(bad, 1000).ok()) << bad;
  }
  const Trace t = Conversations(1, 3, 2);
  EXPECT_EQ(ReplayTrace(t, "lru", 0).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ReplayTrace(t, "nope", 10).status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kvtier
