// Client's batched block calls (docs/block-api.md).
#include <grpcpp/grpcpp.h>

#include <algorithm>

#include "common/checksum.h"
#include "proto/client.h"
#include "proto/status_codes.h"

namespace kvtier {

Result<v1::BatchLookupResponse> Client::BatchLookup(const v1::BatchLookupRequest& request) {
  v1::BatchLookupResponse resp;
  grpc::Status s = block_store_->BatchLookup(NewContext().get(), request, &resp);
  if (!s.ok()) return FromGrpcStatus(s);
  return resp;
}

Result<v1::ExistsResponse> Client::Exists(const v1::ExistsRequest& request) {
  v1::ExistsResponse resp;
  grpc::Status s = block_store_->Exists(NewContext().get(), request, &resp);
  if (!s.ok()) return FromGrpcStatus(s);
  return resp;
}

Status Client::Release(const std::string& lease_id) {
  v1::ReleaseRequest req;
  req.set_lease_id(lease_id);
  v1::ReleaseResponse resp;
  return FromGrpcStatus(block_store_->Release(NewContext().get(), req, &resp));
}

Result<std::vector<BatchFetched>> Client::BatchGet(v1::BatchGetRequest request,
                                                   const ShmMapping* region, bool verify) {
  if (request.chunk_bytes() == 0) request.set_chunk_bytes(options_.chunk_bytes);
  if (region != nullptr) request.set_shm_region(region->id());
  auto ctx = NewContext();
  std::unique_ptr<grpc::ClientReader<v1::BatchGetResponse>> reader =
      block_store_->BatchGet(ctx.get(), request);
  std::vector<BatchFetched> out(static_cast<size_t>(request.keys_size()));
  for (BatchFetched& b : out) b.status = Status::NotFound("the daemon sent nothing for this key");
  BatchFetched* current = nullptr;  // the block whose payload is arriving
  v1::BatchGetResponse msg;
  while (reader->Read(&msg)) {
    if (msg.has_block()) {
      const v1::BatchGetBlock& b = msg.block();
      if (b.index() >= out.size()) {
        ctx->TryCancel();
        (void)reader->Finish();
        return Status::Corruption("the daemon answered for block " + std::to_string(b.index()) +
                                  " of " + std::to_string(out.size()));
      }
      current = &out[b.index()];
      current->info = b.info();
      current->payload.clear();
      current->status =
          b.code() == 0
              ? Status::Ok()
              : FromGrpcStatus(grpc::Status(static_cast<grpc::StatusCode>(b.code()), b.message()));
      if (b.code() == 0 && region == nullptr) {
        current->payload.reserve(std::min<uint64_t>(b.info().size_bytes(), 256ull << 20));
      }
    } else if (current != nullptr) {
      current->payload += msg.data();
    }
  }
  grpc::Status s = reader->Finish();
  if (!s.ok()) return FromGrpcStatus(s);
  for (int i = 0; i < request.keys_size(); ++i) {
    BatchFetched& b = out[static_cast<size_t>(i)];
    if (!b.status.ok()) continue;
    std::span<const std::byte> bytes;
    if (region != nullptr) {
      const uint64_t off = request.shm_offsets(i);
      if (off > region->bytes().size() || b.info.size_bytes() > region->bytes().size() - off) {
        b.status = Status::Corruption("the daemon placed block " + std::to_string(i) +
                                      " outside the region");
        continue;
      }
      if (!verify) continue;
      bytes = region->bytes().subspan(off, b.info.size_bytes());
    } else {
      if (b.payload.size() != b.info.size_bytes()) {
        b.status =
            Status::Corruption("the daemon sent " + std::to_string(b.payload.size()) +
                               " bytes for a block of " + std::to_string(b.info.size_bytes()));
        continue;
      }
      bytes = {reinterpret_cast<const std::byte*>(b.payload.data()), b.payload.size()};
    }
    // Never wrong bytes: a payload that does not match its checksum is a miss.
    if (Checksum64(bytes) != b.info.payload_xxh3()) {
      b.status = Status::Corruption("block " + std::to_string(i) + " arrived with a bad checksum");
      b.payload.clear();
    }
  }
  return out;
}

Result<v1::BatchPutResponse> Client::BatchPut(v1::BatchPutHeader header,
                                              std::span<const BatchPutItem> items,
                                              const ShmMapping* region) {
  if (region != nullptr) header.set_shm_region(region->id());
  auto ctx = NewContext();
  v1::BatchPutResponse resp;
  std::unique_ptr<grpc::ClientWriter<v1::BatchPutRequest>> writer =
      block_store_->BatchPut(ctx.get(), &resp);
  v1::BatchPutRequest msg;
  *msg.mutable_header() = std::move(header);
  bool open = writer->Write(msg);
  for (const BatchPutItem& item : items) {
    if (!open) break;
    v1::BatchPutBlock* b = msg.mutable_block();
    b->Clear();
    b->set_key(item.key.ToByteString());
    if (item.parent) b->set_parent_key(item.parent->ToByteString());
    b->set_size_bytes(item.payload.size());
    b->set_payload_xxh3(Checksum64(item.payload));
    b->set_tokens(item.tokens);
    if (region != nullptr) b->set_shm_offset(item.shm_offset);
    open = writer->Write(msg);
    if (region != nullptr) continue;
    for (size_t off = 0; open && off < item.payload.size(); off += options_.chunk_bytes) {
      const size_t len = std::min<size_t>(options_.chunk_bytes, item.payload.size() - off);
      msg.set_data(reinterpret_cast<const char*>(item.payload.data() + off), len);
      open = writer->Write(msg);
    }
  }
  if (open) writer->WritesDone();
  grpc::Status s = writer->Finish();
  if (!s.ok()) return FromGrpcStatus(s);
  return resp;
}

}  // namespace kvtier
