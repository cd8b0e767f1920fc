// BlockStoreService's batched calls for engines' connectors (docs/block-api.md):
// BatchLookup (with leases), Exists, BatchGet, BatchPut and Release, each
// block with its own status and XXH3 checksum, payloads carried in bounded
// data messages or through a same-host shared-memory region.
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <optional>
#include <string>
#include <vector>

#include "cache/prefix_hasher.h"
#include "common/checksum.h"
#include "proto/status_codes.h"
#include "server/block_store_internal.h"
#include "server/block_store_service.h"
#include "server/stream_calls.h"

namespace kvtier {

using block_store::AppendWithinBudget;
using block_store::BufferFull;
using block_store::ChunkBytes;
using block_store::Exhausted;
using block_store::Invalid;
using block_store::ParseKey;
using block_store::ShuttingDown;

namespace {

// A block's own status, on its BatchGetBlock or BatchPutResult.
template <typename BlockStatus>
void SetCode(const Status& s, BlockStatus* out) {
  out->set_code(static_cast<int32_t>(ToGrpcStatus(s).error_code()));
  out->set_message(s.message());
}

}  // namespace

Result<std::shared_ptr<ShmRegion>> BlockStoreService::RegionOf(const Principal& caller,
                                                               const std::string& id) const {
  if (id.empty()) return std::shared_ptr<ShmRegion>();
  if (shm_ == nullptr) {
    return Status::Retry("shared memory is off (kvtierd --shm-socket off)");
  }
  return shm_->Find(caller.tenant, id);
}

grpc::Status BlockStoreService::BatchLookup(grpc::ServerContext* ctx,
                                            const v1::BatchLookupRequest* req,
                                            v1::BatchLookupResponse* resp) {
  auto pass = gate_.Enter();
  if (!pass) return ShuttingDown();
  Principal caller;
  if (grpc::Status a = auth_.Authenticate(ctx, "", &caller); !a.ok()) return a;
  const bool by_tokens = req->token_ids_size() > 0;
  if (by_tokens == (req->keys_size() > 0)) {
    return Invalid("a BatchLookup gives exactly one of token_ids and keys");
  }
  if (req->lease_ms() > 0) {
    if (Status s = leases_.CheckDuration(req->lease_ms()); !s.ok()) return ToGrpcStatus(s);
  }
  Result<BlockScope> scope = ResolveScope(caller, req->has_namespace_(), req->namespace_());
  if (!scope.ok()) return ToGrpcStatus(scope.status());
  Result<std::vector<BlockKey>> stored = StoredKeys(*scope, req->token_ids(), req->keys());
  if (!stored.ok()) return ToGrpcStatus(stored.status());
  const std::vector<BlockKey>& keys = *stored;
  PrefixHit hit = cache_.Probe(keys, /*pin=*/req->lease_ms() > 0);
  if (req->lease_ms() > 0 && hit.blocks > 0) {
    uint64_t bytes = 0;
    for (const IndexEntry& e : hit.entries) bytes += e.bytes;
    Result<Lease> lease = leases_.Grant(caller.tenant, std::move(hit.pins), bytes, req->lease_ms());
    if (!lease.ok()) return ToGrpcStatus(lease.status());
    resp->set_lease_id(lease->id);
    resp->set_lease_expire_time_ms(lease->expire_time_ms);
  }
  FillRun(*scope, keys, hit, by_tokens && req->return_keys(), by_tokens, resp);
  return grpc::Status::OK;
}

grpc::Status BlockStoreService::Exists(grpc::ServerContext* ctx, const v1::ExistsRequest* req,
                                       v1::ExistsResponse* resp) {
  auto pass = gate_.Enter();
  if (!pass) return ShuttingDown();
  Principal caller;
  if (grpc::Status a = auth_.Authenticate(ctx, "", &caller); !a.ok()) return a;
  Result<BlockScope> scope = ResolveScope(caller, req->has_namespace_(), req->namespace_());
  if (!scope.ok()) return ToGrpcStatus(scope.status());
  Result<std::vector<BlockKey>> keys = StoredKeys(*scope, {}, req->keys());
  if (!keys.ok()) return ToGrpcStatus(keys.status());
  for (const BlockKey& k : *keys) resp->add_exists(cache_.FindAnywhere(k).ok());
  return grpc::Status::OK;
}

grpc::Status BlockStoreService::Release(grpc::ServerContext* ctx, const v1::ReleaseRequest* req,
                                        v1::ReleaseResponse* resp) {
  auto pass = gate_.Enter();
  if (!pass) return ShuttingDown();
  Principal caller;
  if (grpc::Status a = auth_.Authenticate(ctx, "", &caller); !a.ok()) return a;
  Result<size_t> n = leases_.Release(caller.tenant, req->lease_id());
  if (!n.ok()) return ToGrpcStatus(n.status());
  resp->set_released_blocks(static_cast<uint32_t>(*n));
  return grpc::Status::OK;
}

grpc::Status BlockStoreService::BatchGet(grpc::ServerContext* ctx, const v1::BatchGetRequest* req,
                                         grpc::ServerWriter<v1::BatchGetResponse>* writer) {
  auto pass = gate_.Enter();
  if (!pass) return ShuttingDown();
  Principal caller;
  if (grpc::Status a = auth_.Authenticate(ctx, "", &caller); !a.ok()) return a;
  Result<uint32_t> chunk = ChunkBytes(req->chunk_bytes());
  if (!chunk.ok()) return ToGrpcStatus(chunk.status());
  Result<BlockScope> scope = ResolveScope(caller, req->has_namespace_(), req->namespace_());
  if (!scope.ok()) return ToGrpcStatus(scope.status());
  Result<std::vector<BlockKey>> stored = StoredKeys(*scope, {}, req->keys());
  if (!stored.ok()) return ToGrpcStatus(stored.status());
  Result<std::shared_ptr<ShmRegion>> region = RegionOf(caller, req->shm_region());
  if (!region.ok()) return ToGrpcStatus(region.status());
  if (*region != nullptr && req->shm_offsets_size() != req->keys_size()) {
    return Invalid("shm_offsets has " + std::to_string(req->shm_offsets_size()) + " offsets for " +
                   std::to_string(req->keys_size()) + " keys");
  }
  if (*region == nullptr && req->shm_offsets_size() > 0) {
    return Invalid("shm_offsets go with shm_region");
  }
  Result<StreamGuard::Slot> slot = AdmitStream(gate_, ctx, caller.tenant);
  if (!slot.ok()) return ToGrpcStatus(slot.status());

  v1::BatchGetResponse msg;
  auto send = [&] { return slot->OnClient([&] { return writer->Write(msg); }); };
  std::vector<std::byte> buffer;  // one block at a time, when not in shared memory
  for (size_t i = 0; i < stored->size(); ++i) {
    const BlockKey& key = (*stored)[i];
    v1::BatchGetBlock* block = msg.mutable_block();
    block->Clear();
    block->set_index(static_cast<uint32_t>(i));
    // Each block stands alone: a miss, a checksum failure (a miss too, never
    // bytes) or a region too small fails it and the batch goes on.
    auto fail = [&](const Status& s) {
      SetCode(s, block);
      return send();
    };
    Result<IndexEntry> e = cache_.FindAnywhere(key);
    if (!e.ok()) {
      if (!fail(e.status())) return ClientGone(*slot, gate_.streams());
      continue;
    }
    std::span<std::byte> dest;
    PayloadBudget::Hold hold = budget_.Open(caller.tenant);
    if (*region != nullptr) {
      dest = (*region)->Range(req->shm_offsets(static_cast<int>(i)), e->bytes);
      if (dest.empty()) {
        const Status s =
            Status::InvalidArgument("block " + std::to_string(i) + " (" + std::to_string(e->bytes) +
                                    " bytes) does not fit in the region at offset " +
                                    std::to_string(req->shm_offsets(static_cast<int>(i))));
        if (!fail(s)) return ClientGone(*slot, gate_.streams());
        continue;
      }
    } else {
      if (!hold.GrowTo(e->bytes)) {
        return Exhausted("the daemon is sending too many payloads for this tenant; retry later");
      }
      buffer.resize(e->bytes);
      dest = buffer;
    }
    // The engine's load is the block's use: BatchLookup was not one. The
    // checksum is the one the tier verified the bytes against as it copied
    // them (no second pass over the payload) where the tier gives it.
    uint64_t xxh3 = 0;
    Result<uint64_t> n = cache_.Read(key, dest, /*is_use=*/true, &xxh3);
    if (!n.ok()) {
      if (!fail(n.status())) return ClientGone(*slot, gate_.streams());
      continue;
    }
    const std::span<const std::byte> payload = dest.first(*n);
    FillInfo(*scope, key, *e, block->mutable_info());
    block->mutable_info()->set_size_bytes(*n);
    block->mutable_info()->set_payload_xxh3(xxh3);
    if (!send()) return ClientGone(*slot, gate_.streams());
    if (*region != nullptr) continue;
    for (size_t off = 0; off < payload.size(); off += *chunk) {
      const size_t len = std::min<size_t>(*chunk, payload.size() - off);
      msg.set_data(reinterpret_cast<const char*>(payload.data() + off), len);
      if (!send()) return ClientGone(*slot, gate_.streams());
    }
  }
  return grpc::Status::OK;
}

// A BatchPut in progress: its reader, scope and region.
struct BlockStoreService::PutStream {
  grpc::ServerReader<v1::BatchPutRequest>* reader = nullptr;
  StreamGuard::Slot* slot = nullptr;
  const Principal* caller = nullptr;
  const BlockScope* scope = nullptr;
  ShmRegion* region = nullptr;  // null: payloads come as data messages
  int64_t ttl_ms = 0;           // of every block (0: no expiry)
  v1::BatchPutRequest next;     // the message read last, not yet handled
  bool has_next = false;
  bool Read() {
    has_next = slot->OnClient([&] { return reader->Read(&next); });
    return has_next;
  }
};

bool BlockStoreService::ReadBatchBlock(PutStream& put, const v1::BatchPutBlock& block,
                                       v1::BatchPutResult* result, grpc::Status* fatal) {
  auto fail = [&](const Status& s) {
    SetCode(s, result);
    return true;
  };
  const uint64_t size = block.size_bytes();
  // Without shared memory the payload follows in data messages, which are
  // read (and so the stream kept in step) even when the block is refused.
  std::vector<std::byte> payload;
  Status refused = Status::Ok();
  if (size == 0) refused = Status::InvalidArgument("size_bytes must be positive");
  if (refused.ok() && size > limits_.max_block_bytes) {
    refused = Status::ResourceExhausted("a block of " + std::to_string(size) +
                                        " bytes exceeds the limit of " +
                                        std::to_string(limits_.max_block_bytes));
  }
  if (put.region != nullptr) {
    if (!refused.ok()) return fail(refused);
    std::span<std::byte> src = put.region->Range(block.shm_offset(), size);
    if (src.empty()) {
      return fail(Status::InvalidArgument("the payload (" + std::to_string(size) +
                                          " bytes at offset " + std::to_string(block.shm_offset()) +
                                          ") is not inside the region"));
    }
    // Copied out before it is checked: the client can write the region at any time.
    payload.assign(src.begin(), src.end());
  } else {
    PayloadBudget::Hold hold = budget_.Open(put.caller->tenant);
    uint64_t received = 0;
    while (put.Read() && put.next.has_data()) {
      const std::string& d = put.next.data();
      received += d.size();
      if (received > size) {
        *fatal = Invalid("a payload is longer than its size_bytes " + std::to_string(size));
        return false;
      }
      if (!refused.ok()) continue;  // skipped, not buffered
      if (!AppendWithinBudget(hold, size, d, &payload)) {
        *fatal = BufferFull();
        return false;
      }
    }
    if (put.slot->idle_cancelled()) {
      *fatal = IdleCancelled(gate_.streams());
      return false;
    }
    if (received != size) {
      *fatal = Invalid("a payload has " + std::to_string(received) +
                       " bytes but size_bytes declared " + std::to_string(size));
      return false;
    }
    if (!refused.ok()) return fail(refused);
  }
  if (Checksum64(payload) != block.payload_xxh3()) {
    return fail(Status::InvalidArgument("the payload does not match its payload_xxh3 checksum"));
  }
  Result<BlockKey> key = ParseKey(block.key(), "key");
  if (!key.ok()) return fail(key.status());
  std::optional<BlockKey> parent;
  if (!block.parent_key().empty()) {
    Result<BlockKey> p = ParseKey(block.parent_key(), "parent_key");
    if (!p.ok()) return fail(p.status());
    parent = put.scope->Stored(*p);
  }
  const BlockKey stored = put.scope->Stored(*key);
  BlockMeta meta;
  meta.parent = parent;
  meta.ttl_ms = put.ttl_ms;  // a TTL runs from the last use: reads refresh it
  meta.tokens = block.tokens();
  meta.stream = StreamOf(put.scope->ns.Seed());
  if (Status s = cache_.Insert(stored, payload, meta); !s.ok()) return fail(s);
  FillStoredInfo(*put.scope, stored, size, result->mutable_block());
  return true;
}

grpc::Status BlockStoreService::BatchPut(grpc::ServerContext* ctx,
                                         grpc::ServerReader<v1::BatchPutRequest>* reader,
                                         v1::BatchPutResponse* resp) {
  auto pass = gate_.Enter();
  if (!pass) return ShuttingDown();
  Principal caller;
  if (grpc::Status a = auth_.Authenticate(ctx, "", &caller); !a.ok()) return a;
  Result<StreamGuard::Slot> slot = AdmitStream(gate_, ctx, caller.tenant);
  if (!slot.ok()) return ToGrpcStatus(slot.status());
  PutStream put;
  put.reader = reader;
  put.slot = &*slot;
  put.caller = &caller;
  if (!put.Read() || !put.next.has_header()) {
    if (slot->idle_cancelled()) return IdleCancelled(gate_.streams());
    return Invalid("a BatchPut stream starts with a header message");
  }
  const v1::BatchPutHeader header = put.next.header();
  Result<BlockScope> scope = ResolveScope(caller, header.has_namespace_(), header.namespace_());
  if (!scope.ok()) return ToGrpcStatus(scope.status());
  Result<std::shared_ptr<ShmRegion>> region = RegionOf(caller, header.shm_region());
  if (!region.ok()) return ToGrpcStatus(region.status());
  put.scope = &*scope;
  put.region = region->get();
  const int64_t ttl_s = header.ttl_seconds() != 0 ? header.ttl_seconds() : limits_.default_ttl_s;
  put.ttl_ms = std::max<int64_t>(ttl_s, 0) * 1000;

  // Each block message is followed by its payload's data messages (none with
  // shared memory); ReadBatchBlock leaves the message after them in put.next.
  put.Read();
  while (put.has_next) {
    if (!put.next.has_block()) {
      return Invalid(put.next.has_header()
                         ? "a BatchPut stream has exactly one header, first"
                         : "a data message without a block before it (or with shm_region)");
    }
    if (static_cast<size_t>(resp->results_size()) >= limits_.max_keys) {
      return Exhausted("a BatchPut of more than " + std::to_string(limits_.max_keys) + " blocks");
    }
    const v1::BatchPutBlock block = put.next.block();
    grpc::Status fatal;
    if (!ReadBatchBlock(put, block, resp->add_results(), &fatal)) return fatal;
    if (put.region != nullptr) put.Read();
  }
  if (slot->idle_cancelled()) return IdleCancelled(gate_.streams());
  return grpc::Status::OK;
}

}  // namespace kvtier
