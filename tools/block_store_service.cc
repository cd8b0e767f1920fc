#include "tools/block_store_service.h"

#include <grpcpp/grpcpp.h>

#include <string>
#include <vector>

#include "cache/prefix_hasher.h"
#include "common/checksum.h"
#include "proto/status_codes.h"

namespace kvtier {
namespace {

constexpr uint32_t kDefaultChunkBytes = 1 << 20;
constexpr uint32_t kMaxChunkBytes = 4 << 20;

grpc::Status ShuttingDown() {
  return grpc::Status(grpc::StatusCode::UNAVAILABLE, "kvtierd is shutting down");
}
grpc::Status Invalid(std::string msg) {
  return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, std::move(msg));
}
grpc::Status Exhausted(std::string msg) {
  return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, std::move(msg));
}

Result<BlockKey> ParseKey(const std::string& bytes, const std::string& what) {
  std::optional<BlockKey> k = BlockKey::FromBytes(bytes);
  if (!k) {
    return Status::InvalidArgument(what + " must be 16 bytes, got " + std::to_string(bytes.size()));
  }
  return *k;
}

Status CheckTokens(const google::protobuf::RepeatedField<int32_t>& ids, size_t max_tokens) {
  if (static_cast<size_t>(ids.size()) > max_tokens) {
    return Status::ResourceExhausted(std::to_string(ids.size()) +
                                     " token ids exceed the limit of " +
                                     std::to_string(max_tokens));
  }
  for (int i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0) {
      return Status::InvalidArgument("token_ids[" + std::to_string(i) +
                                     "] = " + std::to_string(ids[i]) + " is negative");
    }
  }
  return Status::Ok();
}

std::span<const TokenId> Span(const google::protobuf::RepeatedField<int32_t>& ids) {
  return {ids.data(), static_cast<size_t>(ids.size())};
}

// Reserves payload bytes held by in-flight calls (Put and Get buffers) against
// the daemon-wide budget; releases on scope exit.
class PayloadReservation {
 public:
  PayloadReservation(std::atomic<uint64_t>& counter, uint64_t bytes, uint64_t limit)
      : counter_(counter), bytes_(bytes) {
    uint64_t cur = counter_.load();
    do {
      if (cur + bytes > limit) return;
    } while (!counter_.compare_exchange_weak(cur, cur + bytes));
    held_ = true;
  }
  ~PayloadReservation() {
    if (held_) counter_ -= bytes_;
  }
  bool held() const { return held_; }

 private:
  std::atomic<uint64_t>& counter_;
  uint64_t bytes_;
  bool held_ = false;
};

}  // namespace

BlockStoreService::BlockStoreService(CacheManager& cache, const Namespace& default_namespace,
                                     const BlockStoreLimits& limits, Clock* clock, CallGate& gate)
    : cache_(cache),
      default_namespace_(default_namespace),
      limits_(limits),
      clock_(clock),
      gate_(gate) {}

grpc::Status BlockStoreService::Authorize(const grpc::ServerContext* ctx, Namespace* ns) const {
  if (auth_ == nullptr || !auth_->enabled()) return grpc::Status::OK;
  Principal p;
  grpc::Status s = auth_->Authenticate(ctx, "", &p);
  if (s.ok() && ns != nullptr) ns->cache_salt = p.cache_salt;
  return s;
}

Result<Namespace> BlockStoreService::ResolveNamespace(bool present, const v1::Namespace& m) const {
  Namespace ns = default_namespace_;
  if (present) {
    if (!m.model_id().empty()) ns.model_id = m.model_id();
    if (!m.model_revision().empty()) ns.model_revision = m.model_revision();
    if (!m.kv_dtype().empty()) {
      std::optional<DType> d = ParseDType(m.kv_dtype());
      if (!d) {
        return Status::InvalidArgument("kv_dtype '" + m.kv_dtype() +
                                       "' is not one of f32, f16, bf16");
      }
      ns.kv_dtype = *d;
    }
    if (m.block_tokens() != 0) {
      if (!ValidBlockTokens(m.block_tokens())) {
        return Status::InvalidArgument("block_tokens must be a power of two in [16, 1024], got " +
                                       std::to_string(m.block_tokens()));
      }
      ns.block_tokens = static_cast<int>(m.block_tokens());
    }
    if (m.layout_version() != 0) ns.layout_version = m.layout_version();
    if (m.tp_size() != 0) ns.tp_size = m.tp_size();
    ns.tp_rank = m.tp_rank();
    if (!m.cache_salt().empty()) ns.cache_salt = m.cache_salt();
  }
  KVTIER_RETURN_IF_ERROR(ns.Validate());
  return ns;
}

void BlockStoreService::FillInfo(const BlockKey& key, const IndexEntry& e,
                                 v1::BlockInfo* info) const {
  info->set_key(key.ToByteString());
  info->set_size_bytes(e.bytes);
  info->set_tier(cache_.tier_name(e.tier));
  info->set_expire_time_ms(e.expiry_ms == kNoExpiry ? 0 : e.expiry_ms);
}

grpc::Status BlockStoreService::Lookup(grpc::ServerContext* ctx, const v1::LookupRequest* req,
                                       v1::LookupResponse* resp) {
  auto pass = gate_.Enter();
  if (!pass) return ShuttingDown();
  const bool by_tokens = req->token_ids_size() > 0;
  if (by_tokens == (req->keys_size() > 0)) {
    return Invalid("a Lookup gives exactly one of token_ids and keys");
  }
  Result<Namespace> ns = ResolveNamespace(req->has_namespace_(), req->namespace_());
  if (ns.ok()) {
    if (grpc::Status a = Authorize(ctx, &*ns); !a.ok()) return a;
  }
  if (!ns.ok()) return ToGrpcStatus(ns.status());
  std::vector<BlockKey> keys;
  if (by_tokens) {
    if (Status s = CheckTokens(req->token_ids(), limits_.max_tokens); !s.ok()) {
      return ToGrpcStatus(s);
    }
    keys = PrefixHasher(*ns).Keys(Span(req->token_ids()));
  } else {
    if (static_cast<size_t>(req->keys_size()) > limits_.max_keys) {
      return Exhausted(std::to_string(req->keys_size()) + " keys exceed the limit of " +
                       std::to_string(limits_.max_keys));
    }
    for (int i = 0; i < req->keys_size(); ++i) {
      Result<BlockKey> k = ParseKey(req->keys(i), "keys[" + std::to_string(i) + "]");
      if (!k.ok()) return ToGrpcStatus(k.status());
      keys.push_back(*k);
    }
  }
  PrefixHit hit = cache_.Lookup(keys);
  resp->set_query_blocks(static_cast<uint32_t>(keys.size()));
  resp->set_hit_blocks(static_cast<uint32_t>(hit.blocks));
  resp->set_block_tokens(static_cast<uint32_t>(ns->block_tokens));
  resp->set_hit_tokens(by_tokens ? static_cast<uint32_t>(hit.blocks * ns->block_tokens) : 0);
  for (size_t i = 0; i < hit.blocks; ++i) FillInfo(keys[i], hit.entries[i], resp->add_hits());
  if (by_tokens && req->return_keys()) {
    for (const BlockKey& k : keys) resp->add_keys(k.ToByteString());
  }
  return grpc::Status::OK;
}

grpc::Status BlockStoreService::Put(grpc::ServerContext* ctx,
                                    grpc::ServerReader<v1::PutRequest>* reader,
                                    v1::PutResponse* resp) {
  auto pass = gate_.Enter();
  if (!pass) return ShuttingDown();
  v1::PutRequest msg;
  if (!reader->Read(&msg) || !msg.has_header()) {
    return Invalid("a Put stream starts with a header message");
  }
  const v1::PutHeader header = msg.header();
  Result<Namespace> ns = ResolveNamespace(header.has_namespace_(), header.namespace_());
  if (ns.ok()) {
    if (grpc::Status a = Authorize(ctx, &*ns); !a.ok()) return a;
  }
  if (!ns.ok()) return ToGrpcStatus(ns.status());

  // Name the block: by key (with an optional parent) or by a prefix of tokens.
  const bool by_tokens = header.token_ids_size() > 0;
  if (by_tokens == !header.key().empty())
    return Invalid("a Put gives exactly one of key and token_ids");
  BlockKey key;
  std::optional<BlockKey> parent;
  if (by_tokens) {
    if (!header.parent_key().empty()) return Invalid("parent_key goes with key, not token_ids");
    if (Status s = CheckTokens(header.token_ids(), limits_.max_tokens); !s.ok()) {
      return ToGrpcStatus(s);
    }
    if (header.token_ids_size() % ns->block_tokens != 0) {
      return Invalid("token_ids holds " + std::to_string(header.token_ids_size()) +
                     " tokens, not a whole number of " + std::to_string(ns->block_tokens) +
                     "-token blocks");
    }
    std::vector<BlockKey> keys = PrefixHasher(*ns).Keys(Span(header.token_ids()));
    key = keys.back();
    if (keys.size() > 1) parent = keys[keys.size() - 2];
  } else {
    Result<BlockKey> k = ParseKey(header.key(), "key");
    if (!k.ok()) return ToGrpcStatus(k.status());
    key = *k;
    if (!header.parent_key().empty()) {
      Result<BlockKey> p = ParseKey(header.parent_key(), "parent_key");
      if (!p.ok()) return ToGrpcStatus(p.status());
      parent = *p;
    }
  }

  const uint64_t size = header.size_bytes();
  if (size == 0) return Invalid("size_bytes must be positive");
  if (size > limits_.max_block_bytes) {
    return Exhausted("a block of " + std::to_string(size) + " bytes exceeds the limit of " +
                     std::to_string(limits_.max_block_bytes));
  }
  PayloadReservation reservation(inflight_payload_bytes_, size, limits_.max_inflight_payload_bytes);
  if (!reservation.held()) {
    return Exhausted("the daemon is buffering too many payloads; retry later");
  }

  std::vector<std::byte> payload;
  payload.reserve(size);
  while (reader->Read(&msg)) {
    if (!msg.has_data()) return Invalid("a Put stream has exactly one header, first");
    const std::string& d = msg.data();
    if (payload.size() + d.size() > size) {
      return Invalid("the payload is longer than the declared size_bytes " + std::to_string(size));
    }
    const auto* p = reinterpret_cast<const std::byte*>(d.data());
    payload.insert(payload.end(), p, p + d.size());
  }
  if (payload.size() != size) {
    return Invalid("the payload has " + std::to_string(payload.size()) +
                   " bytes but size_bytes declared " + std::to_string(size));
  }
  if (header.has_payload_xxh3() && Checksum64(payload) != header.payload_xxh3()) {
    return Invalid("the payload does not match its payload_xxh3 checksum");
  }

  const int64_t ttl_s = header.ttl_seconds() != 0 ? header.ttl_seconds() : limits_.default_ttl_s;
  const int64_t expiry = ttl_s > 0 ? clock_->NowMs() + ttl_s * 1000 : kNoExpiry;
  BlockMeta meta;
  meta.parent = parent;
  meta.ttl_ms = ttl_s * 1000;  // a TTL runs from the last use: reads refresh it
  meta.tokens = by_tokens ? static_cast<uint32_t>(ns->block_tokens) : 0;
  meta.stream = StreamOf(ns->Seed());
  if (Status s = cache_.Insert(key, payload, meta); !s.ok()) return ToGrpcStatus(s);
  // Where the block is now; a racing call may already have moved or evicted
  // it, and then the answer says what this call stored.
  Result<IndexEntry> e = cache_.Find(key);
  IndexEntry stored;
  stored.bytes = size;
  stored.expiry_ms = expiry;
  FillInfo(key, e.ok() ? *e : stored, resp->mutable_block());
  return grpc::Status::OK;
}

grpc::Status BlockStoreService::Get(grpc::ServerContext* ctx, const v1::GetRequest* req,
                                    grpc::ServerWriter<v1::GetResponse>* writer) {
  auto pass = gate_.Enter();
  if (!pass) return ShuttingDown();
  if (grpc::Status a = Authorize(ctx, nullptr); !a.ok()) return a;
  Result<BlockKey> key = ParseKey(req->key(), "key");
  if (!key.ok()) return ToGrpcStatus(key.status());
  if (req->chunk_bytes() > kMaxChunkBytes) {
    return Invalid("chunk_bytes " + std::to_string(req->chunk_bytes()) + " exceeds " +
                   std::to_string(kMaxChunkBytes));
  }
  const uint32_t chunk = req->chunk_bytes() == 0 ? kDefaultChunkBytes : req->chunk_bytes();
  Result<IndexEntry> e = cache_.Find(*key);
  if (!e.ok()) return ToGrpcStatus(e.status());
  PayloadReservation reservation(inflight_payload_bytes_, e->bytes,
                                 limits_.max_inflight_payload_bytes);
  if (!reservation.held()) {
    return Exhausted("the daemon is sending too many payloads; retry later");
  }
  std::vector<std::byte> payload(e->bytes);
  Result<uint64_t> n = cache_.Read(*key, payload);
  if (!n.ok()) return ToGrpcStatus(n.status());
  payload.resize(*n);

  v1::GetResponse msg;
  v1::BlockInfo* info = msg.mutable_header();
  FillInfo(*key, *e, info);
  info->set_size_bytes(payload.size());
  info->set_payload_xxh3(Checksum64(payload));
  if (!writer->Write(msg)) return grpc::Status(grpc::StatusCode::CANCELLED, "client went away");
  for (size_t off = 0; off < payload.size(); off += chunk) {
    const size_t len = std::min<size_t>(chunk, payload.size() - off);
    msg.set_data(reinterpret_cast<const char*>(payload.data() + off), len);
    if (!writer->Write(msg)) return grpc::Status(grpc::StatusCode::CANCELLED, "client went away");
  }
  return grpc::Status::OK;
}

grpc::Status BlockStoreService::Delete(grpc::ServerContext* ctx, const v1::DeleteRequest* req,
                                       v1::DeleteResponse*) {
  auto pass = gate_.Enter();
  if (!pass) return ShuttingDown();
  if (grpc::Status a = Authorize(ctx, nullptr); !a.ok()) return a;
  Result<BlockKey> key = ParseKey(req->key(), "key");
  if (!key.ok()) return ToGrpcStatus(key.status());
  return ToGrpcStatus(cache_.Erase(*key));
}

}  // namespace kvtier
