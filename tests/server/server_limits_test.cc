// kvtierd's server limits: streams cannot starve the server's threads or
// Health, a stalled stream is cancelled, a taken port is refused, and the
// listener survives running out of file descriptors.
#include <arpa/inet.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/impl/client_unary_call.h>
#include <grpcpp/impl/rpc_method.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/clock.h"
#include "proto/client.h"
#include "server/connection_listener.h"
#include "server/stream_guard.h"
#include "tests/server/daemon_client.h"
#include "tests/server/daemon_process.h"

namespace kvtier {
namespace {

using testing::AsBytes;
using testing::Bytes;
using testing::ClientFor;
using testing::DaemonProcess;
using testing::TempDir;

// --- StreamGuard ----------------------------------------------------------

TEST(StreamGuardTest, CapsStreamsDaemonWideAndPerTenant) {
  StreamGuard g;
  ASSERT_TRUE(g.Configure({.max_streams = 3, .max_tenant_streams = 2, .idle_ms = 1000}).ok());
  std::vector<StreamGuard::Slot> held;
  for (int i = 0; i < 2; ++i) {
    auto s = g.Admit("alice", {});
    ASSERT_TRUE(s.ok());
    held.push_back(std::move(*s));
  }
  StreamGuard::Limit refused_by = StreamGuard::Limit::kDaemon;
  auto third = g.Admit("alice", {}, &refused_by);
  ASSERT_FALSE(third.ok());
  EXPECT_TRUE(third.status().IsResourceExhausted());
  EXPECT_NE(third.status().message().find("tenant alice"), std::string::npos);
  EXPECT_EQ(refused_by, StreamGuard::Limit::kTenant);
  auto bob = g.Admit("bob", {});
  ASSERT_TRUE(bob.ok());
  auto carol = g.Admit("carol", {}, &refused_by);
  ASSERT_FALSE(carol.ok()) << "the daemon-wide cap of 3 is reached";
  EXPECT_TRUE(carol.status().IsResourceExhausted());
  EXPECT_EQ(refused_by, StreamGuard::Limit::kDaemon);
  held.pop_back();  // a slot released is a slot free
  EXPECT_TRUE(g.Admit("carol", {}).ok());
  EXPECT_EQ(g.stats().refused, 2u);
  EXPECT_FALSE(g.Configure({.max_streams = 2, .max_tenant_streams = 3, .idle_ms = 1}).ok());
}

TEST(StreamGuardTest, CancelsOnlyStreamsWaitingOnTheirClientTooLong) {
  ManualClock clock(1'000'000);
  StreamGuard g({.max_streams = 8, .max_tenant_streams = 8, .idle_ms = 500}, &clock);
  int cancelled_waiting = 0, cancelled_busy = 0;
  auto waiting = g.Admit("t", [&] { ++cancelled_waiting; });
  auto busy = g.Admit("t", [&] { ++cancelled_busy; });
  ASSERT_TRUE(waiting.ok() && busy.ok());
  // `waiting` blocks on its client (inside OnClient) while the clock moves.
  std::thread reader([&] {
    waiting->OnClient([&] {
      clock.AdvanceMs(499);
      g.CheckIdle();  // not yet
      clock.AdvanceMs(1);
      g.CheckIdle();  // now
      g.CheckIdle();  // once only
      return true;
    });
  });
  reader.join();
  // `busy` never waited on its client: the daemon's own work is not idle.
  clock.AdvanceMs(10'000);
  g.CheckIdle();
  EXPECT_EQ(cancelled_waiting, 1);
  EXPECT_EQ(cancelled_busy, 0);
  EXPECT_TRUE(waiting->idle_cancelled());
  EXPECT_FALSE(busy->idle_cancelled());
  EXPECT_EQ(g.stats().idle_cancelled, 1u);
}

// --- ConnectionListener ---------------------------------------------------

int ConnectTo(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// True when the peer closed `fd` (read sees EOF or a reset) within `tries`
// polls of 10 ms.
bool ClosedByPeer(int fd, int tries = 500) {
  for (int i = 0; i < tries; ++i) {
    char c;
    const ssize_t n = ::recv(fd, &c, 1, MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

TEST(ConnectionListenerTest, ATakenPortIsRefused) {
  auto first = ConnectionListener::Bind({.address = "127.0.0.1:0"});
  ASSERT_TRUE(first.ok()) << first.status();
  const std::string taken = "127.0.0.1:" + std::to_string((*first)->port());
  auto second = ConnectionListener::Bind({.address = taken});
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(second.status().message().find(taken), std::string::npos);
  EXPECT_FALSE(ConnectionListener::Bind({.address = "no-port"}).ok());
}

TEST(ConnectionListenerTest, ConnectionsBeyondTheCapAreClosedUntilOneCloses) {
  auto l = ConnectionListener::Bind({.address = "127.0.0.1:0", .max_connections = 2});
  ASSERT_TRUE(l.ok()) << l.status();
  std::mutex mu;
  std::vector<int> served;
  (*l)->Start([&](int fd) {
    std::lock_guard<std::mutex> lock(mu);
    served.push_back(fd);
  });
  const int port = (*l)->port();
  int a = ConnectTo(port), b = ConnectTo(port), c = ConnectTo(port);
  ASSERT_GE(a, 0);
  ASSERT_GE(b, 0);
  ASSERT_GE(c, 0);
  EXPECT_TRUE(ClosedByPeer(c)) << "the third connection is over the cap of 2";
  EXPECT_FALSE(ClosedByPeer(a, 5));
  {
    std::lock_guard<std::mutex> lock(mu);
    ASSERT_EQ(served.size(), 2u);
    ::close(served[0]);  // the server is done with one connection
  }
  const int d = ConnectTo(port);
  ASSERT_GE(d, 0);
  EXPECT_FALSE(ClosedByPeer(d, 20)) << "a closed connection frees its place";
  const ListenerStats s = (*l)->stats();
  EXPECT_EQ(s.accepted, 3u);
  EXPECT_EQ(s.refused_over_limit, 1u);
  EXPECT_EQ(s.open, 2u);
  (*l)->Stop();
  for (int fd : {a, b, c, d}) ::close(fd);
  std::lock_guard<std::mutex> lock(mu);
  for (size_t i = 1; i < served.size(); ++i) ::close(served[i]);
}

TEST(ConnectionListenerTest, TheCapLeavesDescriptorsForFiles) {
  EXPECT_EQ(ConnectionListener::CapUnderLimit(4096, 1024), 768u);
  EXPECT_EQ(ConnectionListener::CapUnderLimit(4096, 1 << 20), 4096u);
  EXPECT_EQ(ConnectionListener::CapUnderLimit(4096, 65536), 4096u);
  EXPECT_EQ(ConnectionListener::CapUnderLimit(100, 256), 100u);
  EXPECT_EQ(ConnectionListener::CapUnderLimit(4096, 256), 192u);
  EXPECT_GE(ConnectionListener::CapUnderLimit(4096, 1), 1u);
}

// --- the daemon -------------------------------------------------------------

class ServerLimitsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = TempDir("server_limits");
    std::ofstream(dir_ + "/keys") << "alice-key-0123456789 alice\nbob-key-0123456789ab bob\n";
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::unique_ptr<Client> As(const DaemonProcess& d, const std::string& key) {
    return ClientFor(d, key);
  }
  std::string dir_;
};

// A second kvtierd on a port already served fails to start; it does not
// share the port (gRPC's SO_REUSEPORT would let it take half the
// connections).
TEST_F(ServerLimitsTest, ASecondDaemonOnATakenPortFailsToStart) {
  DaemonProcess first, second;
  ASSERT_TRUE(first.Start(dir_ + "/a", {"--no-engine", "--no-flash", "--dram-bytes", "16M"}));
  EXPECT_FALSE(second.Start(dir_ + "/b", {"--no-engine", "--no-flash", "--dram-bytes", "16M",
                                          "--listen", first.address()}));
  EXPECT_NE(second.exit_code(), 0);
  EXPECT_EQ(first.Stop(SIGTERM), 0);
}

// Alice opens far more Put streams than the server has threads, sends their
// headers and stalls. Her streams beyond her share are refused at once, so
// Health, Bob's Put and her own unary calls are still served; her stalled
// streams are cancelled after --stream-idle-ms, and then she can put again.
TEST_F(ServerLimitsTest, StalledStreamsNeitherStarveTheServerNorHoldForever) {
  DaemonProcess d;
  ASSERT_TRUE(d.Start(dir_, {"--api-keys", dir_ + "/keys", "--no-engine", "--no-flash",
                             "--dram-bytes", "64M", "--max-threads", "16", "--max-streams", "10",
                             "--max-tenant-streams", "6", "--stream-idle-ms", "1500"}));
  auto alice = As(d, "alice-key-0123456789"), bob = As(d, "bob-key-0123456789ab");
  constexpr int kStreams = 24;  // more than --max-threads
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  std::vector<std::unique_ptr<grpc::ClientWriter<v1::PutRequest>>> streams;
  std::vector<v1::PutResponse> responses(kStreams);
  for (int i = 0; i < kStreams; ++i) {
    contexts.push_back(alice->NewContext());
    streams.push_back(alice->block_store().Put(contexts.back().get(), &responses[i]));
    v1::PutRequest m;
    m.mutable_header()->set_key(BlockKey{1, static_cast<uint64_t>(i)}.ToByteString());
    m.mutable_header()->set_size_bytes(1 << 20);
    (void)streams.back()->Write(m);
  }
  // While they stall: Health answers, Bob puts and gets, Alice is told why.
  auto health = alice->Health();
  ASSERT_TRUE(health.ok()) << health.status();
  const std::string block(64 << 10, 'b');
  v1::PutHeader h;
  h.set_key(BlockKey{2, 0}.ToByteString());
  // Until the daemon has answered Alice's streams beyond her share (24 calls
  // arrive at once for 16 threads), gRPC's own thread quota may refuse a new
  // stream before kvtierd sees it ("Server Threadpool Exhausted"): Bob's Put
  // must get through once those refusals are out, not necessarily at once.
  auto put = bob->Put(h, AsBytes(block));
  for (int i = 0; i < 100 && !put.ok() &&
                  put.status().message().find("Threadpool Exhausted") != std::string::npos;
       ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    put = bob->Put(h, AsBytes(block));
  }
  ASSERT_TRUE(put.ok()) << put.status();
  auto got = bob->Get(BlockKey{2, 0});
  ASSERT_TRUE(got.ok()) << got.status();
  // Every stalled stream ends: refused at once beyond her share, cancelled by
  // the watchdog within it. None is left holding a thread.
  int refused = 0, cancelled = 0;
  for (int i = 0; i < kStreams; ++i) {
    grpc::Status s = streams[i]->Finish();
    ASSERT_FALSE(s.ok());
    if (s.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) ++refused;
    if (s.error_code() == grpc::StatusCode::CANCELLED ||
        s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
      ++cancelled;
    }
  }
  EXPECT_EQ(refused, kStreams - 6);
  EXPECT_EQ(cancelled, 6);
  // Her client hears of a cancellation just before the daemon's handler
  // returns its slot: a few retries cover that window.
  h.set_key(BlockKey{3, 0}.ToByteString());
  auto again = alice->Put(h, AsBytes(block));
  for (int attempt = 0; attempt < 100 && !again.ok(); ++attempt) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    again = alice->Put(h, AsBytes(block));
  }
  EXPECT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(d.Stop(SIGTERM), 0);
}

// A Get whose client never reads holds its block's bytes only until the
// watchdog cancels it.
TEST_F(ServerLimitsTest, AGetTheClientNeverReadsIsCancelled) {
  DaemonProcess d;
  ASSERT_TRUE(d.Start(dir_, {"--api-keys", dir_ + "/keys", "--no-engine", "--no-flash",
                             "--dram-bytes", "256M", "--max-block-bytes", "64M",
                             "--max-tenant-payload-bytes", "64M", "--stream-idle-ms", "1000"}));
  auto alice = As(d, "alice-key-0123456789");
  const std::string block(64 << 20, 'g');
  v1::PutHeader h;
  h.set_key(BlockKey{4, 0}.ToByteString());
  ASSERT_TRUE(alice->Put(h, AsBytes(block)).ok());
  // The Get takes her whole 64 MiB share and the client never reads.
  auto ctx = alice->NewContext();
  v1::GetRequest req;
  req.set_key(BlockKey{4, 0}.ToByteString());
  auto stalled = alice->block_store().Get(ctx.get(), req);
  // Until the watchdog ends it, her next Get is refused for want of budget;
  // afterwards it succeeds.
  bool served = false;
  for (int attempt = 0; attempt < 600 && !served; ++attempt) {
    auto got = alice->Get(BlockKey{4, 0});
    served = got.ok() && got->payload.size() == block.size();
    if (!served) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_TRUE(served) << "the stalled Get was never cancelled";
  ctx->TryCancel();
  EXPECT_EQ(d.Stop(SIGTERM), 0);
}

// The daemon's resident memory, from /proc.
uint64_t RssBytes(int pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoull(line.substr(6)) << 10;
  }
  return 0;
}

// The slow-client attack of the hardening campaign: 16 Gets of a 64 MiB
// block whose client never reads and 16 Puts that declare 64 MiB and send
// nothing pushed kvtierd to 1.4-2.2 GB and locked every tenant out. Now the
// payload bytes held are bounded by the tenant's share, gRPC's buffers by
// its quota, and another tenant is served throughout.
TEST_F(ServerLimitsTest, SlowClientsHoldBoundedMemoryAndLockNobodyElseOut) {
  DaemonProcess d;
  ASSERT_TRUE(
      d.Start(dir_, {"--api-keys", dir_ + "/keys", "--no-engine", "--no-flash", "--dram-bytes",
                     "128M", "--max-block-bytes", "64M", "--metrics-listen", ""}));
  auto alice = As(d, "alice-key-0123456789"), bob = As(d, "bob-key-0123456789ab");
  const std::string block = Bytes(64 << 20, 3);
  v1::PutHeader h;
  h.set_key(BlockKey{6, 0}.ToByteString());
  ASSERT_TRUE(alice->Put(h, AsBytes(block)).ok());
  const uint64_t rss_before = RssBytes(d.pid());
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  std::vector<std::unique_ptr<grpc::ClientReader<v1::GetResponse>>> gets;
  std::vector<std::unique_ptr<grpc::ClientWriter<v1::PutRequest>>> puts;
  std::vector<v1::PutResponse> put_responses(16);
  for (int i = 0; i < 16; ++i) {
    contexts.push_back(alice->NewContext());
    v1::GetRequest req;
    req.set_key(BlockKey{6, 0}.ToByteString());
    gets.push_back(alice->block_store().Get(contexts.back().get(), req));
    contexts.push_back(alice->NewContext());
    puts.push_back(alice->block_store().Put(contexts.back().get(), &put_responses[i]));
    v1::PutRequest m;
    m.mutable_header()->set_key(BlockKey{7, static_cast<uint64_t>(i)}.ToByteString());
    m.mutable_header()->set_size_bytes(64 << 20);
    (void)puts.back()->Write(m);
  }
  // Bob is served while Alice's streams hang.
  v1::PutHeader bh;
  bh.set_key(BlockKey{8, 0}.ToByteString());
  const std::string small = Bytes(1 << 20, 8);
  auto put = bob->Put(bh, AsBytes(small));
  ASSERT_TRUE(put.ok()) << put.status();
  auto got = bob->Get(BlockKey{8, 0});
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_TRUE(got->payload == small);
  // What the hanging streams hold: at most Alice's payload share (a quarter
  // of the 1 GiB budget) and gRPC's buffers, far below the 1.4 GB seen.
  const uint64_t rss_during = RssBytes(d.pid());
  std::printf("kvtierd RSS: %llu MiB before the slow clients, %llu MiB with them\n",
              static_cast<unsigned long long>(rss_before >> 20),
              static_cast<unsigned long long>(rss_during >> 20));
  EXPECT_LT(rss_during, rss_before + (512ull << 20))
      << "RSS grew from " << (rss_before >> 20) << " MiB to " << (rss_during >> 20) << " MiB";
  for (auto& c : contexts) c->TryCancel();
  EXPECT_EQ(d.Stop(SIGTERM), 0);
}

// The daemon's descriptor limit is lowered under it (prlimit) and clients
// open more connections than it has descriptors. Accept fails with EMFILE;
// once the clients leave, the daemon accepts again and its cold tier still
// writes (gRPC's own listener never accepts again after EMFILE).
TEST_F(ServerLimitsTest, TheListenerRecoversAfterDescriptorsRunOut) {
  DaemonProcess d;
  ASSERT_TRUE(
      d.Start(dir_, {"--no-engine", "--no-flash", "--dram-bytes", "16M", "--metrics-listen", ""}));
  const std::string prlimit = "prlimit --pid " + std::to_string(d.pid()) + " --nofile=160:160";
  ASSERT_EQ(std::system(prlimit.c_str()), 0);
  const int port = std::stoi(d.address().substr(d.address().rfind(':') + 1));
  std::vector<int> conns;
  for (int i = 0; i < 400; ++i) {
    const int fd = ConnectTo(port);
    if (fd >= 0) conns.push_back(fd);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  for (int fd : conns) ::close(fd);
  // Recovery: a new client is served again, without a restart.
  bool healthy = false;
  for (int attempt = 0; attempt < 300 && !healthy; ++attempt) {
    ClientOptions o;
    o.address = d.address();
    o.timeout_ms = 2000;
    Client c(o);
    healthy = c.Health().ok();
    if (!healthy) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_TRUE(healthy) << "kvtierd never accepted again after running out of descriptors";
  ClientOptions o;
  o.address = d.address();
  Client c(o);
  const std::string block(4096, 'r');
  v1::PutHeader h;
  h.set_key(BlockKey{5, 0}.ToByteString());
  auto put = c.Put(h, AsBytes(block));
  ASSERT_TRUE(put.ok()) << put.status();
  auto got = c.Get(BlockKey{5, 0});
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->payload.size(), block.size());
  EXPECT_EQ(d.Stop(SIGTERM), 0);
}

// Bytes that are not a protobuf message (a field that claims five bytes and
// has two) get INVALID_ARGUMENT naming the method, before and without
// authentication, instead of gRPC's INTERNAL with an empty message.
TEST_F(ServerLimitsTest, AMalformedRequestIsAnInvalidArgument) {
  DaemonProcess d;
  ASSERT_TRUE(d.Start(dir_, {"--api-keys", dir_ + "/keys", "--no-engine", "--no-flash",
                             "--dram-bytes", "16M", "--metrics-listen", ""}));
  auto channel = grpc::CreateChannel(d.address(), grpc::InsecureChannelCredentials());
  const std::string bad =
      "\x0a\x05"
      "ab";  // field 1 claims five bytes and has two
  for (const char* method : {"/kvtier.v1.BlockStore/Lookup", "/kvtier.v1.BlockStore/Get",
                             "/kvtier.v1.Admin/Stats", "/kvtier.v1.Admin/Health"}) {
    grpc::Slice slice(bad);
    grpc::ByteBuffer request(&slice, 1), response;
    grpc::ClientContext ctx;
    ctx.AddMetadata("x-api-key", "alice-key-0123456789");
    const bool streaming = std::string(method).ends_with("/Get");
    grpc::Status s;
    if (streaming) {
      grpc::internal::RpcMethod rpc(method, grpc::internal::RpcMethod::SERVER_STREAMING);
      std::unique_ptr<grpc::ClientReader<grpc::ByteBuffer>> reader(
          grpc::internal::ClientReaderFactory<grpc::ByteBuffer>::Create(channel.get(), rpc, &ctx,
                                                                        request));
      while (reader->Read(&response)) {
      }
      s = reader->Finish();
    } else {
      grpc::internal::RpcMethod rpc(method, grpc::internal::RpcMethod::NORMAL_RPC);
      s = grpc::internal::BlockingUnaryCall(channel.get(), rpc, &ctx, request, &response);
    }
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
        << method << ": " << s.error_message();
    EXPECT_NE(s.error_message().find("malformed request"), std::string::npos) << method;
    EXPECT_NE(s.error_message().find(method), std::string::npos) << s.error_message();
  }
  // The daemon is unharmed.
  ClientOptions o;
  o.address = d.address();
  EXPECT_TRUE(Client(o).Health().ok());
  EXPECT_EQ(d.Stop(SIGTERM), 0);
}

}  // namespace
}  // namespace kvtier
