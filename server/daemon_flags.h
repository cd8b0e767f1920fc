// DaemonOptions: everything kvtierd is told at start, and the parser of its
// command line (flags, and a JSON --config file of the same flags).
//
// Every option has a default; ParseDaemonFlags checks each flag's value once,
// so Daemon::Open trusts what it is given.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "cache/namespace.h"
#include "cache/placement.h"
#include "common/status.h"
#include "context/pricing.h"

namespace kvtier {

// The namespace of requests that name none: model "default", f32, 64 tokens.
inline Namespace DefaultNamespace() {
  Namespace ns;
  ns.model_id = "default";
  return ns;
}

struct DaemonOptions {
  std::string listen = "127.0.0.1:50051";  // host:port; port 0 picks a free one
  std::string data_dir = "./var/kvtier";   // created if absent; locked while running
  uint64_t dram_bytes = 1ull << 30;        // DRAM tier capacity, bytes
  // HBM tier capacity, bytes, on top of DRAM: -1 = 1 GiB when a GPU answers,
  // else none; 0 = none.
  int64_t hbm_bytes = -1;
  bool lock_memory = false;  // mlock the DRAM arena
  // RocksDB cold tier capacity, bytes; 0 = the smaller of 64 GiB and half the
  // free space of the data directory's file system when kvtierd starts.
  uint64_t rocks_bytes = 0;
  bool rocks_wal = true;  // log cold-tier writes (survive a process crash)
  bool flash = true;      // put a flash tier between DRAM and RocksDB
  // The flash log: a file (created) or a block device; "" = DATA_DIR/flash.log.
  std::string flash_path;
  // Flash tier capacity, bytes; 0 = an existing log keeps its size, a new one
  // gets the smaller of 16 GiB and a quarter of the free space.
  uint64_t flash_bytes = 0;
  uint64_t flash_region_bytes = 64ull << 20;         // flash log region, bytes
  double flash_write_budget_bytes_per_s = 0;         // device endurance budget; 0 = unlimited
  Namespace default_namespace = DefaultNamespace();  // for requests that name none
  int64_t default_ttl_s = 0;                         // TTL of a put without one; 0 = none
  uint64_t max_block_bytes = 64ull << 20;            // largest block payload, bytes
  size_t max_lookup_tokens = 1 << 20;                // token ids per Lookup or Put
  size_t max_lookup_keys = 1 << 16;                  // keys per Lookup
  uint64_t max_inflight_payload_bytes = 1ull << 30;  // payload bytes held by all Puts and Gets
  // Payload bytes one tenant's Puts and Gets may hold; 0 = a quarter of the
  // above, at least max_block_bytes.
  uint64_t max_tenant_payload_bytes = 0;
  // Leases of BatchLookup (server/leases.h): the longest, and what one tenant
  // may hold open.
  int64_t max_lease_ms = 60'000;
  int max_tenant_leases = 1024;
  uint64_t max_tenant_leased_blocks = 1 << 16;
  uint64_t max_tenant_leased_bytes = 0;  // 0 = a quarter of the cache's capacity
  // Same-host shared memory for the block API (server/shm_regions.h): its
  // Unix socket ("" = DATA_DIR/kvtierd.sock; "off" = none) and limits.
  std::string shm_socket;
  uint64_t shm_max_region_bytes = uint64_t{1} << 30;
  uint64_t shm_max_total_bytes = uint64_t{8} << 30;
  uint64_t shm_max_tenant_bytes = 0;  // 0 = half of shm_max_total_bytes
  // Server threads, connections and streams (docs/operations.md). Streams
  // (Put, Get, Generate) hold a thread each while open: at most max_streams
  // of them, at most max_tenant_streams for one tenant; the rest of the
  // threads serve unary calls. A stream waiting on its client longer than
  // stream_idle_ms is cancelled.
  int max_threads = 1024;
  int max_streams = 768;
  int max_tenant_streams = 512;
  // Generation requests (gRPC Generate and the HTTP dialects) in the engine
  // at once; beyond it a request is refused with RESOURCE_EXHAUSTED (429).
  int max_concurrent_requests = 256;
  int64_t stream_idle_ms = 30000;
  int max_streams_per_connection = 128;  // HTTP/2 concurrent calls on one connection
  // Open client connections at most, further capped below the descriptor
  // limit (raised to its hard limit at start) with a reserve for files.
  int max_connections = 4096;
  // Memory gRPC may use for its own buffers (its resource quota).
  uint64_t grpc_memory_bytes = 512ull << 20;
  int64_t shutdown_grace_ms = 5000;  // time given to in-flight calls
  // The engine. With no model path, a deterministic random-weight model of
  // `default_model_preset` is created (once) under DATA_DIR/models.
  bool engine = true;      // serve inference (ContextCache)
  std::string model_path;  // llama2.c .bin or safetensors dir
  // Shape of the created model: tiny-8k, an 8K context, so every README
  // example (a 3,000-token cached prompt) runs on the embedded defaults.
  std::string default_model_preset = "tiny-8k";
  int64_t engine_kv_bytes = 256ll << 20;  // KV page memory, bytes
  int engine_max_batch = 64;              // sequences running at once
  int engine_token_budget = 512;          // tokens computed per step
  int engine_threads = 0;                 // forward-pass threads; 0 = all cores
  std::string engine_device = "auto";     // cpu, cuda, or auto (cuda when a GPU answers)
  bool engine_gpu_bf16 = false;           // cuda: bf16 weights and GEMMs
  bool engine_cpu_bf16 = false;           // cpu: bf16 weights and products
  bool engine_keep_staged_tiles = true;   // EngineOptions::cpu_keep_staged_tiles
  // Placement (DESIGN §4, docs/placement.md). Eviction policy per tier (see
  // cache/eviction_policy.h for the names) and each tier's price, which with
  // its capacity gives the cost rate P_t.
  std::string hbm_policy = "lru";
  std::string dram_policy = "lru";
  std::string flash_policy = "lru";
  std::string rocks_policy = "lru";
  // Admission filter per tier (cache/admission.h: none, tinylfu, ghost,
  // prefix): whether a new block may displace a resident one of a full tier.
  std::string hbm_admission = "none";
  std::string dram_admission = "none";
  std::string flash_admission = "none";
  std::string rocks_admission = "none";
  // GPU memory: an H100's $2.50/h over its 80 GiB, per month (730 h).
  double hbm_usd_per_gib_month = 22.8;
  double dram_usd_per_gib_month = 3.0;    // host memory
  double flash_usd_per_gib_month = 0.10;  // local NVMe
  double rocks_usd_per_gib_month = 0.03;  // the cold store's disk
  PlacementOptions placement;             // recompute cost, fetch budget, reuse estimation
  int64_t sweep_interval_ms = 1000;       // period of the expiry sweep
  // Context caching: marked prefixes shorter than this are not cached.
  int64_t min_cacheable_tokens = 1024;
  ModelPrice price;  // of the served model (DESIGN §6 defaults)
  // Prometheus metrics over HTTP, "host:port"; "" = none. The default is
  // best effort (a busy port is logged and skipped); an address given
  // explicitly must bind.
  std::string metrics_listen = "127.0.0.1:9464";
  bool metrics_listen_required = false;
  // The HTTP API (server/http/http_api.h), "host:port"; "" = none. Like the
  // metrics endpoint: best effort by default, required when given.
  std::string http_listen = "127.0.0.1:8000";
  bool http_listen_required = false;
  int http_threads = 64;
  uint64_t http_max_body_bytes = 4u << 20;
  std::string served_model_name;  // "" = the model's id
  // Per-tenant API keys ("KEY TENANT [admin]" per line, server/auth.h);
  // "" = open: the tenant is what a request says.
  std::string api_keys_file;
  // TLS: a PEM certificate chain and its private key; both empty = plaintext.
  std::string tls_cert_file;
  std::string tls_key_file;
  // Scale-out (DESIGN §10, docs/scale-out.md). A shared cluster tier on
  // Redis Cluster below the local tiers: its seed nodes ("" = none), this
  // node's share of it, its key prefix, value size, timeout, policy and price.
  std::vector<std::string> cluster_redis;
  uint64_t cluster_bytes = 16ull << 30;
  std::string cluster_prefix = "kvt";
  uint64_t cluster_value_bytes = 1ull << 20;
  int cluster_timeout_ms = 1000;
  std::string cluster_policy = "lru";
  std::string cluster_admission = "none";
  double cluster_usd_per_gib_month = 3.0;  // memory of the Redis nodes
  // The cache secret (DESIGN §2) from this file instead of DATA_DIR/cache_secret:
  // nodes that share blocks must share it, or a tenant's keys differ by node.
  std::string cache_secret_file;
  // Peer lookup: the other kvtierd nodes' gRPC addresses, this node's name
  // as they know it ("" = --listen, whose port must then be fixed), and the
  // per-call timeout after which a peer's keys are misses.
  std::vector<std::string> peers;
  std::string advertise;
  int peer_timeout_ms = 500;
};

// Parses kvtierd's command line (argv[0] is the program) into options. The
// settings of a `--config FILE` come first; flags on the command line
// override them. Sets *help when --help is given. InvalidArgument (NotFound
// for an unreadable config file) names the flag at fault.
Result<DaemonOptions> ParseDaemonFlags(int argc, char** argv, bool* help);
// The text of `kvtierd --help`.
std::string DaemonUsage();

}  // namespace kvtier
