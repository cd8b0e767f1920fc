// The HBM tier's host stand-in: the arena is host memory and copies are
// memcpy, so the tier's allocator, coalescing, staging and completion paths
// run in CI without a GPU.
#include <cstdlib>
#include <cstring>

#include "tiers/hbm/hbm_backend.h"

namespace kvtier {
namespace {

constexpr size_t kPageBytes = 4096;

size_t RoundToPages(size_t bytes) { return (bytes + kPageBytes - 1) / kPageBytes * kPageBytes; }

class HostHbmBackend final : public HbmBackend {
 public:
  HostHbmBackend(std::byte* arena, uint64_t arena_bytes, bool host_is_pinned, std::string reason)
      : arena_(arena),
        arena_bytes_(arena_bytes),
        host_is_pinned_(host_is_pinned),
        reason_(std::move(reason)) {}
  ~HostHbmBackend() override { std::free(arena_); }

  bool on_device() const override { return false; }
  std::string Describe() const override { return "host stand-in (" + reason_ + ")"; }
  std::byte* arena() const override { return arena_; }
  uint64_t arena_bytes() const override { return arena_bytes_; }
  GpuStream h2d_stream() const override { return nullptr; }
  GpuStream d2h_stream() const override { return nullptr; }

  MemoryKind KindOf(const void* p, size_t bytes) const override {
    const auto* b = static_cast<const std::byte*>(p);
    if (b >= arena_ && b + bytes <= arena_ + arena_bytes_) return MemoryKind::kDevice;
    return host_is_pinned_ ? MemoryKind::kPinnedHost : MemoryKind::kPageable;
  }

  Status CopyAsync(void* dst, const void* src, size_t bytes, GpuStream) override {
    std::memcpy(dst, src, bytes);
    return Status::Ok();
  }
  Status SynchronizeStream(GpuStream) override { return Status::Ok(); }

  Result<void*> AllocatePinnedHost(size_t bytes) override {
    void* p = std::aligned_alloc(kPageBytes, RoundToPages(bytes));
    if (p == nullptr) {
      return Status::ResourceExhausted("cannot allocate " + std::to_string(bytes) +
                                       " bytes of staging memory");
    }
    return p;
  }
  void FreePinnedHost(void* p) override { std::free(p); }

  // Copies complete at once, so an event only needs to be a distinct handle.
  Result<void*> CreateEvent() override { return static_cast<void*>(new char); }
  void DestroyEvent(void* event) override { delete static_cast<char*>(event); }
  Status RecordEvent(void*, GpuStream) override { return Status::Ok(); }
  Status WaitEvent(void*) override { return Status::Ok(); }
  Status StreamWaitEvent(GpuStream, void*) override { return Status::Ok(); }

 private:
  std::byte* const arena_;
  const uint64_t arena_bytes_;
  const bool host_is_pinned_;
  const std::string reason_;
};

}  // namespace

Result<std::unique_ptr<HbmBackend>> NewHostHbmBackend(uint64_t arena_bytes, bool host_is_pinned,
                                                      std::string reason) {
  void* p = std::aligned_alloc(kPageBytes, RoundToPages(arena_bytes));
  if (p == nullptr) {
    return Status::ResourceExhausted("cannot allocate a stand-in HBM arena of " +
                                     std::to_string(arena_bytes) + " bytes");
  }
  return std::unique_ptr<HbmBackend>(std::make_unique<HostHbmBackend>(
      static_cast<std::byte*>(p), arena_bytes, host_is_pinned, std::move(reason)));
}

}  // namespace kvtier
