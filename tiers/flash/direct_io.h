// What the flash tier's synchronous I/O needs beside the io_uring loop:
// page-aligned buffers (O_DIRECT transfers start and end on kPage) and
// full-length positional reads and writes for recovery, header rewrites and
// compaction. Private to tiers/flash; thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace kvtier::flash {

struct AlignedFree {
  void operator()(std::byte* p) const;
};
using AlignedBuffer = std::unique_ptr<std::byte[], AlignedFree>;

// `bytes` rounded up to kPage (at least one page), kPage-aligned; null when
// out of memory.
AlignedBuffer AllocAligned(uint64_t bytes);

// Read or write exactly `bytes` at `offset`, retrying short transfers and
// EINTR; false with errno set on failure (EIO for an unexpected end of file).
bool PreadAll(int fd, std::byte* buf, uint64_t bytes, uint64_t offset);
bool PwriteAll(int fd, const std::byte* buf, uint64_t bytes, uint64_t offset);

// strerror(err) as a string, for error messages.
std::string ErrnoText(int err);

}  // namespace kvtier::flash
