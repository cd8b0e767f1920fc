// Unit tests of the daemon's tenant identity: API key files, secret cache
// salts and key scopes, and the per-tenant payload budget.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "server/auth.h"
#include "server/block_scope.h"
#include "server/cache_secret.h"
#include "server/payload_budget.h"
#include "tests/server/daemon_process.h"

namespace kvtier {
namespace {

CacheSecret TestSecret(uint8_t fill = 7) {
  std::array<uint8_t, CacheSecret::kBytes> b;
  b.fill(fill);
  return CacheSecret::FromBytes(b);
}

TEST(AuthenticatorTest, KeyFilesAreCheckedLineByLine) {
  const CacheSecret secret = TestSecret();
  auto a = Authenticator::FromText(
      "# keys\n\nalice-key-0123456789 alice\nroot-key-0123456789abc ops admin\n", secret);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_TRUE(a->enabled());
  EXPECT_EQ(a->keys(), 2u);
  EXPECT_TRUE(Authenticator::FromText("k-0123456789abcdef t admin group=g\n", secret).ok());
  EXPECT_FALSE(Authenticator::FromText("k-0123456789abcdef t group=\n", secret).ok());
  for (const char* bad :
       {"short alice\n", "alice-key-0123456789\n", "alice-key-0123456789 alice root\n",
        "alice-key-0123456789 alice\nalice-key-0123456789 bob\n", "# none\n",
        // one tenant, two share groups
        "alice-key-0123456789 alice group=x\nalice-key-9876543210 alice group=y\n"}) {
    auto r = Authenticator::FromText(bad, secret);
    EXPECT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  }
  EXPECT_NE(Authenticator::FromText("x alice\n", secret).status().message().find("line 1"),
            std::string::npos);
}

// DESIGN §2: a salt is never derivable from public values: not the tenant's
// name, not "group:NAME", and not without the daemon's secret.
TEST(CacheSecretTest, SaltsAreSecretAndDomainSeparated) {
  const CacheSecret s = TestSecret(1), other = TestSecret(2);
  const std::string alice = s.TenantSalt("alice");
  EXPECT_EQ(alice.size(), 64u);
  EXPECT_EQ(alice, s.TenantSalt("alice")) << "stable";
  EXPECT_NE(alice, "alice");
  EXPECT_NE(alice, other.TenantSalt("alice")) << "another secret, another salt";
  EXPECT_NE(s.TenantSalt("bob"), alice);
  // A tenant named like a share group never gets the group's salt.
  EXPECT_NE(s.TenantSalt("group:team"), s.GroupSalt("team"));
  EXPECT_NE(s.TenantSalt("team"), s.GroupSalt("team"));
  // A client's salt refines its own scope only.
  EXPECT_EQ(s.ScopedSalt(alice, ""), alice);
  EXPECT_NE(s.ScopedSalt(alice, "x"), alice);
  EXPECT_NE(s.ScopedSalt(alice, "x"), s.ScopedSalt(s.TenantSalt("bob"), "x"));
}

TEST(CacheSecretTest, KeyMasksDifferByNamespaceAndInvertThemselves) {
  const CacheSecret s = TestSecret();
  const BlockKey m1 = s.KeyMask(BlockKey{1, 2}), m2 = s.KeyMask(BlockKey{1, 3});
  EXPECT_NE(m1, m2);
  EXPECT_NE(m1, (BlockKey{0, 0}));
  const BlockKey k{0x1234, 0x5678};
  EXPECT_EQ(ScopeKey(ScopeKey(k, m1), m1), k);
  EXPECT_NE(ScopeKey(ScopeKey(k, m1), m2), k);
}

TEST(CacheSecretTest, IsCreatedOnceKeptPrivateAndReadBack) {
  const std::string dir = testing::TempDir("secret");
  std::filesystem::create_directories(dir);
  Result<CacheSecret> a = CacheSecret::LoadOrCreate(dir);
  ASSERT_TRUE(a.ok()) << a.status();
  struct stat st {};
  ASSERT_EQ(::stat((dir + "/cache_secret").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(st.st_size, 32);
  Result<CacheSecret> b = CacheSecret::LoadOrCreate(dir);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(a->TenantSalt("t"), b->TenantSalt("t")) << "a restart keeps every salt";
  // Another data directory draws another secret.
  const std::string dir2 = testing::TempDir("secret2");
  std::filesystem::create_directories(dir2);
  EXPECT_NE(CacheSecret::LoadOrCreate(dir2)->TenantSalt("t"), a->TenantSalt("t"));
  // A cluster's shared secret (--cache-secret) is read, never created: a
  // node with another secret would silently share nothing.
  Result<CacheSecret> shared = CacheSecret::Load(dir + "/cache_secret");
  ASSERT_TRUE(shared.ok()) << shared.status();
  EXPECT_EQ(shared->TenantSalt("t"), a->TenantSalt("t"));
  EXPECT_EQ(CacheSecret::Load(dir + "/absent").status().code(), StatusCode::kNotFound);
  // A damaged secret stops the daemon rather than silently re-keying it.
  std::ofstream(dir + "/cache_secret", std::ios::trunc) << "short";
  Result<CacheSecret> bad = CacheSecret::LoadOrCreate(dir);
  EXPECT_EQ(bad.status().code(), StatusCode::kCorruption);
  EXPECT_EQ(CacheSecret::Load(dir + "/cache_secret").status().code(), StatusCode::kCorruption);
  std::filesystem::remove_all(dir);
  std::filesystem::remove_all(dir2);
}

TEST(BlockScopeTest, TheCallersSaltAlwaysWinsAndAClientSaltRefinesIt) {
  const CacheSecret s = TestSecret();
  Namespace defaults;
  defaults.model_id = "m";
  const Principal alice{"alice", false, s.TenantSalt("alice")};
  const Principal bob{"bob", false, s.TenantSalt("bob")};
  v1::Namespace req;
  auto a = ResolveBlockScope(defaults, s, alice, false, req);
  auto b = ResolveBlockScope(defaults, s, bob, false, req);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_NE(a->ns.Seed(), b->ns.Seed());
  EXPECT_NE(a->mask, b->mask);
  // Bob naming Alice's salt, or her name, gets neither.
  for (const std::string& salt : {std::string("alice"), s.TenantSalt("alice")}) {
    req.set_cache_salt(salt);
    auto forged = ResolveBlockScope(defaults, s, bob, true, req);
    ASSERT_TRUE(forged.ok());
    EXPECT_NE(forged->ns.Seed(), a->ns.Seed());
    EXPECT_NE(forged->mask, a->mask);
  }
  req.set_cache_salt(std::string(300, 'x'));
  EXPECT_EQ(ResolveBlockScope(defaults, s, bob, true, req).status().code(),
            StatusCode::kInvalidArgument);
}

TEST(PayloadBudgetTest, EachTenantHasAShareAndHoldsGiveBackOnDestruction) {
  PayloadBudget budget(100, 40);
  PayloadBudget::Hold a1 = budget.Open("a");
  EXPECT_TRUE(a1.GrowTo(30));
  PayloadBudget::Hold a2 = budget.Open("a");
  EXPECT_FALSE(a2.GrowTo(20)) << "a's share is 40";
  EXPECT_EQ(a2.bytes(), 0u);
  EXPECT_TRUE(a2.GrowTo(10));
  {
    PayloadBudget::Hold b = budget.Open("b");
    EXPECT_TRUE(b.GrowTo(40));
    PayloadBudget::Hold c = budget.Open("c");
    EXPECT_TRUE(c.GrowTo(20));
    PayloadBudget::Hold d = budget.Open("d");
    EXPECT_FALSE(d.GrowTo(1)) << "the daemon's 100 are held";
    EXPECT_EQ(budget.held_bytes(), 100u);
  }
  EXPECT_EQ(budget.held_bytes(), 40u);
  EXPECT_EQ(budget.held_bytes("a"), 40u);
  PayloadBudget::Hold moved = std::move(a1);
  EXPECT_EQ(budget.held_bytes("a"), 40u);
  { PayloadBudget::Hold gone = std::move(moved); }
  EXPECT_EQ(budget.held_bytes("a"), 10u);
}

}  // namespace
}  // namespace kvtier
