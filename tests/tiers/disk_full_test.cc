// The RocksDB tier on a full disk (a 64 MiB tmpfs): writes fail cleanly with
// "device full", reads keep working, nothing aborts, and writes work again by
// themselves, without a reopen, once space is freed.
#include <gtest/gtest.h>

#include <filesystem>

#include "common/clock.h"
#include "tests/tiers/storage_faults.h"
#include "tiers/rocks/rocks_tier.h"

namespace kvtier {
namespace {

namespace fs = std::filesystem;
using testing_faults::FillFromAnotherProcess;
using testing_faults::TmpfsMount;

constexpr uint64_t kTmpfsBytes = 64ull << 20;

std::vector<std::byte> Payload(size_t n, uint8_t seed) {
  std::vector<std::byte> p(n);
  for (size_t i = 0; i < n; ++i) p[i] = static_cast<std::byte>((i * 131 + seed * 7) & 0xff);
  return p;
}

BlockKey KeyOf(uint64_t i) { return BlockKey{i * 0x9e3779b97f4a7c15ull + 1, i + 7}; }

class RocksDiskFullTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (std::string why = testing_faults::TmpfsSkipReason(); !why.empty()) {
      GTEST_SKIP() << "skipped: " << why;
    }
    mount_ = std::make_unique<TmpfsMount>(kTmpfsBytes);
    ASSERT_TRUE(mount_->ok()) << "cannot run the disk-full test: " << mount_->error();
    filler_ = (mount_->dir() / "filler").string();
  }
  void TearDown() override {
    tier_.reset();
    mount_.reset();
  }
  void Open(uint64_t min_free_bytes) {
    RocksTierOptions o;
    o.path = (mount_->dir() / "rocks").string();
    o.clock = &clock_;
    o.min_free_bytes = min_free_bytes;
    o.read_bytes_per_s = 1e9;  // skip the measurement: it writes
    o.write_bytes_per_s = 1e9;
    auto t = OpenRocksTier(o);
    ASSERT_TRUE(t.ok()) << t.status();
    tier_ = std::move(*t);
  }
  Status Put(uint64_t i, size_t bytes) {
    const std::vector<std::byte> p = Payload(bytes, static_cast<uint8_t>(i));
    return WriteOne(*tier_, KeyOf(i), p, kNoExpiry);
  }
  void ExpectReadable(uint64_t i, size_t bytes) {
    std::vector<std::byte> buf(bytes);
    auto n = ReadOne(*tier_, KeyOf(i), buf);
    ASSERT_TRUE(n.ok()) << "block " << i << ": " << n.status();
    EXPECT_EQ(buf, Payload(bytes, static_cast<uint8_t>(i))) << "block " << i;
  }
  static void ExpectDeviceFull(const Status& s) {
    EXPECT_EQ(s.code(), StatusCode::kUnavailable) << s;
    EXPECT_NE(s.message().find("device full"), std::string::npos) << s;
  }
  RocksTierStats Stats() {
    auto s = RocksTierStatsOf(*tier_);
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? *s : RocksTierStats{};
  }

  ManualClock clock_{1'700'000'000'000};
  std::unique_ptr<TmpfsMount> mount_;
  std::string filler_;
  std::unique_ptr<Tier> tier_;
};

// Another process fills the disk below the floor: puts are refused before
// RocksDB sees them, capacity shrinks to what is held, reads go on.
TEST_F(RocksDiskFullTest, BelowTheFloorPutsAreRefusedAndResumeWhenSpaceIsFreed) {
  Open(/*min_free_bytes=*/8ull << 20);
  for (uint64_t i = 0; i < 4; ++i) ASSERT_TRUE(Put(i, 256 << 10).ok());
  ASSERT_GT(FillFromAnotherProcess(filler_), 0u);
  clock_.AdvanceMs(1000);  // the tier reads free space again at least this often

  const Status s = Put(100, 256 << 10);
  ExpectDeviceFull(s);
  EXPECT_GE(Stats().no_space_errors, 1u);
  const TierInfo info = tier_->Info();
  EXPECT_EQ(info.capacity_bytes, info.used_bytes) << "capacity is capped by free space";
  for (uint64_t i = 0; i < 4; ++i) ExpectReadable(i, 256 << 10);

  fs::remove(filler_);
  ASSERT_TRUE(Put(100, 256 << 10).ok()) << "writes resume without a reopen";
  ExpectReadable(100, 256 << 10);
  EXPECT_GT(tier_->Info().capacity_bytes, tier_->Info().used_bytes);
}

// No floor: RocksDB itself meets ENOSPC (its WAL; its info log would have
// aborted the process), stops the database, and the tier resumes it.
TEST_F(RocksDiskFullTest, EnospcFromRocksDbIsCleanAndTheDatabaseResumes) {
  Open(/*min_free_bytes=*/0);
  for (uint64_t i = 0; i < 4; ++i) ASSERT_TRUE(Put(i, 256 << 10).ok());
  ASSERT_GT(FillFromAnotherProcess(filler_), 0u);

  Status s;
  uint64_t next = 100;
  for (int tries = 0; tries < 64 && s.ok(); ++tries) s = Put(next++, 256 << 10);
  ASSERT_FALSE(s.ok()) << "the full disk never refused a put";
  ExpectDeviceFull(s);
  ExpectDeviceFull(Put(next++, 256 << 10));  // still full: still clean
  EXPECT_GE(Stats().no_space_errors, 1u);
  for (uint64_t i = 0; i < 4; ++i) ExpectReadable(i, 256 << 10);

  fs::remove(filler_);
  const Status again = Put(1000, 256 << 10);
  ASSERT_TRUE(again.ok()) << "writes resume without a reopen: " << again;
  ExpectReadable(1000, 256 << 10);
  for (uint64_t i = 0; i < 4; ++i) ExpectReadable(i, 256 << 10);
  EXPECT_GE(Stats().recoveries, 1u);
}

// The tier's own puts fill the disk (no floor, so RocksDB hits ENOSPC), with
// a filler holding a third of it to give back later.
TEST_F(RocksDiskFullTest, PutsThatFillTheDiskFailCleanlyAndResumeWhenSpaceIsFreed) {
  Open(/*min_free_bytes=*/0);
  // The filler holds most of the disk: resuming flushes what the puts logged
  // (their WAL) into blob files, which takes as much space again.
  ASSERT_GT(FillFromAnotherProcess(filler_, kTmpfsBytes * 5 / 8), 0u);
  Status s;
  uint64_t stored = 0;
  for (; stored < 256; ++stored) {
    s = Put(stored, 512 << 10);
    if (!s.ok()) break;
  }
  ASSERT_FALSE(s.ok()) << "puts never filled the disk";
  ASSERT_GT(stored, 0u);
  ExpectDeviceFull(s);
  ExpectReadable(0, 512 << 10);
  ExpectReadable(stored - 1, 512 << 10);

  fs::remove(filler_);
  const Status again = Put(1000, 512 << 10);
  ASSERT_TRUE(again.ok()) << "writes resume without a reopen: " << again;
  ExpectReadable(1000, 512 << 10);
  ExpectReadable(0, 512 << 10);
}

}  // namespace
}  // namespace kvtier
