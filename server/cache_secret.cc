#include "server/cache_secret.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace kvtier {
namespace {

Status Errno(const std::string& what, const std::string& path) {
  return Status::IOError(what + " " + path + ": " + std::strerror(errno));
}

// Reads exactly `n` bytes, or reports how many the file held.
Result<size_t> ReadUpTo(int fd, uint8_t* out, size_t n) {
  size_t got = 0;
  while (got < n + 1) {
    uint8_t extra;
    uint8_t* dst = got < n ? out + got : &extra;
    const ssize_t r = ::read(fd, dst, got < n ? n - got : 1);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return Status::IOError(std::strerror(errno));
    if (r == 0) break;
    got += static_cast<size_t>(r);
  }
  return got;
}

Status WriteAll(int fd, const uint8_t* p, size_t n) {
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) return Status::IOError(std::strerror(errno));
    p += w;
    n -= static_cast<size_t>(w);
  }
  return Status::Ok();
}

std::string Hex(const uint8_t* p, size_t n) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string s(2 * n, '0');
  for (size_t i = 0; i < n; ++i) {
    s[2 * i] = kDigits[p[i] >> 4];
    s[2 * i + 1] = kDigits[p[i] & 15];
  }
  return s;
}

Result<CacheSecret> Read(const std::string& path, int fd) {
  std::array<uint8_t, CacheSecret::kBytes> bytes{};
  Result<size_t> n = ReadUpTo(fd, bytes.data(), bytes.size());
  ::close(fd);
  if (!n.ok()) return Status::IOError("cannot read " + path + ": " + n.status().message());
  if (*n != bytes.size()) {
    return Status::Corruption(path + " holds " + std::to_string(*n) + " bytes, not " +
                              std::to_string(bytes.size()) +
                              ": restore it from a backup, or delete it to start a new secret "
                              "(every cached block then becomes a miss)");
  }
  return CacheSecret::FromBytes(bytes);
}

}  // namespace

CacheSecret CacheSecret::FromBytes(const std::array<uint8_t, kBytes>& bytes) {
  return CacheSecret(bytes);
}

Result<CacheSecret> CacheSecret::Load(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return Status::NotFound("no cache secret at " + path);
    return Errno("cannot open", path);
  }
  return Read(path, fd);
}

Result<CacheSecret> CacheSecret::LoadOrCreate(const std::string& data_dir) {
  const std::string path = data_dir + "/" + kFileName;
  if (int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC); fd >= 0) return Read(path, fd);
  if (errno != ENOENT) return Errno("cannot open", path);

  // A new secret: written in full to a temporary file, made durable, then
  // renamed into place, so a crash leaves either no secret or a whole one.
  std::array<uint8_t, kBytes> bytes{};
  for (size_t got = 0; got < bytes.size();) {
    const ssize_t r = ::getrandom(bytes.data() + got, bytes.size() - got, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return Errno("getrandom failed for", path);
    got += static_cast<size_t>(r);
  }
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return Errno("cannot create", tmp);
  Status s = WriteAll(fd, bytes.data(), bytes.size());
  if (s.ok() && ::fsync(fd) != 0) s = Status::IOError(std::strerror(errno));
  ::close(fd);
  if (s.ok() && ::rename(tmp.c_str(), path.c_str()) != 0) {
    s = Status::IOError(std::strerror(errno));
  }
  if (!s.ok()) {
    ::unlink(tmp.c_str());
    return Status::IOError("cannot write " + path + ": " + s.message());
  }
  if (int dir = ::open(data_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); dir >= 0) {
    (void)::fsync(dir);
    ::close(dir);
  }
  return CacheSecret(bytes);
}

std::array<uint8_t, 32> CacheSecret::Mac(std::string_view domain, std::string_view message) const {
  std::string input(domain);
  input.push_back('\0');
  input.append(message);
  std::array<uint8_t, 32> out{};
  unsigned int len = 0;
  HMAC(EVP_sha256(), key_.data(), static_cast<int>(key_.size()),
       reinterpret_cast<const unsigned char*>(input.data()), input.size(), out.data(), &len);
  return out;
}

std::string CacheSecret::TenantSalt(std::string_view tenant) const {
  const auto mac = Mac("kvtier-tenant-salt-v1", tenant);
  return Hex(mac.data(), mac.size());
}

std::string CacheSecret::PeerToken() const {
  const auto mac = Mac("kvtier-peer-token-v1", "");
  return Hex(mac.data(), mac.size());
}

std::string CacheSecret::GroupSalt(std::string_view group) const {
  const auto mac = Mac("kvtier-group-salt-v1", group);
  return Hex(mac.data(), mac.size());
}

std::string CacheSecret::ScopedSalt(std::string_view scope_salt,
                                    std::string_view client_salt) const {
  if (client_salt.empty()) return std::string(scope_salt);
  std::string message(scope_salt);
  message.push_back('\0');
  message.append(client_salt);
  const auto mac = Mac("kvtier-client-salt-v1", message);
  return Hex(mac.data(), mac.size());
}

BlockKey CacheSecret::KeyMask(const BlockKey& namespace_seed) const {
  std::array<std::byte, 16> seed;
  namespace_seed.ToBytes(seed);
  const auto mac =
      Mac("kvtier-key-mask-v1", std::string_view(reinterpret_cast<const char*>(seed.data()), 16));
  BlockKey mask;
  for (int i = 0; i < 8; ++i) {
    mask.hi = (mask.hi << 8) | mac[i];
    mask.lo = (mask.lo << 8) | mac[8 + i];
  }
  return mask;
}

}  // namespace kvtier
