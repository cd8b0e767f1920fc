// Fuzzes request validation of the BlockStore service (Lookup, Put, Get,
// Delete) on an in-process kvtierd (tests/fuzz/rpc_fuzz.h). Input: a selector
// byte (low 2 bits: the RPC; next 2: the caller), then length-prefixed
// protobuf messages: one request, or for Put up to 8 stream messages.
// Beyond rpc_fuzz.h's invariants: a Put of a new block by key that succeeds
// is read back by its caller's Get as the same bytes (or is a miss, if
// already evicted).
#include "tests/fuzz/rpc_fuzz.h"

namespace kvtier {
namespace {

using fuzz::Caller;

void Lookup(fuzz::RpcFuzzer& f, Caller who, fuzz::FuzzReader& in) {
  v1::LookupRequest req;
  if (!fuzz::NextMessage(in, &req)) return;
  v1::LookupResponse resp;
  const grpc::Status s = f.block_store().Lookup(f.Context(who).get(), req, &resp);
  f.Check(who, s);
  if (s.ok()) {
    FUZZ_CHECK(resp.hit_blocks() <= resp.query_blocks());
    FUZZ_CHECK(static_cast<uint32_t>(resp.hits_size()) == resp.hit_blocks());
  }
}

// Reads the block `key` back; the payload, or nullopt when it is refused.
std::optional<std::string> GetPayload(fuzz::RpcFuzzer& f, Caller who, const v1::GetRequest& req,
                                      grpc::Status* status) {
  auto ctx = f.Context(who);
  auto reader = f.block_store().Get(ctx.get(), req);
  v1::GetResponse msg;
  std::string payload;
  int messages = 0;
  while (reader->Read(&msg)) {
    if (messages++ == 0) FUZZ_CHECK(msg.has_header());
    if (msg.has_data()) payload += msg.data();
  }
  *status = reader->Finish();
  if (!status->ok()) return std::nullopt;
  return payload;
}

void Put(fuzz::RpcFuzzer& f, Caller who, fuzz::FuzzReader& in) {
  std::vector<v1::PutRequest> messages;
  while (in.remaining() > 0 && messages.size() < 8) {
    v1::PutRequest m;
    if (!fuzz::NextMessage(in, &m)) return;
    messages.push_back(std::move(m));
  }
  // A cached block is immutable (its key names its content): a Put of a key
  // already cached keeps the old bytes. Only a new block must read back.
  bool fresh = false;
  if (!messages.empty() && messages[0].has_header() && !messages[0].header().key().empty()) {
    v1::LookupRequest lookup;
    lookup.add_keys(messages[0].header().key());
    if (messages[0].header().has_namespace_()) {
      *lookup.mutable_namespace_() = messages[0].header().namespace_();
    }
    v1::LookupResponse found;
    const grpc::Status ls = f.block_store().Lookup(f.Context(who).get(), lookup, &found);
    fresh = ls.ok() && found.hit_blocks() == 0;
  }
  auto ctx = f.Context(who);
  v1::PutResponse resp;
  auto writer = f.block_store().Put(ctx.get(), &resp);
  std::string payload;
  for (const v1::PutRequest& m : messages) {
    if (!writer->Write(m)) break;
    if (m.has_data()) payload += m.data();
  }
  writer->WritesDone();
  const grpc::Status s = writer->Finish();
  f.Check(who, s);
  if (!s.ok() || messages.empty() || !messages[0].has_header()) return;
  const v1::PutHeader& h = messages[0].header();
  FUZZ_CHECK(payload.size() == h.size_bytes());
  if (!fresh) return;
  v1::GetRequest get;
  get.set_key(h.key());
  if (h.has_namespace_()) *get.mutable_namespace_() = h.namespace_();
  grpc::Status gs;
  std::optional<std::string> back = GetPayload(f, who, get, &gs);
  f.Check(who, gs);
  // Stored a moment ago by the same caller: the same bytes, unless evicted.
  if (back) FUZZ_CHECK(*back == payload);
}

void Get(fuzz::RpcFuzzer& f, Caller who, fuzz::FuzzReader& in) {
  v1::GetRequest req;
  if (!fuzz::NextMessage(in, &req)) return;
  grpc::Status s;
  (void)GetPayload(f, who, req, &s);
  f.Check(who, s);
}

void Delete(fuzz::RpcFuzzer& f, Caller who, fuzz::FuzzReader& in) {
  v1::DeleteRequest req;
  if (!fuzz::NextMessage(in, &req)) return;
  v1::DeleteResponse resp;
  f.Check(who, f.block_store().Delete(f.Context(who).get(), req, &resp));
}

}  // namespace
}  // namespace kvtier

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace kvtier;
  fuzz::FuzzReader in(data, size);
  const uint8_t selector = in.U8();
  const Caller who = static_cast<Caller>(selector / 4 % 3);
  fuzz::RpcFuzzer& f = fuzz::RpcFuzzer::Get();
  switch (selector % 4) {
    case 0:
      Lookup(f, who, in);
      break;
    case 1:
      Put(f, who, in);
      break;
    case 2:
      Get(f, who, in);
      break;
    default:
      Delete(f, who, in);
      break;
  }
  return 0;
}
