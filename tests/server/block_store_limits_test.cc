// BlockStore limits on a real kvtierd: a tenant's stalled streams hold at
// most its share of the payload budget, and Get's chunks have a floor.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "common/checksum.h"
#include "proto/client.h"
#include "tests/server/daemon_client.h"
#include "tests/server/daemon_process.h"

namespace kvtier {
namespace {

using testing::AsBytes;
using testing::ClientFor;
using testing::DaemonProcess;
using testing::TempDir;

class BlockStoreLimitsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = TempDir("limits");
    std::filesystem::create_directories(dir_);
    std::ofstream(dir_ + "/keys") << "alice-key-0123456789 alice\nbob-key-0123456789ab bob\n";
    ASSERT_TRUE(d_.Start(dir_, {"--api-keys", dir_ + "/keys", "--no-engine", "--dram-bytes", "128M",
                                "--no-flash", "--max-block-bytes", "8M", "--max-payload-bytes",
                                "64M", "--max-tenant-payload-bytes", "16M"}));
  }
  void TearDown() override {
    EXPECT_EQ(d_.Stop(SIGTERM), 0);
    std::filesystem::remove_all(dir_);
  }
  std::unique_ptr<Client> As(const std::string& key) { return ClientFor(d_, key); }
  std::string dir_;
  DaemonProcess d_;
};

// Alice opens eight Puts that declare 8 MiB, send 7 MiB and stall. Bytes are
// reserved as they arrive and she has a 16 MiB share, so her third stalled
// stream is refused, and Bob (who would find the daemon's whole 64 MiB held
// if declared sizes were reserved up front, or if shares did not exist) still
// puts and gets 8 MiB blocks.
TEST_F(BlockStoreLimitsTest, ATenantsStalledPutsHoldOnlyItsShare) {
  auto alice = As("alice-key-0123456789"), bob = As("bob-key-0123456789ab");
  const std::string chunk(1 << 20, 'a');
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  std::vector<std::unique_ptr<grpc::ClientWriter<v1::PutRequest>>> streams;
  std::vector<v1::PutResponse> responses(8);
  for (int i = 0; i < 8; ++i) {
    contexts.push_back(alice->NewContext());
    streams.push_back(alice->block_store().Put(contexts.back().get(), &responses[i]));
    v1::PutRequest m;
    m.mutable_header()->set_key(BlockKey{1, static_cast<uint64_t>(i)}.ToByteString());
    m.mutable_header()->set_size_bytes(8 << 20);
    if (!streams.back()->Write(m)) break;  // refused already
    for (int c = 0; c < 7; ++c) {
      m.set_data(chunk);
      if (!streams.back()->Write(m)) break;
    }
  }
  // Alice's share fills (her streams' bytes arrive as the daemon reads them).
  const std::string block(8 << 20, 'b');
  bool refused = false;
  for (int attempt = 0; attempt < 200 && !refused; ++attempt) {
    v1::PutHeader h;
    h.set_key(BlockKey{2, 0}.ToByteString());
    auto r = alice->Put(h, AsBytes(block));
    refused = r.status().code() == StatusCode::kResourceExhausted;
    if (!refused) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_TRUE(refused) << "Alice's stalled streams never filled her share";
  // Bob is not held back by Alice's stalls.
  v1::PutHeader h;
  h.set_key(BlockKey{3, 0}.ToByteString());
  auto put = bob->Put(h, AsBytes(block));
  ASSERT_TRUE(put.ok()) << put.status();
  auto got = bob->Get(BlockKey{3, 0});
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->payload.size(), block.size());
  for (auto& c : contexts) c->TryCancel();
  for (auto& s : streams) (void)s->Finish();
}

// chunk_bytes = 1 is raised to the 64 KiB floor: a 256 KiB block arrives in
// four data messages, not 262,144.
TEST_F(BlockStoreLimitsTest, GetChunksHaveAFloor) {
  auto alice = As("alice-key-0123456789");
  v1::PutHeader h;
  h.set_key(BlockKey{9, 9}.ToByteString());
  const std::string block(256 << 10, 'c');
  ASSERT_TRUE(alice->Put(h, AsBytes(block)).ok());
  v1::GetRequest req;
  req.set_key(BlockKey{9, 9}.ToByteString());
  req.set_chunk_bytes(1);
  auto ctx = alice->NewContext();
  auto reader = alice->block_store().Get(ctx.get(), req);
  v1::GetResponse msg;
  int data_messages = 0;
  std::string payload;
  while (reader->Read(&msg)) {
    if (msg.has_data()) {
      ++data_messages;
      payload += msg.data();
    }
  }
  ASSERT_TRUE(reader->Finish().ok());
  EXPECT_EQ(payload, block);
  EXPECT_EQ(data_messages, 4);
}

}  // namespace
}  // namespace kvtier
