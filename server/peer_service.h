// The Peer service: what one kvtierd node answers another (DESIGN §10,
// proto/kvtier.proto). Stat and Read answer from this node's own tiers only
// (never from its view of other peers, so no request goes round in circles);
// Write stores a peer's copy of a block this node owns. Callers present the
// cluster's peer token (CacheSecret::PeerToken) in kPeerTokenHeader; anyone
// else is refused (UNAUTHENTICATED) and nothing changes.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <string_view>

#include "cache/cache_manager.h"
#include "proto/kvtier.grpc.pb.h"

namespace kvtier {

inline constexpr std::string_view kPeerTokenHeader = "x-kvtier-peer";
// Payload bytes one Peer call carries at most: under the daemon's 4 MiB
// message limit. Larger blocks are not exchanged between peers
// (docs/scale-out.md).
inline constexpr uint64_t kPeerCallBytes = (4ull << 20) - (64ull << 10);

class PeerService final : public v1::Peer::Service {
 public:
  // `peer_tier`: the index of this node's own peer tier in `cache`'s stack
  // (its blocks are other nodes' and are not served), or SIZE_MAX.
  PeerService(CacheManager& cache, std::string token, size_t peer_tier)
      : cache_(cache), token_(std::move(token)), peer_tier_(peer_tier) {}

  grpc::Status Stat(grpc::ServerContext* ctx, const v1::PeerStatRequest* req,
                    v1::PeerStatResponse* resp) override;
  grpc::Status Read(grpc::ServerContext* ctx, const v1::PeerReadRequest* req,
                    v1::PeerReadResponse* resp) override;
  grpc::Status Write(grpc::ServerContext* ctx, const v1::PeerWriteRequest* req,
                     v1::PeerWriteResponse* resp) override;

  uint64_t refused() const { return refused_.load(); }

 private:
  grpc::Status Check(const grpc::ServerContext* ctx);
  // The entry of a block this node holds in its own tiers.
  Result<IndexEntry> Own(const std::string& key_bytes) const;

  CacheManager& cache_;
  const std::string token_;
  const size_t peer_tier_;
  std::atomic<uint64_t> refused_{0};
};

}  // namespace kvtier
