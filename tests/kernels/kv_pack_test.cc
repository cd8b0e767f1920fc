// KV pack/unpack: the CPU twin against an independent reference of the two
// layouts, and the GPU kernel against the CPU twin (skipped without a GPU).
#include "kernels/kv_pack.cuh"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <numeric>
#include <random>
#include <tuple>

namespace kvtier {
namespace {

struct Shape {
  int layers, kv_heads, head_dim, block_tokens, page_tokens;
  DType dtype;
  int64_t num_pages;
  int64_t num_blocks;
};

std::string Name(const Shape& s) {
  return std::to_string(s.layers) + "L_" + std::to_string(s.kv_heads) + "H_" +
         std::to_string(s.head_dim) + "D_b" + std::to_string(s.block_tokens) + "_p" +
         std::to_string(s.page_tokens) + "_" + std::string(DTypeName(s.dtype));
}

void PrintTo(const Shape& s, std::ostream* os) { *os << Name(s) << "_n" << s.num_blocks; }

KvPageLayout Layout(const Shape& s) {
  return KvPageLayout{KvGeometry{s.layers, s.kv_heads, s.head_dim, s.block_tokens, s.dtype},
                      s.page_tokens, s.num_pages};
}

// A page table that scatters each block over distinct, shuffled pages.
std::vector<int32_t> PageTable(const Shape& s) {
  std::vector<int32_t> pages(static_cast<size_t>(s.num_pages));
  std::iota(pages.begin(), pages.end(), 0);
  std::shuffle(pages.begin(), pages.end(), std::mt19937(7));
  const int64_t per_block = s.block_tokens / s.page_tokens;
  pages.resize(static_cast<size_t>(s.num_blocks * per_block));
  return pages;
}

std::vector<std::byte> Random(size_t n, uint32_t seed) {
  std::vector<std::byte> v(n);
  std::mt19937 rng(seed);
  for (auto& b : v) b = static_cast<std::byte>(rng());
  return v;
}

// The layouts written out as nested loops, straight from kv_pack.cuh.
std::vector<std::byte> ReferencePack(const Shape& s, const std::vector<std::byte>& pool,
                                     const std::vector<int32_t>& table) {
  const size_t row = static_cast<size_t>(s.head_dim) * DTypeBytes(s.dtype);
  std::vector<std::byte> out(static_cast<size_t>(s.num_blocks) * s.layers * 2 * s.kv_heads *
                             s.block_tokens * row);
  const int per_block = s.block_tokens / s.page_tokens;
  size_t dst = 0;
  for (int64_t b = 0; b < s.num_blocks; ++b)
    for (int l = 0; l < s.layers; ++l)
      for (int kv = 0; kv < 2; ++kv)
        for (int h = 0; h < s.kv_heads; ++h)
          for (int t = 0; t < s.block_tokens; ++t) {
            const int64_t page = table[static_cast<size_t>(b * per_block + t / s.page_tokens)];
            const size_t src =
                static_cast<size_t>(
                    (((l * 2 + kv) * s.num_pages + page) * s.page_tokens + t % s.page_tokens) *
                        s.kv_heads +
                    h) *
                row;
            std::memcpy(out.data() + dst, pool.data() + src, row);
            dst += row;
          }
  return out;
}

size_t PoolBytes(const Shape& s) {
  return static_cast<size_t>(s.layers) * 2 * s.num_pages * s.page_tokens * s.kv_heads * s.head_dim *
         DTypeBytes(s.dtype);
}

class KvPackTest : public ::testing::TestWithParam<Shape> {};

TEST_P(KvPackTest, CpuTwinMatchesTheReferenceAndRoundTrips) {
  const Shape s = GetParam();
  const auto layout = Layout(s);
  const auto table = PageTable(s);
  const auto pool = Random(PoolBytes(s), 1);
  const auto expect = ReferencePack(s, pool, table);
  std::vector<std::byte> blocks(expect.size());
  ASSERT_TRUE(
      PackKvBlocksCpu(layout, pool.data(), table.data(), s.num_blocks, blocks.data(), nullptr)
          .ok());
  EXPECT_EQ(blocks, expect);
  // Unpack into a fresh pool: the pages the table names come back exactly.
  std::vector<std::byte> back(pool.size(), std::byte{0});
  ASSERT_TRUE(
      UnpackKvBlocksCpu(layout, blocks.data(), table.data(), s.num_blocks, back.data(), nullptr)
          .ok());
  std::vector<std::byte> again(blocks.size());
  ASSERT_TRUE(
      PackKvBlocksCpu(layout, back.data(), table.data(), s.num_blocks, again.data(), nullptr).ok());
  EXPECT_EQ(again, blocks);
}

TEST_P(KvPackTest, GpuKernelMatchesTheCpuTwin) {
  if (!DeviceAvailable()) {
    GTEST_SKIP() << "no CUDA device (" << DeviceDescription() << "): GPU side not run";
  }
  const Shape s = GetParam();
  const auto layout = Layout(s);
  const auto table = PageTable(s);
  const auto pool = Random(PoolBytes(s), 2);
  std::vector<std::byte> expect(ReferencePack(s, pool, table).size());
  ASSERT_TRUE(
      PackKvBlocksCpu(layout, pool.data(), table.data(), s.num_blocks, expect.data(), nullptr)
          .ok());
  auto d_pool = DeviceBuffer::Allocate(pool.size());
  auto d_blocks = DeviceBuffer::Allocate(expect.size());
  auto d_table = DeviceBuffer::Allocate(table.size() * sizeof(int32_t));
  ASSERT_TRUE(d_pool.ok() && d_blocks.ok() && d_table.ok());
  ASSERT_TRUE(CopyToDevice(d_pool->data(), pool.data(), pool.size()).ok());
  ASSERT_TRUE(CopyToDevice(d_table->data(), table.data(), table.size() * 4).ok());
  ASSERT_TRUE(PackKvBlocks(layout, d_pool->data(), static_cast<const int32_t*>(d_table->data()),
                           s.num_blocks, d_blocks->data(), nullptr)
                  .ok());
  ASSERT_TRUE(SynchronizeStream(nullptr).ok());
  std::vector<std::byte> got(expect.size());
  ASSERT_TRUE(CopyToHost(got.data(), d_blocks->data(), got.size()).ok());
  EXPECT_EQ(got, expect);  // a pure copy: bit-exact for every dtype
  // Unpack on the GPU into a zeroed pool and compare with the CPU twin's unpack.
  std::vector<std::byte> zero(pool.size(), std::byte{0}), cpu_back = zero;
  ASSERT_TRUE(
      UnpackKvBlocksCpu(layout, expect.data(), table.data(), s.num_blocks, cpu_back.data(), nullptr)
          .ok());
  ASSERT_TRUE(CopyToDevice(d_pool->data(), zero.data(), zero.size()).ok());
  ASSERT_TRUE(UnpackKvBlocks(layout, d_blocks->data(), static_cast<const int32_t*>(d_table->data()),
                             s.num_blocks, d_pool->data(), nullptr)
                  .ok());
  ASSERT_TRUE(SynchronizeStream(nullptr).ok());
  std::vector<std::byte> gpu_back(pool.size());
  ASSERT_TRUE(CopyToHost(gpu_back.data(), d_pool->data(), gpu_back.size()).ok());
  EXPECT_EQ(gpu_back, cpu_back);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, KvPackTest,
    ::testing::Values(
        // stories260K: 5 layers, 4 KV heads of 8
        Shape{5, 4, 8, 16, 16, DType::kFloat32, 8, 3},
        Shape{5, 4, 8, 64, 16, DType::kFloat32, 32, 5},
        Shape{2, 8, 128, 64, 32, DType::kFloat16, 8, 3},   // Llama-3-like heads, f16
        Shape{2, 8, 128, 32, 32, DType::kBFloat16, 6, 4},  // one page per block
        Shape{3, 1, 3, 16, 1, DType::kFloat16, 64, 3},     // odd head_dim: 6-byte rows
        Shape{1, 2, 64, 16, 16, DType::kFloat32, 2, 0}),   // no blocks at all
    [](const auto& info) {
      return Name(info.param) + "_n" + std::to_string(info.param.num_blocks);
    });

TEST(KvPackArgumentsTest, BadArgumentsAreRefusedWithoutWriting) {
  Shape s{1, 1, 8, 16, 16, DType::kFloat32, 2, 1};
  auto layout = Layout(s);
  std::vector<std::byte> pool(PoolBytes(s)), out(16 * 8 * 4 * 2, std::byte{0x11});
  const auto untouched = out;
  std::vector<int32_t> table = {2};  // out of the 2-page pool
  EXPECT_EQ(PackKvBlocksCpu(layout, pool.data(), table.data(), 1, out.data(), nullptr).code(),
            StatusCode::kInvalidArgument);
  table = {-1};
  EXPECT_EQ(PackKvBlocksCpu(layout, pool.data(), table.data(), 1, out.data(), nullptr).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(out, untouched);
  table = {0};
  EXPECT_EQ(PackKvBlocksCpu(layout, nullptr, table.data(), 1, out.data(), nullptr).code(),
            StatusCode::kInvalidArgument);
  auto bad = layout;
  bad.page_tokens = 32;  // does not divide block_tokens
  EXPECT_EQ(PackKvBlocksCpu(bad, pool.data(), table.data(), 1, out.data(), nullptr).code(),
            StatusCode::kInvalidArgument);
  bad = layout;
  bad.geometry.block_tokens = 24;
  EXPECT_EQ(bad.Validate().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(PackKvBlocksCpu(layout, pool.data(), table.data(), -1, out.data(), nullptr).code(),
            StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kvtier
