// Fuzzes request validation of the ContextCache service (Generate and the
// named-cache calls) on an in-process kvtierd (tests/fuzz/rpc_fuzz.h).
// Input: a selector byte (the RPC modulo 6; the caller), then one
// length-prefixed protobuf request. Generate's max_tokens is cut to at most 4
// so that each input stays fast. Beyond rpc_fuzz.h's invariants: a stream
// ends with one final message on success, and a cache that CreateCache made
// is found by GetCache.
#include "tests/fuzz/rpc_fuzz.h"

namespace kvtier {
namespace {

using fuzz::Caller;

void Generate(fuzz::RpcFuzzer& f, Caller who, fuzz::FuzzReader& in) {
  v1::GenerateRequest req;
  if (!fuzz::NextMessage(in, &req)) return;
  req.set_max_tokens(1 + req.max_tokens() % 4);
  auto ctx = f.Context(who);
  auto reader = f.context_cache().Generate(ctx.get(), req);
  v1::GenerateResponse msg;
  int messages = 0;
  while (reader->Read(&msg) && messages < 64) ++messages;
  const grpc::Status s = reader->Finish();
  f.Check(who, s);
  if (s.ok()) FUZZ_CHECK(messages >= 1);
}

void CreateCache(fuzz::RpcFuzzer& f, Caller who, fuzz::FuzzReader& in) {
  v1::CreateCacheRequest req;
  if (!fuzz::NextMessage(in, &req)) return;
  v1::NamedCacheInfo info;
  const grpc::Status s = f.context_cache().CreateCache(f.Context(who).get(), req, &info);
  f.Check(who, s);
  if (!s.ok()) return;
  v1::CacheRef ref;
  ref.set_name(info.name());
  v1::NamedCacheInfo again;
  const grpc::Status g = f.context_cache().GetCache(f.Context(who).get(), ref, &again);
  f.Check(who, g);
  FUZZ_CHECK(g.ok() && again.name() == info.name());
}

template <typename Request, typename Response, typename Call>
void Unary(fuzz::RpcFuzzer& f, Caller who, fuzz::FuzzReader& in, Call call) {
  Request req;
  if (!fuzz::NextMessage(in, &req)) return;
  Response resp;
  f.Check(who, (f.context_cache().*call)(f.Context(who).get(), req, &resp));
}

}  // namespace
}  // namespace kvtier

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace kvtier;
  fuzz::FuzzReader in(data, size);
  const uint8_t selector = in.U8();
  const Caller who = static_cast<Caller>(selector / 6 % 3);
  fuzz::RpcFuzzer& f = fuzz::RpcFuzzer::Get();
  using Stub = v1::ContextCache::Stub;
  switch (selector % 6) {
    case 0:
      Generate(f, who, in);
      break;
    case 1:
      CreateCache(f, who, in);
      break;
    case 2:
      Unary<v1::CacheRef, v1::NamedCacheInfo>(f, who, in, &Stub::GetCache);
      break;
    case 3:
      Unary<v1::ListCachesRequest, v1::ListCachesResponse>(f, who, in, &Stub::ListCaches);
      break;
    case 4:
      Unary<v1::UpdateCacheRequest, v1::NamedCacheInfo>(f, who, in, &Stub::UpdateCache);
      break;
    default:
      Unary<v1::CacheRef, v1::DeleteCacheResponse>(f, who, in, &Stub::DeleteCache);
      break;
  }
  return 0;
}
