// Fuzzes the flash tier's record header decoder and recovery scan
// (tiers/flash/flash_tier.h) through its public API: the input describes a
// log, which is written to a file, and OpenFlashTier recovers it.
//
// Input: a geometry byte (regions, region size), then records of 12 bytes
// each (region, epoch, seq, key, payload length, expiry, flags, damage); each
// is laid out as the tier writes it (a 4 KiB header page, checksummed, then
// the payload) at the end of its region's chain. Damage flips a byte of the
// header or the payload, or overwrites the page with the next input bytes.
//
// Whatever the file holds, Open succeeds; every key it announces reads back
// as a payload that a valid, live record of that key held (or, when the
// stored payload was damaged, as kCorruption), every other key is a miss;
// and the recovered tier takes a new block, erases one, and after reopening
// still reads the new block and not the erased one.
#include <cstring>
#include <filesystem>
#include <map>
#include <set>
#include <vector>

#include "common/checksum.h"
#include "common/clock.h"
#include "tests/fuzz/fuzz_util.h"
#include "tiers/flash/flash_tier.h"

namespace kvtier {
namespace {

constexpr uint64_t kPage = 4096;
constexpr uint64_t kMagic = 0x3148534c4654564bull;  // "KVTFLSH1"
constexpr uint32_t kErased = 1;
constexpr int kKeys = 6;
constexpr int64_t kNow = 1'700'000'000'000;

// The tier's on-device header (tiers/flash/record_format.h, RecordHeader).
struct Header {
  uint64_t magic = kMagic;
  uint32_t version = 1;
  uint32_t flags = 0;
  uint64_t region_bytes = 0;
  uint64_t epoch = 0;
  uint64_t seq = 0;
  uint64_t key_hi = 0;
  uint64_t key_lo = 0;
  uint64_t payload_bytes = 0;
  int64_t expiry_ms = kNoExpiry;
  uint64_t payload_checksum = 0;
  uint64_t header_checksum = 0;
};
static_assert(sizeof(Header) == 88);

BlockKey KeyOf(int k) { return BlockKey{0x1000u + static_cast<uint64_t>(k), 77u * k}; }

std::span<const std::byte> Span(const std::string& s) {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

class CollectSink final : public IndexSink {
 public:
  void Announce(const BlockKey& key, uint64_t bytes, int64_t expiry_ms) override {
    FUZZ_CHECK(bytes > 0);
    FUZZ_CHECK(expiry_ms > kNow);
    FUZZ_CHECK(announced.emplace(key, bytes).second);  // each key once
  }
  std::map<BlockKey, uint64_t> announced;
};

FlashTierOptions Options(const std::string& path, uint64_t region_bytes, uint64_t regions,
                         Clock* clock) {
  FlashTierOptions o;
  o.path = path;
  o.region_bytes = region_bytes;
  o.device_bytes = region_bytes * regions;
  o.capacity_bytes = region_bytes * (regions - 1);
  o.max_block_bytes = region_bytes - kPage;
  o.queue_depth = 2;
  o.staging_bytes = region_bytes;
  o.read_slot_bytes = region_bytes;
  o.preallocate = false;
  o.read_bytes_per_s = 1e9;
  o.write_bytes_per_s = 1e9;
  o.clock = clock;
  return o;
}

std::unique_ptr<Tier> MustOpen(const FlashTierOptions& o) {
  Result<std::unique_ptr<Tier>> t = OpenFlashTier(o);
  if (!t.ok()) std::fprintf(stderr, "open: %s\n", t.status().ToString().c_str());
  FUZZ_CHECK(t.ok());
  return std::move(*t);
}

void Run(fuzz::FuzzReader in) {
  const uint8_t geometry = in.U8();
  const uint64_t regions = 2 + geometry % 3;
  const uint64_t region_bytes = kPage * (2 + geometry / 3 % 8);
  std::string log(regions * region_bytes, '\0');
  std::vector<uint64_t> region_end(regions, 0), region_epoch(regions, 0);
  for (uint64_t r = 0; r < regions; ++r) region_epoch[r] = 1 + r;
  // Payloads a read may return, by key: those of valid, unerased, unexpired
  // records (a damaged payload must read as kCorruption, never as bytes).
  std::map<BlockKey, std::set<std::string>> allowed;
  // Keys with a valid header behind the end of their region's chain. Known
  // bug (docs/fuzzing.md, "Known findings"): when the tier reuses such a
  // region under an epoch equal to theirs, the chain runs on into them after
  // a restart and they come back, even if erased meanwhile; so the erase
  // check below skips these keys until the flash tier ends its chains.
  std::set<BlockKey> hidden;
  std::vector<bool> chain_ended(regions, false);
  int index = 0;
  while (in.remaining() >= 12 && index < 64) {
    ++index;
    const uint64_t r = in.U8() % regions;
    const uint8_t epoch_bits = in.U8();
    const uint64_t seq = in.U8();
    const int k = in.U8() % kKeys;
    const uint64_t pages_left = (region_bytes - region_end[r]) / kPage;
    const uint16_t len_bits = in.U16();
    const uint8_t expiry_bits = in.U8();
    const uint8_t flags = in.U8();
    const uint8_t damage = in.U8();
    const uint16_t where = in.U16();
    const uint8_t junk = in.U8();
    if (pages_left < 2) continue;
    Header h;
    h.region_bytes = region_bytes;
    // Mostly the region's epoch; sometimes another (which ends its chain).
    h.epoch = epoch_bits < 224 ? region_epoch[r] : epoch_bits;
    h.seq = seq;
    h.key_hi = KeyOf(k).hi;
    h.key_lo = KeyOf(k).lo;
    h.payload_bytes = len_bits % ((pages_left - 1) * kPage + 1);  // may be 0: ends the chain
    h.expiry_ms = expiry_bits < 128 ? kNoExpiry : expiry_bits < 192 ? kNow - 1 : kNow + 1000;
    h.flags = flags % 4 == 0 ? kErased : 0;
    std::string payload(h.payload_bytes, '\0');
    for (size_t i = 0; i < payload.size(); ++i) {
      payload[i] = static_cast<char>(index * 131 + i * 7 + junk);
    }
    h.payload_checksum = Checksum64(Span(payload));
    h.header_checksum =
        Checksum64(std::as_bytes(std::span(&h, 1)).first(offsetof(Header, header_checksum)));
    const uint64_t off = r * region_bytes + region_end[r];
    std::memcpy(log.data() + off, &h, sizeof h);
    std::memcpy(log.data() + off + kPage, payload.data(), payload.size());
    bool valid = true;
    switch (damage % 8) {
      case 0:  // a flipped header byte: the header checksum no longer matches
        log[off + where % sizeof h] ^= 0x10;
        valid = false;
        break;
      case 1:  // a flipped payload byte: a read must answer kCorruption
        if (!payload.empty()) log[off + kPage + where % payload.size()] ^= 0x01;
        break;
      case 2: {  // the page overwritten with input bytes
        const std::string raw = in.Bytes(where % 128);
        std::memcpy(log.data() + off, raw.data(), raw.size());
        valid = std::memcmp(log.data() + off, &h, sizeof h) == 0;
        break;
      }
      default:
        break;
    }
    if (valid && !(h.flags & kErased) && h.expiry_ms > kNow) {
      allowed[KeyOf(k)].insert(payload);
    }
    if (valid && chain_ended[r]) hidden.insert(KeyOf(k));
    if (!valid || h.epoch != region_epoch[r] || h.payload_bytes == 0) chain_ended[r] = true;
    region_end[r] += kPage + (h.payload_bytes + kPage - 1) / kPage * kPage;
  }

  const std::string path = fuzz::ScratchDir() + "/flash.log";
  fuzz::WriteFile(path, log);
  ManualClock clock(kNow);
  const FlashTierOptions o = Options(path, region_bytes, regions, &clock);
  std::unique_ptr<Tier> tier = MustOpen(o);
  CollectSink sink;
  FUZZ_CHECK(tier->Recover(sink).ok());
  FUZZ_CHECK(tier->Info().blocks == sink.announced.size());
  std::string buf(region_bytes, '\0');
  std::span<std::byte> dest(reinterpret_cast<std::byte*>(buf.data()), buf.size());
  for (int k = 0; k < kKeys; ++k) {
    const BlockKey key = KeyOf(k);
    Result<uint64_t> n = ReadOne(*tier, key, dest);
    auto it = sink.announced.find(key);
    if (it == sink.announced.end()) {
      FUZZ_CHECK(!n.ok() && n.status().IsNotFound());
      continue;
    }
    if (!n.ok()) {
      FUZZ_CHECK(n.status().IsCorruption());
      continue;
    }
    FUZZ_CHECK(*n == it->second);
    FUZZ_CHECK(allowed[key].count(buf.substr(0, *n)) == 1);
  }
  // The recovered log takes new writes, and a restart keeps them.
  const BlockKey fresh{0xf00d, 1};
  const std::string block(1 + index * 97 % (region_bytes - kPage), 'x');
  const Status w = WriteOne(*tier, fresh, Span(block));
  FUZZ_CHECK(w.ok() || w.IsResourceExhausted());
  const BlockKey gone = KeyOf(index % kKeys);
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
  if (hidden.count(gone) == 0) FUZZ_CHECK(!erased.ok() && erased.status().IsNotFound());
}

}  // namespace
}  // namespace kvtier

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  kvtier::Run(kvtier::fuzz::FuzzReader(data, size));
  return 0;
}
