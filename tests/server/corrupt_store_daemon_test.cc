// kvtierd over damaged RocksDB files: a corrupt cold tier is quarantined and
// the daemon starts empty (its blocks are misses, never other bytes); a
// corrupt billing ledger stops the daemon at start and is left as it was
// for the operator (docs/operations.md, "A corrupt RocksDB file").
#include <gtest/gtest.h>
#include <signal.h>

#include <filesystem>
#include <string>

#include "common/block_key.h"
#include "proto/client.h"
#include "tests/server/daemon_client.h"
#include "tests/server/daemon_process.h"
#include "tests/tiers/storage_faults.h"

namespace kvtier {
namespace {

using testing::ClientFor;
using testing::DaemonProcess;
using testing::TempDir;
using testing_faults::CorruptSstFilesAt;

// Starts and stops kvtierd once more, so that RocksDB's recovery writes what
// the WAL held into SST files.
void Reopen(const std::string& dir, const std::vector<std::string>& args) {
  DaemonProcess d;
  ASSERT_TRUE(d.Start(dir, args)) << d.exit_code();
  ASSERT_EQ(d.Stop(SIGTERM), 0);
}

TEST(CorruptStoreDaemonTest, ACorruptColdTierIsQuarantinedAndTheDaemonStartsEmpty) {
  const std::string dir = TempDir("corrupt_rocks");
  const std::vector<std::string> args = {"--no-engine", "--no-flash",       "--dram-bytes",
                                         "1M",          "--metrics-listen", ""};
  // 64 KiB blocks in a 1 MiB DRAM tier: most of them go down to RocksDB.
  const std::string marker = "kvtier-payload-";
  std::string payload;
  while (payload.size() < (64 << 10)) payload += marker;
  payload.resize(64 << 10);
  const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(payload.data()),
                                         payload.size());
  {
    DaemonProcess d;
    ASSERT_TRUE(d.Start(dir, args)) << d.exit_code();
    auto c = ClientFor(d);
    for (uint64_t i = 0; i < 64; ++i) {
      v1::PutHeader h;
      h.set_key(BlockKey{77, i}.ToByteString());
      ASSERT_TRUE(c->Put(h, bytes).ok());
    }
    ASSERT_EQ(d.Stop(SIGTERM), 0);
  }
  Reopen(dir, args);
  // Every block's meta value in the cold tier starts with the magic "KVR1".
  ASSERT_GT(CorruptSstFilesAt(dir + "/rocks", "KVR1"), 0) << "no SST holds a block";
  DaemonProcess d;
  ASSERT_TRUE(d.Start(dir, args)) << "a corrupt cold tier must not stop kvtierd";
  bool quarantined = false;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    quarantined |= e.path().filename().string().rfind("rocks.corrupt-", 0) == 0;
  }
  EXPECT_TRUE(quarantined) << "the damaged store is kept aside for the operator";
  auto c = ClientFor(d);
  for (uint64_t i = 0; i < 64; ++i) {
    auto got = c->Get(BlockKey{77, i});
    if (got.ok()) {
      EXPECT_EQ(
          std::string(reinterpret_cast<const char*>(got->payload.data()), got->payload.size()),
          payload)
          << "block " << i << " came back with other bytes";
    } else {
      EXPECT_EQ(got.status().code(), StatusCode::kNotFound) << got.status();
    }
  }
  // And it takes new blocks.
  v1::PutHeader h;
  h.set_key(BlockKey{78, 0}.ToByteString());
  EXPECT_TRUE(c->Put(h, bytes).ok());
  EXPECT_EQ(d.Stop(SIGTERM), 0);
  std::filesystem::remove_all(dir);
}

TEST(CorruptStoreDaemonTest, ACorruptLedgerStopsTheDaemonAndIsLeftAsItWas) {
  const std::string dir = TempDir("corrupt_ledger");
  const std::vector<std::string> args = {"--no-flash", "--dram-bytes",     "64M", "--kv-bytes",
                                         "32M",        "--metrics-listen", ""};
  const std::string tenant = "tenant-with-a-long-recognisable-name";
  {
    DaemonProcess d;
    ASSERT_TRUE(d.Start(dir, args)) << d.exit_code();
    auto c = ClientFor(d);
    for (int i = 0; i < 20; ++i) {
      v1::GenerateRequest g;
      g.set_tenant(tenant);
      g.set_request_id("request-" + std::to_string(i) + "-of-the-corrupt-ledger-test");
      for (int t = 1; t <= 8; ++t) g.add_token_ids(t + i);
      g.set_max_tokens(1);
      ASSERT_TRUE(c->Generate(g).ok());
    }
    ASSERT_EQ(d.Stop(SIGTERM), 0);
  }
  Reopen(dir, args);
  ASSERT_GT(CorruptSstFilesAt(dir + "/ledger", tenant), 0) << "no ledger SST holds a record";
  DaemonProcess d;
  EXPECT_FALSE(d.Start(dir, args)) << "kvtierd must not bill from a damaged ledger";
  EXPECT_NE(d.exit_code(), 0);
  EXPECT_TRUE(std::filesystem::exists(dir + "/ledger"));
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    EXPECT_EQ(e.path().filename().string().rfind("ledger.", 0), std::string::npos)
        << "the ledger is never moved aside by the daemon: " << e.path();
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace kvtier
