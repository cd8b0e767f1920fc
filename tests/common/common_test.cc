#include <gtest/gtest.h>

#include "common/block_key.h"
#include "common/checksum.h"
#include "common/kv_geometry.h"
#include "common/status.h"

#include <xxhash.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <vector>

namespace kvtier {
namespace {

TEST(BlockKeyTest, HexAndBytesRoundTrip) {
  BlockKey k{0x0123456789abcdefull, 0xfedcba9876543210ull};
  EXPECT_EQ(k.ToHex(), "0123456789abcdeffedcba9876543210");
  EXPECT_EQ(BlockKey::FromHex(k.ToHex()), k);
  EXPECT_EQ(BlockKey::FromHex("0123456789ABCDEFFEDCBA9876543210"), k);
  EXPECT_EQ(BlockKey::FromBytes(k.ToByteString()), k);
  EXPECT_EQ(static_cast<uint8_t>(k.ToByteString()[0]), 0x01);
  EXPECT_FALSE(BlockKey::FromHex("0123").has_value());
  EXPECT_FALSE(BlockKey::FromHex("g123456789abcdeffedcba9876543210").has_value());
  EXPECT_FALSE(BlockKey::FromBytes(std::string(15, 'x')).has_value());
}

TEST(StatusTest, CodesAndMessages) {
  EXPECT_TRUE(Status::Ok().ok());
  EXPECT_EQ(Status::Ok().ToString(), "OK");
  Status s = Status::NotFound("gone");
  EXPECT_FALSE(s.ok());
  EXPECT_TRUE(s.IsNotFound());
  EXPECT_EQ(s.ToString(), "NotFound: gone");
  Result<int> r = Status::Corruption("bad");
  EXPECT_FALSE(r.ok());
  EXPECT_TRUE(r.status().IsCorruption());
  Result<int> v = 7;
  EXPECT_TRUE(v.ok());
  EXPECT_EQ(*v, 7);
}

// What KVTIER_ASSIGN_OR_RETURN hands back: the value moved out on success
// (move-only types work), the error returned unchanged on failure, and nothing
// after it run.
Result<std::unique_ptr<std::string>> MakeText(bool fail) {
  if (fail) return Status::NotFound("no text");
  return std::make_unique<std::string>("text");
}

Result<size_t> TextLength(bool fail, int* reached) {
  KVTIER_ASSIGN_OR_RETURN(std::unique_ptr<std::string> text, MakeText(fail));
  ++*reached;
  size_t twice = 0;
  KVTIER_ASSIGN_OR_RETURN(twice, Result<size_t>(2 * text->size()));
  return twice;
}

TEST(StatusTest, AssignOrReturnMovesTheValueOrReturnsTheError) {
  int reached = 0;
  Result<size_t> ok = TextLength(false, &reached);
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(*ok, 8u);
  EXPECT_EQ(reached, 1);
  Result<size_t> failed = TextLength(true, &reached);
  EXPECT_TRUE(failed.status().IsNotFound());
  EXPECT_EQ(failed.status().message(), "no text");
  EXPECT_EQ(reached, 1) << "nothing after a failed assignment runs";
}

TEST(ChecksumTest, CopyAndChecksumEqualsChecksumOfTheCopy) {
  for (size_t n :
       {size_t{0}, size_t{1}, size_t{4096}, size_t{65536}, size_t{65537}, size_t{1 << 20}}) {
    std::vector<std::byte> src(n), dst(n);
    for (size_t i = 0; i < n; ++i) src[i] = static_cast<std::byte>(i * 7 + 3);
    EXPECT_EQ(CopyAndChecksum64(src, dst), Checksum64(src)) << n;
    EXPECT_EQ(dst, src);
  }
}

// Every instruction set this CPU runs gives the reference XXH3-64 (Debian's
// libxxhash, built apart from our kernels) on random sizes, around the
// algorithm's size classes and the copy's 16 KiB pieces, at every alignment
// of source and destination within a cache line.
TEST(ChecksumTest, EveryInstructionSetGivesTheReferenceXxh3OnRandomSizesAndAlignments) {
  std::vector<ChecksumIsa> isas = SupportedChecksumIsas();
  ASSERT_FALSE(isas.empty());
  EXPECT_EQ(isas.front(), ChecksumIsa::kSse2) << "x86-64's baseline";
  EXPECT_EQ(ActiveChecksumIsa(), isas.back()) << "the widest one is used";
  std::printf("checksum paths tested on this CPU:");
  for (ChecksumIsa isa : isas) std::printf(" %s", std::string(ToString(isa)).c_str());
  std::printf(" (active: %s)\n", std::string(ToString(ActiveChecksumIsa())).c_str());

  std::mt19937_64 rng(20261205);
  std::vector<size_t> sizes = {0,   1,    3,    16,    17,    128,   129,          240,
                               241, 1024, 1025, 16383, 16384, 16385, 3 * 16384 + 7};
  for (int i = 0; i < 40; ++i) sizes.push_back(rng() % (300 * 1024));
  std::vector<std::byte> src(300 * 1024 + 64), dst(src.size());
  for (auto& b : src) b = static_cast<std::byte>(rng());
  for (size_t n : sizes) {
    const size_t src_off = rng() % 64, dst_off = rng() % 64;
    std::span<const std::byte> in(src.data() + src_off, n);
    const uint64_t want = XXH3_64bits(in.data(), n);
    for (ChecksumIsa isa : isas) {
      SCOPED_TRACE(testing::Message()
                   << ToString(isa) << " n=" << n << " src+" << src_off << " dst+" << dst_off);
      EXPECT_EQ(Checksum64(in, isa), want);
      std::fill(dst.begin(), dst.end(), std::byte{0xee});
      std::span<std::byte> out(dst.data() + dst_off, n);
      EXPECT_EQ(CopyAndChecksum64(in, out, isa), want);
      EXPECT_TRUE(std::equal(in.begin(), in.end(), out.begin()));
      EXPECT_EQ(dst[dst_off + n], std::byte{0xee}) << "wrote past the end";
    }
  }
}

TEST(KvGeometryTest, BlockBytesFollowTheLayout) {
  KvGeometry g{5, 4, 8, 64, DType::kFloat32};  // stories260K
  EXPECT_TRUE(g.Validate().ok());
  EXPECT_EQ(g.BytesPerToken(), 5u * 2 * 4 * 8 * 4);
  EXPECT_EQ(g.BlockBytes(), 64u * 1280);
  g.dtype = DType::kBFloat16;
  EXPECT_EQ(g.BytesPerToken(), 640u);
  g.block_tokens = 100;
  EXPECT_FALSE(g.Validate().ok());
  EXPECT_EQ(ParseDType("bf16"), DType::kBFloat16);
  EXPECT_FALSE(ParseDType("int8").has_value());
}

}  // namespace
}  // namespace kvtier
