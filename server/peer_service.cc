#include "server/peer_service.h"

#include <openssl/crypto.h>

#include <vector>

#include "common/checksum.h"

namespace kvtier {
namespace {

constexpr int kMaxKeysPerCall = 1 << 16;

int64_t ToProtoExpiry(int64_t expiry_ms) { return expiry_ms == kNoExpiry ? 0 : expiry_ms; }

}  // namespace

grpc::Status PeerService::Check(const grpc::ServerContext* ctx) {
  const auto& md = ctx->client_metadata();
  const auto it = md.find(grpc::string_ref(kPeerTokenHeader.data(), kPeerTokenHeader.size()));
  if (it == md.end() || it->second.size() != token_.size() ||
      CRYPTO_memcmp(it->second.data(), token_.data(), token_.size()) != 0) {
    ++refused_;
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        "the Peer service is for kvtierd nodes sharing this cluster's secret");
  }
  return grpc::Status::OK;
}

Result<IndexEntry> PeerService::Own(const std::string& key_bytes) const {
  const std::optional<BlockKey> key = BlockKey::FromBytes(key_bytes);
  if (!key) return Status::InvalidArgument("a block key is 16 bytes");
  Result<IndexEntry> e = cache_.Find(*key);
  if (e.ok() && e->tier == peer_tier_) return Status::NotFound("held by another peer");
  return e;
}

grpc::Status PeerService::Stat(grpc::ServerContext* ctx, const v1::PeerStatRequest* req,
                               v1::PeerStatResponse* resp) {
  if (grpc::Status s = Check(ctx); !s.ok()) return s;
  if (req->keys_size() > kMaxKeysPerCall) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "too many keys in one call");
  }
  for (const std::string& k : req->keys()) {
    v1::PeerBlockStat* b = resp->add_blocks();
    Result<IndexEntry> e = Own(k);
    if (!e.ok()) continue;
    b->set_found(true);
    b->set_size_bytes(e->bytes);
    b->set_expire_time_ms(ToProtoExpiry(e->expiry_ms));
  }
  return grpc::Status::OK;
}

grpc::Status PeerService::Read(grpc::ServerContext* ctx, const v1::PeerReadRequest* req,
                               v1::PeerReadResponse* resp) {
  if (grpc::Status s = Check(ctx); !s.ok()) return s;
  if (req->keys_size() > kMaxKeysPerCall) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "too many keys in one call");
  }
  uint64_t budget = kPeerCallBytes;
  for (const std::string& k : req->keys()) {
    v1::PeerBlock* b = resp->add_blocks();
    b->set_key(k);
    Result<IndexEntry> e = Own(k);
    if (!e.ok() || e->bytes > budget) continue;  // past the budget: asked again later
    std::string payload(e->bytes, '\0');
    uint64_t xxh3 = 0;
    Result<uint64_t> n =
        cache_.Read(*BlockKey::FromBytes(k),
                    std::span(reinterpret_cast<std::byte*>(payload.data()), payload.size()),
                    /*is_use=*/true, &xxh3);
    if (!n.ok()) continue;
    payload.resize(*n);
    budget -= *n;
    b->set_found(true);
    b->set_payload(std::move(payload));
    b->set_payload_xxh3(xxh3);
    b->set_expire_time_ms(ToProtoExpiry(e->expiry_ms));
  }
  return grpc::Status::OK;
}

grpc::Status PeerService::Write(grpc::ServerContext* ctx, const v1::PeerWriteRequest* req,
                                v1::PeerWriteResponse* resp) {
  if (grpc::Status s = Check(ctx); !s.ok()) return s;
  for (const v1::PeerBlock& b : req->blocks()) {
    const std::optional<BlockKey> key = BlockKey::FromBytes(b.key());
    const auto* p = reinterpret_cast<const std::byte*>(b.payload().data());
    const std::span<const std::byte> payload(p, b.payload().size());
    // A block damaged on the way is not stored.
    if (!key || payload.empty() || Checksum64(payload) != b.payload_xxh3()) {
      resp->add_stored(false);
      continue;
    }
    BlockMeta meta;
    meta.expiry_ms = b.expire_time_ms() == 0 ? kNoExpiry : b.expire_time_ms();
    resp->add_stored(cache_.Insert(*key, payload, meta).ok());
  }
  return grpc::Status::OK;
}

}  // namespace kvtier
