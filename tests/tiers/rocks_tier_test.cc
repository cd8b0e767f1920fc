// RocksDB-tier behaviour beyond the conformance suite: expiry by compaction,
// corruption on disk, and a SIGKILLed writer.
#include "tiers/rocks/rocks_tier.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "tests/tiers/crash_harness.h"
#include "tests/tiers/crash_payload.h"
#include "tests/tiers/storage_faults.h"

namespace kvtier {
namespace {

namespace fs = std::filesystem;

std::vector<std::byte> Payload(size_t n, uint8_t seed) {
  std::vector<std::byte> p(n);
  for (size_t i = 0; i < n; ++i) p[i] = static_cast<std::byte>((i * 131 + seed * 7) & 0xff);
  return p;
}

class RocksTierTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("kvtier_rocks_" + std::to_string(getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    Open();
  }
  void TearDown() override {
    tier_.reset();
    fs::remove_all(dir_);
    for (const fs::path& q : Quarantined()) fs::remove_all(q);
  }
  // The directories a corrupt store was moved to.
  std::vector<fs::path> Quarantined() const {
    std::vector<fs::path> out;
    const std::string prefix = dir_.filename().string() + ".corrupt-";
    for (auto& e : fs::directory_iterator(dir_.parent_path())) {
      if (e.path().filename().string().starts_with(prefix)) out.push_back(e.path());
    }
    return out;
  }
  void Open() {
    tier_.reset();
    RocksTierOptions o;
    o.path = dir_.string();
    o.clock = &clock_;
    auto t = OpenRocksTier(o);
    ASSERT_TRUE(t.ok()) << t.status();
    tier_ = std::move(*t);
  }
  uint64_t BlobBytesOnDisk() {
    uint64_t n = 0;
    for (auto& e : fs::directory_iterator(dir_)) {
      if (e.path().extension() == ".blob") n += e.file_size();
    }
    return n;
  }
  Result<std::vector<std::byte>> Get(const BlockKey& k, size_t cap = 1 << 20) {
    std::vector<std::byte> buf(cap);
    auto n = ReadOne(*tier_, k, buf);
    if (!n.ok()) return n.status();
    buf.resize(*n);
    return buf;
  }

  ManualClock clock_;
  fs::path dir_;
  std::unique_ptr<Tier> tier_;
};

TEST_F(RocksTierTest, CompactionDropsExpiredRecordsAndTheirBlobs) {
  const int64_t soon = clock_.NowMs() + 1000;
  for (uint64_t i = 0; i < 6; ++i) {
    ASSERT_TRUE(
        WriteOne(*tier_, BlockKey{1, i}, Payload(64 << 10, uint8_t(i)), i < 4 ? soon : kNoExpiry)
            .ok());
  }
  ASSERT_TRUE(CompactRocksTierForTesting(*tier_).ok());  // flush: blobs reach disk
  const uint64_t blob_bytes = BlobBytesOnDisk();
  EXPECT_GE(blob_bytes, 6u * (64 << 10));
  EXPECT_EQ(*RocksRecordCountForTesting(*tier_), std::make_pair(uint64_t{6}, uint64_t{6}));
  clock_.AdvanceMs(1000);
  ASSERT_TRUE(CompactRocksTierForTesting(*tier_).ok());
  // Payloads and their blobs go by compaction; the 32-byte records stay until
  // erased, so the accounting stays exact (the cache erases expired blocks).
  EXPECT_EQ(*RocksRecordCountForTesting(*tier_), std::make_pair(uint64_t{6}, uint64_t{2}));
  EXPECT_LT(BlobBytesOnDisk(), blob_bytes / 2) << "expired blobs must be reclaimed";
  EXPECT_TRUE(Get(BlockKey{1, 0}).status().IsNotFound());
  std::vector<BlockKey> expired = {BlockKey{1, 0}, BlockKey{1, 1}, BlockKey{1, 2}, BlockKey{1, 3}};
  ASSERT_TRUE(tier_->Erase(expired).ok());
  EXPECT_EQ(*RocksRecordCountForTesting(*tier_), std::make_pair(uint64_t{2}, uint64_t{2}));
  EXPECT_EQ(tier_->Info().blocks, 2u);
  EXPECT_EQ(tier_->Info().used_bytes, 2u * (64 << 10));
  for (uint64_t i = 4; i < 6; ++i) {
    auto got = Get(BlockKey{1, i});
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(*got, Payload(64 << 10, uint8_t(i)));
  }
}

TEST_F(RocksTierTest, BlocksThatExpiredWhileClosedAreDeletedOnOpen) {
  const int64_t soon = clock_.NowMs() + 1000;
  ASSERT_TRUE(WriteOne(*tier_, BlockKey{5, 1}, Payload(64 << 10, 1), soon).ok());
  ASSERT_TRUE(WriteOne(*tier_, BlockKey{5, 2}, Payload(64 << 10, 2)).ok());
  tier_.reset();
  clock_.AdvanceMs(1000);
  Open();
  EXPECT_EQ(tier_->Info().blocks, 1u);
  EXPECT_EQ(tier_->Info().used_bytes, uint64_t{64 << 10});
  EXPECT_EQ(*RocksRecordCountForTesting(*tier_), std::make_pair(uint64_t{1}, uint64_t{1}));
}

TEST_F(RocksTierTest, ARefreshedBlockOutlivesItsFirstExpiryThroughCompaction) {
  const int64_t t0 = clock_.NowMs();
  const BlockKey k{2, 2};
  ASSERT_TRUE(WriteOne(*tier_, k, Payload(64 << 10, 9), t0 + 1000).ok());
  std::vector<BlockKey> keys = {k};
  ASSERT_TRUE(tier_->SetExpiry(keys, t0 + 10'000).ok());
  clock_.AdvanceMs(5000);
  ASSERT_TRUE(CompactRocksTierForTesting(*tier_).ok());
  auto got = Get(k);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, Payload(64 << 10, 9));
  EXPECT_EQ(*RocksRecordCountForTesting(*tier_), std::make_pair(uint64_t{1}, uint64_t{1}));
}

TEST_F(RocksTierTest, FlippedBytesOnDiskAreAMissNeverBytes) {
  const BlockKey k{3, 3};
  const auto payload = Payload(256 << 10, 3);
  ASSERT_TRUE(WriteOne(*tier_, k, payload).ok());
  ASSERT_TRUE(WriteOne(*tier_, BlockKey{3, 4}, Payload(100, 4)).ok());  // inline, untouched
  ASSERT_TRUE(CompactRocksTierForTesting(*tier_).ok());
  tier_.reset();
  // Flip bytes in the middle of the payload inside the blob file.
  bool flipped = false;
  for (auto& e : fs::directory_iterator(dir_)) {
    if (e.path().extension() != ".blob") continue;
    std::fstream f(e.path(), std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(e.file_size() / 2));
    const char junk[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    f.write(junk, sizeof junk);
    flipped = true;
  }
  ASSERT_TRUE(flipped) << "no blob file to corrupt";
  Open();
  std::vector<std::byte> buf(256 << 10, std::byte{0xee});
  ReadOp op{k, buf};
  auto r = ReadSync(*tier_, std::span(&op, 1));
  EXPECT_TRUE(r[0].status.IsCorruption()) << r[0].status;
  EXPECT_NE(buf, payload);
  EXPECT_EQ(tier_->Info().corruption_errors, 1u);
  auto other = Get(BlockKey{3, 4});
  ASSERT_TRUE(other.ok()) << other.status();
  EXPECT_EQ(*other, Payload(100, 4));
}

// A damaged block of the block records (found by the scan at open) used to
// keep the tier, and so the daemon, from starting. The damaged store is moved
// aside for the operator and the tier starts empty, and says so.
TEST_F(RocksTierTest, ACorruptStoreIsQuarantinedAndTheTierStartsEmpty) {
  for (uint64_t i = 0; i < 20; ++i) {
    ASSERT_TRUE(WriteOne(*tier_, BlockKey{i, i}, Payload(1000, static_cast<uint8_t>(i))).ok());
  }
  ASSERT_TRUE(CompactRocksTierForTesting(*tier_).ok());
  tier_.reset();
  // Every meta value starts with the magic "KVR1".
  ASSERT_GE(testing_faults::CorruptSstFilesAt(dir_, "KVR1"), 1);

  Open();
  EXPECT_EQ(tier_->Info().blocks, 0u);
  EXPECT_EQ(tier_->Info().used_bytes, 0u);
  auto stats = RocksTierStatsOf(*tier_);
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->quarantined_stores, 1u);
  const std::vector<fs::path> moved = Quarantined();
  ASSERT_EQ(moved.size(), 1u);
  EXPECT_EQ(stats->quarantine_path, moved[0].string());
  EXPECT_TRUE(fs::exists(moved[0] / "CURRENT")) << "the damaged store is kept whole";
  // A miss, never bytes; and the fresh tier works.
  EXPECT_TRUE(Get(BlockKey{1, 1}).status().IsNotFound());
  ASSERT_TRUE(WriteOne(*tier_, BlockKey{1, 1}, Payload(1000, 9)).ok());
  EXPECT_EQ(*Get(BlockKey{1, 1}), Payload(1000, 9));
  // A clean reopen quarantines nothing more.
  Open();
  EXPECT_EQ(RocksTierStatsOf(*tier_)->quarantined_stores, 0u);
  EXPECT_EQ(Quarantined().size(), 1u);
  EXPECT_EQ(*Get(BlockKey{1, 1}), Payload(1000, 9));
}

// A damaged SST block holding a payload (RocksDB's block checksum fails on
// the read, not at open) is a miss: kCorruption, never the bytes.
TEST_F(RocksTierTest, ADamagedPayloadBlockIsAMissNeverBytes) {
  const auto payload = Payload(1000, 5);  // below min_blob_bytes: in the SST
  ASSERT_TRUE(WriteOne(*tier_, BlockKey{5, 5}, payload).ok());
  ASSERT_TRUE(CompactRocksTierForTesting(*tier_).ok());
  tier_.reset();
  const std::string pattern(reinterpret_cast<const char*>(payload.data()) + 200, 32);
  ASSERT_GE(testing_faults::CorruptSstFilesAt(dir_, pattern), 1);
  Open();
  EXPECT_EQ(RocksTierStatsOf(*tier_)->quarantined_stores, 0u);
  std::vector<std::byte> buf(4096, std::byte{0xee});
  ReadOp op{BlockKey{5, 5}, buf};
  auto r = ReadSync(*tier_, std::span(&op, 1));
  EXPECT_TRUE(r[0].status.IsCorruption()) << r[0].status;
  EXPECT_EQ(r[0].bytes, 0u);
  EXPECT_TRUE(std::search(buf.begin(), buf.end(), payload.begin() + 200, payload.begin() + 232) ==
              buf.end())
      << "no byte of the damaged block reaches the reader";
  EXPECT_GE(tier_->Info().corruption_errors, 1u);
}

TEST_F(RocksTierTest, OptionsAreValidated) {
  RocksTierOptions o;
  EXPECT_EQ(OpenRocksTier(o).status().code(), StatusCode::kInvalidArgument);  // no path
  o.path = (dir_ / "x").string();
  o.capacity_bytes = 0;
  EXPECT_EQ(OpenRocksTier(o).status().code(), StatusCode::kInvalidArgument);
  // The same database cannot be opened twice (RocksDB's LOCK file).
  o = RocksTierOptions();
  o.path = dir_.string();
  EXPECT_FALSE(OpenRocksTier(o).ok());
}

// A writer is SIGKILLed mid-stream; every write it acknowledged survives, bit
// for bit, and nothing it wrote reads back wrong.
TEST_F(RocksTierTest, AcknowledgedBlocksSurviveSigkill) {
  tier_.reset();
  const int64_t last_ack = testing::RunCrashWriterAndKill("rocks", dir_.string(), 300);
  ASSERT_GE(last_ack, 300) << "the writer stopped early";
  Open();
  testing::ExpectAcknowledgedBlocks(*tier_, last_ack);
}

}  // namespace
}  // namespace kvtier
