#include "server/daemon.h"

#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/resource_quota.h>
#include <grpcpp/server_posix.h>
#include <sys/file.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cache/eviction_policy.h"
#include "common/log.h"
#include "kernels/device.h"
#include "tiers/dram/dram_tier.h"
#include "tiers/flash/flash_tier.h"
#include "tiers/hbm/hbm_tier.h"
#include "tiers/rocks/rocks_tier.h"
#include "server/admin_service.h"
#include "server/billing_service.h"
#include "server/block_store_service.h"
#include "server/context_cache_service.h"
#include "common/flags.h"
#include "server/malformed_requests.h"
#include "server/metrics.h"

namespace kvtier {

BlockStoreLimits BlockStoreLimitsOf(const DaemonOptions& o) {
  BlockStoreLimits l;
  l.max_block_bytes = o.max_block_bytes;
  l.max_tokens = o.max_lookup_tokens;
  l.max_keys = o.max_lookup_keys;
  l.max_inflight_payload_bytes = o.max_inflight_payload_bytes;
  l.max_tenant_payload_bytes =
      o.max_tenant_payload_bytes != 0
          ? o.max_tenant_payload_bytes
          : std::max(o.max_block_bytes, o.max_inflight_payload_bytes / 4);  // a quarter each
  l.default_ttl_s = o.default_ttl_s;
  return l;
}

struct Daemon::Services {
  Services(CacheManager& cache, Engine* engine, const Tokenizer* tokenizer, Ledger& ledger,
           const PriceTable& prices, const DaemonOptions& o, const Authenticator& auth)
      : block_store(cache, o.default_namespace, BlockStoreLimitsOf(o), SystemClock(), gate, auth),
        admin(cache, engine, o.default_namespace, SystemClock(), gate),
        billing(ledger, SystemClock(), gate) {
    if (engine != nullptr) {
      GenerateLimits limits;
      limits.min_cacheable_tokens = static_cast<size_t>(o.min_cacheable_tokens);
      context_cache = std::make_unique<ContextCacheService>(*engine, tokenizer, &ledger, &prices,
                                                            SystemClock(), limits, gate);
    }
  }
  CallGate gate;  // declared first: the services hold it
  BlockStoreService block_store;
  AdminService admin;
  BillingService billing;
  std::unique_ptr<ContextCacheService> context_cache;  // null without an engine
};

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
  --model PATH            model to serve: a llama2.c checkpoint (.bin, its tokenizer
                          beside it) or a directory with config.json + *.safetensors
                          (default: a small random-weight model, created once under
                          DIR/models/PRESET)
  --model-preset NAME     shape of that created model: tiny, tiny-8k, small, bench50m, base, 1b
                          (default tiny)
  --kv-bytes SIZE         engine KV page memory (default 256M)
  --max-batch N           sequences the engine runs at once (default 64)
  --token-budget N        tokens the engine computes per step (default 512)
  --engine-threads N      forward-pass threads (default: one per core)
  --device NAME           where the engine runs: cpu, cuda or auto (default auto: cuda
                          when a GPU is present, else cpu)
  --gpu-weights DTYPE     engine weights on the GPU: f32 (default, precise) or bf16
  --no-engine             serve the cache only, no model
  --hbm-policy NAME
  --dram-policy NAME      eviction policy of a tier: lru, fifo, lfu, arc, s3fifo, sieve,
  --flash-policy NAME       gdsf or ttl-cost (default ttl-cost for every tier)
  --rocks-policy NAME
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
  --api-keys FILE         per-tenant API keys, one "KEY TENANT [admin] [group=NAME]" per
                          line (tenants of one group share cached blocks); every call then
                          needs one (metadata x-api-key); default: open
  --config FILE           settings from a JSON object of flag names to values, e.g.
                          {"dram-bytes": "4G", "api-keys": "/etc/kvtier/keys",
                          "no-flash": true}; flags given on the command line win
  --max-threads N         gRPC server threads (default 256)
  --max-streams N         Put/Get/Generate streams open at once (default 192; the other
                          threads serve unary calls)
  --max-tenant-streams N  streams one tenant may hold open (default 128)
  --stream-idle-ms N      a stream waiting on its client longer is cancelled (default 30000)
  --max-connections N     open client connections at most (default 4096; capped below
                          the descriptor limit, which kvtierd raises to its hard limit)
  --max-streams-per-connection N  concurrent calls on one connection (default 128)
  --grpc-memory-bytes SIZE  memory gRPC may use for its buffers (default 512M)
  --tls-cert FILE         serve gRPC over TLS with this PEM certificate chain...
  --tls-key FILE          ...and its PEM private key
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

}  // namespace

Result<DaemonOptions> ParseDaemonFlags(int argc, char** argv, bool* help) {
  // A config file's settings come first; flags on the command line override.
  std::vector<std::string> args;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    std::string path;
    if (a == "--config" && i + 1 < argc) {
      path = argv[++i];
    } else if (a.rfind("--config=", 0) == 0) {
      path = a.substr(9);
    } else {
      continue;
    }
    Result<std::vector<std::string>> from_file = ConfigFileArgs(path);
    if (!from_file.ok()) return from_file.status();
    args.insert(args.end(), from_file->begin(), from_file->end());
  }
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--config" && i + 1 < argc) {
      ++i;
      continue;
    }
    if (a.rfind("--config=", 0) == 0) continue;
    args.push_back(a);
  }
  FlagSet flags;
  for (const char* f : {"listen",
                        "data-dir",
                        "dram-bytes",
                        "rocks-bytes",
                        "block-tokens",
                        "model-id",
                        "kv-dtype",
                        "default-ttl",
                        "max-block-bytes",
                        "max-payload-bytes",
                        "max-tenant-payload-bytes",
                        "flash-path",
                        "flash-bytes",
                        "flash-region-bytes",
                        "flash-write-budget",
                        "model",
                        "model-preset",
                        "kv-bytes",
                        "max-batch",
                        "token-budget",
                        "engine-threads",
                        "device",
                        "gpu-weights",
                        "dram-policy",
                        "hbm-policy",
                        "hbm-price",
                        "hbm-bytes",
                        "flash-policy",
                        "rocks-policy",
                        "dram-price",
                        "flash-price",
                        "rocks-price",
                        "remat-flops",
                        "gpu-price",
                        "fetch-budget-ms",
                        "default-idle",
                        "sweep-interval-ms",
                        "min-cacheable-tokens",
                        "price-input",
                        "price-output",
                        "price-storage",
                        "metrics-listen",
                        "api-keys",
                        "tls-cert",
                        "tls-key",
                        "max-threads",
                        "max-streams",
                        "max-tenant-streams",
                        "stream-idle-ms",
                        "max-connections",
                        "max-streams-per-connection",
                        "grpc-memory-bytes"}) {
    flags.Value(f);
  }
  flags.Bool("lock-memory");
  flags.Bool("no-rocks-wal");
  flags.Bool("no-flash");
  flags.Bool("no-engine");
  flags.Bool("help");
  KVTIER_RETURN_IF_ERROR(flags.Parse(args));
  if (!flags.positional().empty()) {
    return Status::InvalidArgument("unexpected argument '" + flags.positional()[0] + "'");
  }
  *help = flags.Has("help");
  DaemonOptions o;
  o.listen = flags.Get("listen", o.listen);
  o.data_dir = flags.Get("data-dir", o.data_dir);
  o.lock_memory = flags.Has("lock-memory");
  o.rocks_wal = !flags.Has("no-rocks-wal");
  if (flags.Has("rocks-bytes")) {
    Result<uint64_t> v = ParseBytes(flags.Get("rocks-bytes"));
    if (!v.ok() || *v == 0) return Status::InvalidArgument("--rocks-bytes needs a positive size");
    o.rocks_bytes = *v;
  }
  o.flash = !flags.Has("no-flash");
  o.flash_path = flags.Get("flash-path", o.flash_path);
  for (auto [flag, field] : {std::pair{"flash-bytes", &o.flash_bytes},
                             std::pair{"flash-region-bytes", &o.flash_region_bytes}}) {
    if (!flags.Has(flag)) continue;
    Result<uint64_t> v = ParseBytes(flags.Get(flag));
    if (!v.ok() || *v == 0)
      return Status::InvalidArgument(std::string("--") + flag + " needs a positive size");
    *field = *v;
  }
  if (flags.Has("flash-write-budget")) {
    Result<uint64_t> v = ParseBytes(flags.Get("flash-write-budget"));
    if (!v.ok()) return Status::InvalidArgument("--flash-write-budget needs a size per second");
    o.flash_write_budget_bytes_per_s = static_cast<double>(*v);
  }
  if (flags.Has("hbm-bytes")) {
    Result<uint64_t> v = ParseBytes(flags.Get("hbm-bytes"));
    if (!v.ok() || *v > (uint64_t{1} << 40)) {
      return Status::InvalidArgument("--hbm-bytes needs a size up to 1T");
    }
    o.hbm_bytes = static_cast<int64_t>(*v);
  }
  if (flags.Has("dram-bytes")) {
    Result<uint64_t> v = ParseBytes(flags.Get("dram-bytes"));
    if (!v.ok()) return Status::InvalidArgument("--dram-bytes: " + v.status().message());
    o.dram_bytes = *v;
  }
  if (flags.Has("max-block-bytes")) {
    Result<uint64_t> v = ParseBytes(flags.Get("max-block-bytes"));
    if (!v.ok() || *v == 0)
      return Status::InvalidArgument("--max-block-bytes needs a positive size");
    o.max_block_bytes = *v;
  }
  if (flags.Has("max-payload-bytes")) {
    Result<uint64_t> v = ParseBytes(flags.Get("max-payload-bytes"));
    if (!v.ok() || *v == 0)
      return Status::InvalidArgument("--max-payload-bytes needs a positive size");
    o.max_inflight_payload_bytes = *v;
  }
  if (flags.Has("max-tenant-payload-bytes")) {
    Result<uint64_t> v = ParseBytes(flags.Get("max-tenant-payload-bytes"));
    if (!v.ok() || *v == 0)
      return Status::InvalidArgument("--max-tenant-payload-bytes needs a positive size");
    o.max_tenant_payload_bytes = *v;
  }
  if (flags.Has("block-tokens")) {
    Result<int64_t> v = ParseInt(flags.Get("block-tokens"));
    if (!v.ok() || !ValidBlockTokens(*v)) {
      return Status::InvalidArgument("--block-tokens must be a power of two in [16, 1024]");
    }
    o.default_namespace.block_tokens = static_cast<int>(*v);
  }
  if (flags.Has("default-ttl")) {
    Result<int64_t> v = ParseInt(flags.Get("default-ttl"));
    if (!v.ok() || *v > UINT32_MAX) {
      return Status::InvalidArgument("--default-ttl needs seconds, at most " +
                                     std::to_string(UINT32_MAX));
    }
    o.default_ttl_s = *v;
  }
  o.default_namespace.model_id = flags.Get("model-id", o.default_namespace.model_id);
  if (flags.Has("kv-dtype")) {
    std::optional<DType> d = ParseDType(flags.Get("kv-dtype"));
    if (!d) return Status::InvalidArgument("--kv-dtype must be f32, f16 or bf16");
    o.default_namespace.kv_dtype = *d;
  }
  o.engine = !flags.Has("no-engine");
  o.model_path = flags.Get("model", o.model_path);
  o.default_model_preset = flags.Get("model-preset", o.default_model_preset);
  if (!ModelPreset(o.default_model_preset).ok()) {
    return Status::InvalidArgument("--model-preset: unknown preset '" + o.default_model_preset +
                                   "'");
  }
  if (flags.Has("kv-bytes")) {
    Result<uint64_t> v = ParseBytes(flags.Get("kv-bytes"));
    if (!v.ok() || *v == 0 || *v > (uint64_t{1} << 40)) {
      return Status::InvalidArgument("--kv-bytes needs a positive size");
    }
    o.engine_kv_bytes = static_cast<int64_t>(*v);
  }
  for (auto [flag, field] : {std::pair{"price-input", &o.price.input_usd_per_mtok},
                             std::pair{"price-output", &o.price.output_usd_per_mtok},
                             std::pair{"price-storage", &o.price.storage_usd_per_mtok_hour}}) {
    if (!flags.Has(flag)) continue;
    Result<double> v = ParseNonNegative(flags.Get(flag));
    if (!v.ok()) return Status::InvalidArgument(std::string("--") + flag + " needs a price >= 0");
    *field = *v;
  }
  o.api_keys_file = flags.Get("api-keys", o.api_keys_file);
  o.tls_cert_file = flags.Get("tls-cert", o.tls_cert_file);
  o.tls_key_file = flags.Get("tls-key", o.tls_key_file);
  if (o.tls_cert_file.empty() != o.tls_key_file.empty()) {
    return Status::InvalidArgument("--tls-cert and --tls-key go together");
  }
  if (flags.Has("metrics-listen")) {
    o.metrics_listen = flags.Get("metrics-listen");
    o.metrics_listen_required = !o.metrics_listen.empty();
  }
  if (flags.Has("min-cacheable-tokens")) {
    Result<int64_t> v = ParseInt(flags.Get("min-cacheable-tokens"));
    if (!v.ok() || *v < 1 || *v > (1 << 20)) {
      return Status::InvalidArgument("--min-cacheable-tokens needs an integer in [1, 1048576]");
    }
    o.min_cacheable_tokens = *v;
  }
  o.engine_device = flags.Get("device", o.engine_device);
  if (o.engine_device != "cpu" && o.engine_device != "cuda" && o.engine_device != "auto") {
    return Status::InvalidArgument("--device must be cpu, cuda or auto");
  }
  if (flags.Has("gpu-weights")) {
    const std::string w = flags.Get("gpu-weights");
    if (w != "f32" && w != "bf16")
      return Status::InvalidArgument("--gpu-weights must be f32 or bf16");
    o.engine_gpu_bf16 = w == "bf16";
  }
  for (auto [flag, field, lo, hi] :
       {std::tuple{"max-batch", &o.engine_max_batch, 1, 4096},
        std::tuple{"token-budget", &o.engine_token_budget, 1, 1 << 20},
        std::tuple{"engine-threads", &o.engine_threads, 0, 1024},
        std::tuple{"max-threads", &o.max_threads, 4, 65536},
        std::tuple{"max-streams", &o.max_streams, 1, 65536},
        std::tuple{"max-tenant-streams", &o.max_tenant_streams, 1, 65536},
        std::tuple{"max-connections", &o.max_connections, 1, 1 << 20},
        std::tuple{"max-streams-per-connection", &o.max_streams_per_connection, 1, 65536}}) {
    if (!flags.Has(flag)) continue;
    Result<int64_t> v = ParseInt(flags.Get(flag));
    if (!v.ok() || *v < lo || *v > hi) {
      return Status::InvalidArgument(std::string("--") + flag + " needs an integer in [" +
                                     std::to_string(lo) + ", " + std::to_string(hi) + "]");
    }
    *field = static_cast<int>(*v);
  }
  if (!flags.Has("max-streams") && flags.Has("max-threads")) {
    o.max_streams = std::max(1, o.max_threads * 3 / 4);
  }
  if (!flags.Has("max-tenant-streams")) {
    o.max_tenant_streams = std::max(1, std::min(o.max_tenant_streams, o.max_streams * 2 / 3));
  }
  if (o.max_streams >= o.max_threads) {
    return Status::InvalidArgument("--max-streams must be below --max-threads (" +
                                   std::to_string(o.max_threads) +
                                   "): unary calls and Health need threads too");
  }
  if (o.max_tenant_streams > o.max_streams) {
    return Status::InvalidArgument("--max-tenant-streams must be at most --max-streams");
  }
  if (flags.Has("stream-idle-ms")) {
    Result<int64_t> v = ParseInt(flags.Get("stream-idle-ms"));
    if (!v.ok() || *v < 10 || *v > 24 * 3600 * 1000) {
      return Status::InvalidArgument("--stream-idle-ms needs milliseconds in [10, 86400000]");
    }
    o.stream_idle_ms = *v;
  }
  if (flags.Has("grpc-memory-bytes")) {
    Result<uint64_t> v = ParseBytes(flags.Get("grpc-memory-bytes"));
    if (!v.ok() || *v < (16u << 20)) {
      return Status::InvalidArgument("--grpc-memory-bytes needs a size of at least 16M");
    }
    o.grpc_memory_bytes = *v;
  }
  for (auto [flag, field] :
       {std::pair{"hbm-policy", &o.hbm_policy}, std::pair{"dram-policy", &o.dram_policy},
        std::pair{"flash-policy", &o.flash_policy}, std::pair{"rocks-policy", &o.rocks_policy}}) {
    *field = flags.Get(flag, *field);
    if (NewEvictionPolicy(*field) == nullptr) {
      std::string names;
      for (const std::string& n : EvictionPolicyNames()) names += " " + n;
      return Status::InvalidArgument(std::string("--") + flag + ": unknown policy '" + *field +
                                     "' (policies:" + names + ")");
    }
  }
  double gpu_usd_per_hour = o.placement.remat.cost_per_s * 3600;
  double fetch_budget_ms = o.placement.fetch_budget_s * 1000;
  for (auto [flag, field, positive] :
       {std::tuple{"hbm-price", &o.hbm_usd_per_gib_month, false},
        std::tuple{"dram-price", &o.dram_usd_per_gib_month, false},
        std::tuple{"flash-price", &o.flash_usd_per_gib_month, false},
        std::tuple{"rocks-price", &o.rocks_usd_per_gib_month, false},
        std::tuple{"remat-flops", &o.placement.remat.flops_per_s, true},
        std::tuple{"gpu-price", &gpu_usd_per_hour, false},
        std::tuple{"fetch-budget-ms", &fetch_budget_ms, true},
        std::tuple{"default-idle", &o.placement.default_idle_s, true}}) {
    if (!flags.Has(flag)) continue;
    Result<double> v = ParseNonNegative(flags.Get(flag));
    if (!v.ok() || (positive && *v == 0)) {
      return Status::InvalidArgument(std::string("--") + flag + " needs a " +
                                     (positive ? "positive" : "non-negative") + " number");
    }
    *field = *v;
  }
  o.placement.remat.cost_per_s = gpu_usd_per_hour / 3600;
  o.placement.fetch_budget_s = fetch_budget_ms / 1000;
  if (flags.Has("sweep-interval-ms")) {
    Result<int64_t> v = ParseInt(flags.Get("sweep-interval-ms"));
    if (!v.ok() || *v == 0 || *v > 3'600'000) {
      return Status::InvalidArgument("--sweep-interval-ms needs an integer in [1, 3600000]");
    }
    o.sweep_interval_ms = *v;
  }
  KVTIER_RETURN_IF_ERROR(o.default_namespace.Validate());
  return o;
}

namespace {

uint64_t FreeDiskBytes(const std::string& dir) {
  struct statvfs fs {};
  return statvfs(dir.c_str(), &fs) == 0 ? uint64_t{fs.f_bavail} * fs.f_frsize : 0;
}

// The flash tier of the default stack. Blocks too large for a region's
// quarter skip flash and go to RocksDB.
Result<std::unique_ptr<Tier>> OpenDefaultFlashTier(const DaemonOptions& options) {
  FlashTierOptions flash;
  flash.path = options.flash_path.empty() ? options.data_dir + "/flash.log" : options.flash_path;
  flash.region_bytes = options.flash_region_bytes;
  flash.max_block_bytes = std::min(options.max_block_bytes, options.flash_region_bytes / 4);
  flash.staging_bytes = std::max<uint64_t>(32ull << 20, 2 * (flash.max_block_bytes + 4096));
  flash.staging_bytes = (flash.staging_bytes + 4095) / 4096 * 4096;
  flash.write_budget_bytes_per_s = options.flash_write_budget_bytes_per_s;
  std::error_code ec;
  const bool exists = std::filesystem::exists(flash.path, ec);
  uint64_t capacity = options.flash_bytes;
  if (capacity == 0 && !exists) {
    capacity = std::min<uint64_t>(16ull << 30, FreeDiskBytes(options.data_dir) / 4);
  }
  if (capacity > 0) {
    // A log sized for this capacity: 1/8 slack plus two regions to compact
    // into. An existing log is grown or cut to it (blocks in cut regions are
    // lost, as a cache may lose them).
    const uint64_t region = flash.region_bytes;
    capacity = std::max(capacity, region);
    flash.capacity_bytes = capacity;
    flash.device_bytes = (capacity + capacity / 8 + region - 1) / region * region + 2 * region;
  }
  return OpenFlashTier(flash);
}

// The model to serve: the one named, or the default random-weight model,
// written under DATA_DIR/models the first time (so kvtierd always starts).
Result<std::string> ModelPathFor(const DaemonOptions& options) {
  if (!options.model_path.empty()) return options.model_path;
  const std::string dir = options.data_dir + "/models/" + options.default_model_preset;
  std::error_code ec;
  if (std::filesystem::exists(dir + "/config.json", ec)) return dir;
  Result<ModelConfig> config = ModelPreset(options.default_model_preset);
  if (!config.ok()) return config.status();
  Result<std::unique_ptr<ModelWeights>> w = RandomModel(*config, /*seed=*/1);
  if (!w.ok()) return w.status();
  std::filesystem::create_directories(dir, ec);
  if (ec) return Status::IOError("cannot create " + dir + ": " + ec.message());
  KVTIER_RETURN_IF_ERROR(
      WriteSyntheticLlama2cTokenizer(dir + "/tokenizer.bin", config->vocab_size));
  // config.json last: its presence marks a complete model.
  KVTIER_RETURN_IF_ERROR(WriteSafetensorsModel(**w, dir, WeightDType::kFloat32));
  LogInfo("kvtierd_model_created",
          LogFields().Add("dir", dir).Add("preset", options.default_model_preset));
  return dir;
}

}  // namespace

Daemon::Daemon(const DaemonOptions& options) : options_(options) {}

Daemon::~Daemon() {
  Shutdown();
  if (lock_fd_ >= 0) close(lock_fd_);
}

Result<std::unique_ptr<Daemon>> Daemon::Open(const DaemonOptions& options) {
  std::unique_ptr<Daemon> d(new Daemon(options));
  std::error_code ec;
  std::filesystem::create_directories(options.data_dir, ec);
  if (ec) {
    return Status::IOError("cannot create data directory " + options.data_dir + ": " +
                           ec.message());
  }
  // One daemon per data directory: a second one would corrupt the tiers.
  const std::string lock_path = options.data_dir + "/kvtierd.lock";
  d->lock_fd_ = open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (d->lock_fd_ < 0) {
    return Status::IOError("cannot open " + lock_path + ": " + std::strerror(errno));
  }
  if (flock(d->lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    return Status::Unavailable("another kvtierd is using data directory " + options.data_dir);
  }

  DramTierOptions dram;
  dram.capacity_bytes = options.dram_bytes;
  dram.lock_memory = options.lock_memory;
  dram.max_block_bytes = options.max_block_bytes;
  Result<std::unique_ptr<Tier>> dram_tier = OpenDramTier(dram);
  if (!dram_tier.ok()) return dram_tier.status();

  // Top to bottom; the cost model places each block (DESIGN §4).
  std::vector<TierSlot> tiers;
  std::vector<std::string> policies;
  auto add_tier = [&](std::unique_ptr<Tier> tier, const std::string& policy, double price) {
    const TierInfo info = tier->Info();
    PolicyOptions po;
    po.capacity_bytes = info.capacity_bytes;
    const double cost = CostPerSecond(static_cast<double>(info.capacity_bytes), price);
    tiers.push_back(TierSlot{std::move(tier), NewEvictionPolicy(policy, po), cost});
    policies.push_back(policy);
  };
  const int64_t hbm_bytes =
      options.hbm_bytes >= 0 ? options.hbm_bytes : (DeviceAvailable() ? int64_t{1} << 30 : 0);
  if (hbm_bytes > 0) {
    HbmTierOptions hbm;
    hbm.capacity_bytes = static_cast<uint64_t>(hbm_bytes);
    hbm.max_block_bytes = options.max_block_bytes;
    Result<std::unique_ptr<Tier>> hbm_tier = OpenHbmTier(hbm);
    if (!hbm_tier.ok()) return hbm_tier.status();
    add_tier(std::move(*hbm_tier), options.hbm_policy, options.hbm_usd_per_gib_month);
  }
  add_tier(std::move(*dram_tier), options.dram_policy, options.dram_usd_per_gib_month);
  if (options.flash) {
    Result<std::unique_ptr<Tier>> flash = OpenDefaultFlashTier(options);
    if (!flash.ok()) return flash.status();
    add_tier(std::move(*flash), options.flash_policy, options.flash_usd_per_gib_month);
  }

  RocksTierOptions rocks;
  rocks.path = options.data_dir + "/rocks";
  rocks.capacity_bytes = options.rocks_bytes;
  if (rocks.capacity_bytes == 0) {
    // Half of what the tier could use: the free space plus what it already
    // holds (else each restart of a full tier would halve its capacity).
    uint64_t free_bytes = FreeDiskBytes(options.data_dir);
    std::error_code walk_error;  // no exceptions: an unreadable file just counts as 0
    for (std::filesystem::recursive_directory_iterator it(rocks.path, walk_error), end;
         !walk_error && it != end; it.increment(walk_error)) {
      if (it->is_regular_file(walk_error)) free_bytes += it->file_size(walk_error);
    }
    rocks.capacity_bytes = std::max<uint64_t>(std::min<uint64_t>(64ull << 30, free_bytes / 2),
                                              options.max_block_bytes);
  }
  rocks.max_block_bytes = options.max_block_bytes;
  rocks.use_wal = options.rocks_wal;
  Result<std::unique_ptr<Tier>> rocks_tier = OpenRocksTier(rocks);
  if (!rocks_tier.ok()) return rocks_tier.status();
  d->rocks_tier_ = rocks_tier->get();  // owned by the cache from here on
  add_tier(std::move(*rocks_tier), options.rocks_policy, options.rocks_usd_per_gib_month);
  CacheManagerOptions co;
  co.placement = options.placement;
  co.sweep_interval_ms = options.sweep_interval_ms;
  Result<std::unique_ptr<CacheManager>> cache = CacheManager::Open(std::move(tiers), co);
  if (!cache.ok()) return cache.status();
  d->cache_ = std::move(*cache);

  if (options.engine) {
    Result<std::string> model_path = ModelPathFor(options);
    if (!model_path.ok()) return model_path.status();
    Result<std::unique_ptr<ModelWeights>> weights = LoadModel(*model_path);
    if (!weights.ok()) {
      return Status(weights.status().code(),
                    "model " + *model_path + ": " + weights.status().message());
    }
    d->weights_ = std::move(*weights);
    Result<std::unique_ptr<Tokenizer>> tok =
        LoadTokenizerFor(*model_path, d->weights_->config.vocab_size);
    if (tok.ok()) {
      d->tokenizer_ = std::move(*tok);
    } else if (tok.status().code() != StatusCode::kNotFound) {
      return tok.status();
    } else {
      LogWarn("kvtierd_no_tokenizer", LogFields().Add("model", *model_path));
    }
    EngineOptions eo;
    eo.block_tokens = options.default_namespace.block_tokens;
    eo.kv_bytes = options.engine_kv_bytes;
    eo.max_batch_seqs = options.engine_max_batch;
    eo.token_budget = options.engine_token_budget;
    eo.threads = options.engine_threads;
    eo.device = options.engine_device;
    eo.gpu_bf16_weights = options.engine_gpu_bf16;
    Result<std::unique_ptr<Engine>> engine = Engine::Open(d->weights_.get(), d->cache_.get(), eo);
    if (!engine.ok()) return engine.status();
    d->engine_ = std::move(*engine);
    LogInfo("kvtierd_engine", LogFields()
                                  .Add("device", std::string(d->engine_->device()))
                                  .Add("gpu", DeviceDescription()));
    d->engine_->StartLoop();
  }
  // The usage ledger: its own RocksDB under the data directory, every record
  // fsync'd before the request it bills is answered.
  LedgerOptions lo;
  lo.path = options.data_dir + "/ledger";
  Result<std::unique_ptr<Ledger>> ledger = Ledger::Open(lo);
  if (!ledger.ok()) return ledger.status();
  d->ledger_ = std::move(*ledger);
  if (d->engine_) {
    const Namespace ns = d->engine_->CacheNamespace("");
    KVTIER_RETURN_IF_ERROR(d->prices_.Set(ns.model_id + "@" + ns.model_revision, options.price));
  }
  // The secret behind every tenant's cache salt and key scope (DESIGN §2).
  Result<CacheSecret> secret = CacheSecret::LoadOrCreate(options.data_dir);
  if (!secret.ok()) return secret.status();
  if (!options.api_keys_file.empty()) {
    Result<Authenticator> auth = Authenticator::FromFile(options.api_keys_file, *secret);
    if (!auth.ok()) return auth.status();
    d->auth_ = std::make_unique<Authenticator>(std::move(*auth));
    LogInfo("kvtierd_api_keys", LogFields().Add("keys", d->auth_->keys()));
  } else {
    d->auth_ = std::make_unique<Authenticator>(*secret);
  }
  d->services_ = std::make_unique<Services>(*d->cache_, d->engine_.get(), d->tokenizer_.get(),
                                            *d->ledger_, d->prices_, options, *d->auth_);
  d->services_->admin.set_authenticator(d->auth_.get());
  d->services_->billing.set_authenticator(d->auth_.get());
  if (d->services_->context_cache) {
    d->services_->context_cache->set_authenticator(d->auth_.get());
    // Named caches: durable (fsync'd) in their own RocksDB, so they survive
    // a crash of kvtierd; their KV is recomputed when it has been lost.
    NamedCacheOptions no;
    no.path = options.data_dir + "/named_caches";
    Result<std::unique_ptr<NamedCacheRegistry>> named = NamedCacheRegistry::Open(no);
    if (!named.ok()) return named.status();
    d->named_caches_ = std::move(*named);
    d->services_->context_cache->set_named_caches(d->named_caches_.get());
  }
  d->services_->admin.set_tier_policies(std::move(policies));
  return d;
}

Status Daemon::Start() {
  StreamLimits streams;
  streams.max_streams = options_.max_streams;
  streams.max_tenant_streams = options_.max_tenant_streams;
  streams.idle_ms = options_.stream_idle_ms;
  KVTIER_RETURN_IF_ERROR(services_->gate.streams().Configure(streams));

  grpc::ServerBuilder builder;
  // Never share the port with another process (gRPC turns SO_REUSEPORT on
  // by default): a second daemon on a taken port must fail, not split it.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, options_.max_streams_per_connection);
  // One streamed chunk (at most 4 MiB) plus its envelope.
  builder.SetMaxReceiveMessageSize((4 << 20) + (64 << 10));
  builder.SetMaxSendMessageSize((4 << 20) + (64 << 10));
  grpc::ResourceQuota quota("kvtierd");
  quota.SetMaxThreads(options_.max_threads);
  quota.Resize(options_.grpc_memory_bytes);
  builder.SetResourceQuota(quota);
  builder.experimental().SetInterceptorCreators(MalformedRequestInterceptors());
  builder.RegisterService(&services_->block_store);
  builder.RegisterService(&services_->admin);
  builder.RegisterService(&services_->billing);
  if (services_->context_cache) builder.RegisterService(services_->context_cache.get());

  // Descriptors: as many as the hard limit allows, and connections capped
  // below them so files, databases and pipes always find one.
  const uint64_t nofile = RaiseDescriptorLimit();
  const size_t max_connections =
      ConnectionListener::CapUnderLimit(static_cast<size_t>(options_.max_connections), nofile);
  int port = 0;
  if (options_.tls_cert_file.empty()) {
    // Plaintext: kvtierd accepts connections itself (server/connection_listener.h).
    ListenerOptions lo;
    lo.address = options_.listen;
    lo.max_connections = max_connections;
    Result<std::unique_ptr<ConnectionListener>> l = ConnectionListener::Bind(lo);
    if (!l.ok()) return l.status();
    listener_ = std::move(*l);
    port = listener_->port();
    server_ = builder.BuildAndStart();
    if (!server_) return Status::Unavailable("cannot start the gRPC server");
    grpc::Server* server = server_.get();
    listener_->Start([server](int fd) { grpc::AddInsecureChannelFromFd(server, fd); });
  } else {
    auto read = [](const std::string& path) -> Result<std::string> {
      std::ifstream in(path);
      if (!in) return Status::NotFound("cannot read " + path);
      std::stringstream text;
      text << in.rdbuf();
      return text.str();
    };
    Result<std::string> cert = read(options_.tls_cert_file), key = read(options_.tls_key_file);
    if (!cert.ok()) return cert.status();
    if (!key.ok()) return key.status();
    grpc::SslServerCredentialsOptions tls;
    tls.pem_key_cert_pairs.push_back({*key, *cert});
    builder.AddListeningPort(options_.listen, grpc::SslServerCredentials(tls), &port);
    server_ = builder.BuildAndStart();
    if (!server_ || port == 0) {
      server_.reset();
      return Status::Unavailable("cannot listen on " + options_.listen +
                                 " (address in use or not valid, or the TLS certificate "
                                 "and key are not a valid PEM pair)");
    }
  }
  bound_address_ =
      options_.listen.substr(0, options_.listen.rfind(':')) + ":" + std::to_string(port);
  LogInfo("kvtierd_limits", LogFields()
                                .Add("descriptors", nofile)
                                .Add("max_connections", max_connections)
                                .Add("max_threads", options_.max_threads)
                                .Add("max_streams", options_.max_streams)
                                .Add("max_tenant_streams", options_.max_tenant_streams)
                                .Add("stream_idle_ms", options_.stream_idle_ms));
  if (!options_.metrics_listen.empty()) {
    MetricsHttpOptions mo;
    mo.listen = options_.metrics_listen;
    mo.render = [this] { return RenderMetrics(); };
    Result<std::unique_ptr<MetricsHttpServer>> m = MetricsHttpServer::Start(mo);
    if (m.ok()) {
      metrics_ = std::move(*m);
      LogInfo("kvtierd_metrics", LogFields().Add("listen", options_.metrics_listen));
    } else if (options_.metrics_listen_required) {
      server_->Shutdown();
      server_.reset();
      return m.status();
    } else {
      LogWarn("kvtierd_metrics_skipped", LogFields().Add("reason", m.status().message()));
    }
  }
  services_->admin.set_listen_address(
      bound_address_, metrics_
                          ? options_.metrics_listen.substr(0, options_.metrics_listen.rfind(':')) +
                                ":" + std::to_string(metrics_->bound_port())
                          : std::string());
  std::string tier_names;
  for (const TierInfo& t : cache_->Stats().tiers) {
    tier_names += (tier_names.empty() ? "" : ",") + t.name;
  }
  LogInfo("kvtierd_serving", LogFields()
                                 .Add("addr", bound_address_)
                                 .Add("data_dir", options_.data_dir)
                                 .Add("dram_bytes", options_.dram_bytes)
                                 .Add("tiers", tier_names)
                                 .Add("namespace", options_.default_namespace.ToString())
                                 .Add("model", engine_ ? engine_->CacheNamespace("").ToString()
                                                       : std::string("none")));
  return Status::Ok();
}

void Daemon::Wait() {
  if (server_) server_->Wait();
}

void Daemon::Shutdown() {
  if (!server_ || shut_down_.exchange(true)) return;
  if (listener_) listener_->Stop();  // no new connections from here on
  // Refuse new calls, let the running ones finish (up to the grace), then
  // close every channel at once: idle client channels do not hold us up.
  const int still_running =
      services_->gate.Drain(std::chrono::milliseconds(options_.shutdown_grace_ms));
  if (still_running > 0) {
    LogWarn("kvtierd_drain_timeout", LogFields().Add("calls_cancelled", still_running));
  }
  // The engine next: a Generate still waiting on it gets UNAVAILABLE, so the
  // server's handlers all return.
  if (engine_) engine_->Shutdown();
  server_->Shutdown(std::chrono::system_clock::now());
  if (metrics_) metrics_->Stop();
  // Every answered request's usage is already durable; this makes the rest so.
  if (ledger_) (void)ledger_->Flush();
}

std::string Daemon::RenderMetrics() const {
  MetricsText m;
  const CacheStats s = cache_->Stats();
  for (const TierInfo& t : s.tiers) {
    const MetricLabels tier = {{"tier", t.name}};
    m.Gauge("kvtier_tier_capacity_bytes", "Bytes a tier may hold.", t.capacity_bytes, tier);
    m.Gauge("kvtier_tier_used_bytes", "Payload bytes a tier holds.", t.used_bytes, tier);
    m.Gauge("kvtier_tier_blocks", "Blocks a tier holds.", t.blocks, tier);
    m.Counter("kvtier_tier_corruption_errors_total", "Reads that failed their checksum.",
              t.corruption_errors, tier);
    m.Counter("kvtier_tier_io_errors_total", "Device or file system errors.", t.io_errors, tier);
  }
  if (listener_) {
    const ListenerStats l = listener_->stats();
    m.Gauge("kvtier_connections_open", "Client connections open.", l.open);
    m.Counter("kvtier_connections_accepted_total", "Client connections accepted.", l.accepted);
    m.Counter("kvtier_connections_refused_total",
              "Connections closed at once: --max-connections were open.", l.refused_over_limit);
    m.Counter("kvtier_accept_descriptor_exhausted_total",
              "Accepts that failed for want of file descriptors.", l.descriptor_exhausted);
  }
  // The RocksDB stores: a full disk, other write failures, recoveries.
  auto store = [&m](const std::string& name, uint64_t no_space, uint64_t write_errors,
                    uint64_t recoveries) {
    const MetricLabels l = {{"store", name}};
    m.Counter("kvtier_store_no_space_errors_total",
              "Writes refused or failed because the disk is full.", no_space, l);
    m.Counter("kvtier_store_write_errors_total", "Writes failed for another reason.", write_errors,
              l);
    m.Counter("kvtier_store_recoveries_total", "Times writes resumed after the disk was full.",
              recoveries, l);
  };
  if (rocks_tier_ != nullptr) {
    if (Result<RocksTierStats> r = RocksTierStatsOf(*rocks_tier_); r.ok()) {
      store("rocks", r->no_space_errors, r->write_errors, r->recoveries);
      m.Gauge("kvtier_rocks_quarantined_stores",
              "1 when a corrupt cold tier was moved aside at start (see the log).",
              r->quarantined_stores);
    }
  }
  if (ledger_) {
    const RocksStoreStats l = ledger_->Stats();
    store("ledger", l.no_space_errors, l.write_errors, l.recoveries);
  }
  if (named_caches_) {
    const RocksStoreStats n = named_caches_->Stats();
    store("named_caches", n.no_space_errors, n.write_errors, n.recoveries);
  }
  const StreamStats st = services_->gate.streams().stats();
  m.Gauge("kvtier_streams_open", "Put, Get and Generate streams open.", st.open);
  m.Counter("kvtier_streams_refused_total",
            "Streams refused: --max-streams or --max-tenant-streams were open.", st.refused);
  m.Counter("kvtier_streams_idle_cancelled_total",
            "Streams cancelled after waiting on their client for --stream-idle-ms.",
            st.idle_cancelled);
  m.Gauge("kvtier_cache_indexed_blocks", "Blocks in the cache index.", s.indexed_blocks);
  m.Counter("kvtier_cache_lookups_total", "Prefix lookups.", s.lookups);
  m.Counter("kvtier_cache_lookup_blocks_total", "Blocks asked about by lookups.", s.lookup_blocks);
  m.Counter("kvtier_cache_lookup_hit_blocks_total", "Blocks found in a leading run.",
            s.lookup_hit_blocks);
  m.Counter("kvtier_cache_reads_total", "Block reads.", s.reads);
  m.Counter("kvtier_cache_read_misses_total", "Block reads that missed.", s.read_misses);
  m.Counter("kvtier_cache_insert_bytes_total", "Bytes inserted.", s.insert_bytes);
  for (auto [kind, value] :
       {std::pair{"placed", s.placed}, std::pair{"promoted", s.promotions},
        std::pair{"demoted", s.demotions}, std::pair{"dropped_for_remat", s.remat_drops},
        std::pair{"dropped", s.drops}, std::pair{"expired", s.expired}}) {
    m.Counter("kvtier_cache_decisions_total", "Placement decisions by kind (DESIGN 4).", value,
              {{"kind", kind}});
  }
  if (engine_) {
    const EngineStats e = engine_->Stats();
    m.Counter("kvtier_engine_requests_total", "Requests submitted to the engine.", e.requests);
    m.Counter("kvtier_engine_prefill_tokens_total", "Prompt tokens computed.", e.prefill_tokens);
    m.Counter("kvtier_engine_decode_tokens_total", "Tokens generated.", e.decode_tokens);
    m.Counter("kvtier_engine_cached_tokens_total", "Prompt tokens loaded from the cache.",
              e.cached_tokens);
    m.Counter("kvtier_engine_preemptions_total", "Sequences preempted.", e.preemptions);
    m.Gauge("kvtier_engine_running", "Sequences running.", e.running);
    m.Gauge("kvtier_engine_waiting", "Sequences waiting.", e.waiting);
  }
  if (services_ && services_->context_cache) services_->context_cache->AppendMetrics(&m);
  return m.Text();
}

}  // namespace kvtier
