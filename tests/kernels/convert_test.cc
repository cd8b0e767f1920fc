// f32 -> bf16: the CPU twin against hand-worked bit patterns, and the GPU
// kernel against the twin over many values (skipped without a GPU).
#include "kernels/convert.cuh"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

namespace kvtier {
namespace {

float FromBits(uint32_t b) {
  float f;
  std::memcpy(&f, &b, sizeof(f));
  return f;
}

TEST(ConvertTest, CpuTwinRoundsToNearestEven) {
  const std::vector<std::pair<uint32_t, uint16_t>> cases = {
      {0x3f800000u, 0x3f80},  // 1.0 exactly
      {0x3f808000u, 0x3f80},  // halfway, even below: stays
      {0x3f818000u, 0x3f82},  // halfway, odd below: rounds up to even
      {0x3f808001u, 0x3f81},  // just above halfway: up
      {0x3f807fffu, 0x3f80},  // just below halfway: down
      {0xbf800000u, 0xbf80},  // -1.0
      {0x7f7fffffu, 0x7f80},  // FLT_MAX rounds to +inf
      {0x7f800000u, 0x7f80},  // +inf
      {0x00000001u, 0x0000},  // smallest denormal rounds to zero
  };
  for (const auto& [in, want] : cases) {
    const float f = FromBits(in);
    uint16_t got = 0;
    ASSERT_TRUE(ConvertF32ToBf16Cpu(&f, 1, &got, nullptr).ok());
    EXPECT_EQ(got, want) << std::hex << in;
  }
  const float nan = FromBits(0x7f800001u);  // a signalling NaN must not become inf
  uint16_t got = 0;
  ASSERT_TRUE(ConvertF32ToBf16Cpu(&nan, 1, &got, nullptr).ok());
  EXPECT_EQ(got & 0x7f80, 0x7f80);
  EXPECT_NE(got & 0x007f, 0);
}

TEST(ConvertTest, BadArgumentsAreRefused) {
  float x = 1;
  uint16_t y = 7;
  EXPECT_EQ(ConvertF32ToBf16Cpu(&x, -1, &y, nullptr).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ConvertF32ToBf16Cpu(nullptr, 1, &y, nullptr).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(y, 7);
  EXPECT_TRUE(ConvertF32ToBf16Cpu(nullptr, 0, nullptr, nullptr).ok());
}

TEST(ConvertTest, GpuMatchesTheCpuTwinBitForBit) {
  if (!DeviceAvailable()) GTEST_SKIP() << "no GPU: " << DeviceDescription();
  const int64_t n = 1 << 20;
  std::vector<float> in(n);
  std::mt19937 rng(3);
  for (auto& v : in) {
    uint32_t b = rng();
    if ((b & 0x7f800000u) == 0x7f800000u) b &= ~0x00400000u;  // keep NaNs in the mix
    v = FromBits(b);
  }
  std::vector<uint16_t> want(n), got(n);
  ASSERT_TRUE(ConvertF32ToBf16Cpu(in.data(), n, want.data(), nullptr).ok());
  auto din = DeviceBuffer::Allocate(n * sizeof(float));
  auto dout = DeviceBuffer::Allocate(n * sizeof(uint16_t));
  ASSERT_TRUE(din.ok() && dout.ok());
  ASSERT_TRUE(CopyToDevice(din->data(), in.data(), n * sizeof(float)).ok());
  ASSERT_TRUE(ConvertF32ToBf16(static_cast<const float*>(din->data()), n,
                               static_cast<uint16_t*>(dout->data()), nullptr)
                  .ok());
  ASSERT_TRUE(SynchronizeStream(nullptr).ok());
  ASSERT_TRUE(CopyToHost(got.data(), dout->data(), n * sizeof(uint16_t)).ok());
  int64_t diff = 0;
  for (int64_t i = 0; i < n; ++i) {
    const bool nan = std::isnan(in[i]);
    if (nan ? (got[i] & 0x7fc0) != 0x7fc0 : got[i] != want[i]) ++diff;
  }
  EXPECT_EQ(diff, 0);
}

}  // namespace
}  // namespace kvtier
