#include "tiers/hbm/hbm_tier.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <thread>
#include <unordered_map>
#include <vector>

#include "common/log.h"
#include "tiers/calibration.h"
#include "tiers/hbm/extent_allocator.h"
#include "tiers/hbm/hbm_backend.h"
#include "tiers/striped_block_map.h"

namespace kvtier {
namespace {

constexpr uint64_t kMinStagingBufferBytes = 128 << 10;

// An event handle from an EventPool (get() is the backend's handle); it goes
// back to the pool when the last reference drops.
using EventRef = std::shared_ptr<void>;

class EventPool {
 public:
  explicit EventPool(HbmBackend& backend) : backend_(backend) {}
  ~EventPool() {
    for (void* e : free_) backend_.DestroyEvent(e);
  }
  EventPool(const EventPool&) = delete;
  EventPool& operator=(const EventPool&) = delete;

  // An event not recorded since it was last handed out.
  Result<EventRef> Get() {
    void* e = nullptr;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!free_.empty()) {
        e = free_.back();
        free_.pop_back();
      }
    }
    if (e == nullptr) {
      Result<void*> created = backend_.CreateEvent();
      if (!created.ok()) return created.status();
      e = *created;
    }
    return EventRef(e, [this](void* ev) {
      std::lock_guard<std::mutex> lock(mu_);
      free_.push_back(ev);
    });
  }

 private:
  HbmBackend& backend_;
  std::mutex mu_;
  std::vector<void*> free_;  // guarded by mu_
};

// A thread that waits for events in push order and runs what follows each.
// Destruction runs every item pushed before it (callbacks run exactly once).
class CompletionQueue {
 public:
  explicit CompletionQueue(HbmBackend& backend) : backend_(backend), thread_([this] { Run(); }) {}
  ~CompletionQueue() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    work_cv_.notify_all();
    thread_.join();
  }
  CompletionQueue(const CompletionQueue&) = delete;
  CompletionQueue& operator=(const CompletionQueue&) = delete;

  // Runs then(status of the wait) on the queue's thread once `event` (null:
  // nothing to wait for) has completed, after every item pushed before.
  void Push(EventRef event, std::function<void(Status)> then) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      items_.push_back({std::move(event), std::move(then)});
      ++pushed_;
    }
    work_cv_.notify_one();
  }

  // Blocks until every item pushed before the call has run. Not from the
  // queue's own thread.
  void WaitIdle() {
    std::unique_lock<std::mutex> lock(mu_);
    const uint64_t target = pushed_;
    idle_cv_.wait(lock, [&] { return done_ >= target; });
  }

 private:
  struct Item {
    EventRef event;
    std::function<void(Status)> then;
  };

  void Run() {
    for (;;) {
      Item item;
      {
        std::unique_lock<std::mutex> lock(mu_);
        work_cv_.wait(lock, [&] { return stop_ || !items_.empty(); });
        if (items_.empty()) return;
        item = std::move(items_.front());
        items_.pop_front();
      }
      const Status s = item.event ? backend_.WaitEvent(item.event.get()) : Status::Ok();
      item.then(s);
      item = Item{};  // what it held (extents, events) is released before idle
      {
        std::lock_guard<std::mutex> lock(mu_);
        ++done_;
      }
      idle_cv_.notify_all();
    }
  }

  HbmBackend& backend_;
  std::mutex mu_;
  std::condition_variable work_cv_;
  std::condition_variable idle_cv_;
  std::deque<Item> items_;  // guarded by mu_
  uint64_t pushed_ = 0;     // guarded by mu_
  uint64_t done_ = 0;       // guarded by mu_
  bool stop_ = false;       // guarded by mu_
  std::thread thread_;      // last: it starts running in the constructor
};

// Pinned host buffers for one copy direction. A buffer is held by one thread
// from Acquire to Release; `last_use` is the event after the last copy that
// reads it (host to device), which the next holder waits for before writing.
class StagingPool {
 public:
  struct Buffer {
    std::byte* data = nullptr;
    EventRef last_use;
  };

  StagingPool(HbmBackend& backend, uint64_t buffer_bytes)
      : backend_(backend), buffer_bytes_(buffer_bytes) {}
  ~StagingPool() {
    for (Buffer& b : buffers_) {
      if (b.last_use) (void)backend_.WaitEvent(b.last_use.get());
      b.last_use.reset();
      backend_.FreePinnedHost(b.data);
    }
  }
  StagingPool(const StagingPool&) = delete;
  StagingPool& operator=(const StagingPool&) = delete;

  Status Init(int count) {
    for (int i = 0; i < count; ++i) {
      Result<void*> p = backend_.AllocatePinnedHost(buffer_bytes_);
      if (!p.ok()) return p.status();
      buffers_.push_back({static_cast<std::byte*>(*p), nullptr});
      free_.push_back(buffers_.size() - 1);
    }
    return Status::Ok();
  }

  uint64_t buffer_bytes() const { return buffer_bytes_; }

  // Blocks until a buffer is free. Holders never wait for anything but the
  // GPU and memcpy, so this cannot deadlock.
  Buffer& Acquire() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return !free_.empty(); });
    const size_t i = free_.back();
    free_.pop_back();
    return buffers_[i];
  }
  void Release(Buffer& b) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      free_.push_back(static_cast<size_t>(&b - buffers_.data()));
    }
    cv_.notify_one();
  }

 private:
  HbmBackend& backend_;
  const uint64_t buffer_bytes_;
  std::vector<Buffer> buffers_;  // fixed after Init; a Buffer belongs to its holder
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<size_t> free_;  // guarded by mu_
};

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

// One piece of a host <-> HBM batch: a block's payload and where it lives.
struct HostPart {
  std::byte* host = nullptr;  // the caller's buffer (only read when writing to HBM)
  uint64_t dev_offset = 0;    // in the arena
  uint64_t bytes = 0;
  MemoryKind kind = MemoryKind::kPageable;
};

enum class Way { kToHbm, kFromHbm };

class HbmTierImpl final : public HbmTier {
 public:
  HbmTierImpl(const HbmTierOptions& o, std::unique_ptr<HbmBackend> backend)
      : options_(o),
        backend_(std::move(backend)),
        arena_(backend_->arena()),
        events_(*backend_),
        allocator_(backend_->arena_bytes()),
        to_hbm_staging_(*backend_, o.staging_buffer_bytes),
        from_hbm_staging_(*backend_, o.staging_buffer_bytes),
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

  Status Init() {
    KVTIER_RETURN_IF_ERROR(to_hbm_staging_.Init(options_.staging_buffers));
    return from_hbm_staging_.Init(options_.staging_buffers);
  }

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

  HbmTierStats stats() const override {
    HbmTierStats s;
    s.h2d_copies = h2d_copies_.load(std::memory_order_relaxed);
    s.d2h_copies = d2h_copies_.load(std::memory_order_relaxed);
    s.d2d_copies = d2d_copies_.load(std::memory_order_relaxed);
    s.copies_issued = s.h2d_copies + s.d2h_copies + s.d2d_copies;
    s.staged_bytes = staged_bytes_.load(std::memory_order_relaxed);
    s.direct_bytes = direct_bytes_.load(std::memory_order_relaxed);
    return s;
  }

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

  // Makes work enqueued on `stream` from now on wait for the blocks' pending
  // device-side writes; on the host if the GPU cannot be told.
  Status OrderAfter(GpuStream stream, const std::vector<void*>& readies) {
    for (void* ready : readies) {
      if (backend_->StreamWaitEvent(stream, ready).ok()) continue;
      KVTIER_RETURN_IF_ERROR(backend_->WaitEvent(ready));
    }
    return Status::Ok();
  }

  // An event recorded on `stream` now; null (after waiting for the stream on
  // the host) when no event can be had, so completions still come in order.
  Result<EventRef> MarkStream(GpuStream stream) {
    Result<EventRef> ev = events_.Get();
    if (ev.ok() && backend_->RecordEvent(ev->get(), stream).ok()) return ev;
    KVTIER_RETURN_IF_ERROR(backend_->SynchronizeStream(stream));
    return EventRef();
  }

  // Keeps `extents` allocated until `stream` passes this point.
  void DeferFree(GpuStream stream, std::vector<ExtentRef> extents) {
    Result<EventRef> mark = MarkStream(stream);
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

  // Issues the copies of a host <-> HBM batch on the tier's stream for `way`.
  // Returns one status per part; a failed part may have been partly copied.
  std::vector<Status> CopyParts(Way way, std::span<const HostPart> parts);
  Status CopyStaged(Way way, std::span<const HostPart> run);
  void CountCopy(Way way, uint64_t bytes, bool staged) {
    (way == Way::kToHbm ? h2d_copies_ : d2h_copies_).fetch_add(1, std::memory_order_relaxed);
    (staged ? staged_bytes_ : direct_bytes_).fetch_add(bytes, std::memory_order_relaxed);
  }

  const HbmTierOptions options_;
  Bandwidth bandwidth_;  // set before the tier is shared
  const std::unique_ptr<HbmBackend> backend_;
  std::byte* const arena_;
  EventPool events_;
  mutable std::mutex alloc_mu_;
  ExtentAllocator allocator_;  // guarded by alloc_mu_
  StripedBlockMap<Entry> blocks_map_;
  std::mutex quarantine_mu_;
  std::vector<ExtentRef> quarantine_;  // guarded by quarantine_mu_
  StagingPool to_hbm_staging_;
  StagingPool from_hbm_staging_;
  std::atomic<uint64_t> used_bytes_{0};
  std::atomic<uint64_t> blocks_{0};
  std::atomic<uint64_t> io_errors_{0};
  std::atomic<uint64_t> h2d_copies_{0};
  std::atomic<uint64_t> d2h_copies_{0};
  std::atomic<uint64_t> d2d_copies_{0};
  std::atomic<uint64_t> staged_bytes_{0};
  std::atomic<uint64_t> direct_bytes_{0};
  // Last: their threads run callbacks that use everything above. Writes
  // complete on one queue, reads on another (a long write batch does not hold
  // up a read's callback), and frees deferred behind callers' streams on a
  // third (a busy engine stream holds up neither).
  std::unique_ptr<CompletionQueue> write_completions_;
  std::unique_ptr<CompletionQueue> read_completions_;
  std::unique_ptr<CompletionQueue> releases_;
};

// --- Host <-> HBM copies ------------------------------------------------------
//
// Parts come in op order. Consecutive parts contiguous in the arena and in
// host memory, all pinned (or device), are one copy straight from or to the
// caller's memory. Consecutive pageable parts contiguous in the arena are one
// staged run: gathered into (or scattered from) staging buffers, one copy per
// buffer-full, so a run is split only at staging_buffer_bytes (>= 128 KiB).

std::vector<Status> HbmTierImpl::CopyParts(Way way, std::span<const HostPart> parts) {
  std::vector<Status> status(parts.size());
  const GpuStream stream = way == Way::kToHbm ? backend_->h2d_stream() : backend_->d2h_stream();
  size_t i = 0;
  while (i < parts.size()) {
    const bool staged = parts[i].kind == MemoryKind::kPageable;
    size_t j = i + 1;
    while (j < parts.size() && parts[j].kind == parts[i].kind &&
           parts[j].dev_offset == parts[j - 1].dev_offset + parts[j - 1].bytes &&
           (staged || parts[j].host == parts[j - 1].host + parts[j - 1].bytes)) {
      ++j;
    }
    const std::span<const HostPart> run = parts.subspan(i, j - i);
    Status s;
    if (staged) {
      s = CopyStaged(way, run);
    } else {
      const uint64_t total = run.back().dev_offset + run.back().bytes - run.front().dev_offset;
      std::byte* dev = arena_ + run.front().dev_offset;
      s = way == Way::kToHbm ? backend_->CopyAsync(dev, run.front().host, total, stream)
                             : backend_->CopyAsync(run.front().host, dev, total, stream);
      if (s.ok()) CountCopy(way, total, false);
    }
    if (!s.ok()) {
      LogError("hbm_copy_failed", LogFields().Add("error", s.ToString()));
      for (size_t k = i; k < j; ++k) status[k] = s;
    }
    i = j;
  }
  return status;
}

Status HbmTierImpl::CopyStaged(Way way, std::span<const HostPart> run) {
  StagingPool& pool = way == Way::kToHbm ? to_hbm_staging_ : from_hbm_staging_;
  const GpuStream stream = way == Way::kToHbm ? backend_->h2d_stream() : backend_->d2h_stream();
  const uint64_t total = run.back().dev_offset + run.back().bytes - run.front().dev_offset;
  std::byte* const dev = arena_ + run.front().dev_offset;
  size_t part = 0;         // the part the next byte belongs to
  uint64_t part_done = 0;  // bytes of it already moved
  // Moves n bytes between the parts (from `part`) and buf, in run order.
  auto move_bytes = [&](std::byte* buf, uint64_t n) {
    for (uint64_t moved = 0; moved < n;) {
      const uint64_t take = std::min(n - moved, run[part].bytes - part_done);
      if (way == Way::kToHbm) {
        std::memcpy(buf + moved, run[part].host + part_done, take);
      } else {
        std::memcpy(run[part].host + part_done, buf + moved, take);
      }
      moved += take;
      part_done += take;
      if (part_done == run[part].bytes) {
        ++part;
        part_done = 0;
      }
    }
  };
  for (uint64_t done = 0; done < total;) {
    const uint64_t n = std::min(pool.buffer_bytes(), total - done);
    StagingPool::Buffer& buf = pool.Acquire();
    Status s;
    if (buf.last_use) {
      s = backend_->WaitEvent(buf.last_use.get());  // its previous copy has read it
      buf.last_use.reset();
    }
    if (s.ok() && way == Way::kToHbm) {
      move_bytes(buf.data, n);
      s = backend_->CopyAsync(dev + done, buf.data, n, stream);
      if (s.ok()) {
        // The next holder waits for this copy before overwriting the buffer.
        Result<EventRef> mark = MarkStream(stream);
        if (mark.ok()) {
          buf.last_use = *mark;
        } else {
          s = mark.status();
        }
      }
    } else if (s.ok()) {
      s = backend_->CopyAsync(buf.data, dev + done, n, stream);
      if (s.ok()) {
        Result<EventRef> mark = MarkStream(stream);
        s = !mark.ok() ? mark.status() : *mark ? backend_->WaitEvent(mark->get()) : Status::Ok();
      }
      if (s.ok()) move_bytes(buf.data, n);
    }
    pool.Release(buf);
    if (!s.ok()) return s;
    CountCopy(way, n, true);
    done += n;
  }
  return Status::Ok();
}

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
  std::vector<HostPart> parts;
  for (size_t v = 0; v < valid.size(); ++v) {
    const WriteOp& op = ops[valid[v]];
    if (!extents[v]) {
      batch->results[valid[v]] = {NoRoom(op.payload.size()), 0};
      continue;
    }
    // Way::kToHbm only reads the part's host memory.
    auto* src = const_cast<std::byte*>(op.payload.data());
    parts.push_back(
        {src, extents[v]->offset, op.payload.size(), backend_->KindOf(src, op.payload.size())});
    batch->pending.push_back(
        {valid[v], op.key, op.payload.size(), op.expiry_ms, std::move(extents[v]), Status::Ok()});
  }
  std::vector<Status> copied = CopyParts(Way::kToHbm, parts);
  for (size_t p = 0; p < copied.size(); ++p) batch->pending[p].copy = std::move(copied[p]);

  Result<EventRef> mark = MarkStream(backend_->h2d_stream());
  write_completions_->Push(
      mark.ok() ? *mark : EventRef(), [this, batch, mark_status = mark.status()](Status s) {
        if (s.ok()) s = mark_status;
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
    std::vector<size_t> part_op;  // op index of each part
    std::vector<HostPart> parts;
    std::vector<Status> copied;
    std::vector<ExtentRef> extents;  // kept until the copies are done
    IoCallback done;
  };
  auto batch = std::make_shared<Batch>();
  batch->results.resize(ops.size());
  batch->done = std::move(done);
  std::vector<void*> readies;
  std::vector<EventRef> ready_refs;
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
    if (found->ready &&
        std::find(readies.begin(), readies.end(), found->ready.get()) == readies.end()) {
      readies.push_back(found->ready.get());
      ready_refs.push_back(found->ready);
    }
    batch->parts.push_back({op.dest.data(), found->extent->offset, found->bytes,
                            backend_->KindOf(op.dest.data(), found->bytes)});
    batch->part_op.push_back(i);
    batch->extents.push_back(std::move(found->extent));
  }
  const GpuStream stream = backend_->d2h_stream();
  Status ordered = OrderAfter(stream, readies);
  if (ordered.ok()) {
    batch->copied = CopyParts(Way::kFromHbm, batch->parts);
  } else {
    batch->copied.assign(batch->parts.size(), ordered);
  }
  Result<EventRef> mark = MarkStream(stream);
  read_completions_->Push(mark.ok() ? *mark : EventRef(),
                          [this, batch, mark_status = mark.status()](Status s) {
                            if (s.ok()) s = mark_status;
                            for (size_t p = 0; p < batch->parts.size(); ++p) {
                              const HostPart& part = batch->parts[p];
                              const Status& copy = s.ok() ? batch->copied[p] : s;
                              if (copy.ok()) {
                                batch->results[batch->part_op[p]] = {Status::Ok(), part.bytes};
                                continue;
                              }
                              // A copy that failed part-way may have left payload bytes behind.
                              if (part.kind != MemoryKind::kDevice)
                                std::memset(part.host, 0, part.bytes);
                              ++io_errors_;
                              batch->results[batch->part_op[p]] = {
                                  Status::IOError("HBM read failed: " + copy.ToString()), 0};
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
  std::vector<uint64_t> bytes;
  std::vector<void*> readies;
  std::vector<EventRef> ready_refs;
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
    if (found->ready &&
        std::find(readies.begin(), readies.end(), found->ready.get()) == readies.end()) {
      readies.push_back(found->ready.get());
      ready_refs.push_back(found->ready);
    }
    bytes.push_back(found->bytes);
    extents.push_back(std::move(found->extent));
  }
  KVTIER_RETURN_IF_ERROR(OrderAfter(stream, readies));
  Status status;
  for (size_t i = 0; i < ops.size() && status.ok();) {
    size_t j = i + 1;
    while (j < ops.size() && extents[j]->offset == extents[j - 1]->offset + bytes[j - 1] &&
           static_cast<std::byte*>(ops[j].dest) ==
               static_cast<std::byte*>(ops[j - 1].dest) + bytes[j - 1]) {
      ++j;
    }
    const uint64_t total = extents[j - 1]->offset + bytes[j - 1] - extents[i]->offset;
    status = backend_->CopyAsync(ops[i].dest, arena_ + extents[i]->offset, total, stream);
    if (status.ok()) d2d_copies_.fetch_add(1, std::memory_order_relaxed);
    i = j;
  }
  if (!status.ok()) {
    ++io_errors_;
    LogError("hbm_copy_failed", LogFields().Add("error", status.ToString()));
  }
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
  for (size_t i = 0; i < ops.size(); ++i) {
    if (!extents[i]) return NoRoom(ops[i].bytes);  // what was allocated is freed
  }
  Status status;
  for (size_t i = 0; i < ops.size() && status.ok();) {
    size_t j = i + 1;
    while (j < ops.size() && extents[j]->offset == extents[j - 1]->offset + sizes[j - 1] &&
           static_cast<const std::byte*>(ops[j].src) ==
               static_cast<const std::byte*>(ops[j - 1].src) + sizes[j - 1]) {
      ++j;
    }
    const uint64_t total = extents[j - 1]->offset + sizes[j - 1] - extents[i]->offset;
    status = backend_->CopyAsync(arena_ + extents[i]->offset, ops[i].src, total, stream);
    if (status.ok()) d2d_copies_.fetch_add(1, std::memory_order_relaxed);
    i = j;
  }
  if (!status.ok()) {
    ++io_errors_;
    LogError("hbm_copy_failed", LogFields().Add("error", status.ToString()));
    // Copies already enqueued still write into the extents: free them after.
    DeferFree(stream, std::move(extents));
    return status;
  }
  Result<EventRef> ready = MarkStream(stream);
  if (!ready.ok()) {
    ++io_errors_;
    Quarantine(std::move(extents));
    return ready.status();
  }
  for (size_t i = 0; i < ops.size(); ++i) {
    Publish(ops[i].key, Entry{extents[i], ops[i].bytes, ops[i].expiry_ms, *ready});
  }
  if (!*ready) return Status::Ok();  // MarkStream waited: the copies are done
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

}  // namespace

Result<std::unique_ptr<HbmTier>> HbmTier::Open(const HbmTierOptions& o) {
  KVTIER_RETURN_IF_ERROR(ValidateOptions(o));
  const uint64_t arena_bytes =
      o.capacity_bytes / ExtentAllocator::kAlignment * ExtentAllocator::kAlignment;
  std::unique_ptr<HbmBackend> backend;
  std::string standin_reason = "forced by options";
  if (!o.force_host_standin) {
    Result<std::unique_ptr<HbmBackend>> cuda = NewCudaHbmBackend(o.device, arena_bytes);
    if (cuda.ok()) {
      backend = std::move(*cuda);
    } else if (cuda.status().code() == StatusCode::kUnavailable) {
      standin_reason = cuda.status().message();
    } else {
      return cuda.status();
    }
  }
  if (!backend) {
    Result<std::unique_ptr<HbmBackend>> host =
        NewHostHbmBackend(arena_bytes, o.standin_host_is_pinned, standin_reason);
    if (!host.ok()) return host.status();
    backend = std::move(*host);
  }
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
