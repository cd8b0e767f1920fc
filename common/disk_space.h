// What the file system holding a path has room for: statvfs, as an
// unprivileged writer sees it (blocks available to non-root users). Thread-safe.
#pragma once

#include <cstdint>
#include <string>

#include "common/status.h"

namespace kvtier {

struct DiskSpace {
  uint64_t free_bytes = 0;   // bytes a new write may take now
  uint64_t total_bytes = 0;  // size of the file system, bytes
};

// The space of the file system holding `path` (which must exist). kIOError
// naming the path when statvfs fails.
Result<DiskSpace> QueryDiskSpace(const std::string& path);

}  // namespace kvtier
