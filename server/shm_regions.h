// ShmRegions: same-host zero copy for the block API (docs/block-api.md).
//
// A client on the daemon's machine connects to a Unix socket and asks for a
// region; the daemon makes a memfd of that size, maps it, seals its size (so
// a client cannot shrink it under the daemon) and passes the descriptor back
// (SCM_RIGHTS). The client maps it too. BatchGet then writes payloads
// straight into the region and BatchPut reads them from it, instead of
// carrying them in gRPC messages. The region belongs to the tenant whose API
// key opened it and lives while the socket stays open: a client that goes
// away gives its memory back: when the region ends, its pages are freed
// (punched out of the memfd), so a client that kept the descriptor after
// closing the socket holds no memory the daemon stopped counting.
//
// The handshake, one line each way:
//   client: "KVTIER-SHM/1 <bytes> <api-key or ->\n"
//   daemon: "OK <region-id> <bytes>\n" with the memfd, or
//           "ERR <code> <why>\n" (a gRPC status code name) and close.
// Region ids are 128 random bits in hex, usable only by their tenant.
// Thread-safe.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <unordered_map>

#include "common/status.h"
#include "server/auth.h"

namespace kvtier {

struct ShmLimits {
  uint64_t max_region_bytes = uint64_t{1} << 30;  // one client's region
  size_t max_regions = 64;                        // open at once
  uint64_t max_total_bytes = uint64_t{8} << 30;   // all regions together
  // One tenant's share of the two above (0: half of each), so that one API
  // key cannot take every region and refuse everyone else.
  size_t max_tenant_regions = 0;
  uint64_t max_tenant_bytes = 0;
};

struct ShmStats {
  uint64_t open_regions = 0;
  uint64_t open_bytes = 0;
  uint64_t opened = 0;
  uint64_t refused = 0;  // bad handshakes, bad keys, over the limits
};

// A mapped region; kept alive by the calls using it after its client left.
class ShmRegion {
 public:
  ShmRegion(std::string id, std::string tenant, std::byte* base, uint64_t size)
      : id_(std::move(id)), tenant_(std::move(tenant)), base_(base), size_(size) {}
  ~ShmRegion();
  ShmRegion(const ShmRegion&) = delete;
  ShmRegion& operator=(const ShmRegion&) = delete;

  const std::string& id() const { return id_; }
  const std::string& tenant() const { return tenant_; }
  uint64_t size() const { return size_; }
  // [offset, offset + bytes) within the region, or an empty span (the range
  // does not fit).
  std::span<std::byte> Range(uint64_t offset, uint64_t bytes) const;

 private:
  const std::string id_;
  const std::string tenant_;
  std::byte* const base_;
  const uint64_t size_;
};

class ShmRegistry {
 public:
  // Listens on `socket_path` (replacing a stale socket file; mode 0600, so
  // only the daemon's user can connect).
  static Result<std::unique_ptr<ShmRegistry>> Open(const std::string& socket_path,
                                                   const ShmLimits& limits,
                                                   const Authenticator& auth);
  ~ShmRegistry();  // stops listening, closes every connection, unlinks the socket
  ShmRegistry(const ShmRegistry&) = delete;
  ShmRegistry& operator=(const ShmRegistry&) = delete;

  // The region `id` of `tenant`; kNotFound when there is none (unknown,
  // closed, or another tenant's: one answer for all three).
  Result<std::shared_ptr<ShmRegion>> Find(const std::string& tenant, const std::string& id) const;
  ShmStats stats() const;
  const std::string& socket_path() const { return path_; }

 private:
  struct Conn;
  ShmRegistry(std::string path, int listen_fd, int wake_fd, const ShmLimits& limits,
              const Authenticator& auth);
  void Serve();
  // Answers a complete handshake line on `conn`; false: close it.
  bool Handshake(Conn& conn, const std::string& line);
  void CloseConn(int fd);

  const std::string path_;
  const int listen_fd_;
  const int wake_fd_;  // an eventfd that ends Serve
  const ShmLimits limits_;
  const Authenticator& auth_;
  mutable std::mutex mu_;
  std::unordered_map<std::string, std::shared_ptr<ShmRegion>> regions_;  // by id; guarded by mu_
  std::unordered_map<int, std::unique_ptr<Conn>> conns_;  // by fd; only Serve's thread
  ShmStats stats_;                                        // guarded by mu_
  std::thread thread_;
};

}  // namespace kvtier
