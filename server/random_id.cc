#include "server/random_id.h"

#include <sys/random.h>

#include <array>
#include <cerrno>
#include <cstdint>
#include <cstdio>

namespace kvtier {

std::string NewRandomId() {
  std::array<uint8_t, 16> bytes{};
  size_t got = 0;
  while (got < bytes.size()) {
    // getrandom blocks only before the kernel's pool is seeded, at boot.
    const ssize_t r = ::getrandom(bytes.data() + got, bytes.size() - got, 0);
    if (r > 0) got += static_cast<size_t>(r);
  }
  std::string id;
  id.reserve(2 * bytes.size());
  char hex[3];
  for (uint8_t b : bytes) {
    std::snprintf(hex, sizeof hex, "%02x", b);
    id += hex;
  }
  return id;
}

}  // namespace kvtier
