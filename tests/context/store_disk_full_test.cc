// The ledger and the named-cache registry on a full disk (a 64 MiB tmpfs
// filled by another process): changes fail cleanly with "device full" and
// change nothing, reads keep working, nothing aborts, and changes work again
// by themselves, without a reopen, once space is freed.
#include <gtest/gtest.h>

#include <filesystem>

#include "common/clock.h"
#include "context/ledger.h"
#include "context/named_caches.h"
#include "tests/tiers/storage_faults.h"

namespace kvtier {
namespace {

namespace fs = std::filesystem;
using testing_faults::FillFromAnotherProcess;
using testing_faults::TmpfsMount;

constexpr uint64_t kTmpfsBytes = 64ull << 20;
constexpr int64_t kHour = 3600 * 1000;

UsageRecord Record(const std::string& id, int64_t time_ms) {
  UsageRecord r;
  r.tenant = "acme";
  r.request_id = id;
  r.model = "llama-3-8b";
  r.time_ms = time_ms;
  r.usage.input_tokens = 1000;
  r.usage.output_tokens = 10;
  return r;
}

void ExpectDeviceFull(const Status& s) {
  EXPECT_EQ(s.code(), StatusCode::kUnavailable) << s;
  EXPECT_NE(s.message().find("device full"), std::string::npos) << s;
}

class StoreDiskFullTest : public ::testing::TestWithParam<uint64_t> {
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
    ledger_.reset();
    registry_.reset();
    mount_.reset();
  }
  // Fills the disk, then lets the stores see it (they read free space at
  // least once a second).
  void FillDisk() {
    ASSERT_GT(FillFromAnotherProcess(filler_), 0u);
    clock_.AdvanceMs(1000);
  }

  ManualClock clock_;
  std::unique_ptr<TmpfsMount> mount_;
  std::string filler_;
  std::unique_ptr<Ledger> ledger_;
  std::unique_ptr<NamedCacheRegistry> registry_;
};

// The parameter is the free-space floor: 8 MiB (writes refused before
// RocksDB sees them) or 0 (RocksDB meets ENOSPC and stops; then resumed).
INSTANTIATE_TEST_SUITE_P(Floors, StoreDiskFullTest,
                         ::testing::Values(uint64_t{8} << 20, uint64_t{0}),
                         [](const auto& info) { return info.param ? "Floor" : "NoFloor"; });

TEST_P(StoreDiskFullTest, LedgerAppendsFailCleanlyAndResume) {
  LedgerOptions o;
  o.path = (mount_->dir() / "ledger").string();
  o.min_free_bytes = GetParam();
  o.clock = &clock_;
  auto l = Ledger::Open(o);
  ASSERT_TRUE(l.ok()) << l.status();
  ledger_ = std::move(*l);
  ASSERT_TRUE(ledger_->Append(Record("before", 100)).ok());
  FillDisk();

  Status s;
  int tries = 0;
  for (; tries < 1000 && s.ok(); ++tries)
    s = ledger_->Append(Record("r" + std::to_string(tries), 200));
  ASSERT_FALSE(s.ok()) << "the full disk never refused an append";
  ExpectDeviceFull(s);
  ExpectDeviceFull(ledger_->Append(Record("still-full", 300)));
  EXPECT_GE(ledger_->Stats().no_space_errors, 1u);
  auto scanned = ledger_->Scan("acme", 0, 1000);
  ASSERT_TRUE(scanned.ok()) << scanned.status();
  EXPECT_EQ(scanned->front().request_id, "before");
  const size_t stored = scanned->size();

  fs::remove(filler_);
  const Status again = ledger_->Append(Record("after", 400));
  ASSERT_TRUE(again.ok()) << "appends resume without a reopen: " << again;
  scanned = ledger_->Scan("acme", 0, 1000);
  ASSERT_TRUE(scanned.ok()) << scanned.status();
  EXPECT_EQ(scanned->size(), stored + 1);
  EXPECT_EQ(scanned->back().request_id, "after");
  for (const UsageRecord& r : *scanned) EXPECT_NE(r.request_id, "still-full");
}

TEST_P(StoreDiskFullTest, NamedCacheChangesFailCleanlyAndResume) {
  NamedCacheOptions o;
  o.path = (mount_->dir() / "named").string();
  o.min_free_bytes = GetParam();
  o.clock = &clock_;
  auto r = NamedCacheRegistry::Open(o);
  ASSERT_TRUE(r.ok()) << r.status();
  registry_ = std::move(*r);
  const std::vector<int32_t> tokens(4096, 7);
  auto kept = registry_->Create("acme", "llama-3-8b", tokens, NamedCacheExpiry::Ttl(kHour));
  ASSERT_TRUE(kept.ok()) << kept.status();
  FillDisk();

  Status s;
  for (int tries = 0; tries < 1000 && s.ok(); ++tries) {
    s = registry_->Create("acme", "llama-3-8b", tokens, NamedCacheExpiry::Ttl(kHour)).status();
  }
  ASSERT_FALSE(s.ok()) << "the full disk never refused a create";
  ExpectDeviceFull(s);
  const size_t held = registry_->List("acme")->size();
  ExpectDeviceFull(
      registry_->Create("acme", "llama-3-8b", tokens, NamedCacheExpiry::Ttl(kHour)).status());
  ExpectDeviceFull(
      registry_->UpdateTtl("acme", kept->name, NamedCacheExpiry::Ttl(2 * kHour)).status());
  EXPECT_EQ(registry_->List("acme")->size(), held);
  EXPECT_GE(registry_->Stats().no_space_errors, 1u);
  auto got = registry_->Get("acme", kept->name);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->tokens, tokens);
  EXPECT_EQ(got->expire_time_ms, kept->expire_time_ms);

  fs::remove(filler_);
  auto again = registry_->Create("acme", "llama-3-8b", tokens, NamedCacheExpiry::Ttl(kHour));
  ASSERT_TRUE(again.ok()) << "creates resume without a reopen: " << again.status();
  EXPECT_TRUE(registry_->UpdateTtl("acme", kept->name, NamedCacheExpiry::Ttl(2 * kHour)).ok());
  EXPECT_TRUE(registry_->Delete("acme", again->name).ok());
  EXPECT_EQ(registry_->List("acme")->size(), held);
}

}  // namespace
}  // namespace kvtier
