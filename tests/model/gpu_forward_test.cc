// GpuForward on a CUDA device: the real tiny model's golden greedy output,
// agreement with the CPU forward pass, and a cache hit (pages copied out and
// back in, as the cache does) against a full recompute. Skips without a GPU.
//
// Tolerances: f32 weights compare logits to the CPU path within 1e-4 of the
// logits' scale (cuBLAS and the kernels sum in another order than the CPU
// path); bf16 weights within 5e-2. A cache hit on the GPU against a full
// recompute on the GPU: 1e-5 (the same kernels; only the batch shape differs).
#include "model/gpu_forward.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "kernels/device.h"
#include "model/forward.h"
#include "model/kv_pages.h"
#include "model/thread_pool.h"
#include "tests/shared_data.h"

namespace kvtier {
namespace {

#define SKIP_WITHOUT_GPU() \
  if (!DeviceAvailable()) GTEST_SKIP() << "no GPU: " << DeviceDescription()

std::vector<TokenId> Prompt(int n, uint32_t salt, int vocab) {
  std::vector<TokenId> p;
  uint32_t x = salt * 2654435761u + 1;
  for (int i = 0; i < n; ++i) {
    x = x * 1664525u + 1013904223u;
    p.push_back(3 + static_cast<TokenId>((x >> 8) % static_cast<uint32_t>(vocab - 3)));
  }
  return p;
}

// Largest |a - b| over the largest |b|: the error on the logits' own scale.
double RelError(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  double err = 0, scale = 1e-30;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    err = std::max(err, std::abs(static_cast<double>(a[i]) - b[i]));
    scale = std::max(scale, std::abs(static_cast<double>(b[i])));
  }
  return err / scale;
}

GpuForwardOptions Options(const ModelWeights& w, int pages, int block_tokens = 16) {
  GpuForwardOptions o;
  o.num_pages = pages;
  o.block_tokens = block_tokens;
  o.max_batch_tokens = std::max(512, w.config.max_seq_len);
  o.max_batch_chunks = 16;
  return o;
}

std::vector<PageId> Pages(int first, int n) {
  std::vector<PageId> p(n);
  for (int i = 0; i < n; ++i) p[i] = first + i;
  return p;
}

TEST(GpuForwardTest, Stories260KGreedyReproducesTheGoldenOutput) {
  SKIP_WITHOUT_GPU();
  SKIP_WITHOUT_STORIES260K();
  auto model = LoadStories260K();
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  const ModelWeights& w = *model->weights;
  const ModelConfig& c = w.config;
  auto f = GpuForward::Create(w, Options(w, c.max_seq_len / 16 + 1));
  ASSERT_TRUE(f.ok()) << f.status().ToString();

  const int steps = model->golden.steps;
  const TokenId bos = model->golden.bos;
  const std::vector<PageId> pages = Pages(0, c.max_seq_len / 16 + 1);
  std::vector<TokenId> out;
  TokenId token = bos;
  std::vector<float> logits;
  for (int pos = 0; pos < steps && pos < c.max_seq_len; ++pos) {
    SeqChunk ch{std::span<const TokenId>(&token, 1), pos, pages, true};
    ASSERT_TRUE((*f)->Run({&ch, 1}, &logits).ok());
    token = static_cast<TokenId>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    if (token == bos) break;
    out.push_back(token);
  }
  EXPECT_EQ(out, model->golden.token_ids);
}

// The same prompt, prefilled in chunks and then decoded, on the CPU and the
// GPU: the logits of every step agree within the tolerance of the weights'
// precision.
void ExpectGpuMatchesCpu(const ModelConfig& config, GpuWeights weights, double tol) {
  auto w = RandomModel(config, 11);
  ASSERT_TRUE(w.ok());
  const int bt = 16, n = 100, decode = 8;
  const int pages = (n + decode) / bt + 1;
  ThreadPool pool(2);
  KvPages cpu_kv((*w)->config.Kv(bt, DType::kFloat32), pages);
  CpuForward cpu(**w, &pool);
  GpuForwardOptions o = Options(**w, pages, bt);
  o.weights = weights;
  auto gpu = GpuForward::Create(**w, o);
  ASSERT_TRUE(gpu.ok()) << gpu.status().ToString();
  const std::vector<TokenId> prompt = Prompt(n + decode, 3, config.vocab_size);
  const std::vector<PageId> table = Pages(0, pages);
  std::vector<float> lc, lg;
  // Prefill in two uneven chunks, then decode one token at a time.
  int pos = 0;
  for (int len : {37, n - 37}) {
    SeqChunk ch{std::span<const TokenId>(prompt).subspan(pos, len), pos, table, true};
    ASSERT_TRUE(cpu.Run({&ch, 1}, cpu_kv, &lc).ok());
    ASSERT_TRUE((*gpu)->Run({&ch, 1}, &lg).ok());
    EXPECT_LT(RelError(lg, lc), tol) << "prefill chunk at " << pos;
    pos += len;
  }
  for (; pos < n + decode; ++pos) {
    SeqChunk ch{std::span<const TokenId>(prompt).subspan(pos, 1), pos, table, true};
    ASSERT_TRUE(cpu.Run({&ch, 1}, cpu_kv, &lc).ok());
    ASSERT_TRUE((*gpu)->Run({&ch, 1}, &lg).ok());
    EXPECT_LT(RelError(lg, lc), tol) << "decode at " << pos;
  }
  // The pages hold the same KV (to the same tolerance) in block layout.
  std::vector<std::byte> page((*gpu)->page_bytes());
  for (PageId p = 0; p < (n + decode) / bt; ++p) {
    ASSERT_TRUE((*gpu)->ReadPage(p, page).ok());
    std::vector<float> g(page.size() / 4), c(page.size() / 4);
    std::memcpy(g.data(), page.data(), page.size());
    std::memcpy(c.data(), cpu_kv.Bytes(p).data(), page.size());
    EXPECT_LT(RelError(g, c), tol) << "page " << p;
  }
}

TEST(GpuForwardTest, F32MatchesTheCpuPathWithGroupedQueryAttention) {
  SKIP_WITHOUT_GPU();
  ModelConfig c = ModelPreset("tiny").value();  // 8 heads over 4 KV heads
  c.max_seq_len = 256;
  ExpectGpuMatchesCpu(c, GpuWeights::kFloat32, 1e-4);
}

TEST(GpuForwardTest, Bf16WeightsMatchTheCpuPathLoosely) {
  SKIP_WITHOUT_GPU();
  ModelConfig c = ModelPreset("tiny").value();
  c.max_seq_len = 256;
  ExpectGpuMatchesCpu(c, GpuWeights::kBFloat16, 5e-2);
}

// DESIGN §8's invariant on the GPU: the pages of a prefix computed by one
// request, copied to the host and into other pages (what the cache does),
// then the rest of a prompt computed on top, give the logits of a full
// recompute.
TEST(GpuForwardTest, LogitsAfterACacheHitEqualAFullRecompute) {
  SKIP_WITHOUT_GPU();
  ModelConfig c = ModelPreset("tiny").value();
  c.max_seq_len = 512;
  auto w = RandomModel(c, 5);
  ASSERT_TRUE(w.ok());
  const int bt = 16, n = 200, cached_blocks = 9;
  const int per_seq = n / bt + 1;
  auto f = GpuForward::Create(**w, Options(**w, 3 * per_seq, bt));
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  const std::vector<TokenId> prompt = Prompt(n, 9, c.vocab_size);

  // Full recompute in pages [0, per_seq).
  std::vector<float> full, hit, other;
  const std::vector<PageId> a = Pages(0, per_seq), b = Pages(per_seq, per_seq);
  SeqChunk whole{prompt, 0, a, true};
  ASSERT_TRUE((*f)->Run({&whole, 1}, &full).ok());

  // The partial block after the cached ones travels as a tail record
  // (PackRows), the full blocks through host memory into pages b, as a cache
  // hit's would: staged by WritePage and uploaded layer by layer on the copy
  // stream while the next Run computes.
  const int tail = 5;
  auto rows = (*f)->PackRows(a[cached_blocks], tail);
  ASSERT_TRUE(rows.ok());
  ASSERT_TRUE((*f)->UnpackRows(b[cached_blocks], tail, *rows).ok());
  std::vector<std::vector<std::byte>> pages(cached_blocks,
                                            std::vector<std::byte>((*f)->page_bytes()));
  for (int i = 0; i < cached_blocks; ++i) ASSERT_TRUE((*f)->ReadPage(a[i], pages[i]).ok());
  for (int i = 0; i < cached_blocks; ++i) ASSERT_TRUE((*f)->WritePage(b[i], pages[i]).ok());
  const int start = cached_blocks * bt + tail;
  // The rest, in a batch beside an unrelated sequence (pages c).
  const std::vector<TokenId> unrelated = Prompt(40, 4, c.vocab_size);
  const std::vector<PageId> pc = Pages(2 * per_seq, per_seq);
  SeqChunk chunks[2] = {
      {unrelated, 0, pc, true},
      {std::span<const TokenId>(prompt).subspan(start), start, b, true},
  };
  ASSERT_TRUE((*f)->Run(chunks, &hit).ok());
  ASSERT_EQ(hit.size(), 2u * c.vocab_size);
  std::vector<float> mine(hit.begin() + c.vocab_size, hit.end());
  EXPECT_LT(RelError(mine, full), 1e-5);
  // And the result is not the unrelated sequence's (the comparison can fail).
  std::vector<float> theirs(hit.begin(), hit.begin() + c.vocab_size);
  EXPECT_GT(RelError(theirs, full), 1e-3);
}

TEST(GpuForwardTest, DecodeAndPrefillInOneBatchMatchSeparateRuns) {
  SKIP_WITHOUT_GPU();
  ModelConfig c = ModelPreset("tiny").value();
  c.max_seq_len = 256;
  auto w = RandomModel(c, 2);
  ASSERT_TRUE(w.ok());
  const int bt = 16, per_seq = 256 / bt;
  auto f = GpuForward::Create(**w, Options(**w, 4 * per_seq, bt));
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  const std::vector<TokenId> p1 = Prompt(60, 1, c.vocab_size), p2 = Prompt(90, 2, c.vocab_size);
  const std::vector<PageId> t1 = Pages(0, per_seq), t2 = Pages(per_seq, per_seq);
  const std::vector<PageId> u1 = Pages(2 * per_seq, per_seq), u2 = Pages(3 * per_seq, per_seq);
  std::vector<float> l;
  // Alone: p1's first 59 tokens, then its 60th as a decode step; p2 whole.
  SeqChunk a{std::span<const TokenId>(p1).first(59), 0, t1, false};
  ASSERT_TRUE((*f)->Run({&a, 1}, &l).ok());
  SeqChunk a2{std::span<const TokenId>(p1).subspan(59), 59, t1, true};
  std::vector<float> alone1, alone2;
  ASSERT_TRUE((*f)->Run({&a2, 1}, &alone1).ok());
  SeqChunk b{p2, 0, t2, true};
  ASSERT_TRUE((*f)->Run({&b, 1}, &alone2).ok());
  // Together: the decode step of p1 and the prefill of p2 in one batch.
  SeqChunk a3{std::span<const TokenId>(p1).first(59), 0, u1, false};
  ASSERT_TRUE((*f)->Run({&a3, 1}, &l).ok());
  SeqChunk both[2] = {{std::span<const TokenId>(p1).subspan(59), 59, u1, true}, {p2, 0, u2, true}};
  ASSERT_TRUE((*f)->Run(both, &l).ok());
  const int v = c.vocab_size;
  EXPECT_LT(RelError(std::vector<float>(l.begin(), l.begin() + v), alone1), 1e-5);
  EXPECT_LT(RelError(std::vector<float>(l.begin() + v, l.end()), alone2), 1e-5);
}

// Decode steps replayed from captured CUDA graphs compute exactly what the
// same launches made one by one compute, also when the batch's shape changes
// between steps (a new graph) and comes back (a replay).
TEST(GpuForwardTest, GraphReplayedDecodeEqualsEagerDecode) {
  SKIP_WITHOUT_GPU();
  ModelConfig c = ModelPreset("tiny").value();
  c.max_seq_len = 256;
  auto w = RandomModel(c, 4);
  ASSERT_TRUE(w.ok());
  const int bt = 16, per_seq = 256 / bt;
  std::vector<std::vector<float>> results[2];
  for (bool graphs : {false, true}) {
    GpuForwardOptions o = Options(**w, 2 * per_seq, bt);
    o.cuda_graphs = graphs;
    auto f = GpuForward::Create(**w, o);
    ASSERT_TRUE(f.ok()) << f.status().ToString();
    const std::vector<TokenId> p1 = Prompt(120, 1, c.vocab_size), p2 = Prompt(120, 2, c.vocab_size);
    const std::vector<PageId> t1 = Pages(0, per_seq), t2 = Pages(per_seq, per_seq);
    std::vector<float> l;
    SeqChunk fill[2] = {{std::span<const TokenId>(p1).first(20), 0, t1, false},
                        {std::span<const TokenId>(p2).first(20), 0, t2, false}};
    ASSERT_TRUE((*f)->Run(fill, &l).ok());
    for (int pos = 20; pos < 60; ++pos) {
      // Both sequences, except every third step only the first.
      SeqChunk step[2] = {{std::span<const TokenId>(p1).subspan(pos, 1), pos, t1, true},
                          {std::span<const TokenId>(p2).subspan(pos, 1), pos, t2, true}};
      const size_t n = pos % 3 == 0 ? 1 : 2;
      if (n == 1) {
        SeqChunk catch_up{std::span<const TokenId>(p2).subspan(pos, 1), pos, t2, false};
        ASSERT_TRUE((*f)->Run({&catch_up, 1}, &l).ok());  // keeps p2's pages whole
      }
      ASSERT_TRUE((*f)->Run({step, n}, &l).ok());
      results[graphs].push_back(l);
    }
  }
  ASSERT_EQ(results[0].size(), results[1].size());
  for (size_t i = 0; i < results[0].size(); ++i) {
    EXPECT_EQ(results[0][i], results[1][i]) << "step " << i;
  }
}

// RunArgmax answers the index of each wanted row's largest logit, computed
// on the device, as the CPU default does from Run's logits.
TEST(GpuForwardTest, RunArgmaxIsTheArgmaxOfTheLogits) {
  SKIP_WITHOUT_GPU();
  ModelConfig c = ModelPreset("tiny").value();
  c.max_seq_len = 128;
  auto w = RandomModel(c, 8);
  ASSERT_TRUE(w.ok());
  auto f = GpuForward::Create(**w, Options(**w, 16, 16));
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  const std::vector<TokenId> p1 = Prompt(30, 1, c.vocab_size), p2 = Prompt(45, 2, c.vocab_size);
  // p1 takes pages 0 and 1 of t1; t3 is the rest of them.
  const std::vector<PageId> t1 = Pages(0, 8), t2 = Pages(8, 8), t3 = Pages(2, 6);
  // The same tokens twice, in other pages (no page twice in one call), one
  // of them wanting logits.
  SeqChunk chunks[3] = {{p1, 0, t1, true},
                        {std::span<const TokenId>(p2).first(10), 0, t3, false},
                        {std::span<const TokenId>(p2).first(10), 0, t2, true}};
  std::vector<float> logits;
  std::vector<TokenId> ids;
  ASSERT_TRUE((*f)->Run({chunks, 1}, &logits).ok());
  ASSERT_TRUE((*f)->RunArgmax({chunks, 1}, &ids).ok());
  ASSERT_EQ(ids.size(), 1u);
  EXPECT_EQ(ids[0], std::max_element(logits.begin(), logits.end()) - logits.begin());
  ASSERT_TRUE((*f)->Run({chunks + 1, 2}, &logits).ok());  // one chunk wants logits
  ASSERT_TRUE((*f)->RunArgmax({chunks + 1, 2}, &ids).ok());
  ASSERT_EQ(ids.size(), 1u);
  ASSERT_EQ(logits.size(), static_cast<size_t>(c.vocab_size));
  EXPECT_EQ(ids[0], std::max_element(logits.begin(), logits.end()) - logits.begin());
}

TEST(GpuForwardTest, BadInputIsRefusedAndChangesNothing) {
  SKIP_WITHOUT_GPU();
  ModelConfig c = ModelPreset("tiny").value();
  c.max_seq_len = 128;
  auto w = RandomModel(c, 3);
  ASSERT_TRUE(w.ok());
  auto f = GpuForward::Create(**w, Options(**w, 8, 16));
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  const std::vector<TokenId> p = Prompt(20, 5, c.vocab_size);
  const std::vector<PageId> t = Pages(0, 8);
  std::vector<float> l;
  SeqChunk ok{p, 0, t, true};
  ASSERT_TRUE((*f)->Run({&ok, 1}, &l).ok());
  std::vector<std::byte> before((*f)->page_bytes()), after(before.size());
  ASSERT_TRUE((*f)->ReadPage(0, before).ok());

  std::vector<TokenId> bad = p;
  bad[3] = c.vocab_size;  // outside the vocabulary
  SeqChunk b1{bad, 0, t, true};
  EXPECT_EQ((*f)->Run({&b1, 1}, &l).code(), StatusCode::kInvalidArgument);
  SeqChunk b2{p, c.max_seq_len - 5, t, true};  // past the context
  EXPECT_EQ((*f)->Run({&b2, 1}, &l).code(), StatusCode::kInvalidArgument);
  const std::vector<PageId> outside = {0, 99};  // page outside the pool
  SeqChunk b3{p, 0, outside, true};
  EXPECT_EQ((*f)->Run({&b3, 1}, &l).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ((*f)->ReadPage(8, after).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ((*f)->WritePage(0, std::span<const std::byte>(before).first(10)).code(),
            StatusCode::kInvalidArgument);
  ASSERT_TRUE((*f)->ReadPage(0, after).ok());
  EXPECT_EQ(before, after);
}

TEST(GpuForwardTest, CreateWithoutADeviceIsUnavailable) {
  if (DeviceAvailable()) GTEST_SKIP() << "a GPU is present: " << DeviceDescription();
  ModelConfig c = ModelPreset("tiny").value();
  auto w = RandomModel(c, 1);
  ASSERT_TRUE(w.ok());
  auto f = GpuForward::Create(**w, Options(**w, 8));
  EXPECT_EQ(f.status().code(), StatusCode::kUnavailable);
}

}  // namespace
}  // namespace kvtier
