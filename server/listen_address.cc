#include "server/listen_address.h"

#include <charconv>
#include <utility>

namespace kvtier {

Status ParseListenAddress(const std::string& listen, std::string_view flag,
                          std::string_view example, std::string* host, int* port) {
  const auto bad = [&](const char* why) {
    return Status::InvalidArgument(std::string(flag) + " \"" + listen + "\" " + why +
                                   " (want host:port, e.g. " + std::string(example) + ")");
  };
  const size_t colon = listen.rfind(':');
  if (colon == std::string::npos) return bad("has no port");
  std::string h = listen.substr(0, colon);
  if (h.size() >= 2 && h.front() == '[' && h.back() == ']') h = h.substr(1, h.size() - 2);
  if (h.empty()) return bad("has no host");
  const std::string p = listen.substr(colon + 1);
  int value = -1;
  const auto [end, ec] = std::from_chars(p.data(), p.data() + p.size(), value);
  if (p.empty() || ec != std::errc() || end != p.data() + p.size() || value < 0 || value > 65535) {
    return bad("has no valid port");
  }
  *host = std::move(h);
  *port = value;
  return Status::Ok();
}

}  // namespace kvtier
