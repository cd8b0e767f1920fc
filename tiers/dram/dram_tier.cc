#include "tiers/dram/dram_tier.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <shared_mutex>
#include <unordered_map>

#include "common/checksum.h"
#include "common/log.h"
#include "kernels/device.h"
#include "tiers/calibration.h"
#include "tiers/dram/slab_allocator.h"
#include "tiers/striped_block_map.h"

namespace kvtier {
namespace {

struct Entry {
  uint64_t offset = 0;  // of the chunk in the arena
  uint64_t bytes = 0;   // payload size
  uint64_t checksum = 0;
  int64_t expiry_ms = kNoExpiry;
};

class DramTier final : public Tier {
 public:
  DramTier(const DramTierOptions& o, std::byte* arena, uint64_t arena_bytes, bool pinned)
      : options_(o),
        arena_(arena),
        arena_bytes_(arena_bytes),
        pinned_(pinned),
        slabs_(arena_bytes, o.page_bytes) {}

  ~DramTier() override {
    if (pinned_) UnpinHostMemory(arena_);
    munmap(arena_, arena_bytes_);
  }

  TierInfo Info() const override {
    TierInfo info;
    info.name = options_.name;
    info.capacity_bytes = slabs_.arena_bytes();
    info.used_bytes = used_bytes_.load(std::memory_order_relaxed);
    {
      std::lock_guard<std::mutex> lock(alloc_mu_);
      info.allocated_bytes = slabs_.allocated_bytes();
    }
    info.blocks = blocks_.load(std::memory_order_relaxed);
    info.read_bytes_per_s = bandwidth_.read_bytes_per_s;
    info.write_bytes_per_s = bandwidth_.write_bytes_per_s;
    info.max_block_bytes = std::min(options_.max_block_bytes, slabs_.arena_bytes());
    info.persistent = false;
    info.corruption_errors = corruption_errors_.load(std::memory_order_relaxed);
    return info;
  }

  void Write(std::span<const WriteOp> ops, IoCallback done) override {
    CompleteInline(ops, done, [this](const WriteOp& op) { return WriteOneBlock(op); });
  }

  void Read(std::span<const ReadOp> ops, IoCallback done) override {
    CompleteInline(ops, done, [this](const ReadOp& op) { return ReadOneBlock(op); });
  }

  Status Erase(std::span<const BlockKey> keys) override {
    for (const BlockKey& key : keys) Remove(key, std::nullopt);
    return Status::Ok();
  }

  Status SetExpiry(std::span<const BlockKey> keys, int64_t expiry_ms) override {
    blocks_map_.SetExpiry(keys, expiry_ms);
    return Status::Ok();
  }

  Status Recover(IndexSink& sink) override {
    blocks_map_.Announce(sink);
    return Status::Ok();
  }

  // Called once by the factory, before the tier is shared.
  void set_bandwidth(const Bandwidth& bw) { bandwidth_ = bw; }

  Status Corrupt(const BlockKey& key) {
    Stripe& stripe = StripeOf(key);
    std::unique_lock lock(stripe.mu);
    auto it = stripe.map.find(key);
    if (it == stripe.map.end()) return Status::NotFound("block " + key.ToHex() + " is not here");
    arena_[it->second.offset] ^= std::byte{0x5a};
    return Status::Ok();
  }

 private:
  using Stripe = StripedBlockMap<Entry>::Stripe;

  Stripe& StripeOf(const BlockKey& key) { return blocks_map_.Of(key); }

  IoResult WriteOneBlock(const WriteOp& op) {
    const uint64_t n = op.payload.size();
    if (n == 0) return {Status::InvalidArgument("empty block payload"), 0};
    if (n > options_.max_block_bytes) {
      return {Status::ResourceExhausted("block of " + std::to_string(n) +
                                        " bytes exceeds the DRAM tier's limit of " +
                                        std::to_string(options_.max_block_bytes)),
              0};
    }
    std::optional<uint64_t> offset;
    {
      std::lock_guard<std::mutex> lock(alloc_mu_);
      offset = slabs_.Allocate(n);
    }
    if (!offset) {
      return {Status::ResourceExhausted("DRAM tier '" + options_.name + "' has no room for " +
                                        std::to_string(n) + " bytes"),
              0};
    }
    // Copy before publishing: readers never see a half-written chunk.
    Entry e{*offset, n, CopyAndChecksum64(op.payload, {arena_ + *offset, n}), op.expiry_ms};
    std::optional<Entry> replaced;
    {
      Stripe& stripe = StripeOf(op.key);
      std::unique_lock lock(stripe.mu);
      auto [it, inserted] = stripe.map.try_emplace(op.key, e);
      if (!inserted) {
        replaced = it->second;
        it->second = e;
      }
    }
    used_bytes_ += n;
    if (replaced) {
      used_bytes_ -= replaced->bytes;
      FreeChunk(replaced->offset);
    } else {
      ++blocks_;
    }
    return {Status::Ok(), n};
  }

  IoResult ReadOneBlock(const ReadOp& op) {
    bool corrupt = false;
    uint64_t bytes = 0;
    uint64_t offset = 0;
    uint64_t checksum = 0;
    {
      Stripe& stripe = StripeOf(op.key);
      std::shared_lock lock(stripe.mu);
      auto it = stripe.map.find(op.key);
      if (it == stripe.map.end() || it->second.expiry_ms <= options_.clock->NowMs()) {
        return {Status::NotFound("block " + op.key.ToHex() + " is not in the DRAM tier"), 0};
      }
      const Entry& e = it->second;
      bytes = e.bytes;
      offset = e.offset;
      if (op.dest.size() < e.bytes) {
        return {Status::ResourceExhausted("read buffer of " + std::to_string(op.dest.size()) +
                                          " bytes is smaller than the block (" +
                                          std::to_string(e.bytes) + ")"),
                e.bytes};
      }
      // The copy runs under the shared lock: an eraser waits for it to finish
      // before the chunk can be freed and reused.
      checksum = e.checksum;
      corrupt =
          CopyAndChecksum64({arena_ + e.offset, e.bytes}, op.dest.first(e.bytes)) != e.checksum;
    }
    if (corrupt) {
      ++corruption_errors_;
      LogError("dram_checksum_mismatch", LogFields().Add("key", op.key.ToHex()));
      std::memset(op.dest.data(), 0, bytes);
      Remove(op.key, offset);
      return {Status::Corruption("block " + op.key.ToHex() + " failed its checksum"), 0};
    }
    return {Status::Ok(), bytes, checksum};
  }

  // Removes `key`; with `only_offset`, only if it is still that chunk (a block
  // found corrupt may have been rewritten since, and the new copy stays).
  void Remove(const BlockKey& key, std::optional<uint64_t> only_offset) {
    std::optional<Entry> removed;
    {
      Stripe& stripe = StripeOf(key);
      std::unique_lock lock(stripe.mu);
      auto it = stripe.map.find(key);
      if (it == stripe.map.end()) return;
      if (only_offset && it->second.offset != *only_offset) return;
      removed = it->second;
      stripe.map.erase(it);
    }
    used_bytes_ -= removed->bytes;
    --blocks_;
    FreeChunk(removed->offset);
  }

  void FreeChunk(uint64_t offset) {
    std::lock_guard<std::mutex> lock(alloc_mu_);
    slabs_.Free(offset);
  }

  const DramTierOptions options_;
  Bandwidth bandwidth_;  // set before the tier is shared
  std::byte* const arena_;
  const uint64_t arena_bytes_;
  const bool pinned_;  // registered with CUDA (PinHostMemory)
  mutable std::mutex alloc_mu_;
  SlabAllocator slabs_;  // guarded by alloc_mu_
  StripedBlockMap<Entry> blocks_map_;
  std::atomic<uint64_t> used_bytes_{0};
  std::atomic<uint64_t> blocks_{0};
  std::atomic<uint64_t> corruption_errors_{0};
};

}  // namespace

Result<std::unique_ptr<Tier>> OpenDramTier(const DramTierOptions& o) {
  if (o.page_bytes < 4096 || (o.page_bytes & (o.page_bytes - 1)) != 0) {
    return Status::InvalidArgument("DRAM tier page_bytes must be a power of two >= 4096, got " +
                                   std::to_string(o.page_bytes));
  }
  const uint64_t arena_bytes = o.capacity_bytes / o.page_bytes * o.page_bytes;
  if (arena_bytes == 0) {
    return Status::InvalidArgument("DRAM tier capacity of " + std::to_string(o.capacity_bytes) +
                                   " bytes is less than one page");
  }
  if (o.clock == nullptr) return Status::InvalidArgument("DRAM tier needs a clock");
  // The mapping reserves no swap (MAP_NORESERVE): an arena larger than the
  // machine would be OOM-killed later, under load, instead of refused now.
  const uint64_t ram_bytes =
      static_cast<uint64_t>(sysconf(_SC_PHYS_PAGES)) * static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  if (arena_bytes > ram_bytes) {
    return Status::InvalidArgument("DRAM tier capacity of " + std::to_string(arena_bytes) +
                                   " bytes exceeds this machine's memory (" +
                                   std::to_string(ram_bytes) + " bytes)");
  }
  void* p = mmap(nullptr, arena_bytes, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) {
    return Status::ResourceExhausted("cannot map a DRAM arena of " + std::to_string(arena_bytes) +
                                     " bytes: " + std::strerror(errno));
  }
  madvise(p, arena_bytes, MADV_HUGEPAGE);  // advice only; failure is harmless
  if (o.lock_memory && mlock(p, arena_bytes) != 0) {
    LogWarn("dram_mlock_failed",
            LogFields().Add("bytes", arena_bytes).Add("error", std::strerror(errno)));
  }
  bool pinned = false;
  if (o.pin_for_gpu && DeviceAvailable()) {
    Status s = PinHostMemory(p, arena_bytes);
    pinned = s.ok();
    if (!pinned) {
      LogWarn("dram_pin_failed", LogFields().Add("bytes", arena_bytes).Add("error", s.ToString()));
    }
  }
  auto tier = std::make_unique<DramTier>(o, static_cast<std::byte*>(p), arena_bytes, pinned);
  tier->set_bandwidth(ConfiguredOrMeasured(*tier, o.read_bytes_per_s, o.write_bytes_per_s));
  return std::unique_ptr<Tier>(std::move(tier));
}

Status CorruptDramBlockForTesting(Tier& tier, const BlockKey& key) {
  auto* dram = dynamic_cast<DramTier*>(&tier);
  if (dram == nullptr) return Status::InvalidArgument("not a DRAM tier");
  return dram->Corrupt(key);
}

}  // namespace kvtier
