// Flash-tier behaviour beyond the conformance suite: crash recovery, torn and
// flipped records on disk, real write errors, compaction and the write budget.
#include "tiers/flash/flash_tier.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <filesystem>
#include <map>
#include <thread>

#include "tests/tiers/crash_harness.h"
#include "tests/tiers/crash_payload.h"
#include "tests/tiers/crash_tiers.h"

namespace kvtier {
namespace {

namespace fs = std::filesystem;

std::vector<std::byte> Payload(size_t n, uint64_t seed) {
  return testing::PatternBytes(n, seed * 0x9e3779b97f4a7c15ull + 1);
}

BlockKey K(uint64_t i) { return BlockKey{0xf1a5, i}; }

class CollectingSink : public IndexSink {
 public:
  void Announce(const BlockKey& key, uint64_t bytes, int64_t expiry_ms) override {
    seen[key] = {bytes, expiry_ms};
  }
  std::map<BlockKey, std::pair<uint64_t, int64_t>> seen;
};

// Plain positional I/O on the log file, as a disk fault would touch it.
void PatchFile(const fs::path& path, uint64_t offset, const std::vector<std::byte>& bytes) {
  int fd = ::open(path.c_str(), O_WRONLY);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::pwrite(fd, bytes.data(), bytes.size(), static_cast<off_t>(offset)),
            static_cast<ssize_t>(bytes.size()));
  ::close(fd);
}

class FlashTierTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("kvtier_flash_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override {
    tier_.reset();
    fs::remove_all(dir_);
  }
  // 1 MiB regions, 256 KiB blocks at most, fixed bandwidth (no calibration
  // writes in the log the tests look at).
  FlashTierOptions Options() {
    FlashTierOptions o;
    o.path = (dir_ / "flash.log").string();
    o.capacity_bytes = 4 << 20;
    o.device_bytes = 6 << 20;
    o.region_bytes = 1 << 20;
    o.max_block_bytes = 256 << 10;
    o.queue_depth = 8;
    o.staging_bytes = 2 << 20;
    o.read_bytes_per_s = 1e9;
    o.write_bytes_per_s = 1e9;
    o.clock = &clock_;
    return o;
  }
  // Fatal on failure: call it as ASSERT_NO_FATAL_FAILURE(Open()), so a test
  // stops there rather than using a null tier.
  void Open(const FlashTierOptions& o) {
    tier_.reset();
    auto t = OpenFlashTier(o);
    ASSERT_TRUE(t.ok()) << t.status();
    tier_ = std::move(*t);
  }
  void Open() { Open(Options()); }
  Status Put(const BlockKey& key, const std::vector<std::byte>& p, int64_t expiry = kNoExpiry) {
    return WriteOne(*tier_, key, p, expiry);
  }
  Result<std::vector<std::byte>> Get(const BlockKey& key) {
    std::vector<std::byte> buf(1 << 20);
    auto n = ReadOne(*tier_, key, buf);
    if (!n.ok()) return n.status();
    buf.resize(*n);
    return buf;
  }
  std::map<BlockKey, std::pair<uint64_t, int64_t>> Recovered() {
    CollectingSink sink;
    EXPECT_TRUE(tier_->Recover(sink).ok());
    return sink.seen;
  }
  FlashTierStats Stats() { return *GetFlashTierStats(*tier_); }

  ManualClock clock_;
  fs::path dir_;
  std::unique_ptr<Tier> tier_;
};

// A writer with 16 blocks in flight is SIGKILLed; every block it acknowledged
// survives bit for bit, and nothing reads back wrong.
TEST_F(FlashTierTest, AcknowledgedBlocksSurviveSigkill) {
  const int64_t last_ack = testing::RunCrashWriterAndKill("flash", dir_.string(), 300);
  ASSERT_GE(last_ack, 300) << "the writer stopped early";
  ASSERT_NO_FATAL_FAILURE(Open(testing::CrashFlashOptions(dir_.string())));
  testing::ExpectAcknowledgedBlocks(*tier_, last_ack);
}

// A record whose header reached the disk and whose payload did not (a torn
// write) is dropped at recovery; the chain continues past it.
TEST_F(FlashTierTest, TornRecordIsDiscardedAtRecovery) {
  ASSERT_NO_FATAL_FAILURE(Open());
  for (uint64_t i = 0; i < 5; ++i) ASSERT_TRUE(Put(K(i), Payload(100'000, i)).ok());
  auto extent = FlashRecordExtentForTesting(*tier_, K(2));
  ASSERT_TRUE(extent.ok());
  tier_.reset();
  const auto [offset, bytes] = *extent;
  PatchFile(dir_ / "flash.log", offset + bytes / 2, std::vector<std::byte>(8192));
  ASSERT_NO_FATAL_FAILURE(Open());
  auto seen = Recovered();
  EXPECT_EQ(seen.size(), 4u);
  EXPECT_EQ(seen.count(K(2)), 0u);
  EXPECT_EQ(Stats().discarded_records, 1u);
  EXPECT_TRUE(Get(K(2)).status().IsNotFound());
  for (uint64_t i : {0, 1, 3, 4}) {
    auto got = Get(K(i));
    ASSERT_TRUE(got.ok()) << i << ": " << got.status();
    EXPECT_EQ(*got, Payload(100'000, i));
  }
  EXPECT_EQ(tier_->Info().corruption_errors, 0u);
  // Discarded for good: it does not come back on the next restart either.
  ASSERT_NO_FATAL_FAILURE(Open());
  EXPECT_EQ(Recovered().count(K(2)), 0u);
}

// Bytes flipped on the disk under a live tier: the read is a miss with the
// corruption counted, never the wrong bytes, and the block stays gone.
TEST_F(FlashTierTest, FlippedBytesOnDiskReadAsCorruption) {
  ASSERT_NO_FATAL_FAILURE(Open());
  ASSERT_TRUE(Put(K(1), Payload(50'000, 1)).ok());
  ASSERT_TRUE(Put(K(2), Payload(50'000, 2)).ok());
  auto extent = FlashRecordExtentForTesting(*tier_, K(1));
  ASSERT_TRUE(extent.ok());
  PatchFile(dir_ / "flash.log", extent->first + 4096 + 12'345, {std::byte{0xff}, std::byte{0x00}});
  std::vector<std::byte> buf(50'000, std::byte{0xee});
  ReadOp op{K(1), buf};
  auto r = ReadSync(*tier_, std::span(&op, 1));
  EXPECT_TRUE(r[0].status.IsCorruption()) << r[0].status;
  EXPECT_EQ(buf, std::vector<std::byte>(50'000, std::byte{0}));
  EXPECT_EQ(tier_->Info().corruption_errors, 1u);
  EXPECT_TRUE(Get(K(1)).status().IsNotFound());
  auto other = Get(K(2));
  ASSERT_TRUE(other.ok());
  EXPECT_EQ(*other, Payload(50'000, 2));
  ASSERT_NO_FATAL_FAILURE(Open());
  EXPECT_EQ(Recovered().count(K(1)), 0u);
}

// A read in flight while its key is replaced by a larger block is retried
// against the new record; a destination sized for the old one must then get
// RESOURCE_EXHAUSTED, never a write past its end. The race is made often:
// one writer flips the key between 4 KiB and 32 KiB (with filler writes
// that keep compaction busy), a reader reads it in batches into 4 KiB
// buffers each followed by a guard.
TEST_F(FlashTierTest, AReadRetriedOntoALargerRecordNeverWritesPastItsBuffer) {
  FlashTierOptions o = Options();
  o.device_bytes = 256 << 10;
  o.capacity_bytes = 160 << 10;
  o.region_bytes = 64 << 10;
  o.max_block_bytes = 32 << 10;
  o.queue_depth = 1;
  o.staging_bytes = 128 << 10;
  o.max_write_bytes = 64 << 10;
  ASSERT_NO_FATAL_FAILURE(Open(o));
  constexpr size_t kSmall = 4 << 10, kLarge = 32 << 10, kGuard = 64 << 10;
  ASSERT_TRUE(Put(K(1), Payload(kSmall, 0)).ok());
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    for (uint64_t i = 1; !stop; ++i) {
      const auto a = Payload(i % 2 ? kLarge : kSmall, i), b = Payload(8 << 10, 1'000'000 + i),
                 c = Payload(8 << 10, 2'000'000 + i);
      WriteOp ops[3] = {{K(1), a}, {K(2), b}, {K(3), c}};
      (void)WriteSync(*tier_, ops);
    }
  });
  std::vector<std::vector<std::byte>> bufs(256, std::vector<std::byte>(kSmall + kGuard));
  uint64_t overflows = 0, wrong = 0, too_small = 0, reads = 0;
  const auto end = std::chrono::steady_clock::now() +
                   std::chrono::seconds(std::getenv("FLASH_RACE_SECONDS")
                                            ? std::atoi(std::getenv("FLASH_RACE_SECONDS"))
                                            : 2);
  while (std::chrono::steady_clock::now() < end) {
    std::vector<ReadOp> ops;
    for (auto& b : bufs) {
      std::fill(b.begin(), b.end(), std::byte{0xab});
      ops.push_back({K(1), std::span(b).first(kSmall)});
    }
    const std::vector<IoResult> got = ReadSync(*tier_, ops);
    for (size_t j = 0; j < bufs.size(); ++j) {
      ++reads;
      const auto& b = bufs[j];
      overflows += std::any_of(b.begin() + kSmall, b.end(),
                               [](std::byte x) { return x != std::byte{0xab}; });
      if (got[j].status.IsResourceExhausted()) ++too_small;
      if (!got[j].status.ok()) continue;
      wrong += got[j].bytes != kSmall;  // an OK read is of a 4 KiB record
    }
  }
  stop = true;
  writer.join();
  std::printf("%llu reads: %llu too small for a larger record\n",
              static_cast<unsigned long long>(reads), static_cast<unsigned long long>(too_small));
  EXPECT_EQ(overflows, 0u);
  EXPECT_EQ(wrong, 0u);
}

// A real write error from the kernel (EFBIG past RLIMIT_FSIZE, standing in
// for a failing device): the write fails with an I/O error and a counter,
// nothing is indexed, and the tier keeps serving.
TEST_F(FlashTierTest, WriteErrorIsAnIoErrorAndTheTierKeepsServing) {
  ASSERT_NO_FATAL_FAILURE(Open());
  ASSERT_TRUE(Put(K(1), Payload(100'000, 1)).ok());
  auto extent = FlashRecordExtentForTesting(*tier_, K(1));
  ASSERT_TRUE(extent.ok());
  rlimit old{};
  ASSERT_EQ(getrlimit(RLIMIT_FSIZE, &old), 0);
  auto old_handler = std::signal(SIGXFSZ, SIG_IGN);
  rlimit limit = old;
  limit.rlim_cur = extent->first + extent->second;  // nothing past block 1 can be written
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &limit), 0);
  Status s = Put(K(2), Payload(100'000, 2));
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &old), 0);
  std::signal(SIGXFSZ, old_handler);
  EXPECT_EQ(s.code(), StatusCode::kIOError) << s;
  EXPECT_NE(s.message().find("flash write failed"), std::string::npos) << s;
  EXPECT_GE(tier_->Info().io_errors, 1u);
  EXPECT_EQ(tier_->Info().blocks, 1u);
  EXPECT_TRUE(Get(K(2)).status().IsNotFound());
  auto got = Get(K(1));
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, Payload(100'000, 1));
  ASSERT_TRUE(Put(K(3), Payload(100'000, 3)).ok());
  ASSERT_NO_FATAL_FAILURE(Open());
  auto seen = Recovered();
  EXPECT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen.count(K(2)), 0u);
  auto three = Get(K(3));
  ASSERT_TRUE(three.ok()) << three.status();
  EXPECT_EQ(*three, Payload(100'000, 3));
}

TEST_F(FlashTierTest, NoRoomOnDiskForTheLogIsAClearErrorAndLeavesNothing) {
  FlashTierOptions o = Options();
  o.device_bytes = 8ull << 40;  // 8 TiB: more than any disk here has free
  o.capacity_bytes = 0;
  auto t = OpenFlashTier(o);
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), StatusCode::kResourceExhausted) << t.status();
  EXPECT_NE(t.status().message().find("free disk"), std::string::npos) << t.status();
  EXPECT_FALSE(fs::exists(o.path)) << "a log that could not be made must not be left behind";
}

// Erasing every other block leaves every region half live; new writes then
// reclaim regions by compacting them in place, and the moved blocks read back
// exactly, before and after a restart.
TEST_F(FlashTierTest, CompactionReclaimsAFragmentedLog) {
  FlashTierOptions o = Options();
  o.device_bytes = 5 << 20;
  ASSERT_NO_FATAL_FAILURE(Open(o));
  const size_t bytes = (128 << 10) - 4096;  // 128 KiB records: 8 per region
  for (uint64_t i = 0; i < 32; ++i) ASSERT_TRUE(Put(K(i), Payload(bytes, i)).ok()) << i;
  EXPECT_EQ(Stats().free_regions, 1u);
  EXPECT_TRUE(Put(K(99), Payload(bytes, 99)).IsResourceExhausted()) << "capacity is 4 MiB";
  for (uint64_t i = 1; i < 32; i += 2) {
    std::vector<BlockKey> one = {K(i)};
    ASSERT_TRUE(tier_->Erase(one).ok());
  }
  for (uint64_t i = 100; i < 116; ++i) ASSERT_TRUE(Put(K(i), Payload(bytes, i)).ok()) << i;
  const FlashTierStats stats = Stats();
  EXPECT_EQ(stats.compactions, 2u);
  EXPECT_EQ(stats.relocated_bytes, 2u * 4 * (128 << 10));
  auto check = [&] {
    for (uint64_t i = 0; i < 32; i += 2) {
      auto got = Get(K(i));
      ASSERT_TRUE(got.ok()) << i << ": " << got.status();
      EXPECT_EQ(*got, Payload(bytes, i)) << i;
    }
    for (uint64_t i = 100; i < 116; ++i) {
      auto got = Get(K(i));
      ASSERT_TRUE(got.ok()) << i << ": " << got.status();
      EXPECT_EQ(*got, Payload(bytes, i)) << i;
    }
    EXPECT_EQ(tier_->Info().blocks, 32u);
    EXPECT_EQ(tier_->Info().corruption_errors, 0u);
  };
  check();
  ASSERT_NO_FATAL_FAILURE(Open(o));
  EXPECT_EQ(Recovered().size(), 32u);
  check();
}

// Records larger than a read slot are read into a buffer of their own, and
// records larger than max_write_bytes go out as one write.
TEST_F(FlashTierTest, BlocksLargerThanAReadSlotRoundTrip) {
  FlashTierOptions o = Options();
  o.region_bytes = 8 << 20;
  o.device_bytes = 32 << 20;
  o.capacity_bytes = 16 << 20;
  o.max_block_bytes = 3 << 20;
  o.staging_bytes = 8 << 20;
  o.read_slot_bytes = 64 << 10;
  o.max_write_bytes = 256 << 10;
  ASSERT_NO_FATAL_FAILURE(Open(o));
  std::vector<std::vector<std::byte>> payloads;
  std::vector<WriteOp> ops;
  for (uint64_t i = 0; i < 4; ++i) payloads.push_back(Payload((3 << 20) - 4096 * i - 7, i));
  for (uint64_t i = 0; i < 4; ++i) ops.push_back({K(i), payloads[i], kNoExpiry});
  for (const IoResult& r : WriteSync(*tier_, ops)) ASSERT_TRUE(r.status.ok()) << r.status;
  std::vector<std::vector<std::byte>> back(4, std::vector<std::byte>(3 << 20));
  std::vector<ReadOp> reads;
  for (uint64_t i = 0; i < 4; ++i) reads.push_back({K(i), back[i]});
  auto got = ReadSync(*tier_, reads);
  for (uint64_t i = 0; i < 4; ++i) {
    ASSERT_TRUE(got[i].status.ok()) << got[i].status;
    back[i].resize(got[i].bytes);
    EXPECT_EQ(back[i], payloads[i]) << i;
  }
}

TEST_F(FlashTierTest, WriteBudgetRefusesWritesPastIt) {
  FlashTierOptions o = Options();
  o.write_budget_bytes_per_s = 1 << 20;  // one second of it fits 10 records of 100 KiB
  ASSERT_NO_FATAL_FAILURE(Open(o));
  const size_t bytes = (100 << 10) - 4096;
  for (uint64_t i = 0; i < 10; ++i) ASSERT_TRUE(Put(K(i), Payload(bytes, i)).ok()) << i;
  Status s = Put(K(10), Payload(bytes, 10));
  EXPECT_EQ(s.code(), StatusCode::kRetry) << s;
  EXPECT_NE(s.message().find("budget"), std::string::npos) << s;
  EXPECT_EQ(Stats().budget_refusals, 1u);
  clock_.AdvanceMs(1000);
  EXPECT_TRUE(Put(K(10), Payload(bytes, 10)).ok());
}

TEST_F(FlashTierTest, RestartKeepsTheNewestVersionAndHonoursErasesAndExpiry) {
  ASSERT_NO_FATAL_FAILURE(Open());
  const int64_t now = clock_.NowMs();
  ASSERT_TRUE(Put(K(1), Payload(1000, 1)).ok());
  ASSERT_TRUE(Put(K(1), Payload(2000, 2)).ok());  // replaces
  ASSERT_TRUE(Put(K(2), Payload(1000, 3)).ok());
  ASSERT_TRUE(Put(K(2), Payload(1000, 4)).ok());
  std::vector<BlockKey> two = {K(2)};
  ASSERT_TRUE(tier_->Erase(two).ok());  // neither version may return
  ASSERT_TRUE(Put(K(3), Payload(1000, 5), now + 1000).ok());
  ASSERT_TRUE(Put(K(4), Payload(1000, 6), now + 1000).ok());
  std::vector<BlockKey> four = {K(4)};
  ASSERT_TRUE(tier_->SetExpiry(four, now + 60'000).ok());
  clock_.AdvanceMs(2000);
  ASSERT_NO_FATAL_FAILURE(Open());
  auto seen = Recovered();
  EXPECT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[K(1)], std::make_pair(uint64_t{2000}, kNoExpiry));
  EXPECT_EQ(seen[K(4)], std::make_pair(uint64_t{1000}, now + 60'000));
  auto got = Get(K(1));
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(*got, Payload(2000, 2));
}

TEST_F(FlashTierTest, OptionsAreValidatedAndTheLogIsExclusive) {
  FlashTierOptions o = Options();
  o.path.clear();
  EXPECT_EQ(OpenFlashTier(o).status().code(), StatusCode::kInvalidArgument);
  o = Options();
  o.region_bytes = 1000;
  EXPECT_EQ(OpenFlashTier(o).status().code(), StatusCode::kInvalidArgument);
  o = Options();
  o.max_block_bytes = o.region_bytes;  // no room for its header
  EXPECT_EQ(OpenFlashTier(o).status().code(), StatusCode::kInvalidArgument);
  o = Options();
  o.capacity_bytes = o.device_bytes;  // no slack to compact into
  EXPECT_EQ(OpenFlashTier(o).status().code(), StatusCode::kInvalidArgument);
  o = Options();
  o.path = dir_.string();  // a directory
  EXPECT_FALSE(OpenFlashTier(o).ok());
  ASSERT_NO_FATAL_FAILURE(Open());
  auto second = OpenFlashTier(Options());
  EXPECT_EQ(second.status().code(), StatusCode::kUnavailable) << second.status();
  std::vector<std::byte> big((256 << 10) + 1);
  EXPECT_EQ(Put(K(1), big).code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(tier_->Info().blocks, 0u);
}

}  // namespace
}  // namespace kvtier
