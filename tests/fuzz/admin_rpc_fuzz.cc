// Fuzzes request validation of the Admin service (Health, Stats, Explain) on
// an in-process kvtierd (tests/fuzz/rpc_fuzz.h). Input: a selector byte (the
// RPC modulo 3; the caller), then one length-prefixed protobuf request.
// Health answers anyone; Stats and Explain need an admin key, so bob (not an
// admin) is always refused with PERMISSION_DENIED.
#include "tests/fuzz/rpc_fuzz.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace kvtier;
  using fuzz::Caller;
  fuzz::FuzzReader in(data, size);
  const uint8_t selector = in.U8();
  const Caller who = static_cast<Caller>(selector / 3 % 3);
  fuzz::RpcFuzzer& f = fuzz::RpcFuzzer::Get();
  switch (selector % 3) {
    case 0: {
      v1::HealthRequest req;
      if (!fuzz::NextMessage(in, &req)) return 0;
      v1::HealthResponse resp;
      FUZZ_CHECK(f.admin().Health(f.Context(who).get(), req, &resp).ok());  // no key needed
      break;
    }
    case 1: {
      v1::StatsRequest req;
      if (!fuzz::NextMessage(in, &req)) return 0;
      v1::StatsResponse resp;
      const grpc::Status s = f.admin().Stats(f.Context(who).get(), req, &resp);
      f.Check(who, s);
      if (who == Caller::kBob) FUZZ_CHECK(s.error_code() == grpc::StatusCode::PERMISSION_DENIED);
      if (who == Caller::kAlice) FUZZ_CHECK(s.ok());
      break;
    }
    default: {
      v1::ExplainRequest req;
      if (!fuzz::NextMessage(in, &req)) return 0;
      v1::ExplainResponse resp;
      const grpc::Status s = f.admin().Explain(f.Context(who).get(), req, &resp);
      f.Check(who, s);
      if (who == Caller::kBob) FUZZ_CHECK(s.error_code() == grpc::StatusCode::PERMISSION_DENIED);
      break;
    }
  }
  return 0;
}
