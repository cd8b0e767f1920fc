#include "server/block_store_service.h"

#include <grpcpp/grpcpp.h>

#include <string>
#include <vector>

#include "cache/prefix_hasher.h"
#include "common/checksum.h"
#include "proto/status_codes.h"
#include "server/block_store_internal.h"
#include "server/stream_calls.h"

namespace kvtier {

using block_store::AppendWithinBudget;
using block_store::BufferFull;
using block_store::CheckTokens;
using block_store::ChunkBytes;
using block_store::Exhausted;
using block_store::Invalid;
using block_store::ParseKey;
using block_store::ShuttingDown;
using block_store::Span;

BlockStoreService::BlockStoreService(CacheManager& cache, const Namespace& default_namespace,
                                     const BlockStoreLimits& limits, CallGate& gate,
                                     const Authenticator& auth, LeaseTable& leases,
                                     const ShmRegistry* shm)
    : cache_(cache),
      default_namespace_(default_namespace),
      limits_(limits),
      gate_(gate),
      auth_(auth),
      leases_(leases),
      shm_(shm),
      budget_(limits.max_inflight_payload_bytes, limits.max_tenant_payload_bytes) {}

Result<BlockScope> BlockStoreService::ResolveScope(const Principal& caller, bool present,
                                                   const v1::Namespace& m) const {
  return ResolveBlockScope(default_namespace_, auth_.secret(), caller, present, m);
}

Result<std::vector<BlockKey>> BlockStoreService::StoredKeys(
    const BlockScope& scope, const google::protobuf::RepeatedField<int32_t>& token_ids,
    const google::protobuf::RepeatedPtrField<std::string>& visible_keys) const {
  std::vector<BlockKey> keys;
  if (!token_ids.empty()) {
    KVTIER_RETURN_IF_ERROR(CheckTokens(token_ids, limits_.max_tokens));
    return PrefixHasher(scope.ns).Keys(Span(token_ids));
  }
  KVTIER_RETURN_IF_ERROR(CheckKeyCount(visible_keys.size()));
  keys.reserve(visible_keys.size());
  for (int i = 0; i < visible_keys.size(); ++i) {
    KVTIER_ASSIGN_OR_RETURN(BlockKey k,
                            ParseKey(visible_keys[i], "keys[" + std::to_string(i) + "]"));
    keys.push_back(scope.Stored(k));
  }
  return keys;
}

Status BlockStoreService::CheckKeyCount(int n) const {
  if (static_cast<size_t>(n) > limits_.max_keys) {
    return Status::ResourceExhausted(std::to_string(n) + " keys exceed the limit of " +
                                     std::to_string(limits_.max_keys));
  }
  return Status::Ok();
}

// Where a block just stored is now. When the index does not have it, the
// cache declined it (every tier's admission filter refused it) or a racing
// call already evicted it: the answer names no tier, since nothing holds it.
void BlockStoreService::FillStoredInfo(const BlockScope& scope, const BlockKey& key, uint64_t size,
                                       v1::BlockInfo* info) const {
  Result<IndexEntry> e = cache_.Find(key);
  if (e.ok()) return FillInfo(scope, key, *e, info);
  info->set_key(scope.Visible(key).ToByteString());
  info->set_size_bytes(size);
}

void BlockStoreService::FillInfo(const BlockScope& scope, const BlockKey& key, const IndexEntry& e,
                                 v1::BlockInfo* info) const {
  info->set_key(scope.Visible(key).ToByteString());
  info->set_size_bytes(e.bytes);
  info->set_tier(cache_.tier_name(e.tier));
  info->set_expire_time_ms(e.expiry_ms == kNoExpiry ? 0 : e.expiry_ms);
}

grpc::Status BlockStoreService::Lookup(grpc::ServerContext* ctx, const v1::LookupRequest* req,
                                       v1::LookupResponse* resp) {
  auto pass = gate_.Enter();
  if (!pass) return ShuttingDown();
  Principal caller;
  if (grpc::Status a = auth_.Authenticate(ctx, "", &caller); !a.ok()) return a;
  const bool by_tokens = req->token_ids_size() > 0;
  if (by_tokens == (req->keys_size() > 0)) {
    return Invalid("a Lookup gives exactly one of token_ids and keys");
  }
  Result<BlockScope> scope = ResolveScope(caller, req->has_namespace_(), req->namespace_());
  if (!scope.ok()) return ToGrpcStatus(scope.status());
  Result<std::vector<BlockKey>> stored = StoredKeys(*scope, req->token_ids(), req->keys());
  if (!stored.ok()) return ToGrpcStatus(stored.status());
  const std::vector<BlockKey>& keys = *stored;
  PrefixHit hit = cache_.Lookup(keys);
  FillRun(*scope, keys, hit, by_tokens && req->return_keys(), by_tokens, resp);
  return grpc::Status::OK;
}

grpc::Status BlockStoreService::Put(grpc::ServerContext* ctx,
                                    grpc::ServerReader<v1::PutRequest>* reader,
                                    v1::PutResponse* resp) {
  auto pass = gate_.Enter();
  if (!pass) return ShuttingDown();
  // The caller is known before a byte of the stream is read: a caller
  // without a valid key holds nothing.
  Principal caller;
  if (grpc::Status a = auth_.Authenticate(ctx, "", &caller); !a.ok()) return a;
  Result<StreamGuard::Slot> slot = AdmitStream(gate_, ctx, caller.tenant);
  if (!slot.ok()) return ToGrpcStatus(slot.status());
  v1::PutRequest msg;
  if (!slot->OnClient([&] { return reader->Read(&msg); }) || !msg.has_header()) {
    if (slot->idle_cancelled()) return IdleCancelled(gate_.streams());
    return Invalid("a Put stream starts with a header message");
  }
  const v1::PutHeader header = msg.header();
  Result<BlockScope> scope = ResolveScope(caller, header.has_namespace_(), header.namespace_());
  if (!scope.ok()) return ToGrpcStatus(scope.status());
  const Namespace& ns = scope->ns;

  // Name the block: by key (with an optional parent) or by a prefix of tokens.
  const bool by_tokens = header.token_ids_size() > 0;
  if (by_tokens == !header.key().empty())
    return Invalid("a Put gives exactly one of key and token_ids");
  BlockKey key;  // stored keys
  std::optional<BlockKey> parent;
  if (by_tokens) {
    if (!header.parent_key().empty()) return Invalid("parent_key goes with key, not token_ids");
    if (Status s = CheckTokens(header.token_ids(), limits_.max_tokens); !s.ok()) {
      return ToGrpcStatus(s);
    }
    if (header.token_ids_size() % ns.block_tokens != 0) {
      return Invalid("token_ids holds " + std::to_string(header.token_ids_size()) +
                     " tokens, not a whole number of " + std::to_string(ns.block_tokens) +
                     "-token blocks");
    }
    std::vector<BlockKey> keys = PrefixHasher(ns).Keys(Span(header.token_ids()));
    key = keys.back();
    if (keys.size() > 1) parent = keys[keys.size() - 2];
  } else {
    Result<BlockKey> k = ParseKey(header.key(), "key");
    if (!k.ok()) return ToGrpcStatus(k.status());
    key = scope->Stored(*k);
    if (!header.parent_key().empty()) {
      Result<BlockKey> p = ParseKey(header.parent_key(), "parent_key");
      if (!p.ok()) return ToGrpcStatus(p.status());
      parent = scope->Stored(*p);
    }
  }

  const uint64_t size = header.size_bytes();
  if (size == 0) return Invalid("size_bytes must be positive");
  if (size > limits_.max_block_bytes) {
    return Exhausted("a block of " + std::to_string(size) + " bytes exceeds the limit of " +
                     std::to_string(limits_.max_block_bytes));
  }
  if (size > budget_.tenant_bytes()) {
    return Exhausted("a block of " + std::to_string(size) +
                     " bytes exceeds a tenant's payload budget of " +
                     std::to_string(budget_.tenant_bytes()));
  }

  // The payload's bytes are reserved as they arrive: a stream that declares
  // a large block and sends nothing holds nothing.
  PayloadBudget::Hold hold = budget_.Open(caller.tenant);
  std::vector<std::byte> payload;
  while (slot->OnClient([&] { return reader->Read(&msg); })) {
    if (!msg.has_data()) return Invalid("a Put stream has exactly one header, first");
    const std::string& d = msg.data();
    if (payload.size() + d.size() > size) {
      return Invalid("the payload is longer than the declared size_bytes " + std::to_string(size));
    }
    if (!AppendWithinBudget(hold, size, d, &payload)) return BufferFull();
  }
  if (slot->idle_cancelled()) return IdleCancelled(gate_.streams());
  if (payload.size() != size) {
    return Invalid("the payload has " + std::to_string(payload.size()) +
                   " bytes but size_bytes declared " + std::to_string(size));
  }
  if (header.has_payload_xxh3() && Checksum64(payload) != header.payload_xxh3()) {
    return Invalid("the payload does not match its payload_xxh3 checksum");
  }

  const int64_t ttl_s = header.ttl_seconds() != 0 ? header.ttl_seconds() : limits_.default_ttl_s;
  BlockMeta meta;
  meta.parent = parent;
  meta.ttl_ms = ttl_s * 1000;  // a TTL runs from the last use: reads refresh it
  meta.tokens = by_tokens ? static_cast<uint32_t>(ns.block_tokens) : 0;
  meta.stream = StreamOf(ns.Seed());
  if (Status s = cache_.Insert(key, payload, meta); !s.ok()) return ToGrpcStatus(s);
  FillStoredInfo(*scope, key, size, resp->mutable_block());
  return grpc::Status::OK;
}

grpc::Status BlockStoreService::Get(grpc::ServerContext* ctx, const v1::GetRequest* req,
                                    grpc::ServerWriter<v1::GetResponse>* writer) {
  auto pass = gate_.Enter();
  if (!pass) return ShuttingDown();
  Principal caller;
  if (grpc::Status a = auth_.Authenticate(ctx, "", &caller); !a.ok()) return a;
  Result<BlockKey> visible = ParseKey(req->key(), "key");
  if (!visible.ok()) return ToGrpcStatus(visible.status());
  Result<uint32_t> chunk = ChunkBytes(req->chunk_bytes());
  if (!chunk.ok()) return ToGrpcStatus(chunk.status());
  Result<BlockScope> scope = ResolveScope(caller, req->has_namespace_(), req->namespace_());
  if (!scope.ok()) return ToGrpcStatus(scope.status());
  const BlockKey key = scope->Stored(*visible);
  Result<IndexEntry> e = cache_.FindAnywhere(key);
  if (!e.ok()) return ToGrpcStatus(e.status());
  Result<StreamGuard::Slot> slot = AdmitStream(gate_, ctx, caller.tenant);
  if (!slot.ok()) return ToGrpcStatus(slot.status());
  PayloadBudget::Hold hold = budget_.Open(caller.tenant);
  if (!hold.GrowTo(e->bytes)) {
    return Exhausted("the daemon is sending too many payloads for this tenant; retry later");
  }
  std::vector<std::byte> payload(e->bytes);
  Result<uint64_t> n = cache_.Read(key, payload);
  if (!n.ok()) return ToGrpcStatus(n.status());
  payload.resize(*n);

  v1::GetResponse msg;
  v1::BlockInfo* info = msg.mutable_header();
  FillInfo(*scope, key, *e, info);
  info->set_size_bytes(payload.size());
  info->set_payload_xxh3(Checksum64(payload));
  auto send = [&] { return slot->OnClient([&] { return writer->Write(msg); }); };
  if (!send()) return ClientGone(*slot, gate_.streams());
  for (size_t off = 0; off < payload.size(); off += *chunk) {
    const size_t len = std::min<size_t>(*chunk, payload.size() - off);
    msg.set_data(reinterpret_cast<const char*>(payload.data() + off), len);
    if (!send()) return ClientGone(*slot, gate_.streams());
  }
  return grpc::Status::OK;
}

grpc::Status BlockStoreService::Delete(grpc::ServerContext* ctx, const v1::DeleteRequest* req,
                                       v1::DeleteResponse*) {
  auto pass = gate_.Enter();
  if (!pass) return ShuttingDown();
  Principal caller;
  if (grpc::Status a = auth_.Authenticate(ctx, "", &caller); !a.ok()) return a;
  Result<BlockKey> visible = ParseKey(req->key(), "key");
  if (!visible.ok()) return ToGrpcStatus(visible.status());
  Result<BlockScope> scope = ResolveScope(caller, req->has_namespace_(), req->namespace_());
  if (!scope.ok()) return ToGrpcStatus(scope.status());
  return ToGrpcStatus(cache_.Erase(scope->Stored(*visible)));
}

}  // namespace kvtier
