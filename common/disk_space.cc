#include "common/disk_space.h"

#include <sys/statvfs.h>

#include <cerrno>
#include <cstring>

namespace kvtier {

Result<DiskSpace> QueryDiskSpace(const std::string& path) {
  struct statvfs st;
  if (statvfs(path.c_str(), &st) != 0) {
    return Status::IOError("statvfs " + path + ": " + std::strerror(errno));
  }
  DiskSpace space;
  space.free_bytes = static_cast<uint64_t>(st.f_bavail) * st.f_frsize;
  space.total_bytes = static_cast<uint64_t>(st.f_blocks) * st.f_frsize;
  return space;
}

}  // namespace kvtier
