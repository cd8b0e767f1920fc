#include "engine/engine.h"

#include "context/usage.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <optional>
#include <thread>

#include "kernels/device.h"
#include "model/thread_pool.h"
#include "model/tokenizer.h"
#include "tests/engine/engine_test_util.h"
#include "tests/gated_tier.h"
#include "tests/shared_data.h"

namespace kvtier {
namespace {

// A deterministic prompt of n tokens in [3, vocab).
std::vector<TokenId> Prompt(int n, uint32_t salt, int vocab) {
  std::vector<TokenId> p;
  uint32_t x = salt * 2654435761u + 1;
  for (int i = 0; i < n; ++i) {
    x = x * 1664525u + 1013904223u;
    p.push_back(3 + static_cast<TokenId>((x >> 8) % static_cast<uint32_t>(vocab - 3)));
  }
  return p;
}

GenerateRequest Request(std::vector<TokenId> prompt, int max_tokens, std::string tenant = "t") {
  GenerateRequest r;
  r.tenant = std::move(tenant);
  r.prompt = std::move(prompt);
  r.max_tokens = max_tokens;
  r.keep_logits = true;
  return r;
}

bool SameBits(const std::vector<std::vector<float>>& a, const std::vector<std::vector<float>>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i].size() != b[i].size() ||
        std::memcmp(a[i].data(), b[i].data(), a[i].size() * sizeof(float)) != 0) {
      return false;
    }
  }
  return true;
}

std::unique_ptr<Engine> OpenEngine(const ModelWeights* w, CacheManager* cache,
                                   EngineOptions o = {}) {
  if (o.kv_bytes == EngineOptions{}.kv_bytes) o.kv_bytes = 64ll << 20;
  if (o.threads == 0) o.threads = 2;
  auto e = Engine::Open(w, cache, o);
  EXPECT_TRUE(e.ok()) << e.status().ToString();
  return std::move(e).value();
}

// The tiny model with head_dim 32, where bf16 attention runs on AMX tiles
// (and the pages keep their staged tiles) on a CPU that has them.
Result<std::unique_ptr<ModelWeights>> Head32Model(uint32_t seed) {
  ModelConfig c = ModelPreset("tiny").value();
  c.dim = 128;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  return RandomModel(c, seed);
}

TEST(EngineTest, Stories260KGreedyReproducesTheGoldenOutput) {
  SKIP_WITHOUT_STORIES260K();
  auto model = LoadStories260K();
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  const GreedyGolden& golden = model->golden;

  auto engine = OpenEngine(model->weights.get(), nullptr);
  GenerateRequest r = Request({golden.bos}, golden.steps);
  r.stop_tokens = {model->tokenizer->bos_id()};
  auto out = engine->Generate(r);
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_EQ(out->tokens, golden.token_ids);
  EXPECT_EQ(out->finish_reason, "length");
  EXPECT_EQ(model->tokenizer->Decode(1, out->tokens), golden.text);
}

TEST(EngineTest, TheDeviceIsChosenByName) {
  auto w = TinyRandomModel();
  EngineOptions o;
  o.kv_bytes = 8 << 20;
  o.device = "gpu";
  EXPECT_EQ(Engine::Open(w.get(), nullptr, o).status().code(), StatusCode::kInvalidArgument);
  o.device = "cpu";
  auto cpu = Engine::Open(w.get(), nullptr, o);
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  EXPECT_EQ((*cpu)->device(), "cpu");
  o.device = "auto";
  auto any = Engine::Open(w.get(), nullptr, o);
  ASSERT_TRUE(any.ok()) << any.status();
  EXPECT_EQ((*any)->device(), DeviceAvailable() ? "cuda" : "cpu");
  if (!DeviceAvailable()) {
    o.device = "cuda";
    EXPECT_EQ(Engine::Open(w.get(), nullptr, o).status().code(), StatusCode::kUnavailable);
  }
}

// The engine on the GPU: the golden greedy output of the real tiny model, and
// a second run of a longer prompt through a DRAM cache (its blocks copied
// out of device pages and back) giving the same tokens as the first.
TEST(EngineTest, CudaEngineReproducesTheGoldenOutputAndHitsTheCache) {
  if (!DeviceAvailable()) GTEST_SKIP() << "no GPU: " << DeviceDescription();
  SKIP_WITHOUT_STORIES260K();
  auto model = LoadStories260K();
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  const GreedyGolden& golden = model->golden;
  auto cache = DramCache();
  EngineOptions o;
  o.device = "cuda";
  o.block_tokens = 16;
  auto engine = OpenEngine(model->weights.get(), cache.get(), o);
  ASSERT_EQ(engine->device(), "cuda");
  GenerateRequest r = Request({golden.bos}, golden.steps);
  r.stop_tokens = {golden.bos};
  auto out = engine->Generate(r);
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_EQ(out->tokens, golden.token_ids);

  const std::vector<TokenId> prompt = Prompt(150, 3, model->weights->config.vocab_size);
  auto first = engine->Generate(Request(prompt, 8));
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->cache_hit_tokens, 0u);
  auto second = engine->Generate(Request(prompt, 8));
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->cache_hit_tokens, 144u);
  EXPECT_EQ(second->tokens, first->tokens);
  ASSERT_EQ(second->logits.size(), first->logits.size());
  for (size_t i = 0; i < first->logits.size(); ++i) {
    float err = 0, scale = 1e-30f;
    for (size_t j = 0; j < first->logits[i].size(); ++j) {
      err = std::max(err, std::abs(first->logits[i][j] - second->logits[i][j]));
      scale = std::max(scale, std::abs(first->logits[i][j]));
    }
    EXPECT_LT(err / scale, 1e-5f) << "step " << i;
  }
}

// Greedy steps without kept logits take the backend's argmax path
// (RunArgmax); with kept logits the sampler reads them. Both give the same
// tokens, on whichever device the engine runs.
TEST(EngineTest, GreedyTokensAreTheSameWithAndWithoutKeptLogits) {
  auto w = TinyRandomModel();
  EngineOptions o;
  o.device = "auto";
  auto engine = OpenEngine(w.get(), nullptr, o);
  const std::vector<TokenId> prompt = Prompt(40, 6, w->config.vocab_size);
  GenerateRequest with = Request(prompt, 24);
  GenerateRequest without = Request(prompt, 24);
  without.keep_logits = false;
  auto a = engine->Generate(with);
  auto b = engine->Generate(without);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->tokens, b->tokens);
  EXPECT_TRUE(b->logits.empty());
  for (size_t i = 0; i < a->tokens.size(); ++i) {
    const auto& row = a->logits[i];
    EXPECT_EQ(a->tokens[i], std::max_element(row.begin(), row.end()) - row.begin()) << i;
  }
}

// The forward passes share one validation; a block table naming a page
// outside the pool, or a page twice, is refused before any page is touched.
TEST(EngineTest, CpuForwardRefusesPagesOutsideThePool) {
  auto w = TinyRandomModel();
  ThreadPool pool(1);
  KvPages kv(w->config.Kv(16, DType::kFloat32), 4);
  CpuBackend cpu(*w, kv, &pool);
  const std::vector<TokenId> p = Prompt(20, 1, w->config.vocab_size);
  std::vector<float> before(kv.page_bytes() / sizeof(float));
  std::memcpy(before.data(), kv.Bytes(0).data(), kv.page_bytes());
  const std::vector<PageId> bad = {0, 4};
  SeqChunk ch{p, 0, bad, true};
  std::vector<float> logits;
  EXPECT_EQ(cpu.Run({&ch, 1}, &logits).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(std::memcmp(before.data(), kv.Bytes(0).data(), kv.page_bytes()), 0);
  // A page holds one sequence's tokens: named twice, in one table or two.
  const std::vector<PageId> twice = {2, 2};
  SeqChunk dup{p, 0, twice, true};
  EXPECT_EQ(cpu.Run({&dup, 1}, &logits).code(), StatusCode::kInvalidArgument);
  const std::vector<PageId> first = {0, 1}, second = {2, 1};
  const SeqChunk two[] = {{p, 0, first, true}, {p, 0, second, true}};
  EXPECT_EQ(cpu.Run(two, &logits).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(std::memcmp(before.data(), kv.Bytes(0).data(), kv.page_bytes()), 0);
  const std::vector<PageId> good = {0, 3};
  SeqChunk ok{p, 0, good, true};
  EXPECT_TRUE(cpu.Run({&ok, 1}, &logits).ok());
  std::vector<TokenId> ids;
  ASSERT_TRUE(cpu.RunArgmax({&ok, 1}, &ids).ok());
  ASSERT_EQ(ids.size(), 1u);
  EXPECT_EQ(ids[0], std::max_element(logits.begin(), logits.end()) - logits.begin());
}

// Rows a chunk writes again (here: the prompt changes from position 40 on)
// are staged again, not read from the side copy staged from the old rows.
TEST(EngineTest, CpuForwardRestagesRowsItWritesAgain) {
  auto w = Head32Model(12);
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  const ModelConfig& c = (*w)->config;
  const size_t side = StagedSideBytes(c, 64, WeightType::kBf16);
  if (side == 0)
    GTEST_SKIP() << "no side copy of staged tiles here (bf16 attention needs AVX-512 BF16)";
  ThreadPool pool(2);
  const std::vector<PageId> table = {0, 1};
  const std::vector<TokenId> a = Prompt(100, 1, c.vocab_size);
  std::vector<TokenId> b = Prompt(100, 2, c.vocab_size);
  std::copy_n(a.begin(), 40, b.begin());
  auto run = [&](CpuBackend& cpu, const std::vector<TokenId>& p, int from) {
    SeqChunk ch{std::span<const TokenId>(p).subspan(from), from, table, true};
    std::vector<float> logits;
    EXPECT_TRUE(cpu.Run({&ch, 1}, &logits).ok());
    return logits;
  };
  KvPages kv(c.Kv(64, DType::kFloat32), 2, true, side);
  CpuBackend cpu(**w, kv, &pool, WeightType::kBf16);
  run(cpu, a, 0);
  EXPECT_EQ(kv.side_rows(1), 32);  // tiles of positions 64..95 staged beside page 1
  const std::vector<float> again = run(cpu, b, 40);

  KvPages fresh_kv(c.Kv(64, DType::kFloat32), 2, true, side);
  CpuBackend fresh(**w, fresh_kv, &pool, WeightType::kBf16);
  const std::vector<float> whole = run(fresh, b, 0);
  ASSERT_EQ(again.size(), whole.size());
  EXPECT_EQ(std::memcmp(again.data(), whole.data(), whole.size() * sizeof(float)), 0);

  // A pass that keeps no side copies itself (f32 here) still marks the
  // copies of the rows it writes as not current.
  EXPECT_EQ(kv.side_rows(0), 64);
  EXPECT_EQ(kv.side_rows(1), 32);
  CpuBackend f32(**w, kv, &pool, WeightType::kF32);
  run(f32, a, 40);
  EXPECT_EQ(kv.side_rows(0), 32);
  EXPECT_EQ(kv.side_rows(1), 0);
}

// A page written from outside (a hit's load) and then named by an empty
// chunk is still staged when a later chunk reads it: an empty chunk
// attends to nothing, so it stages nothing and marks nothing staged.
TEST(EngineTest, CpuForwardStagesALoadedPageAfterAnEmptyChunk) {
  auto w = Head32Model(14);
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  const ModelConfig& c = (*w)->config;
  const size_t side = StagedSideBytes(c, 64, WeightType::kBf16);
  if (side == 0)
    GTEST_SKIP() << "no side copy of staged tiles here (bf16 attention needs AVX-512 BF16)";
  ThreadPool pool(2);
  const std::vector<PageId> table = {0, 1};
  const std::vector<TokenId> p = Prompt(65, 3, c.vocab_size);
  auto run = [&](CpuBackend& cpu, int from, int to) {
    SeqChunk ch{std::span<const TokenId>(p).subspan(from, to - from), from, table, to > from};
    std::vector<float> logits;
    EXPECT_TRUE(cpu.Run({&ch, 1}, &logits).ok());
    return logits;
  };
  KvPages source_kv(c.Kv(64, DType::kFloat32), 2, true, side);
  CpuBackend source(**w, source_kv, &pool, WeightType::kBf16);
  run(source, 0, 64);
  const std::vector<float> want = run(source, 64, 65);

  KvPages kv(c.Kv(64, DType::kFloat32), 4, true, side);
  CpuBackend cpu(**w, kv, &pool, WeightType::kBf16);
  std::vector<std::byte> page(kv.page_bytes());
  ASSERT_TRUE(source.ReadPage(0, page).ok());
  ASSERT_TRUE(cpu.WritePage(0, page).ok());  // as a hit loads a block
  {
    // An empty chunk, beside another sequence's chunk.
    const std::vector<PageId> other = {2, 3};
    const SeqChunk both[] = {{std::span<const TokenId>(p).subspan(64, 0), 64, table, false},
                             {std::span<const TokenId>(p).subspan(0, 40), 0, other, true}};
    std::vector<float> logits;
    ASSERT_TRUE(cpu.Run(both, &logits).ok());
  }
  EXPECT_EQ(kv.side_rows(0), 0);
  const std::vector<float> got = run(cpu, 64, 65);
  ASSERT_EQ(got.size(), want.size());
  EXPECT_EQ(std::memcmp(got.data(), want.data(), want.size() * sizeof(float)), 0);
}

TEST(EngineTest, ASequenceDoesNotDependOnItsBatch) {
  auto w = TinyRandomModel();
  const int vocab = w->config.vocab_size;
  const std::vector<TokenId> prompt = Prompt(150, 1, vocab);

  auto alone = OpenEngine(w.get(), nullptr);
  auto solo = alone->Generate(Request(prompt, 12));
  ASSERT_TRUE(solo.ok());

  // The same sequence amid others of other lengths, with a small token
  // budget so its prompt is prefilled in chunks that straddle pages.
  EngineOptions o;
  o.token_budget = 37;
  auto busy = OpenEngine(w.get(), nullptr, o);
  std::vector<GenerateResult> results(4);
  std::vector<std::vector<TokenId>> prompts = {Prompt(3, 2, vocab), Prompt(90, 3, vocab), prompt,
                                               Prompt(200, 4, vocab)};
  for (size_t i = 0; i < prompts.size(); ++i) {
    ASSERT_TRUE(busy->Submit(Request(prompts[i], 12),
                             [&, i](GenerateResult r) { results[i] = std::move(r); })
                    .ok());
  }
  int max_batch = 0;
  while (busy->HasWork()) max_batch = std::max(max_batch, busy->Step().sequences);
  EXPECT_GE(max_batch, 3);
  ASSERT_TRUE(results[2].status.ok());
  EXPECT_EQ(results[2].tokens, solo->tokens);
  EXPECT_TRUE(SameBits(results[2].logits, solo->logits));
}

// Two prompts sharing their first 3 blocks (of 64 tokens) and a few tokens
// more, then going apart.
std::pair<std::vector<TokenId>, std::vector<TokenId>> TwoPromptsSharingThreeBlocks(int vocab) {
  const std::vector<TokenId> shared = Prompt(3 * 64 + 10, 5, vocab);
  std::vector<TokenId> p1 = shared, p2 = shared;
  for (TokenId t : Prompt(30, 6, vocab)) p1.push_back(t);
  for (TokenId t : Prompt(41, 7, vocab)) p2.push_back(t);
  return {p1, p2};
}

TEST(EngineTest, LogitsAfterACacheHitEqualAFullRecompute) {
  auto w = TinyRandomModel();
  const int vocab = w->config.vocab_size;
  const auto [p1, p2] = TwoPromptsSharingThreeBlocks(vocab);

  auto cache = DramCache();
  auto cached = OpenEngine(w.get(), cache.get());
  auto first = cached->Generate(Request(p1, 8));
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(first->cached_tokens, 0u);
  EXPECT_GE(first->published_blocks, 3u);
  auto second = cached->Generate(Request(p2, 8));
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(second->cached_tokens, 3u * 64);  // the shared full blocks

  auto plain = OpenEngine(w.get(), nullptr);
  auto recompute = plain->Generate(Request(p2, 8));
  ASSERT_TRUE(recompute.ok());
  EXPECT_EQ(second->tokens, recompute->tokens);
  EXPECT_TRUE(SameBits(second->logits, recompute->logits));
}

// A hit reports how long its cached prefix took to read (TTFT's read part;
// the rest is the suffix's compute and the queue), a miss reports none.
TEST(EngineTest, AHitReportsTheTimeItsReadTook) {
  auto w = TinyRandomModel();
  const auto [p1, p2] = TwoPromptsSharingThreeBlocks(w->config.vocab_size);
  auto cache = DramCache();
  auto engine = OpenEngine(w.get(), cache.get());
  auto miss = engine->Generate(Request(p1, 2));
  ASSERT_TRUE(miss.ok());
  EXPECT_EQ(miss->load_ms, 0.0);
  auto hit = engine->Generate(Request(p2, 2));
  ASSERT_TRUE(hit.ok());
  ASSERT_EQ(hit->cached_tokens, 3u * 64);
  EXPECT_GT(hit->load_ms, 0.0);
  EXPECT_LE(hit->load_ms, hit->ttft_ms);
}

// bf16 weights on the CPU keep DESIGN §8's invariant (a sequence's logits do
// not depend on its batch, its chunking or a cache hit: the same bits) and
// stay close to the f32 engine's.
// The bf16 engine keeps the invariant (a hit's logits equal a recompute's
// in other chunks, bit for bit) and stays close to f32, with the tiny
// preset's head_dim of 8 (f32 attention) and with one of 32, whose
// attention is bf16 on AMX where the CPU has it (cpu_attention.h).
void ExpectBf16KeepsTheInvariant(const ModelWeights* w) {
  const int vocab = w->config.vocab_size;
  const auto [p1, p2] = TwoPromptsSharingThreeBlocks(vocab);
  EngineOptions bf16;
  bf16.cpu_bf16_weights = true;

  auto cache = DramCache();
  auto cached = OpenEngine(w, cache.get(), bf16);
  ASSERT_TRUE(cached->Generate(Request(p1, 8)).ok());
  auto hit = cached->Generate(Request(p2, 8));
  ASSERT_TRUE(hit.ok());
  EXPECT_EQ(hit->cached_tokens, 3u * 64);

  EngineOptions chunked = bf16;
  chunked.token_budget = 37;  // prefilled in chunks that straddle pages
  auto plain = OpenEngine(w, nullptr, chunked);
  auto recompute = plain->Generate(Request(p2, 8));
  ASSERT_TRUE(recompute.ok());
  EXPECT_EQ(hit->tokens, recompute->tokens);
  EXPECT_TRUE(SameBits(hit->logits, recompute->logits));

  auto f32 = OpenEngine(w, nullptr)->Generate(Request(p2, 8));
  ASSERT_TRUE(f32.ok());
  ASSERT_EQ(f32->logits.size(), recompute->logits.size());
  // The first step's logits only: later ones follow tokens that may differ.
  // bf16's 8 bits of mantissa: within a few percent of the largest logit.
  float max_logit = 0.0f, diff = 0.0f;
  for (size_t j = 0; j < f32->logits[0].size(); ++j) {
    max_logit = std::max(max_logit, std::fabs(f32->logits[0][j]));
    diff = std::max(diff, std::fabs(f32->logits[0][j] - recompute->logits[0][j]));
  }
  EXPECT_LT(diff, 5e-2f * max_logit) << "max |logit| " << max_logit;
  EXPECT_GT(diff, 0.0f) << "bf16 weights were not used";
}

TEST(EngineTest, Bf16WeightsKeepTheInvariantAndStayCloseToF32) {
  auto w = TinyRandomModel();
  ExpectBf16KeepsTheInvariant(w.get());
}

TEST(EngineTest, Bf16WeightsKeepTheInvariantWithBf16Attention) {
  auto w = Head32Model(7);
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  ExpectBf16KeepsTheInvariant(w->get());
}

// The bf16 engine keeps each page's staged tiles of keys beside it
// (StagedSideBytes) for the page's life. A page freed and handed to another
// sequence, whose hit then loads other blocks into it, is attended through
// the new contents, not the tiles staged from the old. (Without AVX-512
// BF16 there is no side copy and this checks only the plain path.)
TEST(EngineTest, AReusedPageIsNotAttendedThroughItsOldStagedTiles) {
  auto w = Head32Model(11);
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  const ModelConfig& c = (*w)->config;
  EngineOptions bf16;
  bf16.cpu_bf16_weights = true;
  const int vocab = c.vocab_size;
  const std::vector<TokenId> cached = Prompt(3 * 64 + 10, 21, vocab);
  const std::vector<TokenId> other = Prompt(3 * 64 + 10, 22, vocab);

  auto cache = DramCache();
  auto engine = OpenEngine(w->get(), cache.get(), bf16);
  ASSERT_TRUE(engine->Generate(Request(cached, 2)).ok());
  // Another prompt in the same pages (freed pages are reused first): their
  // side copies now hold its tiles.
  ASSERT_TRUE(engine->Generate(Request(other, 2)).ok());
  auto hit = engine->Generate(Request(cached, 4));
  ASSERT_TRUE(hit.ok());
  EXPECT_EQ(hit->cached_tokens, 3u * 64);

  auto recompute = OpenEngine(w->get(), nullptr, bf16)->Generate(Request(cached, 4));
  ASSERT_TRUE(recompute.ok());
  EXPECT_EQ(hit->tokens, recompute->tokens);
  EXPECT_TRUE(SameBits(hit->logits, recompute->logits));
}

// Keeping the staged tiles (the default) or not changes how many pages the
// KV budget holds and nothing of the output.
TEST(EngineTest, KeepingStagedTilesChangesPagesNotBits) {
  auto w = Head32Model(13);
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  const ModelConfig& c = (*w)->config;
  EngineOptions kept;
  kept.cpu_bf16_weights = true;
  EngineOptions plain = kept;
  plain.cpu_keep_staged_tiles = false;
  const int64_t block = static_cast<int64_t>(c.Kv(64, DType::kFloat32).BlockBytes());
  const int64_t side = static_cast<int64_t>(StagedSideBytes(c, 64, WeightType::kBf16));
  EXPECT_EQ(Engine::KvBytesPerPage(c, kept), block + side);
  EXPECT_EQ(Engine::KvBytesPerPage(c, plain), block);
  kept.kv_bytes = plain.kv_bytes = 30 * block;
  auto with = OpenEngine(w->get(), nullptr, kept);
  auto without = OpenEngine(w->get(), nullptr, plain);
  EXPECT_EQ(with->Stats().total_pages, 30 * block / (block + side));
  EXPECT_EQ(without->Stats().total_pages, 30);
  const std::vector<TokenId> prompt = Prompt(5 * 64 + 9, 23, c.vocab_size);
  auto a = with->Generate(Request(prompt, 40));
  auto b = without->Generate(Request(prompt, 40));
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->tokens, b->tokens);
  EXPECT_TRUE(SameBits(a->logits, b->logits));
}

// The invariant at every page size the side copy meets: pages of one tile
// (32), of four (128), and pages smaller than a tile (16: no side copy).
// A hit of every full block, then decode steps, equals a recompute in
// chunks that straddle pages and tiles, and an engine keeping no copy.
TEST(EngineTest, Bf16InvariantHoldsAtEveryPageSize) {
  auto w = Head32Model(15);
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  for (const int bt : {16, 32, 128}) {
    EngineOptions o;
    o.cpu_bf16_weights = true;
    o.block_tokens = bt;
    const std::vector<TokenId> prompt = Prompt(3 * bt + 7, 24, (*w)->config.vocab_size);
    auto cache = DramCache();
    auto engine = OpenEngine(w->get(), cache.get(), o);
    ASSERT_TRUE(engine->Generate(Request(prompt, 2)).ok());
    auto hit = engine->Generate(Request(prompt, 40));
    ASSERT_TRUE(hit.ok());
    EXPECT_EQ(hit->cached_tokens, 3u * bt) << bt;
    o.token_budget = 37;
    auto recompute = OpenEngine(w->get(), nullptr, o)->Generate(Request(prompt, 40));
    ASSERT_TRUE(recompute.ok());
    EXPECT_EQ(hit->tokens, recompute->tokens) << bt;
    EXPECT_TRUE(SameBits(hit->logits, recompute->logits)) << bt;
    o.cpu_keep_staged_tiles = false;
    auto plain = OpenEngine(w->get(), nullptr, o)->Generate(Request(prompt, 40));
    ASSERT_TRUE(plain.ok());
    EXPECT_TRUE(SameBits(hit->logits, plain->logits)) << bt;
  }
}

TEST(EngineTest, AMissingOrCorruptBlockIsRematerialized) {
  auto w = TinyRandomModel();
  const int vocab = w->config.vocab_size;
  std::vector<TokenId> prompt = Prompt(4 * 64 + 5, 8, vocab);
  auto cache = DramCache();
  auto engine = OpenEngine(w.get(), cache.get());
  auto first = engine->Generate(Request(prompt, 4));
  ASSERT_TRUE(first.ok());

  // Drop block 2 of the prefix: the hit stops at 2 blocks, the rest is
  // prefilled again, and the result does not change.
  PrefixHasher hasher(engine->CacheNamespace(""));
  std::vector<BlockKey> keys = hasher.Keys(prompt);
  ASSERT_TRUE(cache->Erase(keys[2]).ok());
  auto second = engine->Generate(Request(prompt, 4));
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(second->cached_tokens, 2u * 64);
  EXPECT_EQ(second->tokens, first->tokens);
  EXPECT_TRUE(SameBits(second->logits, first->logits));
  // It put the recomputed block back.
  EXPECT_TRUE(cache->Find(keys[2]).ok());
}

// A large hit is read in parts side by side (Engine::ReadInParts): the
// blocks land in their own pages, a block missing from the second part ends
// the hit there, and the logits are a recompute's either way.
TEST(EngineTest, ALargeHitReadInPartsKeepsTheInvariant) {
  ModelConfig c = ModelPreset("tiny").value();
  c.max_seq_len = 2048;
  auto w = RandomModel(c, 9);
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  const int vocab = c.vocab_size;
  const std::vector<TokenId> prompt = Prompt(20 * 64 + 7, 10, vocab);
  auto cache = DramCache();
  auto engine = OpenEngine(w->get(), cache.get());
  auto first = engine->Generate(Request(prompt, 4));
  ASSERT_TRUE(first.ok());
  auto hit = engine->Generate(Request(prompt, 4));
  ASSERT_TRUE(hit.ok());
  EXPECT_EQ(hit->cached_tokens, 20u * 64);
  EXPECT_EQ(hit->tokens, first->tokens);
  EXPECT_TRUE(SameBits(hit->logits, first->logits));

  PrefixHasher hasher(engine->CacheNamespace(""));
  const std::vector<BlockKey> keys = hasher.Keys(prompt);
  ASSERT_TRUE(cache->Erase(keys[15]).ok());
  auto partial = engine->Generate(Request(prompt, 4));
  ASSERT_TRUE(partial.ok());
  EXPECT_EQ(partial->cached_tokens, 15u * 64);
  EXPECT_EQ(partial->tokens, first->tokens);
  EXPECT_TRUE(SameBits(partial->logits, first->logits));
}

using testing::GatedTier;

// DESIGN §8: a hit's blocks are read while the engine keeps stepping the
// other sequences; the loading one joins the batch when its read lands, with
// the same result as if it had been read at once. A request cancelled while
// its read is in flight gives its pages back once the read lands.
TEST(EngineTest, ACacheLoadOverlapsOtherSequencesSteps) {
  auto w = TinyRandomModel();
  const int vocab = w->config.vocab_size;
  DramTierOptions d;
  d.capacity_bytes = 64ull << 20;
  auto gated_owned = std::make_unique<GatedTier>(OpenDramTier(d).value());
  GatedTier* gate = gated_owned.get();
  std::vector<TierSlot> slots;
  slots.push_back({std::move(gated_owned), NewLruPolicy()});
  CacheManagerOptions co;
  co.sweep_interval_ms = 0;
  co.background_promotion = false;
  auto cache = CacheManager::Open(std::move(slots), co).value();
  auto engine = OpenEngine(w.get(), cache.get());

  const std::vector<TokenId> shared = Prompt(3 * 64 + 9, 21, vocab);
  auto first = engine->Generate(Request(shared, 6));
  ASSERT_TRUE(first.ok());
  ASSERT_GE(first->published_blocks, 3u);

  // A long decode runs; then the hit arrives with the tier's reads held.
  std::optional<GenerateResult> other, hit;
  ASSERT_TRUE(engine
                  ->Submit(Request(Prompt(40, 22, vocab), 40, "other"),
                           [&](GenerateResult r) { other = std::move(r); })
                  .ok());
  engine->Step();  // its prefill
  gate->SetOpen(false);
  ASSERT_TRUE(
      engine->Submit(Request(shared, 6), [&](GenerateResult r) { hit = std::move(r); }).ok());
  const StepStats admitted = engine->Step();
  EXPECT_EQ(admitted.admitted, 1);
  gate->AwaitHeld();
  for (int i = 0; i < 5; ++i) {
    const StepStats st = engine->Step();
    EXPECT_EQ(st.sequences, 1) << "only the other sequence runs while the read is held";
    EXPECT_EQ(st.decode_tokens, 1);
    EXPECT_EQ(st.cached_tokens, 0);
  }
  EXPECT_FALSE(hit.has_value());
  EXPECT_FALSE(other.has_value());

  gate->SetOpen(true);
  int cached = 0;
  while (!hit) cached += engine->Step().cached_tokens;
  EXPECT_EQ(cached, 3 * 64);
  ASSERT_TRUE(hit->status.ok()) << hit->status.ToString();
  EXPECT_EQ(hit->cached_tokens, 3u * 64);
  EXPECT_EQ(hit->cache_hit_tokens, 3u * 64);
  EXPECT_EQ(hit->tokens, first->tokens);
  EXPECT_TRUE(SameBits(hit->logits, first->logits));

  // Cancelled with its read held: nothing is freed under the reader's feet.
  // A sequence of its own runs beside it: the step that issues the read must
  // not be one with nothing else to run, which waits for the first read to
  // land (the gate is closed). `other` may have finished by now: how many
  // steps it took the hit above to land depends on when the loader thread ran.
  std::optional<GenerateResult> busy, gone;
  ASSERT_TRUE(engine
                  ->Submit(Request(Prompt(40, 23, vocab), 40, "busy"),
                           [&](GenerateResult r) { busy = std::move(r); })
                  .ok());
  engine->Step();  // its prefill
  gate->SetOpen(false);
  Result<RequestId> id =
      engine->Submit(Request(shared, 6), [&](GenerateResult r) { gone = std::move(r); });
  ASSERT_TRUE(id.ok());
  engine->Step();
  gate->AwaitHeld();
  engine->Cancel(*id);
  std::thread opener([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    gate->SetOpen(true);
  });
  while (!gone) engine->Step();  // retires it once its read lands
  opener.join();
  EXPECT_EQ(gone->finish_reason, "cancelled");
  while (engine->HasWork()) engine->Step();
  ASSERT_TRUE(other.has_value());
  EXPECT_TRUE(other->status.ok());
  ASSERT_TRUE(busy.has_value());
  EXPECT_TRUE(busy->status.ok());
  EXPECT_EQ(engine->Stats().free_pages, engine->Stats().total_pages);
  EXPECT_EQ(engine->Stats().cache_read_failures, 0u);
}

// With a shared tier, a look-up may ask other nodes (network I/O): it runs on
// the loader thread, so a slow answer holds up only its own request.
TEST(EngineTest, ASharedTiersLookupDoesNotHoldUpTheOthers) {
  auto w = TinyRandomModel();
  const int vocab = w->config.vocab_size;
  DramTierOptions d;
  d.capacity_bytes = 64ull << 20;
  d.read_bytes_per_s = d.write_bytes_per_s = 1e9;
  auto gated_owned = std::make_unique<GatedTier>(OpenDramTier(d).value(), /*shared=*/true);
  GatedTier* gate = gated_owned.get();
  std::vector<TierSlot> slots;
  slots.push_back({OpenDramTier(d).value(), NewLruPolicy()});
  slots.push_back({std::move(gated_owned), NewLruPolicy()});
  CacheManagerOptions co;
  co.sweep_interval_ms = 0;
  co.background_promotion = false;
  co.background_shared_writes = false;
  auto cache = CacheManager::Open(std::move(slots), co).value();
  auto engine = OpenEngine(w.get(), cache.get());

  std::optional<GenerateResult> other, slow;
  std::optional<uint32_t> admitted_hit;
  ASSERT_TRUE(engine
                  ->Submit(Request(Prompt(40, 31, vocab), 30, "other"),
                           [&](GenerateResult r) { other = std::move(r); })
                  .ok());
  engine->Step();  // its look-up (a miss; the shared tier asked) lands, and it prefills
  GenerateRequest r = Request(Prompt(3 * 64 + 5, 32, vocab), 4);
  r.on_admit = [&](uint32_t hit) { admitted_hit = hit; };
  gate->SetOpen(false);
  ASSERT_TRUE(engine->Submit(r, [&](GenerateResult res) { slow = std::move(res); }).ok());
  engine->Step();
  gate->AwaitHeld();  // its look-up asks the shared tier, on the loader
  for (int i = 0; i < 4; ++i) {
    const StepStats st = engine->Step();
    EXPECT_EQ(st.sequences, 1) << "the other sequence decodes meanwhile";
  }
  EXPECT_FALSE(admitted_hit.has_value()) << "its cache read is reported when the look-up lands";
  gate->SetOpen(true);
  while (engine->HasWork()) engine->Step();
  ASSERT_TRUE(slow.has_value());
  EXPECT_TRUE(slow->status.ok()) << slow->status.ToString();
  EXPECT_EQ(slow->tokens.size(), 4u);
  ASSERT_TRUE(admitted_hit.has_value());
  EXPECT_EQ(*admitted_hit, 0u);
  EXPECT_TRUE(other.has_value() && other->status.ok());
}

TEST(EngineTest, CacheSaltsSeparateTenants) {
  auto w = TinyRandomModel();
  std::vector<TokenId> prompt = Prompt(2 * 64 + 5, 9, w->config.vocab_size);
  auto cache = DramCache();
  auto engine = OpenEngine(w.get(), cache.get());
  GenerateRequest a = Request(prompt, 2, "a");
  a.cache_salt = "salt-a";
  GenerateRequest b = Request(prompt, 2, "b");
  b.cache_salt = "salt-b";
  ASSERT_TRUE(engine->Generate(a).ok());
  auto rb = engine->Generate(b);
  ASSERT_TRUE(rb.ok());
  EXPECT_EQ(rb->cached_tokens, 0u);  // another salt sees nothing
  auto ra = engine->Generate(a);
  ASSERT_TRUE(ra.ok());
  EXPECT_EQ(ra->cached_tokens, 2u * 64);
}

TEST(EngineTest, PreemptionUnderPagePressureDoesNotChangeResults) {
  auto w = TinyRandomModel();
  const int vocab = w->config.vocab_size;
  const size_t page = w->config.Kv(64, DType::kFloat32).BlockBytes();
  std::vector<std::vector<TokenId>> prompts;
  for (int i = 0; i < 6; ++i) prompts.push_back(Prompt(100 + 13 * i, 20 + i, vocab));

  // Reference: one at a time, plenty of pages.
  auto roomy = OpenEngine(w.get(), nullptr);
  std::vector<GenerateResult> want;
  for (const auto& p : prompts) want.push_back(roomy->Generate(Request(p, 60)).value());

  // Eight pages for six sequences that each grow to three or four pages.
  auto cache = DramCache();
  EngineOptions o;
  o.kv_bytes = static_cast<int64_t>(8 * page);
  auto tight = OpenEngine(w.get(), cache.get(), o);
  std::vector<GenerateResult> got(prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i) {
    GenerateRequest r = Request(prompts[i], 60, "tenant" + std::to_string(i % 2));
    ASSERT_TRUE(tight->Submit(r, [&, i](GenerateResult res) { got[i] = std::move(res); }).ok());
  }
  while (tight->HasWork()) tight->Step();
  uint32_t preemptions = 0;
  for (size_t i = 0; i < prompts.size(); ++i) {
    ASSERT_TRUE(got[i].status.ok()) << got[i].status.ToString();
    EXPECT_EQ(got[i].tokens, want[i].tokens) << i;
    EXPECT_TRUE(SameBits(got[i].logits, want[i].logits)) << i;
    preemptions += got[i].preemptions;
  }
  EXPECT_GT(preemptions, 0u);
  EXPECT_EQ(tight->Stats().free_pages, tight->Stats().total_pages);
}

// Steps from B's submission to its first token, with A's backlog of `a_requests`.
int64_t StepsToFirstTokenOfB(const ModelWeights* w, int a_requests) {
  EngineOptions o;
  o.max_batch_seqs = 8;
  o.token_budget = 64;
  auto engine = OpenEngine(w, nullptr, o);
  for (int i = 0; i < a_requests; ++i) {
    EXPECT_TRUE(
        engine->Submit(Request(Prompt(300, 100 + i, w->config.vocab_size), 100, "A"), nullptr)
            .ok());
  }
  for (int i = 0; i < 10; ++i) engine->Step();
  std::optional<GenerateResult> b;
  GenerateRequest rb = Request(Prompt(10, 99, w->config.vocab_size), 1, "B");
  EXPECT_TRUE(engine->Submit(rb, [&](GenerateResult r) { b = std::move(r); }).ok());
  int steps = 0;
  while (!b && steps < 1000) {
    engine->Step();
    ++steps;
  }
  EXPECT_TRUE(b.has_value());
  engine->Shutdown();  // fails A's backlog
  return b ? b->first_token_step - b->submit_step + 1 : -1;
}

TEST(EngineTest, OneTenantsFloodDoesNotStarveAnothersFirstToken) {
  auto w = TinyRandomModel();
  const int64_t with_200 = StepsToFirstTokenOfB(w.get(), 200);
  const int64_t with_20 = StepsToFirstTokenOfB(w.get(), 20);
  // B is admitted (preempting one of A's) and prefilled in its first step.
  EXPECT_GE(with_200, 1);
  EXPECT_LE(with_200, 2);
  EXPECT_EQ(with_200, with_20);
}

// Context caching at the engine: breakpoints decide what is written and
// with which TTL, tails make a whole marked prefix a hit, and the usage of
// DESIGN §6 follows from the hit (the API's scenario, on a random model with
// an 8K context).
TEST(EngineTest, BreakpointsWriteMarkedPrefixesWithTheirTtls) {
  ModelConfig c = ModelPreset("tiny").value();
  c.max_seq_len = 8192;
  auto w = RandomModel(c, 11).value();
  ManualClock clock;
  auto cache = DramCache(256ull << 20, &clock);
  EngineOptions o;
  o.kv_bytes = 32ll << 20;
  o.clock = &clock;
  auto engine = Engine::Open(w.get(), cache.get(), o).value();
  std::vector<TokenId> prompt(5200);
  for (size_t i = 0; i < prompt.size(); ++i) prompt[i] = static_cast<TokenId>((i * 7919) % 509 + 1);
  const std::vector<CacheBreakpoint> bps = {{3000, TtlClass::k1h}, {5000, TtlClass::k5m}};
  auto run = [&](std::vector<CacheBreakpoint> breakpoints) {
    GenerateRequest r;
    r.prompt = prompt;
    r.max_tokens = 2;
    r.breakpoints_only = true;
    r.breakpoints = breakpoints;
    auto res = engine->Generate(r);
    EXPECT_TRUE(res.ok()) << res.status();
    return std::move(res).value();
  };
  auto usage_of = [&](const GenerateResult& r, const std::vector<CacheBreakpoint>& b) {
    return ComputeUsage(prompt.size(), r.cache_hit_tokens, b, r.tokens.size());
  };
  // First: nothing cached; 1h write 3000, 5m write 2000, input 200.
  GenerateResult first = run(bps);
  Usage u = usage_of(first, bps);
  EXPECT_EQ(u.cache_read_input_tokens, 0u);
  EXPECT_EQ(u.cache_creation_1h, 3000u);
  EXPECT_EQ(u.cache_creation_5m, 2000u);
  EXPECT_EQ(u.input_tokens, 200u);
  // 78 full blocks (4992 tokens) and two tails (3000 = 46 * 64 + 56, 5000 =
  // 78 * 64 + 8).
  EXPECT_EQ(first.published_blocks, 80u);
  // Again: read 5000 (blocks and the 8-token tail), input 200, same tokens.
  GenerateResult second = run(bps);
  u = usage_of(second, bps);
  EXPECT_EQ(u.cache_read_input_tokens, 5000u);
  EXPECT_EQ(u.cache_creation_input_tokens(), 0u);
  EXPECT_EQ(u.input_tokens, 200u);
  EXPECT_EQ(second.cached_tokens, 5000u) << "the tail's KV was loaded too";
  EXPECT_EQ(second.tokens, first.tokens) << "a hit changes nothing";
  // Six minutes idle: the 5m part expired, the 1h part (blocks to 2944 and
  // the 56-token tail) is still there.
  clock.AdvanceMs(6 * 60'000);
  cache->SweepExpired();
  GenerateResult third = run(bps);
  u = usage_of(third, bps);
  EXPECT_EQ(u.cache_read_input_tokens, 3000u);
  EXPECT_EQ(u.cache_creation_1h, 0u);
  EXPECT_EQ(u.cache_creation_5m, 2000u);
  EXPECT_EQ(u.input_tokens, 200u);
  EXPECT_EQ(third.tokens, first.tokens);
  // Without breakpoints nothing new is written, but cached prefixes are read.
  GenerateResult plain = run({});
  EXPECT_EQ(plain.published_blocks, 0u);
  EXPECT_EQ(plain.cache_hit_tokens, 4992u) << "whole blocks only: no breakpoint to find a tail at";
  // Below the minimum cacheable length: nothing cached or billed as cache.
  std::vector<CacheBreakpoint> short_bps = CacheableBreakpoints(
      std::vector<CacheBreakpoint>{{500, TtlClass::k5m}}, /*min_cacheable_tokens=*/1024);
  EXPECT_TRUE(short_bps.empty());
  prompt.assign(prompt.begin(), prompt.begin() + 600);
  for (TokenId& t : prompt) t = (t * 3) % 509 + 1;  // a prefix nobody cached
  GenerateResult small1 = run(short_bps), small2 = run(short_bps);
  EXPECT_EQ(small1.published_blocks, 0u);
  EXPECT_EQ(usage_of(small2, short_bps), (Usage{600, 0, 0, 0, 2}));
}

// A breakpoint at the very end of the prompt (the usual "cache all of
// this") is found again: its tail record is written once prefill ends.
TEST(EngineTest, ABreakpointAtThePromptsEndIsReadBackWhole) {
  ModelConfig c = ModelPreset("tiny").value();
  c.max_seq_len = 4096;
  auto w = RandomModel(c, 13).value();
  auto cache = DramCache(64ull << 20);
  EngineOptions o;
  o.kv_bytes = 16ll << 20;
  auto engine = Engine::Open(w.get(), cache.get(), o).value();
  GenerateRequest r;
  r.prompt.resize(1500);
  for (size_t i = 0; i < r.prompt.size(); ++i) r.prompt[i] = static_cast<TokenId>(i % 500 + 1);
  r.max_tokens = 3;
  r.breakpoints_only = true;
  r.breakpoints = {{1500, TtlClass::k1h}};
  auto first = engine->Generate(r).value();
  EXPECT_EQ(first.cache_hit_tokens, 0u);
  EXPECT_EQ(first.published_blocks, 1500u / 64 + 1) << "23 blocks and a 28-token tail";
  auto second = engine->Generate(r).value();
  EXPECT_EQ(second.cache_hit_tokens, 1500u);
  EXPECT_EQ(second.cached_tokens, 1499u) << "all but the last token, recomputed for its logits";
  EXPECT_EQ(second.tokens, first.tokens);
}

TEST(EngineTest, BadBreakpointsAreRefused) {
  auto w = TinyRandomModel();
  auto engine = Engine::Open(w.get(), nullptr, EngineOptions{}).value();
  GenerateRequest r;
  r.prompt = {1, 2, 3, 4};
  r.breakpoints_only = true;
  for (const std::vector<CacheBreakpoint>& bad :
       {std::vector<CacheBreakpoint>{{3, TtlClass::k5m}, {4, TtlClass::k1h}},  // 5m before 1h
        {{5, TtlClass::k5m}},                                                  // past the end
        {{2, TtlClass::k1h}, {2, TtlClass::k1h}},                              // not increasing
        {{1, TtlClass::k1h},
         {2, TtlClass::k1h},
         {3, TtlClass::k5m},
         {4, TtlClass::k5m},
         {4, TtlClass::k5m}}}) {  // five
    r.breakpoints = bad;
    auto res = engine->Submit(r, nullptr);
    ASSERT_FALSE(res.ok());
    EXPECT_EQ(res.status().code(), StatusCode::kInvalidArgument) << res.status();
  }
}

TEST(EngineTest, BadRequestsAreRefusedAndChangeNothing) {
  auto w = TinyRandomModel();
  EngineOptions o;
  o.kv_bytes = static_cast<int64_t>(4 * w->config.Kv(64, DType::kFloat32).BlockBytes());
  auto engine = OpenEngine(w.get(), nullptr, o);
  auto code = [&](GenerateRequest r) { return engine->Submit(r, nullptr).status().code(); };
  EXPECT_EQ(code(Request({}, 4)), StatusCode::kInvalidArgument);
  EXPECT_EQ(code(Request({1, w->config.vocab_size}, 4)), StatusCode::kInvalidArgument);
  EXPECT_EQ(code(Request({1, -1}, 4)), StatusCode::kInvalidArgument);
  EXPECT_EQ(code(Request({1}, 0)), StatusCode::kInvalidArgument);
  GenerateRequest hot = Request({1}, 4);
  hot.sampling.temperature = -1;
  EXPECT_EQ(code(hot), StatusCode::kInvalidArgument);
  hot.sampling.temperature = 1;
  hot.sampling.top_p = 0;
  EXPECT_EQ(code(hot), StatusCode::kInvalidArgument);
  EXPECT_EQ(code(Request(std::vector<TokenId>(w->config.max_seq_len + 1, 5), 1)),
            StatusCode::kResourceExhausted);
  EXPECT_EQ(code(Request(std::vector<TokenId>(200, 5), 100)),  // 5 pages > 4
            StatusCode::kResourceExhausted);
  EXPECT_FALSE(engine->HasWork());
  EXPECT_EQ(engine->Stats().requests, 0u);
  // And a good one still runs.
  EXPECT_TRUE(engine->Generate(Request({1, 5, 6}, 3)).ok());
}

TEST(EngineTest, ARequestStopsAtTheContextWindow) {
  auto w = TinyRandomModel();
  auto engine = OpenEngine(w.get(), nullptr);
  const int ctx = w->config.max_seq_len;
  auto out = engine->Generate(Request(Prompt(ctx - 3, 11, w->config.vocab_size), 50));
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(out->tokens.size(), 3u);
  EXPECT_EQ(out->finish_reason, "context");
}

TEST(EngineTest, ShutdownFailsQueuedRequestsAndRefusesNewOnes) {
  auto w = TinyRandomModel();
  auto engine = OpenEngine(w.get(), nullptr);
  std::optional<GenerateResult> r;
  ASSERT_TRUE(
      engine->Submit(Request({1, 2, 3}, 5), [&](GenerateResult x) { r = std::move(x); }).ok());
  engine->Shutdown();
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status.code(), StatusCode::kUnavailable);
  EXPECT_EQ(engine->Submit(Request({1}, 1), nullptr).status().code(), StatusCode::kUnavailable);
}

// A client that goes away cancels its request: a running one ends at the
// next step with the tokens it has, a waiting one without any, both with an
// OK status and "cancelled", and every page comes back. Cancelling a finished
// or unknown id changes nothing.
TEST(EngineTest, CancelEndsRunningAndWaitingRequestsAndFreesTheirPages) {
  auto w = TinyRandomModel();
  EngineOptions o;
  o.max_batch_seqs = 1;  // the second request waits behind the first
  auto engine = OpenEngine(w.get(), nullptr, o);
  const int vocab = w->config.vocab_size;
  std::optional<GenerateResult> running, waiting;
  Result<RequestId> a = engine->Submit(Request(Prompt(30, 1, vocab), 100),
                                       [&](GenerateResult r) { running = std::move(r); });
  Result<RequestId> b = engine->Submit(Request(Prompt(30, 2, vocab), 100),
                                       [&](GenerateResult r) { waiting = std::move(r); });
  ASSERT_TRUE(a.ok() && b.ok());
  for (int i = 0; i < 4; ++i) engine->Step();
  ASSERT_FALSE(running.has_value());
  engine->Cancel(*b);
  engine->Cancel(*a);
  engine->Cancel(*b + 100);  // never given: ignored
  engine->Step();
  ASSERT_TRUE(running.has_value());
  ASSERT_TRUE(waiting.has_value());
  EXPECT_TRUE(running->status.ok());
  EXPECT_EQ(running->finish_reason, "cancelled");
  EXPECT_GE(running->tokens.size(), 1u);
  EXPECT_LT(running->tokens.size(), 100u);
  EXPECT_TRUE(waiting->status.ok());
  EXPECT_EQ(waiting->finish_reason, "cancelled");
  EXPECT_TRUE(waiting->tokens.empty());
  EXPECT_FALSE(engine->HasWork());
  const EngineStats st = engine->Stats();
  EXPECT_EQ(st.cancelled, 2u);
  EXPECT_EQ(st.free_pages, st.total_pages);
  // A finished request's id: nothing happens, and the engine still serves.
  engine->Cancel(*a);
  auto after = engine->Generate(Request(Prompt(10, 3, vocab), 4));
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->tokens.size(), 4u);
  EXPECT_EQ(after->finish_reason, "length");
}

TEST(EngineTest, TheBackgroundLoopServesConcurrentSubmitters) {
  auto w = TinyRandomModel();
  auto engine = OpenEngine(w.get(), nullptr);
  engine->StartLoop();
  std::mutex mu;
  std::condition_variable cv;
  int done = 0;
  std::vector<std::thread> clients;
  for (int i = 0; i < 4; ++i) {
    clients.emplace_back([&, i] {
      auto id = engine->Submit(Request(Prompt(20 + i, 30 + i, w->config.vocab_size), 5),
                               [&](GenerateResult res) {
                                 EXPECT_TRUE(res.status.ok());
                                 EXPECT_EQ(res.tokens.size(), 5u);
                                 std::lock_guard<std::mutex> lock(mu);
                                 ++done;
                                 cv.notify_all();
                               });
      EXPECT_TRUE(id.ok());
    });
  }
  for (auto& c : clients) c.join();
  std::unique_lock<std::mutex> lock(mu);
  cv.wait(lock, [&] { return done == 4; });
  lock.unlock();
  engine->Shutdown();
}

}  // namespace
}  // namespace kvtier
