// Fuzzes the RocksDB tier's meta record codec and its recovery
// (tiers/rocks/rocks_tier.h) through the public API: the input describes the
// records of a database, written with RocksDB directly, which OpenRocksTier
// then opens and Recover scans.
//
// Input: entries of 8 bytes (key, kind, expiry, length, payload seed, raw
// length), each a meta record (well formed with a right or wrong checksum,
// or raw input bytes) and usually its payload. Whatever the records hold,
// Open and Recover succeed; an announced key is live and reads back as a
// payload written under it (or as a clean miss or kCorruption); and the tier
// then takes a new block, erases one, and after reopening still holds the
// first and not the second.
#include <rocksdb/db.h>

#include <cstring>
#include <filesystem>
#include <map>
#include <set>

#include "common/checksum.h"
#include "common/clock.h"
#include "tests/fuzz/fuzz_util.h"
#include "tests/fuzz/no_fallocate.h"
#include "tiers/rocks/rocks_tier.h"

namespace kvtier {
namespace {

constexpr int kKeys = 6;
constexpr int64_t kNow = 1'700'000'000'000;
constexpr uint32_t kMetaMagic = 0x4b565231;  // "KVR1"

BlockKey KeyOf(int k) { return BlockKey{0x2000u + static_cast<uint64_t>(k), 91u * k}; }

void PutU64BE(std::string* s, uint64_t v) {
  for (int i = 0; i < 8; ++i) s->push_back(static_cast<char>(v >> (56 - 8 * i)));
}

std::span<const std::byte> Span(const std::string& s) {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

class CollectSink final : public IndexSink {
 public:
  void Announce(const BlockKey& key, uint64_t bytes, int64_t expiry_ms) override {
    FUZZ_CHECK(expiry_ms > kNow);
    FUZZ_CHECK(announced.emplace(key, bytes).second);
  }
  std::map<BlockKey, uint64_t> announced;
};

std::unique_ptr<Tier> MustOpen(const RocksTierOptions& o) {
  Result<std::unique_ptr<Tier>> t = OpenRocksTier(o);
  if (!t.ok()) std::fprintf(stderr, "open: %s\n", t.status().ToString().c_str());
  FUZZ_CHECK(t.ok());
  return std::move(*t);
}

void Run(fuzz::FuzzReader in) {
  const std::string dir = fuzz::ScratchDir() + "/rocks";
  std::filesystem::remove_all(dir);
  std::map<BlockKey, std::set<std::string>> written;  // payloads stored, by key
  {
    rocksdb::Options options;
    options.create_if_missing = true;
    options.create_missing_column_families = true;
    // Opening starts 16 table-loading threads by default: most of an input's
    // time under ASan, for a database that holds no table yet.
    options.max_file_opening_threads = 1;
    std::vector<rocksdb::ColumnFamilyDescriptor> families = {
        {rocksdb::kDefaultColumnFamilyName, {}}, {"meta", {}}};
    std::vector<rocksdb::ColumnFamilyHandle*> handles;
    rocksdb::DB* db = nullptr;
    FUZZ_CHECK(rocksdb::DB::Open(options, dir, families, &handles, &db).ok());
    int index = 0;
    while (in.remaining() >= 8 && index < 32) {
      ++index;
      const uint8_t key_bits = in.U8(), kind = in.U8(), expiry_bits = in.U8();
      const uint16_t length = in.U16() % 2048;
      const uint8_t seed = in.U8(), raw_length = in.U8();
      const uint8_t extra = in.U8();
      const BlockKey key = KeyOf(key_bits % kKeys);
      std::string meta_key = key.ToByteString();
      if (key_bits >= 240) meta_key.resize(key_bits % 20);  // a key of the wrong size
      const int64_t expiry = expiry_bits < 128   ? kNoExpiry
                             : expiry_bits < 192 ? kNow - 1
                                                 : kNow + expiry_bits;
      std::string payload(length, '\0');
      for (size_t i = 0; i < payload.size(); ++i) payload[i] = static_cast<char>(seed + i * 13);
      std::string meta;
      switch (kind % 4) {
        case 0:  // raw bytes
          meta = in.Bytes(raw_length % 64);
          break;
        case 1:  // the wrong version or magic
          PutU64BE(&meta, (static_cast<uint64_t>(kMetaMagic ^ extra) << 32) | extra);
          [[fallthrough]];
        default:
          if (meta.empty()) PutU64BE(&meta, (static_cast<uint64_t>(kMetaMagic) << 32) | 1u);
          PutU64BE(&meta, static_cast<uint64_t>(expiry));
          // Sometimes a size that disagrees with the payload.
          PutU64BE(&meta, kind % 4 == 3 && extra < 64 ? length + extra + 1 : length);
          PutU64BE(&meta, Checksum64(Span(payload)) ^ (extra < 32 ? extra : 0));
          break;
      }
      FUZZ_CHECK(db->Put(rocksdb::WriteOptions(), handles[1], meta_key, meta).ok());
      if (extra % 8 != 0) {  // usually the payload too
        std::string data_key = key.ToByteString();
        PutU64BE(&data_key, static_cast<uint64_t>(expiry));
        FUZZ_CHECK(db->Put(rocksdb::WriteOptions(), handles[0], data_key, payload).ok());
        written[key].insert(payload);
      }
    }
    for (auto* h : handles) FUZZ_CHECK(db->DestroyColumnFamilyHandle(h).ok());
    FUZZ_CHECK(db->Close().ok());
    delete db;
  }

  ManualClock clock(kNow);
  RocksTierOptions o;
  o.path = dir;
  o.capacity_bytes = 1 << 20;
  o.max_block_bytes = 64 << 10;
  o.read_bytes_per_s = 1e9;
  o.write_bytes_per_s = 1e9;
  o.clock = &clock;
  std::unique_ptr<Tier> tier = MustOpen(o);
  CollectSink sink;
  FUZZ_CHECK(tier->Recover(sink).ok());
  std::string buf(4096, '\0');
  std::span<std::byte> dest(reinterpret_cast<std::byte*>(buf.data()), buf.size());
  for (int k = 0; k < kKeys; ++k) {
    const BlockKey key = KeyOf(k);
    Result<uint64_t> n = ReadOne(*tier, key, dest);
    if (!n.ok()) {
      FUZZ_CHECK(n.status().IsNotFound() || n.status().IsCorruption() ||
                 n.status().IsResourceExhausted());
      continue;
    }
    auto it = sink.announced.find(key);
    FUZZ_CHECK(it != sink.announced.end());
    FUZZ_CHECK(*n == it->second);
    FUZZ_CHECK(written[key].count(buf.substr(0, *n)) == 1);
  }
  const BlockKey fresh{0xf00d, 2};
  const std::string block(100, 'y');
  const Status w = WriteOne(*tier, fresh, Span(block));
  FUZZ_CHECK(w.ok() || w.IsResourceExhausted());
  const BlockKey gone = KeyOf(static_cast<int>(written.size()) % kKeys);
  FUZZ_CHECK(tier->Erase(std::span(&gone, 1)).ok());
  tier.reset();
  tier = MustOpen(o);
  Result<uint64_t> n = ReadOne(*tier, fresh, dest);
  if (w.ok()) {
    FUZZ_CHECK(n.ok() && buf.substr(0, *n) == block);
  } else {
    FUZZ_CHECK(!n.ok() && n.status().IsNotFound());
  }
  Result<uint64_t> erased = ReadOne(*tier, gone, dest);
  FUZZ_CHECK(!erased.ok() && erased.status().IsNotFound());
}

}  // namespace
}  // namespace kvtier

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  kvtier::Run(kvtier::fuzz::FuzzReader(data, size));
  return 0;
}
