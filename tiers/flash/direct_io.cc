#include "tiers/flash/direct_io.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "tiers/flash/record_format.h"

namespace kvtier::flash {
namespace {

// `io` is pread or pwrite; `Buffer` its (const) byte pointer.
template <typename Buffer, typename Io>
bool TransferAll(Io io, int fd, Buffer* buf, uint64_t bytes, uint64_t offset) {
  while (bytes > 0) {
    ssize_t n = io(fd, buf, bytes, static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      if (n == 0) errno = EIO;
      return false;
    }
    buf += n;
    bytes -= static_cast<uint64_t>(n);
    offset += static_cast<uint64_t>(n);
  }
  return true;
}

}  // namespace

void AlignedFree::operator()(std::byte* p) const { std::free(p); }

AlignedBuffer AllocAligned(uint64_t bytes) {
  return AlignedBuffer(static_cast<std::byte*>(
      std::aligned_alloc(kPage, RoundUp(std::max<uint64_t>(bytes, 1), kPage))));
}

bool PreadAll(int fd, std::byte* buf, uint64_t bytes, uint64_t offset) {
  return TransferAll(::pread, fd, buf, bytes, offset);
}

bool PwriteAll(int fd, const std::byte* buf, uint64_t bytes, uint64_t offset) {
  return TransferAll(::pwrite, fd, buf, bytes, offset);
}

std::string ErrnoText(int err) { return std::strerror(err); }

}  // namespace kvtier::flash
