// The billing ledger: exact round trips, time ranges, tenants, idempotent
// retries, validation, reopen and corruption on disk.
#include "context/ledger.h"

#include <gtest/gtest.h>
#include <rocksdb/db.h>
#include <unistd.h>

#include <filesystem>
#include <functional>
#include <limits>

#include "tests/tiers/storage_faults.h"

namespace kvtier {
namespace {

namespace fs = std::filesystem;

void ExpectSameRecord(const UsageRecord& a, const UsageRecord& b) {
  EXPECT_EQ(a.request_id, b.request_id);
  EXPECT_EQ(a.tenant, b.tenant);
  EXPECT_EQ(a.model, b.model);
  EXPECT_EQ(a.time_ms, b.time_ms);
  EXPECT_EQ(a.kind, b.kind);
  EXPECT_EQ(a.usage, b.usage);
  EXPECT_EQ(a.cost.input, b.cost.input);
  EXPECT_EQ(a.cost.write_5m, b.cost.write_5m);
  EXPECT_EQ(a.cost.write_1h, b.cost.write_1h);
  EXPECT_EQ(a.cost.read, b.cost.read);
  EXPECT_EQ(a.cost.output, b.cost.output);
  EXPECT_EQ(a.cost.without_cache, b.cost.without_cache);
  EXPECT_EQ(a.cache_name, b.cache_name);
  EXPECT_EQ(a.storage_tokens, b.storage_tokens);
  EXPECT_EQ(a.storage_hours, b.storage_hours);
  EXPECT_EQ(a.storage_cost, b.storage_cost);
}

UsageRecord Request(const std::string& tenant, const std::string& id, int64_t time_ms,
                    uint64_t seed = 1) {
  UsageRecord r;
  r.tenant = tenant;
  r.request_id = id;
  r.model = "llama-3-8b";
  r.time_ms = time_ms;
  r.usage.input_tokens = 100 * seed + 1;
  r.usage.cache_creation_5m = 2048 * seed;
  r.usage.cache_creation_1h = 1024 + seed;
  r.usage.cache_read_input_tokens = 4096 * seed;
  r.usage.output_tokens = 300 + seed;
  r.cost = Price(ModelPrice{}, r.usage);
  return r;
}

UsageRecord Storage(const std::string& tenant, const std::string& id, int64_t time_ms) {
  UsageRecord r;
  r.kind = RecordKind::kStorage;
  r.tenant = tenant;
  r.request_id = id;
  r.model = "llama-3-8b";
  r.time_ms = time_ms;
  r.cache_name = "cachedContents/abc-123";
  r.storage_tokens = 123456;
  r.storage_hours = 1.5;
  r.storage_cost = StorageCharge(ModelPrice{}, r.storage_tokens, r.storage_hours);
  return r;
}

class LedgerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("kvtier_ledger_" + std::to_string(getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    Open();
  }
  void TearDown() override {
    ledger_.reset();
    fs::remove_all(dir_);
  }
  void Open() {
    ledger_.reset();
    LedgerOptions o;
    o.path = dir_.string();
    auto l = Ledger::Open(o);
    ASSERT_TRUE(l.ok()) << l.status();
    ledger_ = std::move(*l);
  }
  std::vector<UsageRecord> ScanAll(const std::string& tenant) {
    auto r = ledger_->Scan(tenant, std::numeric_limits<int64_t>::min(),
                           std::numeric_limits<int64_t>::max());
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : std::vector<UsageRecord>{};
  }

  fs::path dir_;
  std::unique_ptr<Ledger> ledger_;
};

TEST_F(LedgerTest, AppendAndScanBackExactly) {
  const std::vector<UsageRecord> in = {Request("acme", "req-2", 2000, 2),
                                       Storage("acme", "storage/abc/0", 1500),
                                       Request("acme", "req-1", 1000, 1)};
  for (const auto& r : in) {
    bool dup = true;
    ASSERT_TRUE(ledger_->Append(r, &dup).ok());
    EXPECT_FALSE(dup);
  }
  const std::vector<UsageRecord> out = ScanAll("acme");
  ASSERT_EQ(out.size(), 3u);
  ExpectSameRecord(out[0], in[2]);  // time order
  ExpectSameRecord(out[1], in[1]);
  ExpectSameRecord(out[2], in[0]);
}

TEST_F(LedgerTest, TimeRangeIsHalfOpen) {
  for (int64_t t : {-5, 0, 999, 1000, 1001, 1999, 2000, 2001}) {
    ASSERT_TRUE(ledger_->Append(Request("acme", "r" + std::to_string(t), t)).ok());
  }
  // Two requests at the same time come back in request-id order.
  ASSERT_TRUE(ledger_->Append(Request("acme", "a-same", 1000)).ok());
  auto times = [&](int64_t from, int64_t to) {
    auto r = ledger_->Scan("acme", from, to);
    EXPECT_TRUE(r.ok()) << r.status();
    std::vector<std::string> ids;
    for (const auto& rec : *r) ids.push_back(rec.request_id);
    return ids;
  };
  EXPECT_EQ(times(1000, 2000), (std::vector<std::string>{"a-same", "r1000", "r1001", "r1999"}));
  EXPECT_EQ(times(-10, 1), (std::vector<std::string>{"r-5", "r0"}));
  EXPECT_EQ(times(2000, 2001), (std::vector<std::string>{"r2000"}));
  EXPECT_TRUE(times(1500, 1500).empty());
  EXPECT_TRUE(times(2000, 1000).empty());
  EXPECT_TRUE(times(3000, 4000).empty());
}

TEST_F(LedgerTest, OtherTenantsAreInvisible) {
  ASSERT_TRUE(ledger_->Append(Request("acme", "r1", 100)).ok());
  ASSERT_TRUE(ledger_->Append(Request("acme2", "r1", 100)).ok());  // same id, other tenant
  ASSERT_TRUE(ledger_->Append(Request("acm", "r2", 100)).ok());    // a prefix of the name
  ASSERT_TRUE(ledger_->Append(Request("b", "r3", 100)).ok());
  const auto acme = ScanAll("acme");
  ASSERT_EQ(acme.size(), 1u);
  EXPECT_EQ(acme[0].tenant, "acme");
  EXPECT_EQ(acme[0].request_id, "r1");
  EXPECT_EQ(ScanAll("acme2").size(), 1u);
  EXPECT_EQ(ScanAll("acm").size(), 1u);
  EXPECT_TRUE(ScanAll("nobody").empty());
  // A tenant name with a NUL would reach into another tenant's keys.
  EXPECT_EQ(ledger_->Scan(std::string("acme\0", 5), 0, 1000).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(ledger_->Scan("", 0, 1000).status().code(), StatusCode::kInvalidArgument);
}

TEST_F(LedgerTest, RetryIsRecordedOnceAndKeepsTheFirstNumbers) {
  const UsageRecord first = Request("acme", "req-7", 1000, 1);
  bool dup = true;
  ASSERT_TRUE(ledger_->Append(first, &dup).ok());
  EXPECT_FALSE(dup);
  // The retry finished later, with other numbers.
  UsageRecord retry = Request("acme", "req-7", 5000, 9);
  ASSERT_TRUE(ledger_->Append(retry, &dup).ok());
  EXPECT_TRUE(dup);
  ASSERT_TRUE(ledger_->Append(first, &dup).ok());
  EXPECT_TRUE(dup);
  const auto all = ScanAll("acme");
  ASSERT_EQ(all.size(), 1u);
  ExpectSameRecord(all[0], first);

  // Also across a reopen, and within one batch.
  Open();
  ASSERT_TRUE(ledger_->Append(retry, &dup).ok());
  EXPECT_TRUE(dup);
  std::vector<bool> dups;
  const std::vector<UsageRecord> batch = {Request("acme", "req-8", 10), retry,
                                          Request("acme", "req-8", 20, 3)};
  ASSERT_TRUE(ledger_->AppendBatch(batch, &dups).ok());
  EXPECT_EQ(dups, (std::vector<bool>{false, true, true}));
  const auto after = ScanAll("acme");
  ASSERT_EQ(after.size(), 2u);
  ExpectSameRecord(after[0], batch[0]);
  ExpectSameRecord(after[1], first);
}

TEST_F(LedgerTest, InvalidRecordsAreRefusedAndNothingIsWritten) {
  std::vector<UsageRecord> bad;
  auto with = [&](auto change) {
    UsageRecord r = Request("acme", "ok-id", 100);
    change(r);
    bad.push_back(r);
  };
  with([](UsageRecord& r) { r.tenant.clear(); });
  with([](UsageRecord& r) { r.request_id.clear(); });
  with([](UsageRecord& r) { r.model.clear(); });
  with([](UsageRecord& r) { r.tenant = std::string(257, 'a'); });
  with([](UsageRecord& r) { r.request_id = std::string(257, 'a'); });
  with([](UsageRecord& r) { r.model = std::string(257, 'm'); });
  with([](UsageRecord& r) { r.tenant = std::string("ac\0me", 5); });
  with([](UsageRecord& r) { r.request_id = "line\nbreak"; });
  with([](UsageRecord& r) { r.model = "caf\xc3\xa9"; });
  with([](UsageRecord& r) { r.storage_tokens = 5; });  // storage fields on a request
  with([](UsageRecord& r) {                            // a storage record with usage
    r.kind = RecordKind::kStorage;
    r.cache_name = "c";
  });
  with([](UsageRecord& r) {  // a storage record without a cache name
    r = Storage("acme", "ok-id", 100);
    r.cache_name.clear();
  });
  with([](UsageRecord& r) {
    r = Storage("acme", "ok-id", 100);
    r.storage_hours = -1;
  });
  with([](UsageRecord& r) {
    r = Storage("acme", "ok-id", 100);
    r.storage_hours = std::numeric_limits<double>::quiet_NaN();
  });
  with([](UsageRecord& r) { r.kind = static_cast<RecordKind>(7); });
  for (size_t i = 0; i < bad.size(); ++i) {
    bool dup = true;
    Status s = ledger_->Append(bad[i], &dup);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << "case " << i << ": " << s;
  }
  // A batch with one bad record writes none of them.
  const std::vector<UsageRecord> batch = {Request("acme", "good", 1), bad[0]};
  EXPECT_EQ(ledger_->AppendBatch(batch).code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(ScanAll("acme").empty());
  // Exactly 256 bytes is allowed, and the refused id was never recorded.
  EXPECT_TRUE(ledger_->Append(Request(std::string(256, 't'), std::string(256, 'i'), 1)).ok());
  bool dup = true;
  ASSERT_TRUE(ledger_->Append(Request("acme", "ok-id", 100), &dup).ok());
  EXPECT_FALSE(dup);
}

TEST_F(LedgerTest, SurvivesCloseAndReopen) {
  std::vector<UsageRecord> in;
  for (int i = 0; i < 50; ++i) {
    in.push_back(i % 10 == 9 ? Storage("acme", "s" + std::to_string(i), 1000 + i)
                             : Request("acme", "r" + std::to_string(i), 1000 + i, i));
    ASSERT_TRUE(ledger_->Append(in.back()).ok());
  }
  ledger_.reset();
  Open();
  auto out = ScanAll("acme");
  ASSERT_EQ(out.size(), in.size());
  for (size_t i = 0; i < in.size(); ++i) ExpectSameRecord(out[i], in[i]);
  // And appends keep working after the reopen.
  ASSERT_TRUE(ledger_->Append(Request("acme", "later", 99999)).ok());
  EXPECT_EQ(ScanAll("acme").size(), in.size() + 1);
}

TEST_F(LedgerTest, UnsyncedLedgerIsDurableAfterFlushAndClose) {
  ledger_.reset();
  LedgerOptions o;
  o.path = dir_.string();
  o.sync = false;
  auto l = Ledger::Open(o);
  ASSERT_TRUE(l.ok()) << l.status();
  ASSERT_TRUE((*l)->Append(Request("acme", "a", 1)).ok());
  ASSERT_TRUE((*l)->Flush().ok());
  ASSERT_TRUE((*l)->Append(Request("acme", "b", 2)).ok());
  l->reset();
  Open();
  EXPECT_EQ(ScanAll("acme").size(), 2u);
}

TEST_F(LedgerTest, OpenRefusesAnEmptyPath) {
  EXPECT_EQ(Ledger::Open(LedgerOptions{}).status().code(), StatusCode::kInvalidArgument);
}

// Rewrites the value of the `index`-th key of the records family, with the
// Ledger closed.
void RewriteRecord(const fs::path& dir, size_t index,
                   const std::function<std::string(std::string)>& change) {
  std::vector<rocksdb::ColumnFamilyDescriptor> families = {
      {rocksdb::kDefaultColumnFamilyName, {}}, {"records", {}}, {"ids", {}}};
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* db = nullptr;
  ASSERT_TRUE(rocksdb::DB::Open(rocksdb::DBOptions(), dir.string(), families, &handles, &db).ok());
  {
    std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(rocksdb::ReadOptions(), handles[1]));
    it->SeekToFirst();
    for (size_t i = 0; i < index && it->Valid(); ++i) it->Next();
    ASSERT_TRUE(it->Valid());
    const std::string key = it->key().ToString();
    const std::string value = change(it->value().ToString());
    it.reset();
    ASSERT_TRUE(db->Put(rocksdb::WriteOptions(), handles[1], key, value).ok());
  }
  for (auto* h : handles) ASSERT_TRUE(db->DestroyColumnFamilyHandle(h).ok());
  ASSERT_TRUE(db->Close().ok());
  delete db;
}

TEST_F(LedgerTest, CorruptedRecordIsReportedNotSkipped) {
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(ledger_->Append(Request("acme", "r" + std::to_string(i), 100 + i)).ok());
  }
  const std::vector<std::function<std::string(std::string)>> corruptions = {
      [](std::string v) {  // a flipped bit
        v[v.size() / 2] ^= 0x10;
        return v;
      },
      [](std::string v) { return v.substr(0, v.size() - 3); },  // truncated
      [](std::string) { return std::string("garbage"); },
      [](std::string v) { return v + "x"; },  // trailing byte
  };
  for (size_t c = 0; c < corruptions.size(); ++c) {
    SCOPED_TRACE("corruption " + std::to_string(c));
    ledger_.reset();
    std::string original;
    RewriteRecord(dir_, 1, [&](std::string v) {
      original = v;
      return corruptions[c](v);
    });
    Open();
    auto r = ledger_->Scan("acme", 0, 1000);
    ASSERT_FALSE(r.ok());
    EXPECT_TRUE(r.status().IsCorruption()) << r.status();
    // The records before it still read; the range containing it does not.
    auto before = ledger_->Scan("acme", 0, 101);
    ASSERT_TRUE(before.ok()) << before.status();
    EXPECT_EQ(before->size(), 1u);
    EXPECT_TRUE(ledger_->Scan("acme", 101, 102).status().IsCorruption());
    ledger_.reset();
    RewriteRecord(dir_, 1, [&](std::string) { return original; });
    Open();
    ASSERT_EQ(ScanAll("acme").size(), 3u);
  }
  // A valid record stored under another record's key is corruption too.
  ledger_.reset();
  std::string first;
  RewriteRecord(dir_, 0, [&](std::string v) {
    first = v;
    return v;
  });
  RewriteRecord(dir_, 2, [&](std::string) { return first; });
  Open();
  EXPECT_TRUE(ledger_->Scan("acme", 0, 1000).status().IsCorruption());
}

// A damaged block in the ledger's database: Open refuses to start on it,
// naming the damaged file and what the operator can do, and changes nothing.
TEST_F(LedgerTest, ADamagedLedgerIsRefusedWithTheFileAndWhatToDo) {
  for (int i = 0; i < 20; ++i) {
    ASSERT_TRUE(ledger_->Append(Request("acme", "billing-req-" + std::to_string(i), 100 + i)).ok());
  }
  ledger_.reset();
  Open();  // replays the WAL into an SST file
  ledger_.reset();
  ASSERT_GE(testing_faults::CorruptSstFilesAt(dir_, "billing-req-1"), 1);
  LedgerOptions o;
  o.path = dir_.string();
  auto l = Ledger::Open(o);
  ASSERT_FALSE(l.ok()) << "a damaged ledger must not open";
  EXPECT_TRUE(l.status().IsCorruption()) << l.status();
  EXPECT_NE(l.status().message().find(".sst"), std::string::npos) << l.status();
  EXPECT_NE(l.status().message().find("restore"), std::string::npos) << l.status();
  EXPECT_NE(l.status().message().find(dir_.string()), std::string::npos) << l.status();
  // Refused again, and not repaired behind the operator's back.
  EXPECT_TRUE(Ledger::Open(o).status().IsCorruption());
}

}  // namespace
}  // namespace kvtier
