// What the RPC fuzz targets share: one kvtierd per fuzz process, run
// in-process (server/daemon.h) on a loopback port with API keys, a RocksDB
// tier, no flash, and the engine on the tiny random-weight model; and typed
// stubs to call it as one of three callers.
//
// The invariants every call must keep, whatever the request:
//  - a call without an API key is refused with UNAUTHENTICATED before
//    anything of it is read (so never INVALID_ARGUMENT, never OK);
//  - no call answers UNKNOWN, INTERNAL, UNIMPLEMENTED or DATA_LOSS, or hangs
//    (DEADLINE_EXCEEDED after 20 s): each of those is a crash of the target;
//  - the daemon stays healthy after every call (Admin.Health answers OK).
#pragma once

#include <google/protobuf/stubs/logging.h>
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <filesystem>
#include <memory>

#include "proto/kvtier.grpc.pb.h"
#include "server/daemon.h"
#include "tests/fuzz/fuzz_util.h"

namespace kvtier::fuzz {

// Who calls: nobody (no key), alice (an admin) or bob (a plain tenant).
enum class Caller : uint8_t { kNobody = 0, kAlice = 1, kBob = 2 };

class RpcFuzzer {
 public:
  static RpcFuzzer& Get() {
    static RpcFuzzer* fuzzer = new RpcFuzzer();  // never destroyed: the daemon outlives exit
    return *fuzzer;
  }

  v1::BlockStore::Stub& block_store() { return *block_store_; }
  v1::ContextCache::Stub& context_cache() { return *context_cache_; }
  v1::Admin::Stub& admin() { return *admin_; }

  // A context for one call by `who`, with a 20 s deadline.
  std::unique_ptr<grpc::ClientContext> Context(Caller who) const {
    auto ctx = std::make_unique<grpc::ClientContext>();
    ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    if (who == Caller::kAlice) ctx->AddMetadata("x-api-key", "alice-key-0123456789");
    if (who == Caller::kBob) ctx->AddMetadata("x-api-key", "bob-key-0123456789ab");
    return ctx;
  }

  // Checks a call's outcome against the invariants above.
  void Check(Caller who, const grpc::Status& s) {
    if (who == Caller::kNobody && s.error_code() != grpc::StatusCode::UNAUTHENTICATED) {
      std::fprintf(stderr, "unauthenticated call answered %d: %s\n", s.error_code(),
                   s.error_message().c_str());
      FUZZ_CHECK(false && "a call without a key must be refused before anything else");
    }
    switch (s.error_code()) {
      case grpc::StatusCode::UNKNOWN:
      case grpc::StatusCode::INTERNAL:
      case grpc::StatusCode::UNIMPLEMENTED:
      case grpc::StatusCode::DATA_LOSS:
      case grpc::StatusCode::DEADLINE_EXCEEDED:
        std::fprintf(stderr, "call answered %d: %s\n", s.error_code(), s.error_message().c_str());
        FUZZ_CHECK(false && "a bad request must get a clear, expected status");
        break;
      default:
        break;
    }
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    v1::HealthRequest req;
    v1::HealthResponse resp;
    FUZZ_CHECK(admin_->Health(&ctx, req, &resp).ok());
  }

 private:
  RpcFuzzer() {
    // Requests that are not valid protobuf are skipped; their parse errors
    // need not fill the log.
    google::protobuf::SetLogHandler(nullptr);
    const std::string dir = ScratchDir() + "/daemon";
    std::filesystem::create_directories(dir);
    WriteFile(dir + "/keys", "alice-key-0123456789 alice admin\nbob-key-0123456789ab bob\n");
    DaemonOptions o;
    o.listen = "127.0.0.1:0";
    o.data_dir = dir + "/data";
    o.dram_bytes = 32 << 20;
    o.hbm_bytes = 0;
    o.rocks_bytes = 64 << 20;
    o.rocks_wal = false;
    o.flash = false;
    o.max_block_bytes = 1 << 20;
    o.max_lookup_tokens = 1 << 16;
    o.max_inflight_payload_bytes = 64 << 20;
    o.max_tenant_payload_bytes = 16 << 20;
    o.max_threads = 32;
    o.max_streams = 16;
    o.max_tenant_streams = 8;
    o.engine_kv_bytes = 16 << 20;
    o.engine_threads = 1;
    o.engine_device = "cpu";
    o.metrics_listen = "";
    o.api_keys_file = dir + "/keys";
    o.shutdown_grace_ms = 0;
    Result<std::unique_ptr<Daemon>> d = Daemon::Open(o);
    if (!d.ok()) std::fprintf(stderr, "daemon: %s\n", d.status().ToString().c_str());
    FUZZ_CHECK(d.ok());
    daemon_ = std::move(*d);
    const Status started = daemon_->Start();
    if (!started.ok()) std::fprintf(stderr, "daemon: %s\n", started.ToString().c_str());
    FUZZ_CHECK(started.ok());
    auto channel =
        grpc::CreateChannel(daemon_->bound_address(), grpc::InsecureChannelCredentials());
    block_store_ = v1::BlockStore::NewStub(channel);
    context_cache_ = v1::ContextCache::NewStub(channel);
    admin_ = v1::Admin::NewStub(channel);
  }

  std::unique_ptr<Daemon> daemon_;
  std::unique_ptr<v1::BlockStore::Stub> block_store_;
  std::unique_ptr<v1::ContextCache::Stub> context_cache_;
  std::unique_ptr<v1::Admin::Stub> admin_;
};

// Parses the next message of the input: a u16 length, then that many bytes.
// False when they are not a `Message`.
template <typename Message>
bool NextMessage(FuzzReader& in, Message* m) {
  const std::string bytes = in.Bytes(in.U16() % 8192);
  return m->ParseFromString(bytes);
}

}  // namespace kvtier::fuzz
