// Fuzzes the record codecs of the ledger and the named-cache registry
// (context/ledger.h, context/named_caches.h) through their public API: the input
// describes stored values, written with RocksDB directly into the store's
// column family, and the store then opens and reads them. The first byte
// picks the store (even: ledger, odd: named caches).
//
// Values are well-formed encodings of input fields (checksummed with
// RecordWriter), sometimes cut short, extended or given another version, or
// raw input bytes with a valid checksum. Whatever is stored, Open succeeds, a
// read either answers kCorruption or yields records that encode back to
// exactly the bytes stored under their key, and the store still takes a new
// record afterwards.
#include <rocksdb/db.h>

#include <filesystem>
#include <map>

#include "common/clock.h"
#include "context/ledger.h"
#include "context/named_caches.h"
#include "context/record_codec.h"
#include "tests/fuzz/fuzz_util.h"
#include "tests/fuzz/no_fallocate.h"

namespace kvtier {
namespace {

constexpr int64_t kNow = 1'700'000'000'000;
const char* const kTenants[] = {"alice", "bob", "a"};

// Writes `values` (key -> value) into `family` of a new database at `dir`.
void WriteStore(const std::string& dir, const std::vector<std::string>& families,
                const std::string& family, const std::map<std::string, std::string>& values) {
  rocksdb::Options options;
  options.create_if_missing = true;
  options.create_missing_column_families = true;
  // Opening starts 16 table-loading threads by default: most of an input's
  // time under ASan, for a database that holds no table yet.
  options.max_file_opening_threads = 1;
  std::vector<rocksdb::ColumnFamilyDescriptor> descriptors = {
      {rocksdb::kDefaultColumnFamilyName, {}}};
  for (const std::string& f : families) descriptors.push_back({f, {}});
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* db = nullptr;
  FUZZ_CHECK(rocksdb::DB::Open(options, dir, descriptors, &handles, &db).ok());
  size_t at = 0;
  while (families[at] != family) ++at;
  for (const auto& [k, v] : values) {
    FUZZ_CHECK(db->Put(rocksdb::WriteOptions(), handles[at + 1], k, v).ok());
  }
  for (auto* h : handles) FUZZ_CHECK(db->DestroyColumnFamilyHandle(h).ok());
  FUZZ_CHECK(db->Close().ok());
  delete db;
}

std::string Field(fuzz::FuzzReader& in, const char* fallback) {
  const uint8_t n = in.U8();
  return n < 200 ? std::string(fallback) : in.Bytes(n % 24);
}

// How a value is spoiled: 0..3 not at all; then a byte cut, a byte added,
// another version; the body replaced by raw input.
std::string Seal(RecordWriter w, uint8_t spoil, fuzz::FuzzReader& in) {
  std::string v = std::move(w).Finish();
  if (spoil < 4 * 32) return v;
  std::string body = v.substr(0, v.size() - 8);
  switch (spoil % 4) {
    case 0:
      body.pop_back();
      break;
    case 1:
      body.push_back('\x01');
      break;
    case 2:
      body[0] = static_cast<char>(spoil);
      break;
    default:
      body = in.Bytes(in.U8());
      break;
  }
  RecordWriter again;
  for (char c : body) again.PutU8(static_cast<uint8_t>(c));
  return std::move(again).Finish();
}

void AppendTimeKey(std::string* key, int64_t time_ms) {
  const uint64_t t = static_cast<uint64_t>(time_ms) ^ (uint64_t{1} << 63);
  for (int i = 0; i < 8; ++i) key->push_back(static_cast<char>(t >> (56 - 8 * i)));
}

std::string EncodeUsage(const UsageRecord& r) {
  RecordWriter e;
  e.PutU8(1);
  e.PutU8(static_cast<uint8_t>(r.kind));
  e.PutString(r.request_id);
  e.PutString(r.tenant);
  e.PutString(r.model);
  e.PutI64(r.time_ms);
  e.PutU64(r.usage.input_tokens);
  e.PutU64(r.usage.cache_creation_5m);
  e.PutU64(r.usage.cache_creation_1h);
  e.PutU64(r.usage.cache_read_input_tokens);
  e.PutU64(r.usage.output_tokens);
  e.PutI64(r.cost.input);
  e.PutI64(r.cost.write_5m);
  e.PutI64(r.cost.write_1h);
  e.PutI64(r.cost.read);
  e.PutI64(r.cost.output);
  e.PutI64(r.cost.without_cache);
  e.PutString(r.cache_name);
  e.PutU64(r.storage_tokens);
  e.PutF64(r.storage_hours);
  e.PutI64(r.storage_cost);
  return std::move(e).Finish();
}

void FuzzLedger(fuzz::FuzzReader& in) {
  const std::string dir = fuzz::ScratchDir() + "/ledger";
  std::filesystem::remove_all(dir);
  std::map<std::string, std::string> values;
  for (int i = 0; i < 16 && in.remaining() > 4; ++i) {
    const std::string tenant = kTenants[in.U8() % 3];
    const std::string request_id = Field(in, ("r" + std::to_string(i)).c_str());
    const int64_t time_ms = kNow + static_cast<int8_t>(in.U8()) * 1000;
    const uint8_t spoil = in.U8();
    RecordWriter e;
    e.PutU8(1);
    e.PutU8(in.U8() % 3);  // kind; 2 is unknown
    e.PutString(request_id);
    e.PutString(spoil % 32 == 5 ? std::string("mallory") : tenant);  // another tenant's value
    e.PutString(Field(in, "model"));
    e.PutI64(time_ms);
    for (int n = 0; n < 11; ++n) e.PutU64(in.U8() < 128 ? in.U8() : in.U64());
    e.PutString(Field(in, ""));
    e.PutU64(in.U16());
    e.PutF64(in.U8() * 0.5);
    e.PutI64(static_cast<int64_t>(in.U32()));
    std::string key = tenant;
    key.push_back('\0');
    AppendTimeKey(&key, time_ms);
    key += request_id;
    values[key] = Seal(std::move(e), spoil, in);
  }
  WriteStore(dir, {"records", "ids"}, "records", values);
  LedgerOptions o;
  o.path = dir;
  o.sync = false;
  Result<std::unique_ptr<Ledger>> ledger = Ledger::Open(o);
  FUZZ_CHECK(ledger.ok());
  for (const char* tenant : kTenants) {
    Result<std::vector<UsageRecord>> records =
        (*ledger)->Scan(tenant, std::numeric_limits<int64_t>::min(), kNow + 1'000'000);
    if (!records.ok()) {
      FUZZ_CHECK(records.status().IsCorruption());
      continue;
    }
    for (const UsageRecord& r : *records) {
      FUZZ_CHECK(r.tenant == tenant);
      std::string key = r.tenant;
      key.push_back('\0');
      AppendTimeKey(&key, r.time_ms);
      key += r.request_id;
      auto it = values.find(key);
      FUZZ_CHECK(it != values.end());
      FUZZ_CHECK(EncodeUsage(r) == it->second);
    }
  }
  UsageRecord fresh;
  fresh.tenant = "alice";
  fresh.request_id = "fresh";
  fresh.model = "m";
  fresh.time_ms = kNow;
  FUZZ_CHECK((*ledger)->Append(fresh).ok());
}

std::string EncodeCache(const NamedCache& c) {
  RecordWriter e;
  e.PutU8(1);
  e.PutString(c.tenant);
  e.PutString(c.name);
  e.PutString(c.model);
  e.PutString(c.display_name);
  e.PutI64(c.create_time_ms);
  e.PutI64(c.expire_time_ms);
  e.PutI64(c.ttl_ms);
  e.PutU32(static_cast<uint32_t>(c.tokens.size()));
  for (int32_t t : c.tokens) e.PutU32(static_cast<uint32_t>(t));
  return std::move(e).Finish();
}

std::string CacheName(int i) {
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016x", i);
  return std::string(kNamedCachePrefix) + hex;
}

void FuzzNamedCaches(fuzz::FuzzReader& in) {
  const std::string dir = fuzz::ScratchDir() + "/named";
  std::filesystem::remove_all(dir);
  std::map<std::string, std::string> values;
  std::vector<std::pair<std::string, std::string>> names;  // tenant, name
  for (int i = 0; i < 16 && in.remaining() > 4; ++i) {
    const std::string tenant = kTenants[in.U8() % 3];
    const std::string name = in.U8() < 240 ? CacheName(i) : in.Bytes(8);
    const uint8_t spoil = in.U8();
    RecordWriter e;
    e.PutU8(1);
    e.PutString(tenant);
    e.PutString(name);
    e.PutString(Field(in, "model"));
    e.PutString(Field(in, ""));
    e.PutI64(kNow - 1000);
    e.PutI64(kNow + static_cast<int8_t>(in.U8()) * 1000);  // some have expired
    e.PutI64(in.U8() < 128 ? 0 : 60'000);
    const uint8_t tokens = in.U8() % 16;
    // Sometimes a count that disagrees with the tokens that follow.
    e.PutU32(spoil % 32 == 7 ? tokens + 1 : tokens);
    for (int t = 0; t < tokens; ++t) e.PutU32(in.U8() < 250 ? in.U8() : 0x80000000u);
    std::string key = tenant;
    key.push_back('\0');
    key += name;
    values[key] = Seal(std::move(e), spoil, in);
    names.emplace_back(tenant, name);
  }
  WriteStore(dir, {"caches"}, "caches", values);
  ManualClock clock(kNow);
  NamedCacheOptions o;
  o.path = dir;
  o.clock = &clock;
  o.sync = false;
  Result<std::unique_ptr<NamedCacheRegistry>> reg = NamedCacheRegistry::Open(o);
  FUZZ_CHECK(reg.ok());
  for (const auto& [tenant, name] : names) {
    Result<NamedCache> c = (*reg)->Get(tenant, name);
    if (!c.ok()) {
      FUZZ_CHECK(c.status().IsCorruption() || c.status().IsNotFound() ||
                 c.status().code() == StatusCode::kInvalidArgument);
      continue;
    }
    FUZZ_CHECK(c->expire_time_ms > kNow);
    FUZZ_CHECK(c->token_count == c->tokens.size());
    for (int32_t t : c->tokens) FUZZ_CHECK(t >= 0);
    FUZZ_CHECK(EncodeCache(*c) == values.at(tenant + std::string(1, '\0') + name));
  }
  for (const char* tenant : kTenants) {
    for (bool with_tokens : {false, true}) {
      Result<std::vector<NamedCache>> list = (*reg)->List(tenant, with_tokens);
      if (!list.ok()) {
        FUZZ_CHECK(list.status().IsCorruption());
        continue;
      }
      for (const NamedCache& c : *list) {
        FUZZ_CHECK(c.expire_time_ms > kNow);
        if (with_tokens) FUZZ_CHECK(c.tokens.size() == c.token_count);
      }
    }
  }
  const std::vector<int32_t> tokens = {1, 2, 3};
  Result<NamedCache> made =
      (*reg)->Create("bob", "model", tokens, NamedCacheExpiry::Ttl(kMinNamedCacheTtlMs));
  FUZZ_CHECK(made.ok() || made.status().IsResourceExhausted());
}

}  // namespace
}  // namespace kvtier

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  kvtier::fuzz::FuzzReader in(data, size);
  if (in.U8() % 2 == 0) {
    kvtier::FuzzLedger(in);
  } else {
    kvtier::FuzzNamedCaches(in);
  }
  return 0;
}
