// Tests of the HBM tier: the host stand-in always (HbmTierTest), the CUDA
// backend when a device answers (HbmTierCudaTest, skipped otherwise), and the
// shared conformance suite on both.
#include "tiers/hbm/hbm_tier.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <future>
#include <thread>
#include <vector>

#include "kernels/device.h"
#include "tests/tiers/tier_conformance.h"

namespace kvtier {
namespace {

using conformance::K;
using conformance::Payload;

constexpr uint64_t kBlock = 64 << 10;  // a 64 KiB block
constexpr size_t kRun = 64;            // blocks in a run

// --- Conformance ---------------------------------------------------------------

struct HbmStandInFactory {
  static constexpr const char* kName = "HbmStandIn";
  static constexpr bool kPersistent = false;
  static Result<std::unique_ptr<Tier>> Open(const std::string&, uint64_t capacity, Clock* clock) {
    HbmTierOptions o;
    o.capacity_bytes = capacity;
    o.force_host_standin = true;
    o.staging_buffer_bytes = 128 << 10;
    o.staging_buffers = 2;
    o.clock = clock;
    return OpenHbmTier(o);
  }
};

struct HbmCudaFactory {
  static constexpr const char* kName = "HbmCuda";
  static constexpr bool kPersistent = false;
  static std::string SkipReason() { return DeviceAvailable() ? "" : DeviceDescription(); }
  static Result<std::unique_ptr<Tier>> Open(const std::string&, uint64_t capacity, Clock* clock) {
    HbmTierOptions o;
    o.capacity_bytes = capacity;
    o.staging_buffer_bytes = 128 << 10;
    o.staging_buffers = 2;
    o.clock = clock;
    auto t = HbmTier::Open(o);
    if (!t.ok()) return t.status();
    if (!(*t)->on_device()) return Status::Unavailable("the HBM tier fell back to the stand-in");
    return std::unique_ptr<Tier>(std::move(*t));
  }
};

using HbmTypes = ::testing::Types<HbmStandInFactory, HbmCudaFactory>;
}  // namespace

// The suite lives in kvtier::conformance, and is instantiated there.
namespace conformance {
INSTANTIATE_TYPED_TEST_SUITE_P(Hbm, TierConformanceTest, HbmTypes, FactoryNames);
}  // namespace conformance

namespace {

// --- Helpers --------------------------------------------------------------------

// Page-aligned host memory, pinned with PinHostMemory when asked and possible.
class HostBuffer {
 public:
  explicit HostBuffer(size_t bytes, bool pin = false)
      : bytes_(bytes),
        data_(static_cast<std::byte*>(std::aligned_alloc(4096, (bytes + 4095) / 4096 * 4096))) {
    std::memset(data_, 0, bytes_);
    if (pin) pinned_ = PinHostMemory(data_, bytes_).ok();
  }
  ~HostBuffer() {
    if (pinned_) UnpinHostMemory(data_);
    std::free(data_);
  }
  HostBuffer(const HostBuffer&) = delete;
  HostBuffer& operator=(const HostBuffer&) = delete;

  std::span<std::byte> span() { return {data_, bytes_}; }
  std::span<std::byte> block(size_t i, uint64_t bytes = kBlock) {
    return span().subspan(i * bytes, bytes);
  }
  bool pinned() const { return pinned_; }

 private:
  size_t bytes_;
  std::byte* data_;
  bool pinned_ = false;
};

// Fills `buf` with blocks of `bytes`, block i holding Payload(bytes, seed + i).
void FillBlocks(std::span<std::byte> buf, uint64_t bytes, uint64_t seed) {
  for (size_t i = 0; i * bytes < buf.size(); ++i) {
    auto p = Payload(bytes, seed + i);
    std::memcpy(buf.data() + i * bytes, p.data(), bytes);
  }
}

bool BlockIs(std::span<const std::byte> got, uint64_t seed) {
  auto want = Payload(got.size(), seed);
  return std::memcmp(got.data(), want.data(), got.size()) == 0;
}

HbmTierOptions StandIn(bool host_is_pinned) {
  HbmTierOptions o;
  o.capacity_bytes = 64 << 20;
  o.force_host_standin = true;
  o.standin_host_is_pinned = host_is_pinned;
  o.staging_buffer_bytes = 1 << 20;
  o.staging_buffers = 2;
  return o;
}

std::unique_ptr<HbmTier> OpenOrDie(const HbmTierOptions& o) {
  auto t = HbmTier::Open(o);
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? std::move(*t) : nullptr;
}

HbmTierStats Delta(const HbmTierStats& after, const HbmTierStats& before) {
  HbmTierStats d;
  d.copies_issued = after.copies_issued - before.copies_issued;
  d.h2d_copies = after.h2d_copies - before.h2d_copies;
  d.d2h_copies = after.d2h_copies - before.d2h_copies;
  d.d2d_copies = after.d2d_copies - before.d2d_copies;
  d.staged_bytes = after.staged_bytes - before.staged_bytes;
  d.direct_bytes = after.direct_bytes - before.direct_bytes;
  return d;
}

// Writes blocks i = 0..n-1 of `src` (each `bytes`) under keys first + i.
std::vector<IoResult> WriteBlocks(Tier& tier, HostBuffer& src, size_t n, uint64_t first,
                                  uint64_t bytes = kBlock) {
  std::vector<WriteOp> ops;
  for (size_t i = 0; i < n; ++i) ops.push_back({K(first + i), src.block(i, bytes), kNoExpiry});
  return WriteSync(tier, ops);
}

void ExpectAllOk(const std::vector<IoResult>& results) {
  for (size_t i = 0; i < results.size(); ++i) {
    EXPECT_TRUE(results[i].status.ok()) << "op " << i << ": " << results[i].status;
  }
}

// --- Stand-in --------------------------------------------------------------------

TEST(HbmTierTest, ForcedStandInRunsOnHostAndReportsItself) {
  auto tier = OpenOrDie(StandIn(false));
  ASSERT_NE(tier, nullptr);
  EXPECT_FALSE(tier->on_device());
  TierInfo info = tier->Info();
  EXPECT_EQ(info.name, "hbm");
  EXPECT_EQ(info.capacity_bytes, 64u << 20);
  EXPECT_EQ(info.max_block_bytes, 64u << 20);
  EXPECT_FALSE(info.persistent);
  EXPECT_GT(info.read_bytes_per_s, 0);
  EXPECT_GT(info.write_bytes_per_s, 0);
  EXPECT_EQ(info.blocks, 0u);
  EXPECT_EQ(info.allocated_bytes, 0u) << "calibration must free what it wrote";
}

TEST(HbmTierTest, OptionsAreValidated) {
  HbmTierOptions o = StandIn(false);
  o.capacity_bytes = 1000;
  EXPECT_EQ(HbmTier::Open(o).status().code(), StatusCode::kInvalidArgument);
  o = StandIn(false);
  o.max_block_bytes = 0;
  EXPECT_EQ(HbmTier::Open(o).status().code(), StatusCode::kInvalidArgument);
  o = StandIn(false);
  o.staging_buffer_bytes = 64 << 10;
  EXPECT_EQ(HbmTier::Open(o).status().code(), StatusCode::kInvalidArgument);
  o = StandIn(false);
  o.staging_buffers = 0;
  EXPECT_EQ(HbmTier::Open(o).status().code(), StatusCode::kInvalidArgument);
  o = StandIn(false);
  o.clock = nullptr;
  EXPECT_EQ(HbmTier::Open(o).status().code(), StatusCode::kInvalidArgument);
}

TEST(HbmTierTest, BadInputFailsAloneAndChangesNothing) {
  HbmTierOptions o = StandIn(false);
  o.max_block_bytes = 100 << 10;
  auto tier = OpenOrDie(o);
  ASSERT_NE(tier, nullptr);
  ASSERT_TRUE(WriteOne(*tier, K(1), Payload(5000, 1)).ok());
  const TierInfo before = tier->Info();
  auto big = Payload((100 << 10) + 1, 2);
  auto good = Payload(3000, 3);
  std::vector<WriteOp> ops = {
      {K(1), {}, kNoExpiry}, {K(1), big, kNoExpiry}, {K(2), good, kNoExpiry}};
  auto r = WriteSync(*tier, ops);
  EXPECT_EQ(r[0].status.code(), StatusCode::kInvalidArgument);
  // Too large is "a limit is reached", as in every other tier: the cache
  // manager then tries the next tier.
  EXPECT_EQ(r[1].status.code(), StatusCode::kResourceExhausted);
  EXPECT_TRUE(r[2].status.ok()) << r[2].status;
  std::vector<std::byte> buf(8000);
  auto n = ReadOne(*tier, K(1), buf);
  ASSERT_TRUE(n.ok());
  buf.resize(*n);
  EXPECT_EQ(buf, Payload(5000, 1)) << "a refused write must leave the old block";
  EXPECT_EQ(tier->Info().blocks, before.blocks + 1);
  EXPECT_EQ(tier->Info().used_bytes, before.used_bytes + 3000);
}

TEST(HbmTierTest, FullTierRefusesWithoutEvicting) {
  HbmTierOptions o = StandIn(false);
  o.capacity_bytes = 16 * kBlock;
  o.read_bytes_per_s = o.write_bytes_per_s = 1e9;  // no calibration: the arena is tiny
  auto tier = OpenOrDie(o);
  ASSERT_NE(tier, nullptr);
  HostBuffer src(20 * kBlock);
  FillBlocks(src.span(), kBlock, 100);
  auto r = WriteBlocks(*tier, src, 20, 0);
  for (size_t i = 0; i < 16; ++i) EXPECT_TRUE(r[i].status.ok()) << i;
  for (size_t i = 16; i < 20; ++i) EXPECT_EQ(r[i].status.code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(tier->Info().blocks, 16u);
  std::vector<std::byte> buf(kBlock);
  for (uint64_t i = 0; i < 16; ++i) {
    ASSERT_TRUE(ReadOne(*tier, K(i), buf).ok()) << i;
    EXPECT_TRUE(BlockIs(buf, 100 + i)) << i;
  }
  for (uint64_t i = 16; i < 20; ++i) EXPECT_TRUE(ReadOne(*tier, K(i), buf).status().IsNotFound());
}

TEST(HbmTierTest, ContiguousPinnedRunIsOneCopyEachWay) {
  auto tier = OpenOrDie(StandIn(/*host_is_pinned=*/true));
  ASSERT_NE(tier, nullptr);
  HostBuffer src(kRun * kBlock);
  FillBlocks(src.span(), kBlock, 7);
  HbmTierStats s0 = tier->stats();
  ExpectAllOk(WriteBlocks(*tier, src, kRun, 0));
  HbmTierStats w = Delta(tier->stats(), s0);
  EXPECT_EQ(w.h2d_copies, 1u) << "64 contiguous blocks into a contiguous extent";
  EXPECT_EQ(w.direct_bytes, kRun * kBlock);
  EXPECT_EQ(w.staged_bytes, 0u);

  HostBuffer back(kRun * kBlock);
  std::vector<ReadOp> reads;
  for (size_t i = 0; i < kRun; ++i) reads.push_back({K(i), back.block(i)});
  s0 = tier->stats();
  ExpectAllOk(ReadSync(*tier, reads));
  HbmTierStats r = Delta(tier->stats(), s0);
  EXPECT_EQ(r.d2h_copies, 1u);
  EXPECT_EQ(r.h2d_copies, 0u);
  for (size_t i = 0; i < kRun; ++i) EXPECT_TRUE(BlockIs(back.block(i), 7 + i)) << i;
}

TEST(HbmTierTest, ScatteredPinnedSourcesTakeOneCopyEach) {
  auto tier = OpenOrDie(StandIn(/*host_is_pinned=*/true));
  ASSERT_NE(tier, nullptr);
  // Every other block of one buffer: a gap between each two sources.
  HostBuffer src(2 * kRun * kBlock);
  FillBlocks(src.span(), kBlock, 0);
  std::vector<WriteOp> ops;
  for (size_t i = 0; i < kRun; ++i) {
    auto p = Payload(kBlock, 50 + i);
    std::memcpy(src.block(2 * i).data(), p.data(), kBlock);
    ops.push_back({K(i), src.block(2 * i), kNoExpiry});
  }
  HbmTierStats s0 = tier->stats();
  ExpectAllOk(WriteSync(*tier, ops));
  EXPECT_EQ(Delta(tier->stats(), s0).h2d_copies, kRun);
  // Read back in reverse order into one buffer: nothing is contiguous.
  HostBuffer back(kRun * kBlock);
  std::vector<ReadOp> reads;
  for (size_t i = 0; i < kRun; ++i) reads.push_back({K(kRun - 1 - i), back.block(i)});
  s0 = tier->stats();
  ExpectAllOk(ReadSync(*tier, reads));
  EXPECT_EQ(Delta(tier->stats(), s0).d2h_copies, kRun);
  for (size_t i = 0; i < kRun; ++i) EXPECT_TRUE(BlockIs(back.block(i), 50 + kRun - 1 - i)) << i;
}

TEST(HbmTierTest, PageableBlocksAreGatheredThroughStaging) {
  // Scattered pageable sources: gathered into the 1 MiB staging buffers, one
  // copy per buffer-full (4 MiB = 4 copies), since their extents are
  // contiguous.
  auto tier = OpenOrDie(StandIn(/*host_is_pinned=*/false));
  ASSERT_NE(tier, nullptr);
  std::vector<std::vector<std::byte>> payloads;
  std::vector<WriteOp> ops;
  for (size_t i = 0; i < kRun; ++i) payloads.push_back(Payload(kBlock, 300 + i));
  for (size_t i = 0; i < kRun; ++i) ops.push_back({K(i), payloads[i], kNoExpiry});
  HbmTierStats s0 = tier->stats();
  ExpectAllOk(WriteSync(*tier, ops));
  HbmTierStats w = Delta(tier->stats(), s0);
  EXPECT_EQ(w.h2d_copies, 4u);
  EXPECT_EQ(w.staged_bytes, kRun * kBlock);
  EXPECT_EQ(w.direct_bytes, 0u);
  // Scattered back into separate pageable buffers, 4 copies again.
  std::vector<std::vector<std::byte>> back(kRun, std::vector<std::byte>(kBlock));
  std::vector<ReadOp> reads;
  for (size_t i = 0; i < kRun; ++i) reads.push_back({K(i), back[i]});
  s0 = tier->stats();
  ExpectAllOk(ReadSync(*tier, reads));
  EXPECT_EQ(Delta(tier->stats(), s0).d2h_copies, 4u);
  for (size_t i = 0; i < kRun; ++i) EXPECT_EQ(back[i], payloads[i]) << i;
}

TEST(HbmTierTest, StagedRunsSplitOnlyAtStagingBuffers) {
  // 49 blocks of 64 KiB = 3 MiB + 64 KiB: three full 1 MiB copies and the
  // 64 KiB the run leaves over.
  auto tier = OpenOrDie(StandIn(false));
  ASSERT_NE(tier, nullptr);
  HostBuffer src(49 * kBlock);
  FillBlocks(src.span(), kBlock, 900);
  HbmTierStats s0 = tier->stats();
  ExpectAllOk(WriteBlocks(*tier, src, 49, 0));
  EXPECT_EQ(Delta(tier->stats(), s0).h2d_copies, 4u);
  std::vector<std::byte> buf(kBlock);
  for (uint64_t i = 0; i < 49; ++i) {
    ASSERT_TRUE(ReadOne(*tier, K(i), buf).ok());
    EXPECT_TRUE(BlockIs(buf, 900 + i)) << i;
  }
}

TEST(HbmTierTest, UnalignedSizesAreNotMergedAcrossGaps) {
  // 1000-byte blocks sit 4 KiB apart in the arena: a contiguous source must
  // still take one copy per block (a merged copy would shift every block).
  auto tier = OpenOrDie(StandIn(/*host_is_pinned=*/true));
  ASSERT_NE(tier, nullptr);
  HostBuffer src(16 * 1000);
  FillBlocks(src.span(), 1000, 40);
  HbmTierStats s0 = tier->stats();
  ExpectAllOk(WriteBlocks(*tier, src, 16, 0, 1000));
  EXPECT_EQ(Delta(tier->stats(), s0).h2d_copies, 16u);
  HostBuffer back(16 * 1000);
  std::vector<ReadOp> reads;
  for (size_t i = 0; i < 16; ++i) reads.push_back({K(i), back.block(i, 1000)});
  ExpectAllOk(ReadSync(*tier, reads));
  for (size_t i = 0; i < 16; ++i) EXPECT_TRUE(BlockIs(back.block(i, 1000), 40 + i)) << i;
}

TEST(HbmTierTest, ReadFailuresInABatchLeaveOthersAndDestinationsAlone) {
  ManualClock clock;
  HbmTierOptions o = StandIn(false);
  o.clock = &clock;
  auto tier = OpenOrDie(o);
  ASSERT_NE(tier, nullptr);
  ASSERT_TRUE(WriteOne(*tier, K(1), Payload(5000, 1)).ok());
  ASSERT_TRUE(WriteOne(*tier, K(2), Payload(5000, 2), clock.NowMs() + 10).ok());
  ASSERT_TRUE(WriteOne(*tier, K(3), Payload(5000, 3)).ok());
  clock.AdvanceMs(10);
  std::vector<std::byte> a(5000), b(5000, std::byte{0xee}), c(4999, std::byte{0xee}),
      d(5000, std::byte{0xee});
  std::vector<ReadOp> reads = {{K(1), a}, {K(2), b}, {K(3), c}, {K(4), d}};
  auto r = ReadSync(*tier, reads);
  EXPECT_TRUE(r[0].status.ok());
  EXPECT_EQ(a, Payload(5000, 1));
  EXPECT_TRUE(r[1].status.IsNotFound()) << "expired";
  EXPECT_EQ(r[2].status.code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(r[2].bytes, 5000u);
  EXPECT_TRUE(r[3].status.IsNotFound());
  EXPECT_EQ(b, std::vector<std::byte>(5000, std::byte{0xee}));
  EXPECT_EQ(c, std::vector<std::byte>(4999, std::byte{0xee}));
  EXPECT_EQ(d, std::vector<std::byte>(5000, std::byte{0xee}));
}

TEST(HbmTierTest, ReadToDeviceCopiesRunsAndIsAllOrNothing) {
  // On the stand-in the "device" page is host memory.
  ManualClock clock;
  HbmTierOptions o = StandIn(false);
  o.clock = &clock;
  auto tier = OpenOrDie(o);
  ASSERT_NE(tier, nullptr);
  HostBuffer src(8 * kBlock);
  FillBlocks(src.span(), kBlock, 600);
  ExpectAllOk(WriteBlocks(*tier, src, 8, 0));
  HostBuffer page(8 * kBlock);
  std::vector<DeviceReadOp> ops;
  for (size_t i = 0; i < 8; ++i) ops.push_back({K(i), page.block(i).data(), kBlock});
  HbmTierStats s0 = tier->stats();
  ASSERT_TRUE(tier->ReadToDevice(ops, nullptr).ok());
  EXPECT_EQ(Delta(tier->stats(), s0).d2d_copies, 1u);
  for (size_t i = 0; i < 8; ++i) EXPECT_TRUE(BlockIs(page.block(i), 600 + i)) << i;

  HostBuffer untouched(2 * kBlock);
  std::memset(untouched.span().data(), 0xee, untouched.span().size());
  const std::vector<std::byte> pattern(untouched.span().begin(), untouched.span().end());
  std::vector<DeviceReadOp> missing = {{K(0), untouched.block(0).data(), kBlock},
                                       {K(99), untouched.block(1).data(), kBlock}};
  EXPECT_TRUE(tier->ReadToDevice(missing, nullptr).IsNotFound());
  std::vector<DeviceReadOp> small = {{K(0), untouched.block(0).data(), kBlock},
                                     {K(1), untouched.block(1).data(), kBlock - 1}};
  EXPECT_EQ(tier->ReadToDevice(small, nullptr).code(), StatusCode::kResourceExhausted);
  std::vector<BlockKey> keys = {K(1)};
  ASSERT_TRUE(tier->SetExpiry(keys, clock.NowMs() + 5).ok());
  clock.AdvanceMs(5);
  std::vector<DeviceReadOp> expired = {{K(0), untouched.block(0).data(), kBlock},
                                       {K(1), untouched.block(1).data(), kBlock}};
  EXPECT_TRUE(tier->ReadToDevice(expired, nullptr).IsNotFound());
  EXPECT_TRUE(std::equal(pattern.begin(), pattern.end(), untouched.span().begin()))
      << "a refused batch copies nothing";
}

TEST(HbmTierTest, WriteFromDeviceStoresReplacesAndIsAllOrNothing) {
  HbmTierOptions o = StandIn(false);
  o.capacity_bytes = 16 * kBlock;
  o.read_bytes_per_s = o.write_bytes_per_s = 1e9;
  auto tier = OpenOrDie(o);
  ASSERT_NE(tier, nullptr);
  ASSERT_TRUE(WriteOne(*tier, K(3), Payload(1000, 1)).ok());
  HostBuffer page(8 * kBlock);
  FillBlocks(page.span(), kBlock, 700);
  std::vector<DeviceWriteOp> ops;
  for (size_t i = 0; i < 8; ++i) ops.push_back({K(i), page.block(i).data(), kBlock, kNoExpiry});
  HbmTierStats s0 = tier->stats();
  ASSERT_TRUE(tier->WriteFromDevice(ops, nullptr).ok());
  EXPECT_EQ(Delta(tier->stats(), s0).d2d_copies, 1u);
  EXPECT_EQ(tier->Info().blocks, 8u) << "K(3) was replaced";
  EXPECT_EQ(tier->Info().used_bytes, 8 * kBlock);
  std::vector<std::byte> buf(kBlock);
  for (uint64_t i = 0; i < 8; ++i) {
    ASSERT_TRUE(ReadOne(*tier, K(i), buf).ok());
    EXPECT_TRUE(BlockIs(buf, 700 + i)) << i;
  }
  tier->WaitIdle();
  const TierInfo before = tier->Info();
  // Less than half the arena is free: a batch of 9 blocks does not fit, and
  // changes nothing.
  HostBuffer more(9 * kBlock);
  std::vector<DeviceWriteOp> nine;
  for (size_t i = 0; i < 9; ++i) {
    nine.push_back({K(100 + i), more.block(i).data(), kBlock, kNoExpiry});
  }
  EXPECT_EQ(tier->WriteFromDevice(nine, nullptr).code(), StatusCode::kResourceExhausted);
  std::vector<DeviceWriteOp> bad = {{K(200), more.block(0).data(), kBlock, kNoExpiry},
                                    {K(201), more.block(1).data(), 0, kNoExpiry}};
  EXPECT_EQ(tier->WriteFromDevice(bad, nullptr).code(), StatusCode::kInvalidArgument);
  tier->WaitIdle();
  EXPECT_EQ(tier->Info().blocks, before.blocks);
  EXPECT_EQ(tier->Info().allocated_bytes, before.allocated_bytes);
  EXPECT_TRUE(ReadOne(*tier, K(100), buf).status().IsNotFound());
  EXPECT_TRUE(ReadOne(*tier, K(200), buf).status().IsNotFound());
}

TEST(HbmTierTest, ErasedBlocksAreFreedOnceTheirCopiesAreDone) {
  HbmTierOptions o = StandIn(false);
  o.capacity_bytes = 8 * kBlock;
  o.read_bytes_per_s = o.write_bytes_per_s = 1e9;
  auto tier = OpenOrDie(o);
  ASSERT_NE(tier, nullptr);
  HostBuffer src(8 * kBlock);
  FillBlocks(src.span(), kBlock, 1);
  ExpectAllOk(WriteBlocks(*tier, src, 8, 0));
  HostBuffer page(8 * kBlock);
  std::vector<DeviceReadOp> ops;
  std::vector<BlockKey> keys;
  for (size_t i = 0; i < 8; ++i) {
    ops.push_back({K(i), page.block(i).data(), kBlock});
    keys.push_back(K(i));
  }
  ASSERT_TRUE(tier->ReadToDevice(ops, nullptr).ok());
  ASSERT_TRUE(tier->Erase(keys).ok());
  EXPECT_EQ(tier->Info().blocks, 0u);
  tier->WaitIdle();
  EXPECT_EQ(tier->Info().allocated_bytes, 0u);
  // The whole arena is one free extent again: a full run fits in one copy.
  HbmTierStats s0 = tier->stats();
  ExpectAllOk(WriteBlocks(*tier, src, 8, 10));
  EXPECT_EQ(Delta(tier->stats(), s0).h2d_copies, 1u);
}

TEST(HbmTierTest, CallbacksMayIssueMoreWork) {
  auto tier = OpenOrDie(StandIn(false));
  ASSERT_NE(tier, nullptr);
  auto first = Payload(10000, 1), second = Payload(10000, 2);
  std::promise<Status> done;
  WriteOp op{K(1), first, kNoExpiry};
  WriteOp op2{K(2), second, kNoExpiry};
  std::vector<std::byte> buf(10000);
  tier->Write(std::span(&op, 1), [&](std::vector<IoResult> r) {
    if (!r[0].status.ok()) return done.set_value(r[0].status);
    // From the completion thread: a write and a read of this tier.
    tier->Write(std::span(&op2, 1), [&](std::vector<IoResult> r2) {
      if (!r2[0].status.ok()) return done.set_value(r2[0].status);
      ReadOp read{K(1), buf};
      tier->Read(std::span(&read, 1),
                 [&](std::vector<IoResult> r3) { done.set_value(r3[0].status); });
    });
  });
  ASSERT_TRUE(done.get_future().get().ok());
  EXPECT_EQ(buf, first);
}

// Several threads write, read, erase and move blocks on and off the "device"
// over a shared set of keys. Every key only ever holds one of two payloads,
// so every successful read must be exactly one of them.
void ConcurrentMix(HbmTier& tier, std::span<std::byte> pages, size_t threads) {
  constexpr uint64_t kKeys = 24;
  constexpr uint64_t kBytes = 16 << 10;
  auto version = [](uint64_t key, int v) { return Payload(kBytes, key * 2 + v); };
  std::atomic<bool> bad{false};
  std::vector<std::thread> pool;
  for (size_t t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      std::span<std::byte> page = pages.subspan(t * 4 * kBytes, 4 * kBytes);
      std::vector<std::byte> host(4 * kBytes);
      for (uint64_t i = 0; i < 150; ++i) {
        const uint64_t key = (i * 7 + t * 5) % kKeys;
        const int v = static_cast<int>((i + t) % 2);
        switch ((i + t) % 5) {
          case 0: {  // a batch of 4 consecutive keys from one buffer
            for (uint64_t k = 0; k < 4; ++k) {
              auto p = version((key + k) % kKeys, v);
              std::memcpy(host.data() + k * kBytes, p.data(), kBytes);
            }
            std::vector<WriteOp> ops;
            for (uint64_t k = 0; k < 4; ++k) {
              ops.push_back(
                  {K((key + k) % kKeys), std::span(host).subspan(k * kBytes, kBytes), kNoExpiry});
            }
            for (auto& r : WriteSync(tier, ops)) {
              if (!r.status.ok()) bad = true;
            }
            break;
          }
          case 1: {
            std::vector<std::byte> buf(kBytes);
            auto n = ReadOne(tier, K(key), buf);
            if (n.ok() && buf != version(key, 0) && buf != version(key, 1)) bad = true;
            break;
          }
          case 2: {
            std::vector<BlockKey> keys = {K(key)};
            if (!tier.Erase(keys).ok()) bad = true;
            break;
          }
          case 3: {  // off to the "device" and back under the same key
            DeviceReadOp op{K(key), page.data(), kBytes};
            Status s = tier.ReadToDevice(std::span(&op, 1), nullptr);
            if (!s.ok() && !s.IsNotFound()) bad = true;
            if (s.ok()) {
              if (tier.on_device()) {
                if (!SynchronizeStream(nullptr).ok()) bad = true;
                if (!CopyToHost(host.data(), page.data(), kBytes).ok()) bad = true;
              } else {
                std::memcpy(host.data(), page.data(), kBytes);
              }
              std::vector<std::byte> got(host.begin(), host.begin() + kBytes);
              if (got != version(key, 0) && got != version(key, 1)) bad = true;
              DeviceWriteOp w{K(key), page.data(), kBytes, kNoExpiry};
              if (!tier.WriteFromDevice(std::span(&w, 1), nullptr).ok()) bad = true;
            }
            break;
          }
          default: {
            auto p = version(key, v);
            if (!WriteOne(tier, K(key), p).ok()) bad = true;
          }
        }
      }
    });
  }
  for (auto& th : pool) th.join();
  tier.WaitIdle();
  EXPECT_FALSE(bad.load());
  EXPECT_EQ(tier.Info().io_errors, 0u);
  // Every block left reads as one of its two versions.
  for (uint64_t key = 0; key < kKeys; ++key) {
    std::vector<std::byte> buf(kBytes);
    auto n = ReadOne(tier, K(key), buf);
    if (!n.ok()) continue;
    EXPECT_TRUE(buf == version(key, 0) || buf == version(key, 1)) << key;
  }
}

TEST(HbmTierTest, ConcurrentUseKeepsEveryBlockWhole) {
  for (bool pinned : {false, true}) {
    auto tier = OpenOrDie(StandIn(pinned));
    ASSERT_NE(tier, nullptr);
    HostBuffer pages(6 * 4 * (16 << 10));
    ConcurrentMix(*tier, pages.span(), 6);
  }
}

// --- CUDA backend -------------------------------------------------------------------

class HbmTierCudaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!DeviceAvailable()) GTEST_SKIP() << DeviceDescription();
    HbmTierOptions o;
    o.capacity_bytes = 256 << 20;
    o.staging_buffer_bytes = 1 << 20;
    o.staging_buffers = 2;
    auto t = HbmTier::Open(o);
    ASSERT_TRUE(t.ok()) << t.status();
    tier_ = std::move(*t);
    ASSERT_TRUE(tier_->on_device()) << "a device answers, yet the tier runs on the stand-in";
  }
  void TearDown() override { tier_.reset(); }

  std::unique_ptr<HbmTier> tier_;
};

TEST_F(HbmTierCudaTest, OpensOnTheDeviceCalibrated) {
  TierInfo info = tier_->Info();
  EXPECT_EQ(info.name, "hbm");
  EXPECT_EQ(info.capacity_bytes, 256u << 20);
  EXPECT_GT(info.read_bytes_per_s, 0);
  EXPECT_GT(info.write_bytes_per_s, 0);
  EXPECT_EQ(info.blocks, 0u);
  EXPECT_EQ(info.allocated_bytes, 0u);
}

TEST_F(HbmTierCudaTest, RoundTripFromPageableAndPinnedMemory) {
  HostBuffer pinned(kRun * kBlock, /*pin=*/true);
  ASSERT_TRUE(pinned.pinned()) << "PinHostMemory failed";
  FillBlocks(pinned.span(), kBlock, 11);
  std::vector<std::vector<std::byte>> pageable;
  for (size_t i = 0; i < 8; ++i) pageable.push_back(Payload(kBlock + 1000 * i, 500 + i));

  HbmTierStats s0 = tier_->stats();
  ExpectAllOk(WriteBlocks(*tier_, pinned, kRun, 0));
  HbmTierStats w = Delta(tier_->stats(), s0);
  EXPECT_EQ(w.direct_bytes, kRun * kBlock) << "pinned memory goes straight";
  EXPECT_EQ(w.staged_bytes, 0u);
  EXPECT_EQ(w.h2d_copies, 1u);

  std::vector<WriteOp> ops;
  for (size_t i = 0; i < pageable.size(); ++i) {
    ops.push_back({K(1000 + i), pageable[i], kNoExpiry});
  }
  s0 = tier_->stats();
  ExpectAllOk(WriteSync(*tier_, ops));
  w = Delta(tier_->stats(), s0);
  uint64_t pageable_bytes = 0;
  for (auto& p : pageable) pageable_bytes += p.size();
  EXPECT_EQ(w.staged_bytes, pageable_bytes) << "pageable memory goes through staging";
  EXPECT_EQ(w.direct_bytes, 0u);

  // Back: the pinned run into pageable buffers, the pageable blocks into a
  // pinned buffer.
  for (size_t i = 0; i < kRun; ++i) {
    std::vector<std::byte> buf(kBlock);
    ASSERT_TRUE(ReadOne(*tier_, K(i), buf).ok()) << i;
    EXPECT_TRUE(BlockIs(buf, 11 + i)) << i;
  }
  HostBuffer pinned_back(16 * kBlock, /*pin=*/true);
  ASSERT_TRUE(pinned_back.pinned());
  std::vector<ReadOp> reads;
  for (size_t i = 0; i < pageable.size(); ++i) {
    reads.push_back({K(1000 + i), pinned_back.block(i, 2 * kBlock)});
  }
  s0 = tier_->stats();
  auto r = ReadSync(*tier_, reads);
  EXPECT_EQ(Delta(tier_->stats(), s0).staged_bytes, 0u);
  for (size_t i = 0; i < pageable.size(); ++i) {
    ASSERT_TRUE(r[i].status.ok()) << r[i].status;
    ASSERT_EQ(r[i].bytes, pageable[i].size());
    EXPECT_EQ(std::memcmp(pinned_back.block(i, 2 * kBlock).data(), pageable[i].data(),
                          pageable[i].size()),
              0)
        << i;
  }
}

TEST_F(HbmTierCudaTest, ContiguousRunsAreOneCopyOnTheGpu) {
  HostBuffer src(kRun * kBlock, /*pin=*/true);
  ASSERT_TRUE(src.pinned());
  FillBlocks(src.span(), kBlock, 21);
  HbmTierStats s0 = tier_->stats();
  ExpectAllOk(WriteBlocks(*tier_, src, kRun, 0));
  EXPECT_EQ(Delta(tier_->stats(), s0).h2d_copies, 1u);
  HostBuffer back(kRun * kBlock, /*pin=*/true);
  ASSERT_TRUE(back.pinned());
  std::vector<ReadOp> reads;
  for (size_t i = 0; i < kRun; ++i) reads.push_back({K(i), back.block(i)});
  s0 = tier_->stats();
  ExpectAllOk(ReadSync(*tier_, reads));
  EXPECT_EQ(Delta(tier_->stats(), s0).d2h_copies, 1u);
  for (size_t i = 0; i < kRun; ++i) EXPECT_TRUE(BlockIs(back.block(i), 21 + i)) << i;
  // Scattered pageable destinations: gathered in 1 MiB staging pieces.
  std::vector<std::vector<std::byte>> bufs(kRun, std::vector<std::byte>(kBlock));
  reads.clear();
  for (size_t i = 0; i < kRun; ++i) reads.push_back({K(i), bufs[i]});
  s0 = tier_->stats();
  ExpectAllOk(ReadSync(*tier_, reads));
  EXPECT_EQ(Delta(tier_->stats(), s0).d2h_copies, kRun * kBlock / (1 << 20));
  for (size_t i = 0; i < kRun; ++i) EXPECT_TRUE(BlockIs(bufs[i], 21 + i)) << i;
}

TEST_F(HbmTierCudaTest, ReadToDeviceAndWriteFromDeviceRoundTrip) {
  HostBuffer src(8 * kBlock, /*pin=*/true);
  FillBlocks(src.span(), kBlock, 31);
  ExpectAllOk(WriteBlocks(*tier_, src, 8, 0));
  auto page = DeviceBuffer::Allocate(8 * kBlock);
  ASSERT_TRUE(page.ok()) << page.status();
  auto* dev = static_cast<std::byte*>(page->data());
  std::vector<DeviceReadOp> ops;
  for (size_t i = 0; i < 8; ++i) ops.push_back({K(i), dev + i * kBlock, kBlock});
  HbmTierStats s0 = tier_->stats();
  ASSERT_TRUE(tier_->ReadToDevice(ops, nullptr).ok());
  EXPECT_EQ(Delta(tier_->stats(), s0).d2d_copies, 1u);
  ASSERT_TRUE(SynchronizeStream(nullptr).ok());
  std::vector<std::byte> host(8 * kBlock);
  ASSERT_TRUE(CopyToHost(host.data(), dev, host.size()).ok());
  for (size_t i = 0; i < 8; ++i) {
    EXPECT_TRUE(BlockIs(std::span(host).subspan(i * kBlock, kBlock), 31 + i)) << i;
  }
  // Back into HBM under new keys, and read at once through the tier's own
  // stream: the read must wait for the device-side copy.
  std::vector<DeviceWriteOp> writes;
  for (size_t i = 0; i < 8; ++i) {
    writes.push_back({K(100 + i), dev + i * kBlock, kBlock, kNoExpiry});
  }
  ASSERT_TRUE(tier_->WriteFromDevice(writes, nullptr).ok());
  std::vector<std::vector<std::byte>> bufs(8, std::vector<std::byte>(kBlock));
  std::vector<ReadOp> reads;
  for (size_t i = 0; i < 8; ++i) reads.push_back({K(100 + i), bufs[i]});
  ExpectAllOk(ReadSync(*tier_, reads));
  for (size_t i = 0; i < 8; ++i) EXPECT_TRUE(BlockIs(bufs[i], 31 + i)) << i;
  tier_->WaitIdle();
  EXPECT_EQ(tier_->Info().io_errors, 0u);
}

TEST_F(HbmTierCudaTest, AnErasedBlockStaysReadableForAPendingDeviceCopy) {
  // A one-block tier: the block is copied to a device page behind a busy
  // stream, erased, and a new block is written. Until the stream passes the
  // copy, the old block's memory must not be reused: the new write either
  // fails (no room yet) or lands, and the page holds the old bytes either way.
  HbmTierOptions o;
  o.capacity_bytes = kBlock;
  o.staging_buffer_bytes = 128 << 10;
  o.staging_buffers = 1;
  o.read_bytes_per_s = o.write_bytes_per_s = 1e9;
  auto t = HbmTier::Open(o);
  ASSERT_TRUE(t.ok()) << t.status();
  HbmTier& tier = **t;
  ASSERT_TRUE(WriteOne(tier, K(1), Payload(kBlock, 1)).ok());
  auto busy_src = DeviceBuffer::Allocate(256 << 20);
  auto page = DeviceBuffer::Allocate(kBlock);
  ASSERT_TRUE(busy_src.ok() && page.ok());
  // Keep the default stream busy: a chain of large device copies ahead of
  // ours, through another HBM tier's WriteFromDevice (which enqueues on the
  // given stream).
  HbmTierOptions big;
  big.capacity_bytes = 512 << 20;
  big.max_block_bytes = 256 << 20;
  big.read_bytes_per_s = big.write_bytes_per_s = 1e9;
  auto filler = HbmTier::Open(big);
  ASSERT_TRUE(filler.ok()) << filler.status();
  for (int i = 0; i < 2; ++i) {
    DeviceWriteOp w{K(500 + static_cast<uint64_t>(i)), busy_src->data(), 256 << 20, kNoExpiry};
    ASSERT_TRUE((*filler)->WriteFromDevice(std::span(&w, 1), nullptr).ok());
  }
  DeviceReadOp op{K(1), page->data(), kBlock};
  ASSERT_TRUE(tier.ReadToDevice(std::span(&op, 1), nullptr).ok());
  std::vector<BlockKey> keys = {K(1)};
  ASSERT_TRUE(tier.Erase(keys).ok());
  Status s = WriteOne(tier, K(2), Payload(kBlock, 2));
  EXPECT_TRUE(s.ok() || s.IsResourceExhausted()) << s;
  ASSERT_TRUE(SynchronizeStream(nullptr).ok());
  std::vector<std::byte> host(kBlock);
  ASSERT_TRUE(CopyToHost(host.data(), page->data(), kBlock).ok());
  EXPECT_EQ(host, Payload(kBlock, 1));
  if (s.ok()) {
    std::vector<std::byte> buf(kBlock);
    ASSERT_TRUE(ReadOne(tier, K(2), buf).ok());
    EXPECT_EQ(buf, Payload(kBlock, 2));
  }
  tier.WaitIdle();
  if (!s.ok()) {
    EXPECT_TRUE(WriteOne(tier, K(3), Payload(kBlock, 3)).ok())
        << "the erased block's memory must come back once the stream has passed";
  }
}

TEST_F(HbmTierCudaTest, ConcurrentUseKeepsEveryBlockWhole) {
  auto pages = DeviceBuffer::Allocate(6 * 4 * (16 << 10));
  ASSERT_TRUE(pages.ok());
  ConcurrentMix(*tier_, {static_cast<std::byte*>(pages->data()), pages->size()}, 6);
}

}  // namespace
}  // namespace kvtier
