// The registry of named caches: round trips, names, tenant isolation, expiry
// and Sweep, TTL updates, validation, the per-tenant limit, reopen, a crash
// and corruption on disk.
#include "context/named_caches.h"

#include <gtest/gtest.h>
#include <rocksdb/db.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <functional>
#include <set>
#include <thread>

#include "tests/tiers/storage_faults.h"

namespace kvtier {
namespace {

namespace fs = std::filesystem;

constexpr int64_t kMinute = 60 * 1000;
constexpr int64_t kHour = 60 * kMinute;
constexpr int64_t kDay = 24 * kHour;

std::vector<int32_t> Tokens(size_t n, int32_t seed = 1) {
  std::vector<int32_t> t(n);
  for (size_t i = 0; i < n; ++i) t[i] = static_cast<int32_t>((i * 7919 + seed) % 128000);
  return t;
}

void ExpectSameCache(const NamedCache& a, const NamedCache& b, bool tokens = true) {
  EXPECT_EQ(a.name, b.name);
  EXPECT_EQ(a.tenant, b.tenant);
  EXPECT_EQ(a.model, b.model);
  if (tokens) {
    EXPECT_EQ(a.tokens, b.tokens);
  }
  EXPECT_EQ(a.token_count, b.token_count);
  EXPECT_EQ(a.create_time_ms, b.create_time_ms);
  EXPECT_EQ(a.expire_time_ms, b.expire_time_ms);
  EXPECT_EQ(a.ttl_ms, b.ttl_ms);
  EXPECT_EQ(a.display_name, b.display_name);
}

// Opens the registry's database directly (the registry closed), calls `f` with
// it and its "caches" family, and closes it.
void WithRawDb(const fs::path& dir,
               const std::function<void(rocksdb::DB*, rocksdb::ColumnFamilyHandle*)>& f) {
  std::vector<rocksdb::ColumnFamilyDescriptor> families = {
      {rocksdb::kDefaultColumnFamilyName, {}}, {"caches", {}}, {"ids", {}}};
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* db = nullptr;
  rocksdb::DBOptions options;
  options.create_missing_column_families = true;
  rocksdb::Status s = rocksdb::DB::Open(options, dir.string(), families, &handles, &db);
  ASSERT_TRUE(s.ok()) << s.ToString();
  f(db, handles[1]);
  for (auto* h : handles) ASSERT_TRUE(db->DestroyColumnFamilyHandle(h).ok());
  ASSERT_TRUE(db->Close().ok());
  delete db;
}

std::vector<std::string> RawKeys(const fs::path& dir) {
  std::vector<std::string> keys;
  WithRawDb(dir, [&](rocksdb::DB* db, rocksdb::ColumnFamilyHandle* caches) {
    std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(rocksdb::ReadOptions(), caches));
    for (it->SeekToFirst(); it->Valid(); it->Next()) keys.push_back(it->key().ToString());
  });
  return keys;
}

// The number of request ids stored (the registry closed).
size_t RawIdCount(const fs::path& dir) {
  std::vector<rocksdb::ColumnFamilyDescriptor> families = {
      {rocksdb::kDefaultColumnFamilyName, {}}, {"caches", {}}, {"ids", {}}};
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* db = nullptr;
  rocksdb::Status s =
      rocksdb::DB::Open(rocksdb::DBOptions(), dir.string(), families, &handles, &db);
  EXPECT_TRUE(s.ok()) << s.ToString();
  if (!s.ok()) return 0;
  size_t n = 0;
  {
    std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(rocksdb::ReadOptions(), handles[2]));
    for (it->SeekToFirst(); it->Valid(); it->Next()) ++n;
  }
  for (auto* h : handles) (void)db->DestroyColumnFamilyHandle(h);
  (void)db->Close();
  delete db;
  return n;
}

class NamedCacheRegistryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("kvtier_named_caches_" + std::to_string(getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    Open();
  }
  void TearDown() override {
    registry_.reset();
    fs::remove_all(dir_);
  }
  NamedCacheOptions Options() {
    NamedCacheOptions o;
    o.path = dir_.string();
    o.clock = &clock_;
    o.max_caches_per_tenant = max_caches_;
    o.max_tokens = max_tokens_;
    return o;
  }
  void Open() {
    registry_.reset();
    auto r = NamedCacheRegistry::Open(Options());
    ASSERT_TRUE(r.ok()) << r.status();
    registry_ = std::move(*r);
  }
  NamedCache Create(const std::string& tenant, std::vector<int32_t> tokens,
                    NamedCacheExpiry expiry = NamedCacheExpiry::Ttl(kHour),
                    const std::string& display_name = "") {
    auto r = registry_->Create(tenant, "llama-3-8b", tokens, expiry, display_name);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : NamedCache{};
  }
  std::vector<NamedCache> ListAll(const std::string& tenant, bool with_tokens = false) {
    auto r = registry_->List(tenant, with_tokens);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : std::vector<NamedCache>{};
  }
  std::vector<std::string> Names(const std::string& tenant) {
    std::vector<std::string> names;
    for (const NamedCache& c : ListAll(tenant)) names.push_back(c.name);
    return names;
  }

  fs::path dir_;
  ManualClock clock_;
  size_t max_caches_ = 1000;
  size_t max_tokens_ = size_t{1} << 20;
  std::unique_ptr<NamedCacheRegistry> registry_;
};

TEST_F(NamedCacheRegistryTest, CreateGetListUpdateDeleteRoundTrip) {
  const int64_t t0 = clock_.NowMs();
  const NamedCache a = Create("acme", Tokens(5000), NamedCacheExpiry::Ttl(kHour), "system prompt");
  EXPECT_EQ(a.tenant, "acme");
  EXPECT_EQ(a.model, "llama-3-8b");
  EXPECT_EQ(a.tokens, Tokens(5000));
  EXPECT_EQ(a.token_count, 5000u);
  EXPECT_EQ(a.create_time_ms, t0);
  EXPECT_EQ(a.expire_time_ms, t0 + kHour);
  EXPECT_EQ(a.ttl_ms, kHour);
  EXPECT_EQ(a.display_name, "system prompt");

  clock_.AdvanceMs(1000);
  const NamedCache b = Create("acme", Tokens(3, 9), NamedCacheExpiry::At(t0 + 2 * kDay));
  EXPECT_EQ(b.expire_time_ms, t0 + 2 * kDay);
  EXPECT_EQ(b.ttl_ms, 0);
  EXPECT_EQ(b.create_time_ms, t0 + 1000);

  auto got = registry_->Get("acme", a.name);
  ASSERT_TRUE(got.ok()) << got.status();
  ExpectSameCache(*got, a);

  // List: oldest first, without tokens unless asked, the count always there.
  const auto listed = ListAll("acme");
  ASSERT_EQ(listed.size(), 2u);
  ExpectSameCache(listed[0], a, /*tokens=*/false);
  ExpectSameCache(listed[1], b, /*tokens=*/false);
  EXPECT_TRUE(listed[0].tokens.empty());
  EXPECT_TRUE(listed[1].tokens.empty());
  const auto full = ListAll("acme", /*with_tokens=*/true);
  ASSERT_EQ(full.size(), 2u);
  ExpectSameCache(full[0], a);
  ExpectSameCache(full[1], b);

  auto updated = registry_->UpdateTtl("acme", a.name, NamedCacheExpiry::Ttl(3 * kHour));
  ASSERT_TRUE(updated.ok()) << updated.status();
  EXPECT_EQ(*updated, clock_.NowMs() + 3 * kHour);
  got = registry_->Get("acme", a.name);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->expire_time_ms, *updated);
  EXPECT_EQ(got->ttl_ms, 3 * kHour);
  EXPECT_EQ(got->create_time_ms, t0);  // unchanged
  EXPECT_EQ(got->tokens, a.tokens);
  EXPECT_EQ(ListAll("acme")[0].expire_time_ms, *updated);

  ASSERT_TRUE(registry_->Delete("acme", a.name).ok());
  EXPECT_TRUE(registry_->Get("acme", a.name).status().IsNotFound());
  EXPECT_TRUE(registry_->Delete("acme", a.name).IsNotFound());
  EXPECT_TRUE(
      registry_->UpdateTtl("acme", a.name, NamedCacheExpiry::Ttl(kHour)).status().IsNotFound());
  EXPECT_EQ(Names("acme"), (std::vector<std::string>{b.name}));
  registry_.reset();
  EXPECT_EQ(RawKeys(dir_), (std::vector<std::string>{std::string("acme") + '\0' + b.name}));
}

TEST_F(NamedCacheRegistryTest, NamesAreUniqueAndWellFormed) {
  std::set<std::string> names;
  for (int i = 0; i < 300; ++i) {
    const NamedCache c = Create(i % 2 ? "acme" : "globex", {i});
    ASSERT_EQ(c.name.size(), std::string("cachedContents/").size() + 16) << c.name;
    EXPECT_TRUE(c.name.starts_with("cachedContents/")) << c.name;
    for (char ch : c.name.substr(15)) {
      EXPECT_TRUE((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f')) << c.name;
    }
    EXPECT_TRUE(names.insert(c.name).second) << "duplicate " << c.name;
  }
  // Random, not a counter: even the first hex digit varies.
  std::set<char> first_digits;
  for (const auto& n : names) first_digits.insert(n[15]);
  EXPECT_GT(first_digits.size(), 8u);
}

TEST_F(NamedCacheRegistryTest, OtherTenantsSeeNothing) {
  const NamedCache a = Create("acme", Tokens(10));
  const std::string unknown = "cachedContents/0123456789abcdef";
  // Another tenant's cache answers exactly as a name that never existed.
  for (const char* other : {"globex", "acm", "acme2", "ACME"}) {
    SCOPED_TRACE(other);
    const Status get = registry_->Get(other, a.name).status();
    EXPECT_TRUE(get.IsNotFound()) << get;
    EXPECT_EQ(get.message(), "named cache " + a.name + " not found");
    EXPECT_EQ(registry_->Get(other, unknown).status().message(),
              "named cache " + unknown + " not found");
    const Status update =
        registry_->UpdateTtl(other, a.name, NamedCacheExpiry::Ttl(2 * kHour)).status();
    EXPECT_TRUE(update.IsNotFound()) << update;
    EXPECT_EQ(update.message(), get.message());
    const Status del = registry_->Delete(other, a.name);
    EXPECT_TRUE(del.IsNotFound()) << del;
    EXPECT_EQ(del.message(), get.message());
    EXPECT_TRUE(ListAll(other).empty());
    EXPECT_TRUE(ListAll(other, true).empty());
  }
  // The owner's cache is untouched.
  auto got = registry_->Get("acme", a.name);
  ASSERT_TRUE(got.ok()) << got.status();
  ExpectSameCache(*got, a);
  EXPECT_EQ(Names("acme"), (std::vector<std::string>{a.name}));
}

TEST_F(NamedCacheRegistryTest, ExpiredCachesAreInvisibleAndSweptFromDisk) {
  const int64_t t0 = clock_.NowMs();
  const NamedCache short_lived = Create("acme", Tokens(10), NamedCacheExpiry::Ttl(kMinute));
  const NamedCache at = Create("acme", Tokens(11), NamedCacheExpiry::At(t0 + 2 * kMinute));
  const NamedCache long_lived = Create("acme", Tokens(12), NamedCacheExpiry::Ttl(kDay));

  clock_.SetMs(t0 + kMinute - 1);
  EXPECT_TRUE(registry_->Get("acme", short_lived.name).ok());
  EXPECT_EQ(ListAll("acme").size(), 3u);
  ASSERT_TRUE(registry_->Sweep().ok());
  EXPECT_EQ(*registry_->Sweep(), 0u);

  // Expired at exactly its expiry time.
  clock_.SetMs(t0 + kMinute);
  const Status get = registry_->Get("acme", short_lived.name).status();
  EXPECT_TRUE(get.IsNotFound()) << get;
  EXPECT_EQ(get.message(), "named cache " + short_lived.name + " not found");
  // (Created at the same time, they are listed in name order.)
  EXPECT_EQ(Names("acme"), (std::vector<std::string>{std::min(at.name, long_lived.name),
                                                     std::max(at.name, long_lived.name)}));
  EXPECT_EQ(ListAll("acme", true).size(), 2u);
  EXPECT_TRUE(registry_->UpdateTtl("acme", short_lived.name, NamedCacheExpiry::Ttl(kHour))
                  .status()
                  .IsNotFound());
  EXPECT_TRUE(registry_->Delete("acme", short_lived.name).IsNotFound());

  clock_.SetMs(t0 + 2 * kMinute);
  EXPECT_TRUE(registry_->Get("acme", at.name).status().IsNotFound());
  EXPECT_EQ(Names("acme"), (std::vector<std::string>{long_lived.name}));

  // Before Sweep the expired entries are still on disk: a reopen with the
  // clock turned back finds them.
  registry_.reset();
  EXPECT_EQ(RawKeys(dir_).size(), 3u);
  clock_.SetMs(t0);
  Open();
  EXPECT_EQ(ListAll("acme").size(), 3u);

  clock_.SetMs(t0 + 2 * kMinute);
  auto swept = registry_->Sweep();
  ASSERT_TRUE(swept.ok()) << swept.status();
  EXPECT_EQ(*swept, 2u);
  EXPECT_EQ(*registry_->Sweep(), 0u);
  EXPECT_EQ(Names("acme"), (std::vector<std::string>{long_lived.name}));

  // Gone from the database: even with the clock turned back.
  registry_.reset();
  EXPECT_EQ(RawKeys(dir_).size(), 1u);
  clock_.SetMs(t0);
  Open();
  EXPECT_EQ(Names("acme"), (std::vector<std::string>{long_lived.name}));
  EXPECT_TRUE(registry_->Get("acme", short_lived.name).status().IsNotFound());
  auto kept = registry_->Get("acme", long_lived.name);
  ASSERT_TRUE(kept.ok()) << kept.status();
  ExpectSameCache(*kept, long_lived);
}

TEST_F(NamedCacheRegistryTest, UpdateTtlExtendsAndShortensLife) {
  const int64_t t0 = clock_.NowMs();
  const NamedCache c = Create("acme", Tokens(100), NamedCacheExpiry::Ttl(kMinute));
  clock_.AdvanceMs(50 * 1000);
  auto extended = registry_->UpdateTtl("acme", c.name, NamedCacheExpiry::Ttl(10 * kMinute));
  ASSERT_TRUE(extended.ok()) << extended.status();
  EXPECT_EQ(*extended, t0 + 50 * 1000 + 10 * kMinute);

  // Past its first expiry, still readable (and durable: across a reopen).
  clock_.SetMs(t0 + 5 * kMinute);
  Open();
  auto got = registry_->Get("acme", c.name);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->expire_time_ms, *extended);
  EXPECT_EQ(got->ttl_ms, 10 * kMinute);
  EXPECT_EQ(got->tokens, c.tokens);
  EXPECT_EQ(*registry_->Sweep(), 0u);

  // An explicit expiry time resets ttl_ms to 0.
  auto at = registry_->UpdateTtl("acme", c.name, NamedCacheExpiry::At(t0 + 3 * kDay));
  ASSERT_TRUE(at.ok()) << at.status();
  EXPECT_EQ(*at, t0 + 3 * kDay);
  got = registry_->Get("acme", c.name);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->ttl_ms, 0);
  EXPECT_EQ(got->expire_time_ms, t0 + 3 * kDay);

  // Shortening works too.
  auto shorter = registry_->UpdateTtl("acme", c.name, NamedCacheExpiry::Ttl(kMinute));
  ASSERT_TRUE(shorter.ok());
  clock_.AdvanceMs(kMinute);
  EXPECT_TRUE(registry_->Get("acme", c.name).status().IsNotFound());
  EXPECT_EQ(*registry_->Sweep(), 1u);
}

TEST_F(NamedCacheRegistryTest, InvalidArgumentsAreRefusedAndChangeNothing) {
  const int64_t now = clock_.NowMs();
  const NamedCache existing = Create("acme", Tokens(4), NamedCacheExpiry::Ttl(kHour), "kept");
  max_tokens_ = 64;
  Open();

  struct Case {
    std::string tenant = "acme";
    std::string model = "llama-3-8b";
    std::vector<int32_t> tokens = Tokens(8);
    NamedCacheExpiry expiry = NamedCacheExpiry::Ttl(kHour);
    std::string display_name;
    std::string message;  // a part of the expected message
  };
  std::vector<Case> cases;
  auto add = [&](std::string message, auto change) {
    Case c;
    c.message = std::move(message);
    change(c);
    cases.push_back(std::move(c));
  };
  add("tenant is empty", [](Case& c) { c.tenant.clear(); });
  add("model is empty", [](Case& c) { c.model.clear(); });
  add("tenant has 257 bytes", [](Case& c) { c.tenant = std::string(257, 't'); });
  add("model has 257 bytes", [](Case& c) { c.model = std::string(257, 'm'); });
  add("display_name has 257 bytes", [](Case& c) { c.display_name = std::string(257, 'd'); });
  add("tenant 'ac\\x00me' is not printable", [](Case& c) { c.tenant = std::string("ac\0me", 5); });
  add("model 'caf\\xc3\\xa9' is not printable", [](Case& c) { c.model = "caf\xc3\xa9"; });
  add("display_name 'a\\x0ab' is not printable", [](Case& c) { c.display_name = "a\nb"; });
  add("tokens is empty", [](Case& c) { c.tokens.clear(); });
  add("65 tokens, more than the 64", [](Case& c) { c.tokens = Tokens(65); });
  add("token 3 has the negative id -5", [](Case& c) { c.tokens[3] = -5; });
  add("neither ttl_ms nor expire_time_ms", [](Case& c) { c.expiry = NamedCacheExpiry{}; });
  add("both ttl_ms and expire_time_ms", [&](Case& c) {
    c.expiry = NamedCacheExpiry{kHour, now + kHour};
  });
  add("ttl_ms 59999 is shorter than the minimum 60000",
      [](Case& c) { c.expiry = NamedCacheExpiry::Ttl(kMinute - 1); });
  add("ttl_ms 0 is shorter", [](Case& c) { c.expiry = NamedCacheExpiry::Ttl(0); });
  add("ttl_ms -3600000 is shorter", [](Case& c) { c.expiry = NamedCacheExpiry::Ttl(-kHour); });
  add("ttl_ms 604800001 is longer than the maximum 604800000",
      [](Case& c) { c.expiry = NamedCacheExpiry::Ttl(7 * kDay + 1); });
  add("is not in the future", [&](Case& c) { c.expiry = NamedCacheExpiry::At(now); });
  add("is not in the future", [&](Case& c) { c.expiry = NamedCacheExpiry::At(now - kHour); });
  add("is more than 7 days ahead",
      [&](Case& c) { c.expiry = NamedCacheExpiry::At(now + 7 * kDay + 1); });

  for (size_t i = 0; i < cases.size(); ++i) {
    const Case& c = cases[i];
    auto r = registry_->Create(c.tenant, c.model, c.tokens, c.expiry, c.display_name);
    ASSERT_FALSE(r.ok()) << "case " << i;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument)
        << "case " << i << ": " << r.status();
    EXPECT_NE(r.status().message().find(c.message), std::string::npos)
        << "case " << i << ": " << r.status();
  }
  EXPECT_EQ(Names("acme"), (std::vector<std::string>{existing.name}));

  // UpdateTtl refuses the same lifetimes and leaves the cache as it was.
  for (const Case& c : cases) {
    if (c.message.find("ttl") == std::string::npos &&
        c.message.find("expire_time") == std::string::npos) {
      continue;
    }
    auto r = registry_->UpdateTtl("acme", existing.name, c.expiry);
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << r.status();
    EXPECT_NE(r.status().message().find(c.message), std::string::npos) << r.status();
  }
  auto got = registry_->Get("acme", existing.name);
  ASSERT_TRUE(got.ok());
  ExpectSameCache(*got, existing);

  // Bad tenants and names are refused by every call that takes them.
  const std::string bad_tenant("ac\0me", 5);
  EXPECT_EQ(registry_->Get(bad_tenant, existing.name).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(registry_->List(bad_tenant).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(registry_->List("").status().code(), StatusCode::kInvalidArgument);
  for (const std::string& bad_name :
       {std::string("cachedContents/0123"), std::string("cachedContents/0123456789ABCDEF"),
        std::string("contents/0123456789abcdef"), std::string("cachedContents/0123456789abcdefa"),
        existing.name.substr(15), std::string()}) {
    SCOPED_TRACE(bad_name);
    const Status get = registry_->Get("acme", bad_name).status();
    EXPECT_EQ(get.code(), StatusCode::kInvalidArgument) << get;
    EXPECT_NE(get.message().find("is not of the form cachedContents/"), std::string::npos);
    EXPECT_EQ(registry_->Delete("acme", bad_name).code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(registry_->UpdateTtl("acme", bad_name, NamedCacheExpiry::Ttl(kHour)).status().code(),
              StatusCode::kInvalidArgument);
  }
  EXPECT_EQ(Names("acme"), (std::vector<std::string>{existing.name}));
  registry_.reset();
  EXPECT_EQ(RawKeys(dir_).size(), 1u);
  Open();

  // The bounds themselves are allowed.
  EXPECT_TRUE(registry_
                  ->Create(std::string(256, 't'), std::string(256, 'm'), Tokens(64),
                           NamedCacheExpiry::Ttl(kMinute), std::string(256, 'd'))
                  .ok());
  EXPECT_TRUE(
      registry_->Create("acme", "m", std::vector<int32_t>{0}, NamedCacheExpiry::Ttl(7 * kDay))
          .ok());
  EXPECT_TRUE(
      registry_->Create("acme", "m", std::vector<int32_t>{0}, NamedCacheExpiry::At(now + 7 * kDay))
          .ok());
  EXPECT_TRUE(
      registry_->Create("acme", "m", std::vector<int32_t>{0}, NamedCacheExpiry::At(now + 1)).ok());
}

TEST_F(NamedCacheRegistryTest, PerTenantLimitIsResourceExhausted) {
  max_caches_ = 3;
  Open();
  std::vector<NamedCache> held;
  for (int i = 0; i < 3; ++i) held.push_back(Create("acme", {i}, NamedCacheExpiry::Ttl(kHour)));
  auto refused =
      registry_->Create("acme", "m", std::vector<int32_t>{9}, NamedCacheExpiry::Ttl(kHour));
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kResourceExhausted) << refused.status();
  EXPECT_NE(refused.status().message().find("acme"), std::string::npos);
  EXPECT_EQ(ListAll("acme").size(), 3u);
  // Other tenants have their own allowance.
  for (int i = 0; i < 3; ++i) Create("globex", {i});
  EXPECT_TRUE(
      registry_->Create("globex", "m", std::vector<int32_t>{9}, NamedCacheExpiry::Ttl(kHour))
          .status()
          .IsResourceExhausted());
  // A deleted cache frees its slot, and so does an expired one (before Sweep).
  ASSERT_TRUE(registry_->Delete("acme", held[0].name).ok());
  const NamedCache short_lived = Create("acme", {3}, NamedCacheExpiry::Ttl(kMinute));
  EXPECT_TRUE(registry_->Create("acme", "m", std::vector<int32_t>{9}, NamedCacheExpiry::Ttl(kHour))
                  .status()
                  .IsResourceExhausted());
  clock_.AdvanceMs(kMinute);
  Create("acme", {4});
  EXPECT_EQ(ListAll("acme").size(), 3u);
  // The limit holds across a reopen.
  Open();
  EXPECT_TRUE(registry_->Create("acme", "m", std::vector<int32_t>{9}, NamedCacheExpiry::Ttl(kHour))
                  .status()
                  .IsResourceExhausted());
}

TEST_F(NamedCacheRegistryTest, OpenRefusesBadOptions) {
  registry_.reset();
  auto refused = [](NamedCacheOptions o) {
    return NamedCacheRegistry::Open(o).status().code() == StatusCode::kInvalidArgument;
  };
  EXPECT_TRUE(refused(NamedCacheOptions{}));  // no path
  NamedCacheOptions o = Options();
  o.clock = nullptr;
  EXPECT_TRUE(refused(o));
  o = Options();
  o.max_caches_per_tenant = 0;
  EXPECT_TRUE(refused(o));
  o = Options();
  o.max_tokens = 0;
  EXPECT_TRUE(refused(o));
  o.max_tokens = (size_t{1} << 26) + 1;
  EXPECT_TRUE(refused(o));
}

TEST_F(NamedCacheRegistryTest, SurvivesCloseAndReopen) {
  std::vector<NamedCache> caches;
  for (int i = 0; i < 20; ++i) {
    clock_.AdvanceMs(10);
    caches.push_back(Create(
        i % 3 ? "acme" : "globex", Tokens(1 + i * 97, i),
        i % 2 ? NamedCacheExpiry::Ttl(kHour + i) : NamedCacheExpiry::At(clock_.NowMs() + kDay + i),
        "cache " + std::to_string(i)));
  }
  // A large one, at the default token limit.
  clock_.AdvanceMs(10);
  caches.push_back(Create("acme", Tokens(size_t{1} << 20, 5), NamedCacheExpiry::Ttl(kDay)));
  ASSERT_TRUE(registry_->Delete("acme", caches[1].name).ok());
  auto updated = registry_->UpdateTtl("acme", caches[2].name, NamedCacheExpiry::Ttl(2 * kDay));
  ASSERT_TRUE(updated.ok());
  caches[2].expire_time_ms = *updated;
  caches[2].ttl_ms = 2 * kDay;
  caches.erase(caches.begin() + 1);

  registry_.reset();
  Open();
  for (const std::string& tenant : {std::string("acme"), std::string("globex")}) {
    std::vector<NamedCache> expected;
    for (const auto& c : caches) {
      if (c.tenant == tenant) expected.push_back(c);
    }
    const auto listed = ListAll(tenant, /*with_tokens=*/true);
    ASSERT_EQ(listed.size(), expected.size());
    for (size_t i = 0; i < listed.size(); ++i) ExpectSameCache(listed[i], expected[i]);
    for (const auto& c : expected) {
      auto got = registry_->Get(tenant, c.name);
      ASSERT_TRUE(got.ok()) << got.status();
      ExpectSameCache(*got, c);
    }
  }
  // And it keeps working: new caches get new names.
  const size_t acme = ListAll("acme").size();
  const NamedCache later = Create("acme", Tokens(3));
  for (const auto& c : caches) EXPECT_NE(c.name, later.name);
  EXPECT_EQ(ListAll("acme").size(), acme + 1);
}

TEST_F(NamedCacheRegistryTest, SurvivesAProcessCrash) {
  // A child process stores caches and dies without closing anything: no
  // destructor, no flush. Sync writes must already be on disk.
  registry_.reset();
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    auto r = NamedCacheRegistry::Open(Options());
    if (!r.ok()) _exit(2);
    NamedCacheRegistry* registry = r->release();  // never destroyed
    std::vector<std::string> names;
    for (int i = 0; i < 5; ++i) {
      clock_.AdvanceMs(1);  // the child's clock: List orders by create time
      auto c = registry->Create("acme", "llama-3-8b", Tokens(1000, i), NamedCacheExpiry::Ttl(kHour),
                                "crash " + std::to_string(i));
      if (!c.ok()) _exit(3);
      names.push_back(c->name);
    }
    if (!registry->Delete("acme", names[1]).ok()) _exit(4);
    if (!registry->UpdateTtl("acme", names[2], NamedCacheExpiry::Ttl(kDay)).ok()) _exit(5);
    _exit(0);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  ASSERT_EQ(WEXITSTATUS(status), 0);

  Open();
  const auto listed = ListAll("acme", /*with_tokens=*/true);
  ASSERT_EQ(listed.size(), 4u);
  const std::vector<int> survivors = {0, 2, 3, 4};
  for (size_t i = 0; i < listed.size(); ++i) {
    const int k = survivors[i];
    EXPECT_EQ(listed[i].display_name, "crash " + std::to_string(k));
    EXPECT_EQ(listed[i].tokens, Tokens(1000, k));
    EXPECT_EQ(listed[i].create_time_ms, clock_.NowMs() + k + 1);
    EXPECT_EQ(listed[i].expire_time_ms, clock_.NowMs() + (k == 2 ? 5 + kDay : k + 1 + kHour));
  }
}

TEST_F(NamedCacheRegistryTest, ConcurrentCallsAreSafe) {
  // Four tenants create, read, list and delete at once; every outcome is
  // checked after the threads join.
  constexpr int kThreads = 4;
  constexpr int kPerThread = 40;
  std::vector<std::vector<std::string>> kept(kThreads);
  std::vector<int> errors(kThreads, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      const std::string tenant = "tenant-" + std::to_string(t);
      for (int i = 0; i < kPerThread; ++i) {
        auto c = registry_->Create(tenant, "m", Tokens(64, i), NamedCacheExpiry::Ttl(kHour));
        if (!c.ok()) {
          ++errors[t];
          continue;
        }
        auto got = registry_->Get(tenant, c->name);
        if (!got.ok() || got->tokens != Tokens(64, i)) ++errors[t];
        if (!registry_->List(tenant, i % 2 == 0).ok()) ++errors[t];
        if (i % 4 == 0) {
          if (!registry_->Delete(tenant, c->name).ok()) ++errors[t];
        } else {
          kept[t].push_back(c->name);
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  std::set<std::string> all;
  for (int t = 0; t < kThreads; ++t) {
    EXPECT_EQ(errors[t], 0) << "thread " << t;
    std::vector<std::string> listed = Names("tenant-" + std::to_string(t));
    std::sort(listed.begin(), listed.end());
    std::sort(kept[t].begin(), kept[t].end());
    EXPECT_EQ(listed, kept[t]);
    all.insert(kept[t].begin(), kept[t].end());
  }
  EXPECT_EQ(all.size(), size_t{kThreads} * kPerThread * 3 / 4);
}

TEST_F(NamedCacheRegistryTest, CorruptedValueIsReportedNotSkipped) {
  std::vector<NamedCache> caches;
  for (int i = 0; i < 3; ++i) {
    clock_.AdvanceMs(1);
    caches.push_back(Create("acme", Tokens(50, i)));
  }
  const NamedCache other = Create("globex", Tokens(5));
  const std::string victim_key = std::string("acme") + '\0' + caches[1].name;
  const std::string printed_key = "acme\\x00" + caches[1].name;
  const std::string other_key = std::string("globex") + '\0' + other.name;

  const std::vector<std::function<std::string(std::string)>> corruptions = {
      [](std::string v) {  // a flipped bit in the tokens
        v[v.size() - 20] ^= 0x10;
        return v;
      },
      [](std::string v) {  // a flipped bit in the header
        v[3] ^= 0x01;
        return v;
      },
      [](std::string v) { return v.substr(0, v.size() - 3); },  // truncated
      [](std::string) { return std::string("garbage"); },
      [](std::string) { return std::string(); },
      [](std::string v) { return v + "x"; },  // a trailing byte
  };
  std::string original;
  for (size_t i = 0; i <= corruptions.size(); ++i) {
    SCOPED_TRACE("corruption " + std::to_string(i));
    registry_.reset();
    WithRawDb(dir_, [&](rocksdb::DB* db, rocksdb::ColumnFamilyHandle* cf) {
      std::string value;
      ASSERT_TRUE(db->Get(rocksdb::ReadOptions(), cf, victim_key, &value).ok());
      if (original.empty()) original = value;
      std::string bad;
      if (i < corruptions.size()) {
        bad = corruptions[i](original);
      } else {  // a valid value stored under another cache's key
        ASSERT_TRUE(db->Get(rocksdb::ReadOptions(), cf, other_key, &bad).ok());
      }
      ASSERT_TRUE(db->Put(rocksdb::WriteOptions(), cf, victim_key, bad).ok());
    });
    Open();  // one bad value does not stop the registry from opening

    const Status get = registry_->Get("acme", caches[1].name).status();
    EXPECT_TRUE(get.IsCorruption()) << get;
    EXPECT_NE(get.message().find(printed_key), std::string::npos) << get;
    for (bool with_tokens : {false, true}) {
      const Status list = registry_->List("acme", with_tokens).status();
      EXPECT_TRUE(list.IsCorruption()) << list;
      EXPECT_NE(list.message().find(printed_key), std::string::npos) << list;
    }
    EXPECT_TRUE(registry_->UpdateTtl("acme", caches[1].name, NamedCacheExpiry::Ttl(kHour))
                    .status()
                    .IsCorruption());
    // The others still read.
    for (size_t k : {0u, 2u}) {
      auto got = registry_->Get("acme", caches[k].name);
      ASSERT_TRUE(got.ok()) << got.status();
      ExpectSameCache(*got, caches[k]);
    }
    EXPECT_EQ(ListAll("globex").size(), 1u);

    registry_.reset();
    WithRawDb(dir_, [&](rocksdb::DB* db, rocksdb::ColumnFamilyHandle* cf) {
      ASSERT_TRUE(db->Put(rocksdb::WriteOptions(), cf, victim_key, original).ok());
    });
    Open();
    ASSERT_EQ(ListAll("acme", true).size(), 3u);
  }

  // Sweep keeps a corrupt entry (its expiry is unknown); Delete removes it.
  registry_.reset();
  WithRawDb(dir_, [&](rocksdb::DB* db, rocksdb::ColumnFamilyHandle* cf) {
    ASSERT_TRUE(db->Put(rocksdb::WriteOptions(), cf, victim_key, "garbage").ok());
  });
  Open();
  clock_.AdvanceMs(2 * kHour);
  auto swept = registry_->Sweep();
  ASSERT_TRUE(swept.ok()) << swept.status();
  EXPECT_EQ(*swept, 3u);
  EXPECT_TRUE(registry_->List("acme").status().IsCorruption());
  ASSERT_TRUE(registry_->Delete("acme", caches[1].name).ok());
  EXPECT_TRUE(ListAll("acme").empty());
  EXPECT_TRUE(registry_->Get("acme", caches[1].name).status().IsNotFound());
  registry_.reset();
  EXPECT_TRUE(RawKeys(dir_).empty());
}

// A Create retried with the same request id gets the first cache back: no
// second cache is stored (nor billed), also after a reopen.
TEST_F(NamedCacheRegistryTest, CreateRetriedWithTheSameRequestIdReturnsTheFirstCache) {
  const std::vector<int32_t> tokens = Tokens(64);
  auto first =
      registry_->Create("acme", "llama-3-8b", tokens, NamedCacheExpiry::Ttl(kHour), "doc", "req-1");
  ASSERT_TRUE(first.ok()) << first.status();
  clock_.AdvanceMs(10);
  // The retry may even carry other fields: the first call's cache wins.
  auto retry = registry_->Create("acme", "llama-3-8b", Tokens(3, 9),
                                 NamedCacheExpiry::Ttl(2 * kHour), "other", "req-1");
  ASSERT_TRUE(retry.ok()) << retry.status();
  ExpectSameCache(*retry, *first);
  EXPECT_EQ(Names("acme"), std::vector<std::string>{first->name});

  // Another tenant's identical request id is its own.
  auto globex =
      registry_->Create("globex", "llama-3-8b", tokens, NamedCacheExpiry::Ttl(kHour), "", "req-1");
  ASSERT_TRUE(globex.ok()) << globex.status();
  EXPECT_NE(globex->name, first->name);
  // Another request id, or none, makes a new cache.
  auto second =
      registry_->Create("acme", "llama-3-8b", tokens, NamedCacheExpiry::Ttl(kHour), "", "req-2");
  ASSERT_TRUE(second.ok());
  EXPECT_NE(second->name, first->name);
  EXPECT_EQ(ListAll("acme").size(), 2u);

  registry_.reset();
  Open();
  auto after_reopen =
      registry_->Create("acme", "llama-3-8b", tokens, NamedCacheExpiry::Ttl(kHour), "doc", "req-1");
  ASSERT_TRUE(after_reopen.ok()) << after_reopen.status();
  ExpectSameCache(*after_reopen, *first);
  EXPECT_EQ(ListAll("acme").size(), 2u);
}

TEST_F(NamedCacheRegistryTest, ARequestIdIsFreeAgainOnceItsCacheIsDeletedOrSwept) {
  auto first =
      registry_->Create("acme", "llama-3-8b", Tokens(8), NamedCacheExpiry::Ttl(kHour), "", "r");
  ASSERT_TRUE(first.ok());
  ASSERT_TRUE(registry_->Delete("acme", first->name).ok());
  auto second =
      registry_->Create("acme", "llama-3-8b", Tokens(8), NamedCacheExpiry::Ttl(kHour), "", "r");
  ASSERT_TRUE(second.ok());
  EXPECT_NE(second->name, first->name);
  EXPECT_TRUE(registry_->Get("acme", second->name).ok());

  // Expired (not yet swept): a retry makes a new cache, which keeps the id
  // after the old one is swept and across a reopen.
  clock_.AdvanceMs(kHour + 1);
  auto third =
      registry_->Create("acme", "llama-3-8b", Tokens(8), NamedCacheExpiry::Ttl(kHour), "", "r");
  ASSERT_TRUE(third.ok());
  EXPECT_NE(third->name, second->name);
  auto swept = registry_->Sweep();
  ASSERT_TRUE(swept.ok());
  EXPECT_EQ(*swept, 1u);
  registry_.reset();
  Open();
  auto retry =
      registry_->Create("acme", "llama-3-8b", Tokens(8), NamedCacheExpiry::Ttl(kHour), "", "r");
  ASSERT_TRUE(retry.ok());
  EXPECT_EQ(retry->name, third->name);
  EXPECT_EQ(ListAll("acme").size(), 1u);

  // Nothing is left in "ids" for the caches that are gone: only "r" -> third.
  registry_.reset();
  EXPECT_EQ(RawIdCount(dir_), 1u);
  Open();
  auto bad = registry_->Create("acme", "llama-3-8b", Tokens(8), NamedCacheExpiry::Ttl(kHour), "",
                               std::string("a\0b", 3));
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument) << bad.status();
}

// A damaged block (not one bad value) in the registry's database: Open
// refuses, naming the file and what to do; the registry never starts empty.
TEST_F(NamedCacheRegistryTest, ADamagedDatabaseIsRefusedWithWhatToDo) {
  auto c = registry_->Create("acme", "llama-3-8b", Tokens(4000), NamedCacheExpiry::Ttl(kHour),
                             "precious-display-name");
  ASSERT_TRUE(c.ok());
  registry_.reset();
  Open();  // replays the WAL into an SST file
  registry_.reset();
  ASSERT_GE(testing_faults::CorruptSstFilesAt(dir_, "precious-display-name"), 1);
  auto r = NamedCacheRegistry::Open(Options());
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.status().IsCorruption()) << r.status();
  EXPECT_NE(r.status().message().find(".sst"), std::string::npos) << r.status();
  EXPECT_NE(r.status().message().find("move it aside"), std::string::npos) << r.status();
  EXPECT_NE(r.status().message().find(dir_.string()), std::string::npos) << r.status();
}

}  // namespace
}  // namespace kvtier
