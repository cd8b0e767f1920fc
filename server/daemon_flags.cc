#include "server/daemon_flags.h"

#include <algorithm>
#include <cstdint>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "cache/admission.h"
#include "cache/eviction_policy.h"
#include "common/flags.h"
#include "common/kv_geometry.h"
#include "model/model_weights.h"

namespace kvtier {

std::string DaemonUsage() {
  return R"(usage: kvtierd [flags]
  --listen HOST:PORT      address to serve on (default 127.0.0.1:50051; port 0 picks one)
  --data-dir DIR          data directory, created if absent (default ./var/kvtier)
  --dram-bytes SIZE       DRAM tier capacity, e.g. 512M, 4G (default 1G)
  --lock-memory           mlock the DRAM tier (best effort)
  --hbm-bytes SIZE        HBM tier capacity on top of DRAM, GPU memory (default 1G when a
                          GPU is present, else none; 0 = none)
  --rocks-bytes SIZE      RocksDB cold tier capacity, under DIR/rocks
                          (default: the smaller of 64G and half the free disk)
  --no-rocks-wal          do not log cold-tier writes (a crash may lose recent ones)
  --flash-path PATH       flash log file or block device (default DIR/flash.log)
  --flash-bytes SIZE      flash tier capacity (default: an existing log keeps its
                          size; a new one gets the smaller of 16G and a quarter
                          of the free disk)
  --flash-region-bytes SIZE  flash log region (default 64M)
  --flash-write-budget SIZE  flash device writes per second at most (default: no limit)
  --no-flash              no flash tier: DRAM, then RocksDB
  --block-tokens N        tokens per block of the default namespace (default 64)
  --model-id ID           model id of the default namespace (default "default")
  --kv-dtype f32|f16|bf16 KV dtype of the default namespace (default f32)
  --default-ttl SECONDS   TTL of a block put without one (default 0: no expiry)
  --max-block-bytes SIZE  largest block payload accepted (default 64M)
  --max-payload-bytes SIZE  payload bytes all Put and Get calls may hold (default 1G)
  --max-tenant-payload-bytes SIZE  payload bytes one tenant's calls may hold
                          (default: a quarter of the above, at least --max-block-bytes)
  --max-lease-ms N        the longest lease BatchLookup grants (default 60000)
  --max-tenant-leases N   leases one tenant may hold open (default 1024)
  --max-tenant-leased-blocks N  blocks one tenant's leases may pin (default 65536)
  --max-tenant-leased-bytes SIZE  payload bytes one tenant's leases may pin
                          (default: a quarter of this node's tiers' capacity together)
  --shm-socket PATH       Unix socket where same-host clients map shared memory for
                          BatchGet/BatchPut (default DIR/kvtierd.sock; "off" = none)
  --shm-max-region-bytes SIZE  one client's region at most (default 1G)
  --shm-max-bytes SIZE    all regions together at most (default 8G)
  --shm-max-tenant-bytes SIZE  one tenant's regions together at most (default: half
                          of --shm-max-bytes; a tenant may also hold half of the 64 regions)
  --model PATH            model to serve: a llama2.c checkpoint (.bin, its tokenizer
                          beside it) or a directory with config.json + *.safetensors
                          (default: a small random-weight model, created once under
                          DIR/models/PRESET)
  --model-preset NAME     shape of that created model: tiny, tiny-8k, small, bench50m, base, 1b
                          (default tiny-8k)
  --kv-bytes SIZE         engine KV page memory, staged copies included (default 256M)
  --max-batch N           sequences the engine runs at once (default 64)
  --token-budget N        tokens the engine computes per step (default 512)
  --engine-threads N      forward-pass threads (default: one per core)
  --device NAME           where the engine runs: cpu, cuda or auto (default auto: cuda
                          when a GPU is present, else cpu)
  --gpu-weights DTYPE     engine weights on the GPU: f32 (default, precise) or bf16
  --cpu-weights DTYPE     engine weights on the CPU: f32 (default, precise) or bf16
                          (AVX-512 BF16 dot products where the CPU has them)
  --no-staged-tiles       bf16 attention: keep no staged attention tiles beside the KV
                          pages (1.5x the pages in --kv-bytes; long decodes slower)
  --no-engine             serve the cache only, no model
  --hbm-policy NAME
  --dram-policy NAME      eviction policy of a tier: lru, fifo, lfu, arc, s3fifo, sieve,
  --flash-policy NAME       gdsf, ttl-cost, lirs, prefix-lru, prefix-reuse, wtinylfu or lhd
                            (default lru for every tier: docs/placement.md says why)
  --rocks-policy NAME
  --hbm-admission NAME
  --dram-admission NAME   admission filter of a tier, which decides whether a new block
  --flash-admission NAME    may displace a resident one when the tier is full: none,
  --rocks-admission NAME    tinylfu, ghost or prefix (default none for every tier)
  --hbm-price USD
  --dram-price USD        price of a tier, $ per GiB-month (defaults 22.8, 3.0, 0.10, 0.03):
  --flash-price USD         with its capacity, the tier's cost rate in the drain-time
  --rocks-price USD         cost model
  --remat-flops N         prefill FLOP/s of the engine that recomputes a dropped block
                          (default 4e14)
  --gpu-price USD         $ per hour of that engine's accelerator (default 2.5)
  --fetch-budget-ms N     a tier must return one block within this (default 1000)
  --default-idle SECONDS  expected idle time of a block with no TTL and no history
                          (default 600)
  --sweep-interval-ms N   period of the expiry sweep (default 1000)
  --min-cacheable-tokens N  context caching: shorter marked prefixes are not cached
                          (default 1024)
  --price-input USD       the served model's input price, $ per million tokens (default 3);
  --price-output USD        output (default 15); named-cache storage, $ per million
  --price-storage USD       tokens per hour (default 1). Cache writes cost 1.25x (5m) or
                            2x (1h) the input price, reads 0.1x.
  --metrics-listen HOST:PORT  Prometheus metrics over HTTP (default 127.0.0.1:9464,
                          skipped with a warning when busy; "" = none)
  --http-listen HOST:PORT  the HTTP API: Anthropic, OpenAI and Gemini dialects
                          (docs/http-api.md; default 127.0.0.1:8000, skipped with a
                          warning when busy; "" = none)
  --http-threads N        HTTP connections served at once (default 64)
  --http-max-body-bytes N  largest HTTP request body (default 4M; larger: 413)
  --served-model-name ID  the model id HTTP clients send (default: the model's id)
  --api-keys FILE         per-tenant API keys, one "KEY TENANT [admin] [group=NAME]" per
                          line (tenants of one group share cached blocks); every call then
                          needs one (metadata x-api-key); default: open
  --config FILE           settings from a JSON object of flag names to values, e.g.
                          {"dram-bytes": "4G", "api-keys": "/etc/kvtier/keys",
                          "no-flash": true}; flags given on the command line win
  --max-threads N         gRPC server threads (default 1024; made as needed)
  --max-streams N         Put/Get/Generate streams open at once (default 768; the other
                          threads serve unary calls)
  --max-tenant-streams N  streams one tenant may hold open (default 512)
  --max-concurrent-requests N  generation requests (gRPC and HTTP) in the engine at once
                          (default 256); more are refused: RESOURCE_EXHAUSTED / HTTP 429
  --stream-idle-ms N      a stream waiting on its client longer is cancelled (default 30000)
  --max-connections N     open client connections at most (default 4096; capped below
                          the descriptor limit, which kvtierd raises to its hard limit)
  --max-streams-per-connection N  concurrent calls on one connection (default 128)
  --grpc-memory-bytes SIZE  memory gRPC may use for its buffers (default 512M)
  --tls-cert FILE         serve gRPC over TLS with this PEM certificate chain...
  --tls-key FILE          ...and its PEM private key
  --cluster-redis HOST:PORT[,HOST:PORT...]  a shared cluster tier on this Redis Cluster,
                          below the local tiers (docs/scale-out.md; default: none)
  --cluster-bytes SIZE    this node's share of the cluster tier (default 16G)
  --cluster-prefix NAME   the cluster tier's key prefix (default kvt)
  --cluster-value-bytes SIZE  blocks are split into Redis values of at most this
                          (default 1M)
  --cluster-timeout-ms N  the cluster tier's per-call timeout (default 1000)
  --cluster-policy NAME   its eviction policy and admission filter (defaults lru, none)
  --cluster-admission NAME
  --cluster-price USD     its price, $ per GiB-month (default 3.0)
  --peers HOST:PORT[,HOST:PORT...]  the other kvtierd nodes: a block key's owner among
                          them all (rendezvous hashing) is asked before a miss is
                          recomputed, and gets a copy of each block computed here
  --advertise HOST:PORT   this node's address as its peers list it (default --listen)
  --peer-timeout-ms N     a peer call's timeout; a peer that fails is skipped for a
                          second (default 500)
  --cache-secret FILE     the 32-byte cache secret (tenant salts, key scopes) from FILE
                          instead of DIR/cache_secret; nodes sharing a cluster tier
                          must share it
  --help                  this text
)";
}

namespace {

// The flags a config file stands for: a JSON object whose keys are flag
// names without "--" and whose values are strings, numbers or booleans (true
// for a flag without a value; false leaves it out).
Result<std::vector<std::string>> ConfigFileArgs(const std::string& path) {
  std::ifstream in(path);
  if (!in) return Status::NotFound("cannot read the config file " + path);
  nlohmann::json j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return Status::InvalidArgument("config file " + path + " is not a JSON object");
  }
  std::vector<std::string> args;
  for (const auto& [key, value] : j.items()) {
    if (key == "config") {
      return Status::InvalidArgument("config file " + path + " may not name another config");
    }
    if (value.is_boolean()) {
      if (value.get<bool>()) args.push_back("--" + key);
    } else if (value.is_string()) {
      args.push_back("--" + key);
      args.push_back(value.get<std::string>());
    } else if (value.is_number_integer()) {
      args.push_back("--" + key);
      args.push_back(std::to_string(value.get<int64_t>()));
    } else if (value.is_number()) {
      args.push_back("--" + key);
      std::ostringstream v;
      v << value.get<double>();
      args.push_back(v.str());
    } else {
      return Status::InvalidArgument("config file " + path + ": \"" + key +
                                     "\" must be a string, a number or a boolean");
    }
  }
  return args;
}

// argv without the program, the settings of every --config file first, so
// that the command line, read after them, wins (a flag keeps its last value).
Result<std::vector<std::string>> ArgsWithConfigFirst(int argc, char** argv) {
  std::vector<std::string> args, command_line;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    std::string path;
    if (a == "--config" && i + 1 < argc) {
      path = argv[++i];
    } else if (a.rfind("--config=", 0) == 0) {
      path = a.substr(9);
    } else {
      command_line.push_back(a);
      continue;
    }
    KVTIER_ASSIGN_OR_RETURN(std::vector<std::string> settings, ConfigFileArgs(path));
    args.insert(args.end(), settings.begin(), settings.end());
  }
  args.insert(args.end(), command_line.begin(), command_line.end());
  return args;
}

// What a size flag's value must be; outside it the flag is refused with
// "--NAME needs <need>".
struct SizeRule {
  uint64_t min;
  uint64_t max;
  const char* need;
};
constexpr SizeRule kPositiveSize{1, UINT64_MAX, "a positive size"};
constexpr uint64_t kTiB = uint64_t{1} << 40;

// Sets *field from the size flag `name` (4096, 64K, 512M, ...) when it is given.
template <typename Field>
Status ParseSizeFlag(const FlagSet& flags, const std::string& name, SizeRule rule, Field* field) {
  if (!flags.Has(name)) return Status::Ok();
  Result<uint64_t> v = ParseBytes(flags.Get(name));
  if (!v.ok() || *v < rule.min || *v > rule.max) {
    return Status::InvalidArgument("--" + name + " needs " + rule.need);
  }
  *field = static_cast<Field>(*v);
  return Status::Ok();
}

// Sets *field from the integer flag `name` when it is given; a value outside
// [lo, hi] is refused with "--NAME needs <what> in [lo, hi]".
template <typename Field>
Status ParseIntFlag(const FlagSet& flags, const std::string& name, int64_t lo, int64_t hi,
                    Field* field, const std::string& what = "an integer") {
  if (!flags.Has(name)) return Status::Ok();
  Result<int64_t> v = ParseInt(flags.Get(name));
  if (!v.ok() || *v < lo || *v > hi) {
    return Status::InvalidArgument("--" + name + " needs " + what + " in [" + std::to_string(lo) +
                                   ", " + std::to_string(hi) + "]");
  }
  *field = static_cast<Field>(*v);
  return Status::Ok();
}

// The tier stack: DRAM, HBM, flash and the RocksDB cold tier.
Status ParseTierFlags(const FlagSet& flags, DaemonOptions* o) {
  o->lock_memory = flags.Has("lock-memory");
  o->rocks_wal = !flags.Has("no-rocks-wal");
  KVTIER_RETURN_IF_ERROR(ParseSizeFlag(flags, "rocks-bytes", kPositiveSize, &o->rocks_bytes));
  o->flash = !flags.Has("no-flash");
  o->flash_path = flags.Get("flash-path", o->flash_path);
  KVTIER_RETURN_IF_ERROR(ParseSizeFlag(flags, "flash-bytes", kPositiveSize, &o->flash_bytes));
  KVTIER_RETURN_IF_ERROR(
      ParseSizeFlag(flags, "flash-region-bytes", kPositiveSize, &o->flash_region_bytes));
  KVTIER_RETURN_IF_ERROR(ParseSizeFlag(flags, "flash-write-budget",
                                       {0, UINT64_MAX, "a size per second"},
                                       &o->flash_write_budget_bytes_per_s));
  KVTIER_RETURN_IF_ERROR(
      ParseSizeFlag(flags, "hbm-bytes", {0, kTiB, "a size up to 1T"}, &o->hbm_bytes));
  if (flags.Has("dram-bytes")) {
    // Any size goes; the message says why the value is not one.
    Result<uint64_t> v = ParseBytes(flags.Get("dram-bytes"));
    if (!v.ok()) return Status::InvalidArgument("--dram-bytes: " + v.status().message());
    o->dram_bytes = *v;
  }
  return Status::Ok();
}

// The block API: payload limits, and the namespace and TTL of requests that
// name none.
Status ParseBlockApiFlags(const FlagSet& flags, DaemonOptions* o) {
  KVTIER_RETURN_IF_ERROR(
      ParseSizeFlag(flags, "max-block-bytes", kPositiveSize, &o->max_block_bytes));
  KVTIER_RETURN_IF_ERROR(
      ParseSizeFlag(flags, "max-payload-bytes", kPositiveSize, &o->max_inflight_payload_bytes));
  KVTIER_RETURN_IF_ERROR(ParseSizeFlag(flags, "max-tenant-payload-bytes", kPositiveSize,
                                       &o->max_tenant_payload_bytes));
  if (flags.Has("block-tokens")) {
    Result<int64_t> v = ParseInt(flags.Get("block-tokens"));
    if (!v.ok() || !ValidBlockTokens(*v)) {
      return Status::InvalidArgument("--block-tokens must be a power of two in [16, 1024]");
    }
    o->default_namespace.block_tokens = static_cast<int>(*v);
  }
  KVTIER_RETURN_IF_ERROR(
      ParseIntFlag(flags, "max-lease-ms", 1, 3'600'000, &o->max_lease_ms, "milliseconds"));
  KVTIER_RETURN_IF_ERROR(
      ParseIntFlag(flags, "max-tenant-leases", 1, 1 << 20, &o->max_tenant_leases));
  KVTIER_RETURN_IF_ERROR(ParseSizeFlag(flags, "max-tenant-leased-blocks", kPositiveSize,
                                       &o->max_tenant_leased_blocks));
  KVTIER_RETURN_IF_ERROR(
      ParseSizeFlag(flags, "max-tenant-leased-bytes", kPositiveSize, &o->max_tenant_leased_bytes));
  o->shm_socket = flags.Get("shm-socket", o->shm_socket);
  KVTIER_RETURN_IF_ERROR(
      ParseSizeFlag(flags, "shm-max-region-bytes", kPositiveSize, &o->shm_max_region_bytes));
  KVTIER_RETURN_IF_ERROR(
      ParseSizeFlag(flags, "shm-max-bytes", kPositiveSize, &o->shm_max_total_bytes));
  KVTIER_RETURN_IF_ERROR(
      ParseSizeFlag(flags, "shm-max-tenant-bytes", kPositiveSize, &o->shm_max_tenant_bytes));
  if (o->shm_max_total_bytes < o->shm_max_region_bytes) {
    return Status::InvalidArgument("--shm-max-bytes must be at least --shm-max-region-bytes");
  }
  if (flags.Has("default-ttl")) {
    Result<int64_t> v = ParseInt(flags.Get("default-ttl"));
    if (!v.ok() || *v > UINT32_MAX) {
      return Status::InvalidArgument("--default-ttl needs seconds, at most " +
                                     std::to_string(UINT32_MAX));
    }
    o->default_ttl_s = *v;
  }
  o->default_namespace.model_id = flags.Get("model-id", o->default_namespace.model_id);
  if (flags.Has("kv-dtype")) {
    std::optional<DType> d = ParseDType(flags.Get("kv-dtype"));
    if (!d) return Status::InvalidArgument("--kv-dtype must be f32, f16 or bf16");
    o->default_namespace.kv_dtype = *d;
  }
  return Status::Ok();
}

// The engine and the model it serves; context caching's threshold.
Status ParseEngineFlags(const FlagSet& flags, DaemonOptions* o) {
  o->engine = !flags.Has("no-engine");
  o->engine_keep_staged_tiles = !flags.Has("no-staged-tiles");
  o->model_path = flags.Get("model", o->model_path);
  o->default_model_preset = flags.Get("model-preset", o->default_model_preset);
  if (!ModelPreset(o->default_model_preset).ok()) {
    return Status::InvalidArgument("--model-preset: unknown preset '" + o->default_model_preset +
                                   "'");
  }
  KVTIER_RETURN_IF_ERROR(
      ParseSizeFlag(flags, "kv-bytes", {1, kTiB, "a positive size"}, &o->engine_kv_bytes));
  KVTIER_RETURN_IF_ERROR(
      ParseIntFlag(flags, "min-cacheable-tokens", 1, 1 << 20, &o->min_cacheable_tokens));
  o->engine_device = flags.Get("device", o->engine_device);
  if (o->engine_device != "cpu" && o->engine_device != "cuda" && o->engine_device != "auto") {
    return Status::InvalidArgument("--device must be cpu, cuda or auto");
  }
  for (auto [flag, field] : {std::pair{"gpu-weights", &o->engine_gpu_bf16},
                             std::pair{"cpu-weights", &o->engine_cpu_bf16}}) {
    if (!flags.Has(flag)) continue;
    const std::string w = flags.Get(flag);
    if (w != "f32" && w != "bf16") {
      return Status::InvalidArgument(std::string("--") + flag + " must be f32 or bf16");
    }
    *field = w == "bf16";
  }
  KVTIER_RETURN_IF_ERROR(ParseIntFlag(flags, "max-batch", 1, 4096, &o->engine_max_batch));
  KVTIER_RETURN_IF_ERROR(ParseIntFlag(flags, "token-budget", 1, 1 << 20, &o->engine_token_budget));
  KVTIER_RETURN_IF_ERROR(ParseIntFlag(flags, "engine-threads", 0, 1024, &o->engine_threads));
  return Status::Ok();
}

// The served model's prices (DESIGN §6).
Status ParseModelPriceFlags(const FlagSet& flags, DaemonOptions* o) {
  for (auto [flag, field] : {std::pair{"price-input", &o->price.input_usd_per_mtok},
                             std::pair{"price-output", &o->price.output_usd_per_mtok},
                             std::pair{"price-storage", &o->price.storage_usd_per_mtok_hour}}) {
    if (!flags.Has(flag)) continue;
    Result<double> v = ParseNonNegative(flags.Get(flag));
    if (!v.ok()) return Status::InvalidArgument(std::string("--") + flag + " needs a price >= 0");
    *field = *v;
  }
  return Status::Ok();
}

// Where kvtierd serves and keeps its data, and who may call it: the listen
// address, the data directory, API keys, TLS and the metrics endpoint.
Status ParseListenFlags(const FlagSet& flags, DaemonOptions* o) {
  o->listen = flags.Get("listen", o->listen);
  o->data_dir = flags.Get("data-dir", o->data_dir);
  o->api_keys_file = flags.Get("api-keys", o->api_keys_file);
  o->tls_cert_file = flags.Get("tls-cert", o->tls_cert_file);
  o->tls_key_file = flags.Get("tls-key", o->tls_key_file);
  if (o->tls_cert_file.empty() != o->tls_key_file.empty()) {
    return Status::InvalidArgument("--tls-cert and --tls-key go together");
  }
  if (flags.Has("metrics-listen")) {
    // Asked for explicitly, the endpoint must bind; "" turns it off.
    o->metrics_listen = flags.Get("metrics-listen");
    o->metrics_listen_required = !o->metrics_listen.empty();
  }
  if (flags.Has("http-listen")) {
    o->http_listen = flags.Get("http-listen");
    o->http_listen_required = !o->http_listen.empty();
  }
  KVTIER_RETURN_IF_ERROR(ParseIntFlag(flags, "http-threads", 1, 1024, &o->http_threads));
  if (flags.Has("http-max-body-bytes")) {
    Result<uint64_t> v = ParseBytes(flags.Get("http-max-body-bytes"));
    if (!v.ok() || *v < 1024 || *v > (uint64_t{1} << 30)) {
      return Status::InvalidArgument("--http-max-body-bytes needs a size from 1K to 1G");
    }
    o->http_max_body_bytes = *v;
  }
  o->served_model_name = flags.Get("served-model-name", o->served_model_name);
  return Status::Ok();
}

// The server's threads, streams, connections and gRPC memory
// (docs/operations.md).
Status ParseServerLimitFlags(const FlagSet& flags, DaemonOptions* o) {
  for (auto [flag, field, lo, hi] :
       {std::tuple{"max-threads", &o->max_threads, 4, 65536},
        std::tuple{"max-streams", &o->max_streams, 1, 65536},
        std::tuple{"max-tenant-streams", &o->max_tenant_streams, 1, 65536},
        std::tuple{"max-connections", &o->max_connections, 1, 1 << 20},
        std::tuple{"max-streams-per-connection", &o->max_streams_per_connection, 1, 65536},
        std::tuple{"max-concurrent-requests", &o->max_concurrent_requests, 1, 65536}}) {
    KVTIER_RETURN_IF_ERROR(ParseIntFlag(flags, flag, lo, hi, field));
  }
  // Stream limits not given follow the others: streams leave a quarter of
  // the threads to unary calls, and one tenant may hold at most two thirds
  // of the streams.
  if (!flags.Has("max-streams") && flags.Has("max-threads")) {
    o->max_streams = std::max(1, o->max_threads * 3 / 4);
  }
  if (!flags.Has("max-tenant-streams")) {
    o->max_tenant_streams = std::max(1, std::min(o->max_tenant_streams, o->max_streams * 2 / 3));
  }
  if (o->max_streams >= o->max_threads) {
    return Status::InvalidArgument("--max-streams must be below --max-threads (" +
                                   std::to_string(o->max_threads) +
                                   "): unary calls and Health need threads too");
  }
  if (o->max_tenant_streams > o->max_streams) {
    return Status::InvalidArgument("--max-tenant-streams must be at most --max-streams");
  }
  KVTIER_RETURN_IF_ERROR(ParseIntFlag(flags, "stream-idle-ms", 10, 24 * 3600 * 1000,
                                      &o->stream_idle_ms, "milliseconds"));
  return ParseSizeFlag(flags, "grpc-memory-bytes",
                       {16u << 20, UINT64_MAX, "a size of at least 16M"}, &o->grpc_memory_bytes);
}

// Placement (DESIGN §4): each tier's eviction policy and price, the cost of
// recomputing a block, the fetch budget, and the expiry sweep.
Status ParsePlacementFlags(const FlagSet& flags, DaemonOptions* o) {
  for (auto [flag, field] :
       {std::pair{"hbm-policy", &o->hbm_policy}, std::pair{"dram-policy", &o->dram_policy},
        std::pair{"flash-policy", &o->flash_policy}, std::pair{"rocks-policy", &o->rocks_policy}}) {
    *field = flags.Get(flag, *field);
    if (NewEvictionPolicy(*field) == nullptr) {
      std::string names;
      for (const std::string& n : EvictionPolicyNames()) names += " " + n;
      return Status::InvalidArgument(std::string("--") + flag + ": unknown policy '" + *field +
                                     "' (policies:" + names + ")");
    }
  }
  for (auto [flag, field] : {std::pair{"hbm-admission", &o->hbm_admission},
                             std::pair{"dram-admission", &o->dram_admission},
                             std::pair{"flash-admission", &o->flash_admission},
                             std::pair{"rocks-admission", &o->rocks_admission}}) {
    *field = flags.Get(flag, *field);
    if (!IsAdmissionFilterName(*field)) {
      std::string names;
      for (const std::string& n : AdmissionFilterNames()) names += " " + n;
      return Status::InvalidArgument(std::string("--") + flag + ": unknown admission filter '" +
                                     *field + "' (filters:" + names + ")");
    }
  }
  // Given in the units operators think in; kept in the cost model's.
  double gpu_usd_per_hour = o->placement.remat.cost_per_s * 3600;
  double fetch_budget_ms = o->placement.fetch_budget_s * 1000;
  for (auto [flag, field, positive] :
       {std::tuple{"hbm-price", &o->hbm_usd_per_gib_month, false},
        std::tuple{"dram-price", &o->dram_usd_per_gib_month, false},
        std::tuple{"flash-price", &o->flash_usd_per_gib_month, false},
        std::tuple{"rocks-price", &o->rocks_usd_per_gib_month, false},
        std::tuple{"remat-flops", &o->placement.remat.flops_per_s, true},
        std::tuple{"gpu-price", &gpu_usd_per_hour, false},
        std::tuple{"fetch-budget-ms", &fetch_budget_ms, true},
        std::tuple{"default-idle", &o->placement.default_idle_s, true}}) {
    if (!flags.Has(flag)) continue;
    Result<double> v = ParseNonNegative(flags.Get(flag));
    if (!v.ok() || (positive && *v == 0)) {
      return Status::InvalidArgument(std::string("--") + flag + " needs a " +
                                     (positive ? "positive" : "non-negative") + " number");
    }
    *field = *v;
  }
  o->placement.remat.cost_per_s = gpu_usd_per_hour / 3600;
  o->placement.remat.wait_cost_per_s = o->placement.remat.cost_per_s;
  o->placement.fetch_budget_s = fetch_budget_ms / 1000;
  return ParseIntFlag(flags, "sweep-interval-ms", 1, 3'600'000, &o->sweep_interval_ms);
}

// A comma-separated list of HOST:PORT in flag `name`, when given.
Status ParseAddressList(const FlagSet& flags, const std::string& name,
                        std::vector<std::string>* out) {
  if (!flags.Has(name)) return Status::Ok();
  out->clear();
  const std::string list = flags.Get(name);
  for (size_t pos = 0; pos <= list.size();) {
    const size_t comma = std::min(list.find(',', pos), list.size());
    const std::string one = list.substr(pos, comma - pos);
    const size_t colon = one.rfind(':');
    Result<int64_t> port =
        colon == std::string::npos ? Status::InvalidArgument("") : ParseInt(one.substr(colon + 1));
    if (colon == std::string::npos || colon == 0 || !port.ok() || *port <= 0 || *port > 65535) {
      return Status::InvalidArgument("--" + name + " needs HOST:PORT[,HOST:PORT...], got \"" + one +
                                     "\"");
    }
    out->push_back(one);
    pos = comma + 1;
  }
  return Status::Ok();
}

// Scale-out: the cluster tier, peers and the shared secret.
Status ParseClusterFlags(const FlagSet& flags, DaemonOptions* o) {
  KVTIER_RETURN_IF_ERROR(ParseAddressList(flags, "cluster-redis", &o->cluster_redis));
  KVTIER_RETURN_IF_ERROR(ParseAddressList(flags, "peers", &o->peers));
  if (flags.Has("advertise")) {
    std::vector<std::string> one;
    KVTIER_RETURN_IF_ERROR(ParseAddressList(flags, "advertise", &one));
    if (one.size() != 1) return Status::InvalidArgument("--advertise needs one HOST:PORT");
    o->advertise = one[0];
  }
  KVTIER_RETURN_IF_ERROR(ParseIntFlag(flags, "peer-timeout-ms", 1, 60'000, &o->peer_timeout_ms));
  if (!o->peers.empty() && o->advertise.empty() &&
      o->listen.substr(o->listen.rfind(':') + 1) == "0") {
    return Status::InvalidArgument(
        "--peers needs this node's address: a --listen port other than 0, or --advertise");
  }
  KVTIER_RETURN_IF_ERROR(ParseSizeFlag(flags, "cluster-bytes", kPositiveSize, &o->cluster_bytes));
  KVTIER_RETURN_IF_ERROR(ParseSizeFlag(flags, "cluster-value-bytes",
                                       {4096, 512ull << 20, "a size in [4K, 512M]"},
                                       &o->cluster_value_bytes));
  KVTIER_RETURN_IF_ERROR(
      ParseIntFlag(flags, "cluster-timeout-ms", 1, 60'000, &o->cluster_timeout_ms));
  o->cluster_prefix = flags.Get("cluster-prefix", o->cluster_prefix);
  if (o->cluster_prefix.empty() || o->cluster_prefix.find_first_of("{} ") != std::string::npos) {
    return Status::InvalidArgument("--cluster-prefix needs a name without {, } or spaces");
  }
  o->cluster_policy = flags.Get("cluster-policy", o->cluster_policy);
  if (NewEvictionPolicy(o->cluster_policy) == nullptr) {
    return Status::InvalidArgument("--cluster-policy: unknown policy '" + o->cluster_policy + "'");
  }
  o->cluster_admission = flags.Get("cluster-admission", o->cluster_admission);
  if (!IsAdmissionFilterName(o->cluster_admission)) {
    return Status::InvalidArgument("--cluster-admission: unknown admission filter '" +
                                   o->cluster_admission + "'");
  }
  if (flags.Has("cluster-price")) {
    Result<double> v = ParseNonNegative(flags.Get("cluster-price"));
    if (!v.ok()) return Status::InvalidArgument("--cluster-price needs a non-negative number");
    o->cluster_usd_per_gib_month = *v;
  }
  o->cache_secret_file = flags.Get("cache-secret", o->cache_secret_file);
  return Status::Ok();
}

// kvtierd's flags by group: what each group declares and the function that
// reads it into DaemonOptions. Groups are read in this order, so of several
// bad flags the first group's is reported.
struct FlagGroup {
  std::vector<const char*> values;  // flags that take a value
  std::vector<const char*> bools;   // flags that take none
  Status (*parse)(const FlagSet& flags, DaemonOptions* o);
};

const std::vector<FlagGroup>& FlagGroups() {
  static const std::vector<FlagGroup> groups = {
      {{"dram-bytes", "hbm-bytes", "rocks-bytes", "flash-path", "flash-bytes", "flash-region-bytes",
        "flash-write-budget"},
       {"lock-memory", "no-rocks-wal", "no-flash"},
       ParseTierFlags},
      {{"max-block-bytes", "max-payload-bytes", "max-tenant-payload-bytes", "block-tokens",
        "default-ttl", "model-id", "kv-dtype", "max-lease-ms", "max-tenant-leases",
        "max-tenant-leased-blocks", "max-tenant-leased-bytes", "shm-socket", "shm-max-region-bytes",
        "shm-max-bytes", "shm-max-tenant-bytes"},
       {},
       ParseBlockApiFlags},
      {{"model", "model-preset", "kv-bytes", "min-cacheable-tokens", "device", "gpu-weights",
        "cpu-weights", "max-batch", "token-budget", "engine-threads"},
       {"no-engine", "no-staged-tiles"},
       ParseEngineFlags},
      {{"price-input", "price-output", "price-storage"}, {}, ParseModelPriceFlags},
      {{"listen", "data-dir", "api-keys", "tls-cert", "tls-key", "metrics-listen", "http-listen",
        "http-threads", "http-max-body-bytes", "served-model-name"},
       {},
       ParseListenFlags},
      {{"max-threads", "max-streams", "max-tenant-streams", "max-connections",
        "max-streams-per-connection", "stream-idle-ms", "grpc-memory-bytes",
        "max-concurrent-requests"},
       {},
       ParseServerLimitFlags},
      {{"hbm-policy", "dram-policy", "flash-policy", "rocks-policy", "hbm-admission",
        "dram-admission", "flash-admission", "rocks-admission", "hbm-price", "dram-price",
        "flash-price", "rocks-price", "remat-flops", "gpu-price", "fetch-budget-ms", "default-idle",
        "sweep-interval-ms"},
       {},
       ParsePlacementFlags},
      {{"cluster-redis", "cluster-bytes", "cluster-prefix", "cluster-value-bytes",
        "cluster-timeout-ms", "cluster-policy", "cluster-admission", "cluster-price",
        "cache-secret", "peers", "advertise", "peer-timeout-ms"},
       {},
       ParseClusterFlags},
  };
  return groups;
}

}  // namespace

Result<DaemonOptions> ParseDaemonFlags(int argc, char** argv, bool* help) {
  KVTIER_ASSIGN_OR_RETURN(const std::vector<std::string> args, ArgsWithConfigFirst(argc, argv));
  FlagSet flags;
  for (const FlagGroup& group : FlagGroups()) {
    for (const char* f : group.values) flags.Value(f);
    for (const char* f : group.bools) flags.Bool(f);
  }
  flags.Bool("help");
  KVTIER_RETURN_IF_ERROR(flags.Parse(args));
  if (!flags.positional().empty()) {
    return Status::InvalidArgument("unexpected argument '" + flags.positional()[0] + "'");
  }
  *help = flags.Has("help");
  DaemonOptions o;
  for (const FlagGroup& group : FlagGroups()) KVTIER_RETURN_IF_ERROR(group.parse(flags, &o));
  KVTIER_RETURN_IF_ERROR(o.default_namespace.Validate());
  return o;
}

}  // namespace kvtier
