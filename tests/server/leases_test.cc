// LeaseTable (server/leases.h): a lease holds its pins until released or
// expired, only its tenant may release it, and each tenant's leases are bounded.
#include "server/leases.h"

#include <gtest/gtest.h>

#include <chrono>
#include <thread>
#include <vector>

#include "cache/block_index.h"

namespace kvtier {
namespace {

constexpr uint64_t kBlockBytes = 4096;

class LeaseTableTest : public ::testing::Test {
 protected:
  LeaseTableTest() : index_(&clock_) {
    for (uint64_t i = 0; i < 8; ++i) {
      keys_.push_back(BlockKey{i + 1, i + 100});
      index_.Upsert(keys_.back(), std::nullopt, 0, kBlockBytes, kNoExpiry);
    }
  }
  std::vector<PinHandle> Pins(size_t from, size_t n) {
    std::vector<PinHandle> pins;
    for (size_t i = from; i < from + n; ++i) pins.push_back(index_.Pin(keys_[i]));
    return pins;
  }
  uint32_t PinsOf(size_t i) const { return index_.Get(keys_[i])->pins; }

  ManualClock clock_;
  BlockIndex index_;
  std::vector<BlockKey> keys_;
};

TEST_F(LeaseTableTest, ALeaseHoldsItsPinsUntilReleased) {
  LeaseTable leases({}, &clock_, /*reap_period_ms=*/0);
  Result<Lease> lease = leases.Grant("alice", Pins(0, 3), 3 * kBlockBytes, 1000);
  ASSERT_TRUE(lease.ok()) << lease.status();
  EXPECT_EQ(lease->id.size(), 32u);
  EXPECT_EQ(lease->expire_time_ms, clock_.NowMs() + 1000);
  EXPECT_EQ(PinsOf(0), 1u);
  EXPECT_EQ(leases.stats().leased_blocks, 3u);
  EXPECT_TRUE(leases.Release("bob", lease->id).status().IsNotFound()) << "not bob's";
  EXPECT_EQ(PinsOf(0), 1u);
  Result<size_t> n = leases.Release("alice", lease->id);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 3u);
  EXPECT_EQ(PinsOf(0), 0u);
  EXPECT_TRUE(leases.Release("alice", lease->id).status().IsNotFound());
  EXPECT_EQ(leases.stats().open, 0u);
  EXPECT_EQ(leases.stats().released, 1u);
}

TEST_F(LeaseTableTest, AnExpiredLeaseIsSweptAndCannotBeReleased) {
  LeaseTable leases({}, &clock_, 0);
  Result<Lease> lease = leases.Grant("alice", Pins(0, 2), 2 * kBlockBytes, 500);
  ASSERT_TRUE(lease.ok());
  clock_.AdvanceMs(499);
  EXPECT_EQ(leases.Sweep(), 0u);
  EXPECT_EQ(PinsOf(1), 1u);
  clock_.AdvanceMs(1);
  EXPECT_TRUE(leases.Release("alice", lease->id).status().IsNotFound()) << "past its time";
  EXPECT_EQ(leases.Sweep(), 1u);
  EXPECT_EQ(PinsOf(1), 0u);
  EXPECT_EQ(leases.stats().expired, 1u);
}

TEST_F(LeaseTableTest, TheReaperReleasesExpiredLeasesByItself) {
  LeaseTable leases({}, &clock_, /*reap_period_ms=*/5);
  ASSERT_TRUE(leases.Grant("alice", Pins(0, 1), 1 * kBlockBytes, 100).ok());
  clock_.AdvanceMs(100);
  for (int i = 0; i < 2000 && PinsOf(0) != 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_EQ(PinsOf(0), 0u);
  EXPECT_EQ(leases.stats().open, 0u);
}

TEST_F(LeaseTableTest, EachTenantsLeasesAreBounded) {
  LeaseTable leases({.max_lease_ms = 1000, .max_leases_per_tenant = 2, .max_blocks_per_tenant = 4},
                    &clock_, 0);
  EXPECT_TRUE(leases.Grant("alice", Pins(0, 1), 1 * kBlockBytes, 0).status().code() ==
              StatusCode::kInvalidArgument);
  EXPECT_TRUE(leases.Grant("alice", Pins(0, 1), 1 * kBlockBytes, 1001).status().code() ==
              StatusCode::kInvalidArgument);
  ASSERT_TRUE(leases.Grant("alice", Pins(0, 3), 3 * kBlockBytes, 1000).ok());
  Result<Lease> over_blocks = leases.Grant("alice", Pins(3, 2), 2 * kBlockBytes, 1000);
  EXPECT_TRUE(over_blocks.status().IsResourceExhausted()) << over_blocks.status();
  EXPECT_EQ(PinsOf(3), 0u) << "a refused lease drops its pins";
  ASSERT_TRUE(leases.Grant("alice", Pins(3, 1), 1 * kBlockBytes, 1000).ok());
  EXPECT_TRUE(leases.Grant("alice", {}, 0, 1000).status().IsResourceExhausted()) << "two leases";
  EXPECT_TRUE(leases.Grant("bob", Pins(4, 4), 4 * kBlockBytes, 1000).ok())
      << "bob has limits of his own";
  EXPECT_EQ(leases.stats().refused, 2u) << "bad lengths are bad input, not refusals";
}

// Bytes are bounded too: a tenant whose leases pin few large blocks could
// otherwise pin every tier full, and every write (anyone's) would fail.
TEST_F(LeaseTableTest, EachTenantsLeasedBytesAreBounded) {
  LeaseTable leases({.max_bytes_per_tenant = 3 * kBlockBytes}, &clock_, 0);
  Result<Lease> two = leases.Grant("alice", Pins(0, 2), 2 * kBlockBytes, 1000);
  ASSERT_TRUE(two.ok()) << two.status();
  Result<Lease> over = leases.Grant("alice", Pins(2, 2), 2 * kBlockBytes, 1000);
  EXPECT_TRUE(over.status().IsResourceExhausted()) << over.status();
  EXPECT_NE(over.status().message().find("leased bytes"), std::string::npos) << over.status();
  EXPECT_EQ(PinsOf(2), 0u) << "a refused lease drops its pins";
  EXPECT_EQ(leases.stats().leased_bytes, 2 * kBlockBytes);
  EXPECT_TRUE(leases.Grant("bob", Pins(4, 3), 3 * kBlockBytes, 1000).ok()) << "bob's own";
  ASSERT_TRUE(leases.Release("alice", two->id).ok());
  EXPECT_TRUE(leases.Grant("alice", Pins(2, 3), 3 * kBlockBytes, 1000).ok()) << "released";
  EXPECT_EQ(leases.stats().leased_bytes, 6 * kBlockBytes);
}

}  // namespace
}  // namespace kvtier
