#include "tiers/hbm/hbm_tier.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <functional>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <vector>

#include "common/log.h"
#include "tiers/calibration.h"
#include "tiers/hbm/block_copier.h"
#include "tiers/hbm/completion_queue.h"
#include "tiers/hbm/extent_allocator.h"
#include "tiers/hbm/hbm_backend.h"
#include "tiers/hbm/stream_events.h"
#include "tiers/striped_block_map.h"

namespace kvtier {
namespace {

constexpr uint64_t kMinStagingBufferBytes = 128 << 10;

// A range of the arena holding one block. Freed (back to the allocator) when
// the last reference drops: the map entry holds one, and so does every copy
// in flight that reads or writes it.
struct Extent {
  uint64_t offset = 0;
  uint64_t bytes = 0;  // extent size (payload rounded up)
};
using ExtentRef = std::shared_ptr<const Extent>;

struct Entry {
  ExtentRef extent;
  uint64_t bytes = 0;  // payload size
  int64_t expiry_ms = kNoExpiry;
  // Set while a WriteFromDevice copy into the extent may still be running on
  // the writer's stream: a copy out of the block waits for it on the GPU.
  EventRef ready;
};

class HbmTierImpl final : public HbmTier {
 public:
  HbmTierImpl(const HbmTierOptions& o, std::unique_ptr<HbmBackend> backend)
      : options_(o),
        backend_(std::move(backend)),
        events_(*backend_),
        allocator_(backend_->arena_bytes()),
        copier_(*backend_, events_, o.staging_buffer_bytes),
        write_completions_(std::make_unique<CompletionQueue>(*backend_)),
        read_completions_(std::make_unique<CompletionQueue>(*backend_)),
        releases_(std::make_unique<CompletionQueue>(*backend_)) {}

  ~HbmTierImpl() override {
    // Every callback runs and every deferred free happens before the memory
    // goes; then the map's extents return to the allocator. (The backend,
    // destroyed last, waits for its streams before freeing the arena.)
    WaitIdle();
    write_completions_.reset();
    read_completions_.reset();
    releases_.reset();
    for (Stripe& stripe : blocks_map_.stripes()) stripe.map.clear();
    quarantine_.clear();
  }

  Status Init() { return copier_.Init(options_.staging_buffers); }

  // Called once by the factory, before the tier is shared.
  void set_bandwidth(const Bandwidth& bw) { bandwidth_ = bw; }

  // --- Tier -----------------------------------------------------------------

  TierInfo Info() const override {
    TierInfo info;
    info.name = options_.name;
    info.capacity_bytes = allocator_.arena_bytes();
    info.used_bytes = used_bytes_.load(std::memory_order_relaxed);
    {
      std::lock_guard<std::mutex> lock(alloc_mu_);
      info.allocated_bytes = allocator_.allocated_bytes();
    }
    info.blocks = blocks_.load(std::memory_order_relaxed);
    info.max_block_bytes = MaxBlockBytes();
    info.read_bytes_per_s = bandwidth_.read_bytes_per_s;
    info.write_bytes_per_s = bandwidth_.write_bytes_per_s;
    info.persistent = false;
    info.io_errors = io_errors_.load(std::memory_order_relaxed);
    return info;
  }

  void Write(std::span<const WriteOp> ops, IoCallback done) override;
  void Read(std::span<const ReadOp> ops, IoCallback done) override;

  Status Erase(std::span<const BlockKey> keys) override {
    for (const BlockKey& key : keys) {
      std::optional<Entry> removed;
      {
        Stripe& stripe = StripeOf(key);
        std::unique_lock lock(stripe.mu);
        auto it = stripe.map.find(key);
        if (it == stripe.map.end()) continue;
        removed = std::move(it->second);
        stripe.map.erase(it);
      }
      used_bytes_ -= removed->bytes;
      --blocks_;
    }  // the extent is freed here, or when the last copy using it completes
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

  // --- HbmTier --------------------------------------------------------------

  bool on_device() const override { return backend_->on_device(); }
  Status ReadToDevice(std::span<const DeviceReadOp> ops, GpuStream stream) override;
  Status WriteFromDevice(std::span<const DeviceWriteOp> ops, GpuStream stream) override;

  HbmTierStats stats() const override { return copier_.stats(); }

  void WaitIdle() override {
    write_completions_->WaitIdle();
    read_completions_->WaitIdle();
    releases_->WaitIdle();
  }

 private:
  using Stripe = StripedBlockMap<Entry>::Stripe;

  // A block found by a reader, with the references that keep it readable.
  struct Found {
    ExtentRef extent;
    EventRef ready;
    uint64_t bytes = 0;
  };

  Stripe& StripeOf(const BlockKey& key) { return blocks_map_.Of(key); }

  uint64_t MaxBlockBytes() const {
    return std::min(options_.max_block_bytes, allocator_.arena_bytes());
  }

  // Validates a payload size; OK or the error the op fails with.
  Status CheckPayload(uint64_t bytes) const {
    if (bytes == 0) return Status::InvalidArgument("empty block payload");
    if (bytes > MaxBlockBytes()) {
      return Status::ResourceExhausted("block of " + std::to_string(bytes) +
                                       " bytes exceeds the HBM tier's limit of " +
                                       std::to_string(MaxBlockBytes()));
    }
    return Status::Ok();
  }

  Status NoRoom(uint64_t bytes) const {
    return Status::ResourceExhausted("HBM tier '" + options_.name + "' has no room for " +
                                     std::to_string(bytes) + " bytes");
  }

  // Looks up a live block for a reader. NotFound when absent or expired.
  Result<Found> Find(const BlockKey& key, int64_t now_ms) {
    Stripe& stripe = StripeOf(key);
    std::shared_lock lock(stripe.mu);
    auto it = stripe.map.find(key);
    if (it == stripe.map.end() || it->second.expiry_ms <= now_ms) {
      return Status::NotFound("block " + key.ToHex() + " is not in the HBM tier");
    }
    return Found{it->second.extent, it->second.ready, it->second.bytes};
  }

  // Publishes a block; a block it replaces is released (freed once no copy
  // uses it).
  void Publish(const BlockKey& key, Entry e) {
    const uint64_t bytes = e.bytes;
    std::optional<Entry> replaced;
    {
      Stripe& stripe = StripeOf(key);
      std::unique_lock lock(stripe.mu);
      auto [it, inserted] = stripe.map.try_emplace(key);
      if (!inserted) replaced = std::move(it->second);
      it->second = std::move(e);
    }
    used_bytes_ += bytes;
    if (replaced) {
      used_bytes_ -= replaced->bytes;
    } else {
      ++blocks_;
    }
  }

  // Places blocks of the given payload sizes back to back in one extent when
  // one free extent holds them all, else one by one (best fit each).
  std::vector<ExtentRef> AllocateRun(std::span<const uint64_t> payload_bytes) {
    std::vector<ExtentRef> out(payload_bytes.size());
    std::vector<std::optional<uint64_t>> offsets(payload_bytes.size());
    {
      std::lock_guard<std::mutex> lock(alloc_mu_);
      uint64_t total = 0;
      for (uint64_t b : payload_bytes) total += ExtentAllocator::ExtentBytes(b);
      std::optional<uint64_t> run;
      if (payload_bytes.size() > 1) run = allocator_.Allocate(total);
      uint64_t next = run.value_or(0);
      for (size_t i = 0; i < payload_bytes.size(); ++i) {
        const uint64_t eb = ExtentAllocator::ExtentBytes(payload_bytes[i]);
        if (run) {
          offsets[i] = next;
          next += eb;
        } else {
          offsets[i] = allocator_.Allocate(eb);
        }
      }
    }
    for (size_t i = 0; i < payload_bytes.size(); ++i) {
      if (!offsets[i]) continue;
      out[i] = MakeExtent(*offsets[i], ExtentAllocator::ExtentBytes(payload_bytes[i]));
    }
    return out;
  }

  ExtentRef MakeExtent(uint64_t offset, uint64_t bytes) {
    return ExtentRef(new Extent{offset, bytes}, [this](const Extent* e) {
      {
        std::lock_guard<std::mutex> lock(alloc_mu_);
        allocator_.Free(e->offset, e->bytes);
      }
      delete e;
    });
  }

  // Adds a found block's pending device-side write (if any) to the events a
  // reader's copies must wait for, once.
  static void AddReady(const Found& found, std::vector<EventRef>& readies) {
    if (found.ready && std::find(readies.begin(), readies.end(), found.ready) == readies.end()) {
      readies.push_back(found.ready);
    }
  }

  // Runs then(status) on `queue`'s thread once `stream` has passed the work
  // enqueued on it so far; status is the first error marking the stream or
  // waiting for it.
  void CompleteAfter(GpuStream stream, CompletionQueue& queue, std::function<void(Status)> then) {
    Result<EventRef> mark = events_.Mark(stream);
    queue.Push(mark.ok() ? *mark : EventRef(),
               [then = std::move(then), mark_status = mark.status()](Status s) {
                 then(s.ok() ? mark_status : s);
               });
  }

  // Keeps `extents` allocated until `stream` passes this point.
  void DeferFree(GpuStream stream, std::vector<ExtentRef> extents) {
    Result<EventRef> mark = events_.Mark(stream);
    if (!mark.ok()) return Quarantine(std::move(extents));
    releases_->Push(*mark, [this, extents = std::move(extents)](Status s) {
      if (!s.ok()) Quarantine(extents);
    });
  }

  // Keeps extents that a copy may still touch, after the tier lost track of
  // a stream (a failed event or synchronize: the CUDA context is likely
  // broken), out of use until the tier closes: a later block placed there
  // could be overwritten, or read back with someone else's bytes.
  void Quarantine(std::vector<ExtentRef> extents) {
    std::lock_guard<std::mutex> lock(quarantine_mu_);
    for (ExtentRef& e : extents) quarantine_.push_back(std::move(e));
  }

  const HbmTierOptions options_;
  Bandwidth bandwidth_;  // set before the tier is shared
  const std::unique_ptr<HbmBackend> backend_;
  StreamEvents events_;
  mutable std::mutex alloc_mu_;
  ExtentAllocator allocator_;  // guarded by alloc_mu_
  StripedBlockMap<Entry> blocks_map_;
  std::mutex quarantine_mu_;
  std::vector<ExtentRef> quarantine_;  // guarded by quarantine_mu_
  BlockCopier copier_;
  std::atomic<uint64_t> used_bytes_{0};
  std::atomic<uint64_t> blocks_{0};
  std::atomic<uint64_t> io_errors_{0};
  // Last: their threads run callbacks that use everything above. Writes
  // complete on one queue, reads on another (a long write batch does not hold
  // up a read's callback), and frees deferred behind callers' streams on a
  // third (a busy engine stream holds up neither).
  std::unique_ptr<CompletionQueue> write_completions_;
  std::unique_ptr<CompletionQueue> read_completions_;
  std::unique_ptr<CompletionQueue> releases_;
};

// --- Write and Read -------------------------------------------------------------

void HbmTierImpl::Write(std::span<const WriteOp> ops, IoCallback done) {
  struct Pending {
    size_t index;
    BlockKey key;
    uint64_t bytes;
    int64_t expiry_ms;
    ExtentRef extent;
    Status copy;
  };
  struct Batch {
    std::vector<IoResult> results;
    std::vector<Pending> pending;
    IoCallback done;
  };
  auto batch = std::make_shared<Batch>();
  batch->results.resize(ops.size());
  batch->done = std::move(done);

  std::vector<size_t> valid;
  std::vector<uint64_t> sizes;
  for (size_t i = 0; i < ops.size(); ++i) {
    Status s = CheckPayload(ops[i].payload.size());
    if (!s.ok()) {
      batch->results[i] = {std::move(s), 0};
      continue;
    }
    valid.push_back(i);
    sizes.push_back(ops[i].payload.size());
  }
  std::vector<ExtentRef> extents = AllocateRun(sizes);
  std::vector<BlockCopy> copies;
  for (size_t v = 0; v < valid.size(); ++v) {
    const WriteOp& op = ops[valid[v]];
    if (!extents[v]) {
      batch->results[valid[v]] = {NoRoom(op.payload.size()), 0};
      continue;
    }
    // A copy to HBM only reads the caller's memory.
    auto* src = const_cast<std::byte*>(op.payload.data());
    copies.push_back(
        {src, extents[v]->offset, op.payload.size(), backend_->KindOf(src, op.payload.size())});
    batch->pending.push_back(
        {valid[v], op.key, op.payload.size(), op.expiry_ms, std::move(extents[v]), Status::Ok()});
  }
  std::vector<Status> copied = copier_.CopyHost(CopyDirection::kToHbm, copies);
  for (size_t p = 0; p < copied.size(); ++p) batch->pending[p].copy = std::move(copied[p]);

  CompleteAfter(backend_->h2d_stream(), *write_completions_, [this, batch](Status s) {
    std::vector<ExtentRef> unsafe;  // a copy may still write them
    for (Pending& p : batch->pending) {
      Status copy = s.ok() ? p.copy : s;
      if (!copy.ok()) {
        ++io_errors_;
        batch->results[p.index] = {Status::IOError("HBM write failed: " + copy.ToString()), 0};
        if (!s.ok()) unsafe.push_back(std::move(p.extent));
        continue;
      }
      Publish(p.key, Entry{std::move(p.extent), p.bytes, p.expiry_ms, nullptr});
      batch->results[p.index] = {Status::Ok(), p.bytes};
    }
    batch->pending.clear();  // extents of failed writes are freed here
    if (!unsafe.empty()) Quarantine(std::move(unsafe));
    batch->done(std::move(batch->results));
  });
}

void HbmTierImpl::Read(std::span<const ReadOp> ops, IoCallback done) {
  struct Batch {
    std::vector<IoResult> results;
    std::vector<size_t> copy_op;  // op index of each copy
    std::vector<BlockCopy> copies;
    std::vector<Status> copied;
    std::vector<ExtentRef> extents;  // kept until the copies are done
    IoCallback done;
  };
  auto batch = std::make_shared<Batch>();
  batch->results.resize(ops.size());
  batch->done = std::move(done);
  std::vector<EventRef> readies;
  const int64_t now = options_.clock->NowMs();
  for (size_t i = 0; i < ops.size(); ++i) {
    const ReadOp& op = ops[i];
    Result<Found> found = Find(op.key, now);
    if (!found.ok()) {
      batch->results[i] = {found.status(), 0};
      continue;
    }
    if (op.dest.size() < found->bytes) {
      batch->results[i] = {
          Status::ResourceExhausted("read buffer of " + std::to_string(op.dest.size()) +
                                    " bytes is smaller than the block (" +
                                    std::to_string(found->bytes) + ")"),
          found->bytes};
      continue;
    }
    AddReady(*found, readies);
    batch->copies.push_back({op.dest.data(), found->extent->offset, found->bytes,
                             backend_->KindOf(op.dest.data(), found->bytes)});
    batch->copy_op.push_back(i);
    batch->extents.push_back(std::move(found->extent));
  }
  const GpuStream stream = backend_->d2h_stream();
  Status ordered = events_.OrderAfter(stream, readies);
  if (ordered.ok()) {
    batch->copied = copier_.CopyHost(CopyDirection::kFromHbm, batch->copies);
  } else {
    batch->copied.assign(batch->copies.size(), ordered);
  }
  CompleteAfter(stream, *read_completions_, [this, batch](Status s) {
    for (size_t c = 0; c < batch->copies.size(); ++c) {
      const BlockCopy& copy = batch->copies[c];
      const Status& copied = s.ok() ? batch->copied[c] : s;
      if (copied.ok()) {
        batch->results[batch->copy_op[c]] = {Status::Ok(), copy.bytes};
        continue;
      }
      // A copy that failed part-way may have left payload bytes behind.
      if (copy.kind != MemoryKind::kDevice) std::memset(copy.buffer, 0, copy.bytes);
      ++io_errors_;
      batch->results[batch->copy_op[c]] = {Status::IOError("HBM read failed: " + copied.ToString()),
                                           0};
    }
    if (!s.ok()) Quarantine(std::move(batch->extents));
    batch->extents.clear();  // blocks erased meanwhile are freed here
    batch->done(std::move(batch->results));
  });
}

// --- Device-side access ---------------------------------------------------------

Status HbmTierImpl::ReadToDevice(std::span<const DeviceReadOp> ops, GpuStream stream) {
  if (ops.empty()) return Status::Ok();
  std::vector<ExtentRef> extents;
  std::vector<BlockCopy> copies;
  std::vector<EventRef> readies;
  const int64_t now = options_.clock->NowMs();
  for (const DeviceReadOp& op : ops) {
    Result<Found> found = Find(op.key, now);
    if (!found.ok()) return found.status();
    if (op.dest == nullptr) return Status::InvalidArgument("null device destination");
    if (op.dest_bytes < found->bytes) {
      return Status::ResourceExhausted("device buffer of " + std::to_string(op.dest_bytes) +
                                       " bytes is smaller than block " + op.key.ToHex() + " (" +
                                       std::to_string(found->bytes) + ")");
    }
    AddReady(*found, readies);
    copies.push_back({static_cast<std::byte*>(op.dest), found->extent->offset, found->bytes,
                      MemoryKind::kDevice});
    extents.push_back(std::move(found->extent));
  }
  KVTIER_RETURN_IF_ERROR(events_.OrderAfter(stream, readies));
  Status status = copier_.CopyDevice(CopyDirection::kFromHbm, copies, stream);
  if (!status.ok()) ++io_errors_;
  // The blocks stay allocated until `stream` has passed the copies.
  DeferFree(stream, std::move(extents));
  return status;
}

Status HbmTierImpl::WriteFromDevice(std::span<const DeviceWriteOp> ops, GpuStream stream) {
  if (ops.empty()) return Status::Ok();
  std::vector<uint64_t> sizes;
  for (const DeviceWriteOp& op : ops) {
    if (op.src == nullptr) return Status::InvalidArgument("null device source");
    KVTIER_RETURN_IF_ERROR(CheckPayload(op.bytes));
    sizes.push_back(op.bytes);
  }
  std::vector<ExtentRef> extents = AllocateRun(sizes);
  std::vector<BlockCopy> copies;
  for (size_t i = 0; i < ops.size(); ++i) {
    if (!extents[i]) return NoRoom(ops[i].bytes);  // what was allocated is freed
    // A copy to HBM only reads the caller's memory.
    auto* src = const_cast<std::byte*>(static_cast<const std::byte*>(ops[i].src));
    copies.push_back({src, extents[i]->offset, ops[i].bytes, MemoryKind::kDevice});
  }
  Status status = copier_.CopyDevice(CopyDirection::kToHbm, copies, stream);
  if (!status.ok()) {
    ++io_errors_;
    // Copies already enqueued still write into the extents: free them after.
    DeferFree(stream, std::move(extents));
    return status;
  }
  Result<EventRef> ready = events_.Mark(stream);
  if (!ready.ok()) {
    ++io_errors_;
    Quarantine(std::move(extents));
    return ready.status();
  }
  for (size_t i = 0; i < ops.size(); ++i) {
    Publish(ops[i].key, Entry{extents[i], ops[i].bytes, ops[i].expiry_ms, *ready});
  }
  if (!*ready) return Status::Ok();  // Mark waited: the copies are done
  // Once the copies are done, readers need not wait any more. The extents are
  // held until then, so an erase meanwhile cannot free memory being written.
  std::vector<BlockKey> keys;
  for (const DeviceWriteOp& op : ops) keys.push_back(op.key);
  releases_->Push(*ready, [this, keys = std::move(keys), extents = std::move(extents)](Status s) {
    for (size_t i = 0; i < keys.size(); ++i) {
      std::optional<Entry> failed;
      {
        Stripe& stripe = StripeOf(keys[i]);
        std::unique_lock lock(stripe.mu);
        auto it = stripe.map.find(keys[i]);
        if (it == stripe.map.end() || it->second.extent != extents[i]) continue;
        if (s.ok()) {
          it->second.ready.reset();
          continue;
        }
        // The copy failed: the block's bytes are not what was written, and
        // the stream may not have passed it.
        failed = std::move(it->second);
        stripe.map.erase(it);
      }
      ++io_errors_;
      used_bytes_ -= failed->bytes;
      --blocks_;
    }
    if (!s.ok()) Quarantine(extents);
  });
  return Status::Ok();
}

Status ValidateOptions(const HbmTierOptions& o) {
  if (o.capacity_bytes / ExtentAllocator::kAlignment * ExtentAllocator::kAlignment <
      ExtentAllocator::kMinExtentBytes) {
    return Status::InvalidArgument("HBM tier capacity of " + std::to_string(o.capacity_bytes) +
                                   " bytes is less than one block");
  }
  if (o.max_block_bytes == 0) return Status::InvalidArgument("HBM max_block_bytes must be > 0");
  if (o.staging_buffer_bytes < kMinStagingBufferBytes) {
    return Status::InvalidArgument("HBM staging_buffer_bytes must be >= 128 KiB, got " +
                                   std::to_string(o.staging_buffer_bytes));
  }
  if (o.staging_buffers < 1) return Status::InvalidArgument("HBM staging_buffers must be >= 1");
  if (o.clock == nullptr) return Status::InvalidArgument("HBM tier needs a clock");
  return Status::Ok();
}

// The CUDA backend on o.device; the host stand-in when options force it or
// no device answers (kUnavailable). Any other CUDA error fails the open.
Result<std::unique_ptr<HbmBackend>> OpenBackend(const HbmTierOptions& o, uint64_t arena_bytes) {
  std::string standin_reason = "forced by options";
  if (!o.force_host_standin) {
    Result<std::unique_ptr<HbmBackend>> cuda = NewCudaHbmBackend(o.device, arena_bytes);
    if (cuda.ok() || cuda.status().code() != StatusCode::kUnavailable) return cuda;
    standin_reason = cuda.status().message();
  }
  return NewHostHbmBackend(arena_bytes, o.standin_host_is_pinned, standin_reason);
}

}  // namespace

Result<std::unique_ptr<HbmTier>> HbmTier::Open(const HbmTierOptions& o) {
  KVTIER_RETURN_IF_ERROR(ValidateOptions(o));
  const uint64_t arena_bytes =
      o.capacity_bytes / ExtentAllocator::kAlignment * ExtentAllocator::kAlignment;
  KVTIER_ASSIGN_OR_RETURN(std::unique_ptr<HbmBackend> backend, OpenBackend(o, arena_bytes));
  LogInfo("hbm_tier_open", LogFields()
                               .Add("name", o.name)
                               .Add("bytes", arena_bytes)
                               .Add("backend", backend->Describe()));
  auto tier = std::make_unique<HbmTierImpl>(o, std::move(backend));
  KVTIER_RETURN_IF_ERROR(tier->Init());
  tier->set_bandwidth(ConfiguredOrMeasured(*tier, o.read_bytes_per_s, o.write_bytes_per_s));
  return std::unique_ptr<HbmTier>(std::move(tier));
}

Result<std::unique_ptr<Tier>> OpenHbmTier(const HbmTierOptions& options) {
  KVTIER_ASSIGN_OR_RETURN(std::unique_ptr<HbmTier> tier, HbmTier::Open(options));
  return std::unique_ptr<Tier>(std::move(tier));
}

}  // namespace kvtier
