// The conformance suite (tests/tiers/tier_conformance.h) over every tier.
// A new tier adds a factory below and joins TierTypes; persistent tiers also
// run the reopen step of RecoverAnnouncesEveryLiveBlock. hbm_test runs the
// suite on the real GPU backend too.
#include <gtest/gtest.h>

#include "tests/tiers/tier_conformance.h"
#include "tiers/dram/dram_tier.h"
#include "tiers/flash/flash_tier.h"
#include "tiers/hbm/hbm_tier.h"
#include "tiers/rocks/rocks_tier.h"
#include "tiers/tier.h"

namespace kvtier {
namespace {

using conformance::K;

struct DramFactory {
  static constexpr const char* kName = "Dram";
  static constexpr bool kPersistent = false;
  static Result<std::unique_ptr<Tier>> Open(const std::string& /*dir*/, uint64_t capacity,
                                            Clock* clock) {
    DramTierOptions o;
    o.capacity_bytes = capacity;
    o.clock = clock;
    return OpenDramTier(o);
  }
  static Status Corrupt(Tier& tier, const BlockKey& key) {
    return CorruptDramBlockForTesting(tier, key);
  }
};

struct RocksFactory {
  static constexpr const char* kName = "Rocks";
  static constexpr bool kPersistent = true;
  static Result<std::unique_ptr<Tier>> Open(const std::string& dir, uint64_t capacity,
                                            Clock* clock) {
    RocksTierOptions o;
    o.path = dir + "/rocks";
    o.capacity_bytes = capacity;
    o.clock = clock;
    return OpenRocksTier(o);
  }
  static Status Corrupt(Tier& tier, const BlockKey& key) {
    return CorruptRocksBlockForTesting(tier, key);
  }
};

struct FlashFactory {
  static constexpr const char* kName = "Flash";
  static constexpr bool kPersistent = true;
  static Result<std::unique_ptr<Tier>> Open(const std::string& dir, uint64_t capacity,
                                            Clock* clock) {
    return OpenFlashTier(Options(dir, capacity, clock));
  }
  static FlashTierOptions Options(const std::string& dir, uint64_t capacity, Clock* clock) {
    FlashTierOptions o;
    o.path = dir + "/flash.log";
    o.capacity_bytes = capacity;
    o.region_bytes = 2 << 20;
    o.max_block_bytes = 1 << 20;
    o.queue_depth = 8;
    o.staging_bytes = 4 << 20;
    o.clock = clock;
    return o;
  }
  static Status Corrupt(Tier& tier, const BlockKey& key) {
    return CorruptFlashBlockForTesting(tier, key);
  }
};

// The HBM tier on its host stand-in (no checksums: Corrupt is absent and the
// checksum test skips). Small staging buffers, so that blocks are staged in
// several pieces and threads contend for the buffers.
struct HbmStandInFactory {
  static constexpr const char* kName = "HbmStandIn";
  static constexpr bool kPersistent = false;
  static Result<std::unique_ptr<Tier>> Open(const std::string& /*dir*/, uint64_t capacity,
                                            Clock* clock) {
    HbmTierOptions o;
    o.capacity_bytes = capacity;
    o.force_host_standin = true;
    o.staging_buffer_bytes = 128 << 10;
    o.staging_buffers = 2;
    o.clock = clock;
    return OpenHbmTier(o);
  }
};

using TierTypes = ::testing::Types<DramFactory, FlashFactory, RocksFactory, HbmStandInFactory>;
}  // namespace

// The suite lives in kvtier::conformance, and is instantiated there.
namespace conformance {
INSTANTIATE_TYPED_TEST_SUITE_P(Tiers, TierConformanceTest, TierTypes, FactoryNames);
}  // namespace conformance

namespace {

TEST(DramTierTest, ConfiguredBandwidthIsReportedAsGiven) {
  DramTierOptions o;
  o.capacity_bytes = 1 << 20;
  o.read_bytes_per_s = 12e9;
  o.write_bytes_per_s = 7e9;
  auto t = OpenDramTier(o);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ((*t)->Info().read_bytes_per_s, 12e9);
  EXPECT_EQ((*t)->Info().write_bytes_per_s, 7e9);
}

TEST(DramTierTest, OptionsAreValidated) {
  DramTierOptions o;
  o.page_bytes = 1000;
  EXPECT_EQ(OpenDramTier(o).status().code(), StatusCode::kInvalidArgument);
  o = DramTierOptions();
  o.capacity_bytes = 100;
  EXPECT_EQ(OpenDramTier(o).status().code(), StatusCode::kInvalidArgument);
  o = DramTierOptions();
  o.capacity_bytes = 1ull << 50;  // a petabyte: more than any machine here
  auto huge = OpenDramTier(o);
  EXPECT_EQ(huge.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(huge.status().message().find("memory"), std::string::npos);
  o = DramTierOptions();
  o.capacity_bytes = 1 << 20;
  o.max_block_bytes = 1000;
  auto t = OpenDramTier(o);
  ASSERT_TRUE(t.ok());
  std::vector<std::byte> big(1001);
  EXPECT_EQ(WriteOne(**t, K(1), big).code(), StatusCode::kResourceExhausted);
  EXPECT_EQ((*t)->Info().blocks, 0u);
}

}  // namespace
}  // namespace kvtier
