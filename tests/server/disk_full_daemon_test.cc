// kvtierd with its data directory on a small tmpfs that another process
// fills: Puts fail cleanly ("device full", UNAVAILABLE: retry later), the
// daemon stays up and healthy, stored blocks stay readable, and Puts work
// again, without a restart, once space is freed. Needs root (to mount).
#include <gtest/gtest.h>
#include <signal.h>

#include <filesystem>

#include "common/block_key.h"
#include "proto/client.h"
#include "tests/server/daemon_process.h"
#include "tests/tiers/storage_faults.h"

namespace kvtier {
namespace {

using testing::AsBytes;
using testing::Bytes;
using testing::DaemonProcess;
using testing_faults::FillFromAnotherProcess;
using testing_faults::TmpfsMount;

Result<v1::PutResponse> PutBlock(Client& client, int32_t first_token, const std::string& data) {
  v1::PutHeader h;
  for (int32_t t = first_token; t < first_token + 64; ++t) h.add_token_ids(t);
  return client.Put(h, AsBytes(data));
}

TEST(DiskFullDaemonTest, PutsFailCleanlyWhileTheDiskIsFullAndWorkAgainAfter) {
  if (std::string why = testing_faults::TmpfsSkipReason(); !why.empty()) {
    GTEST_SKIP() << "skipped: " << why;
  }
  TmpfsMount mount(64ull << 20);
  ASSERT_TRUE(mount.ok()) << "cannot run the disk-full test: " << mount.error();
  const std::string data_dir = (mount.dir() / "data").string();
  const std::string filler = (mount.dir() / "filler").string();

  DaemonProcess d;
  // No flash, and blocks larger than DRAM: every Put goes to RocksDB.
  ASSERT_TRUE(d.Start(
      data_dir, {"--no-engine", "--no-flash", "--dram-bytes", "1M", "--max-block-bytes", "4M"}))
      << "kvtierd exited with " << d.exit_code();
  ClientOptions o;
  o.address = d.address();
  Client client(o);

  const std::string kept = Bytes(2 << 20, 1);
  auto first = PutBlock(client, 1000, kept);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->block().tier(), "rocks");
  const BlockKey kept_key = *BlockKey::FromBytes(first->block().key());

  ASSERT_GT(FillFromAnotherProcess(filler), 0u);
  Status s;
  int32_t next = 2000;
  for (int tries = 0; tries < 8 && s.ok(); ++tries, next += 64) {
    s = PutBlock(client, next, Bytes(2 << 20, next)).status();
  }
  ASSERT_FALSE(s.ok()) << "the full disk never refused a Put";
  EXPECT_EQ(s.code(), StatusCode::kUnavailable) << s;
  EXPECT_NE(s.message().find("device full"), std::string::npos) << s;
  // Still full: still a clean refusal, and the daemon is up and healthy.
  const Status again_full = PutBlock(client, next, Bytes(2 << 20, 7)).status();
  EXPECT_EQ(again_full.code(), StatusCode::kUnavailable) << again_full;
  EXPECT_EQ(kill(d.pid(), 0), 0) << "kvtierd died";
  auto health = client.Health();
  EXPECT_TRUE(health.ok()) << health.status();
  auto got = client.Get(kept_key);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_TRUE(got->payload == kept) << "a stored block reads back whole on a full disk";

  std::filesystem::remove(filler);
  const std::string later = Bytes(2 << 20, 99);
  auto after = PutBlock(client, 9000, later);
  ASSERT_TRUE(after.ok()) << "Puts work again without a restart: " << after.status();
  auto got_later = client.Get(*BlockKey::FromBytes(after->block().key()));
  ASSERT_TRUE(got_later.ok()) << got_later.status();
  EXPECT_TRUE(got_later->payload == later);
  got = client.Get(kept_key);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_TRUE(got->payload == kept);
  EXPECT_EQ(d.Stop(SIGTERM), 0) << "kvtierd shuts down cleanly after a full disk";
}

}  // namespace
}  // namespace kvtier
