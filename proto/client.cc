#include "proto/client.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <chrono>

#include "common/checksum.h"
#include "proto/status_codes.h"

namespace kvtier {

Client::Client(const ClientOptions& options) : options_(options) {
  if (options_.chunk_bytes == 0 || options_.chunk_bytes > (4u << 20))
    options_.chunk_bytes = 1 << 20;
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(8 << 20);
  args.SetMaxSendMessageSize(8 << 20);
  if (options_.own_connection) args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials();
  if (!options_.tls_ca_pem.empty()) {
    grpc::SslCredentialsOptions tls;
    tls.pem_root_certs = options_.tls_ca_pem;
    credentials = grpc::SslCredentials(tls);
  }
  channel_ = grpc::CreateCustomChannel(options.address, credentials, args);
  block_store_ = v1::BlockStore::NewStub(channel_);
  admin_ = v1::Admin::NewStub(channel_);
  context_cache_ = v1::ContextCache::NewStub(channel_);
  billing_ = v1::Billing::NewStub(channel_);
}

std::unique_ptr<grpc::ClientContext> Client::NewContext() const {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(std::chrono::system_clock::now() +
                    std::chrono::milliseconds(options_.timeout_ms));
  if (!options_.api_key.empty()) ctx->AddMetadata("x-api-key", options_.api_key);
  return ctx;
}

grpc::Status Client::GenerateRaw(const v1::GenerateRequest& request,
                                 v1::GenerateResponse* response) {
  response->Clear();
  std::unique_ptr<grpc::ClientContext> ctx = NewContext();
  std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>> reader =
      context_cache_->Generate(ctx.get(), request);
  v1::GenerateResponse part;
  std::string text;
  while (reader->Read(&part)) {
    text += part.text();
    for (int32_t t : part.token_ids()) response->add_token_ids(t);
    if (!part.finish_reason().empty()) {
      // The final message: everything but the tokens and text.
      part.clear_token_ids();
      part.clear_text();
      const auto ids = response->token_ids();
      *response = part;
      *response->mutable_token_ids() = ids;
    }
  }
  response->set_text(text);
  return reader->Finish();
}

Result<v1::GenerateResponse> Client::Generate(const v1::GenerateRequest& request) {
  v1::GenerateResponse resp;
  grpc::Status s = GenerateRaw(request, &resp);
  if (!s.ok()) return FromGrpcStatus(s);
  return resp;
}

Result<v1::HealthResponse> Client::Health() {
  v1::HealthResponse resp;
  grpc::Status s = admin_->Health(NewContext().get(), v1::HealthRequest(), &resp);
  if (!s.ok()) return FromGrpcStatus(s);
  return resp;
}

Result<v1::StatsResponse> Client::Stats() {
  v1::StatsResponse resp;
  grpc::Status s = admin_->Stats(NewContext().get(), v1::StatsRequest(), &resp);
  if (!s.ok()) return FromGrpcStatus(s);
  return resp;
}

Result<v1::BillingReportResponse> Client::BillingReport(const v1::BillingReportRequest& request) {
  v1::BillingReportResponse resp;
  grpc::Status s = billing_->Report(NewContext().get(), request, &resp);
  if (!s.ok()) return FromGrpcStatus(s);
  return resp;
}

Result<v1::ExplainResponse> Client::Explain(const BlockKey& key, const v1::Namespace& ns,
                                            const std::string& tenant) {
  v1::ExplainRequest req;
  req.set_key(key.ToByteString());
  *req.mutable_namespace_() = ns;
  req.set_tenant(tenant);
  v1::ExplainResponse resp;
  grpc::Status s = admin_->Explain(NewContext().get(), req, &resp);
  if (!s.ok()) return FromGrpcStatus(s);
  return resp;
}

Result<v1::LookupResponse> Client::Lookup(const v1::LookupRequest& request) {
  v1::LookupResponse resp;
  grpc::Status s = block_store_->Lookup(NewContext().get(), request, &resp);
  if (!s.ok()) return FromGrpcStatus(s);
  return resp;
}

Result<v1::PutResponse> Client::Put(v1::PutHeader header, std::span<const std::byte> payload) {
  header.set_size_bytes(payload.size());
  header.set_payload_xxh3(Checksum64(payload));
  auto ctx = NewContext();
  v1::PutResponse resp;
  std::unique_ptr<grpc::ClientWriter<v1::PutRequest>> writer = block_store_->Put(ctx.get(), &resp);
  v1::PutRequest msg;
  *msg.mutable_header() = std::move(header);
  bool open = writer->Write(msg);
  for (size_t off = 0; open && off < payload.size(); off += options_.chunk_bytes) {
    const size_t n = std::min<size_t>(options_.chunk_bytes, payload.size() - off);
    msg.set_data(reinterpret_cast<const char*>(payload.data() + off), n);
    open = writer->Write(msg);
  }
  writer->WritesDone();
  grpc::Status s = writer->Finish();
  if (!s.ok()) return FromGrpcStatus(s);
  return resp;
}

Result<FetchedBlock> Client::Get(const BlockKey& key, const v1::Namespace& ns) {
  v1::GetRequest req;
  req.set_key(key.ToByteString());
  *req.mutable_namespace_() = ns;
  req.set_chunk_bytes(options_.chunk_bytes);
  auto ctx = NewContext();
  std::unique_ptr<grpc::ClientReader<v1::GetResponse>> reader = block_store_->Get(ctx.get(), req);
  FetchedBlock block;
  v1::GetResponse msg;
  bool have_header = false;
  while (reader->Read(&msg)) {
    if (msg.has_header()) {
      block.info = msg.header();
      // Trust the announced size only as far as the largest block a daemon takes.
      block.payload.reserve(std::min<uint64_t>(block.info.size_bytes(), 256ull << 20));
      have_header = true;
    } else {
      block.payload += msg.data();
    }
  }
  grpc::Status s = reader->Finish();
  if (!s.ok()) return FromGrpcStatus(s);
  if (!have_header || block.payload.size() != block.info.size_bytes()) {
    return Status::Corruption("the daemon sent " + std::to_string(block.payload.size()) +
                              " bytes for a block of " + std::to_string(block.info.size_bytes()));
  }
  const auto* p = reinterpret_cast<const std::byte*>(block.payload.data());
  if (Checksum64({p, block.payload.size()}) != block.info.payload_xxh3()) {
    return Status::Corruption("block " + key.ToHex() + " arrived with a bad checksum");
  }
  return block;
}

Status Client::Delete(const BlockKey& key, const v1::Namespace& ns) {
  v1::DeleteRequest req;
  req.set_key(key.ToByteString());
  *req.mutable_namespace_() = ns;
  v1::DeleteResponse resp;
  return FromGrpcStatus(block_store_->Delete(NewContext().get(), req, &resp));
}

}  // namespace kvtier
