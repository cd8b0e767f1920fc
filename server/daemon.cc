#include "server/daemon.h"

#include <fcntl.h>
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
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
#include <random>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "cache/eviction_policy.h"
#include "common/log.h"
#include "kernels/device.h"
#include "server/admin_service.h"
#include "server/billing_service.h"
#include "server/block_store_service.h"
#include "server/context_cache_service.h"
#include "server/grpc_request_metrics.h"
#include "server/malformed_requests.h"
#include "server/metrics.h"
#include "server/mrc_metrics.h"
#include "server/peer_service.h"
#include "server/peer_tier.h"
#include "server/stream_guard.h"
#include "tiers/cluster/redis_tier.h"
#include "tiers/dram/dram_tier.h"
#include "tiers/flash/flash_tier.h"
#include "tiers/hbm/hbm_tier.h"
#include "tiers/rocks/rocks_tier.h"

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

LeaseLimits LeaseLimitsOf(const DaemonOptions& o, const CacheManager& cache) {
  LeaseLimits l;
  l.max_lease_ms = o.max_lease_ms;
  l.max_leases_per_tenant = static_cast<size_t>(o.max_tenant_leases);
  l.max_blocks_per_tenant = static_cast<size_t>(o.max_tenant_leased_blocks);
  l.max_bytes_per_tenant = o.max_tenant_leased_bytes;
  if (l.max_bytes_per_tenant == 0) {
    // A quarter of this node's own tiers (not the shared cluster tier, not
    // the peers, whose "capacity" is a petabyte of nothing placed): no
    // tenant can pin them full.
    uint64_t capacity = 0;
    for (const TierInfo& t : cache.Stats().tiers) {
      if (!t.shared && t.accepts_placements) capacity += t.capacity_bytes;
    }
    l.max_bytes_per_tenant = capacity > 0 ? capacity / 4 : UINT64_MAX;
  }
  return l;
}

struct Daemon::Services {
  Services(CacheManager& cache, Engine* engine, const Tokenizer* tokenizer, Ledger& ledger,
           const PriceTable& prices, const DaemonOptions& o, const Authenticator& auth,
           const ShmRegistry* shm)
      : leases(LeaseLimitsOf(o, cache), SystemClock()),
        block_store(cache, o.default_namespace, BlockStoreLimitsOf(o), gate, auth, leases, shm),
        admin(cache, engine, o.default_namespace, SystemClock(), gate),
        billing(ledger, SystemClock(), gate) {
    if (engine != nullptr) {
      GenerateLimits limits;
      limits.min_cacheable_tokens = static_cast<size_t>(o.min_cacheable_tokens);
      limits.max_concurrent_requests = o.max_concurrent_requests;
      context_api = std::make_unique<ContextApi>(*engine, tokenizer, &ledger, &prices,
                                                 SystemClock(), limits, auth.secret());
      context_cache = std::make_unique<ContextCacheService>(*context_api, gate);
    }
  }
  CallGate gate;  // declared first: the services hold it
  LeaseTable leases;
  BlockStoreService block_store;
  AdminService admin;
  BillingService billing;
  // Null without an engine; every dialect serves the same ContextApi.
  std::unique_ptr<ContextApi> context_api;
  std::unique_ptr<ContextCacheService> context_cache;
  std::unique_ptr<PeerService> peer;  // with --peers
  GrpcRequestMetrics grpc_requests;
};

namespace {

uint64_t FreeDiskBytes(const std::string& dir) {
  struct statvfs fs {};
  return statvfs(dir.c_str(), &fs) == 0 ? uint64_t{fs.f_bavail} * fs.f_frsize : 0;
}

// The tiers top to bottom, each with its eviction policy and its cost rate;
// the cost model places each block among them (DESIGN §4).
struct TierStack {
  std::vector<TierSlot> slots;
  std::vector<std::string> policies;  // each tier's policy name, for Admin
  Tier* rocks = nullptr;              // the cold tier, owned by slots
  Tier* cluster = nullptr;            // the shared cluster tier, owned by slots; may be null
  Tier* peers = nullptr;              // the peer tier, owned by slots; may be null
  size_t peers_index = SIZE_MAX;

  // An admission filter's history is sized in blocks; blocks differ in size
  // by namespace, so a tier counts as holding blocks of this size (a
  // 16-token block of an 8B model in bf16 is 2 MiB, of the tiny models far
  // less: a larger history than needed only costs its memory, 4 bits a
  // counter).
  static constexpr uint64_t kAdmissionBlockBytes = 1 << 20;

  void Add(std::unique_ptr<Tier> tier, const std::string& policy, const std::string& admission,
           double usd_per_gib_month) {
    const TierInfo info = tier->Info();
    PolicyOptions po;
    po.capacity_bytes = info.capacity_bytes;
    AdmissionOptions ao;
    ao.capacity_blocks =
        std::clamp<uint64_t>(info.capacity_bytes / kAdmissionBlockBytes, 1024, uint64_t{1} << 24);
    // Clients choose their keys: a random seed keeps them from aiming many
    // keys at one counter.
    ao.seed = std::random_device{}() | (uint64_t{std::random_device{}()} << 32);
    const double cost = CostPerSecond(static_cast<double>(info.capacity_bytes), usd_per_gib_month);
    slots.push_back(TierSlot{std::move(tier), NewEvictionPolicy(policy, po), cost,
                             admission == "none" ? nullptr : NewAdmissionFilter(admission, ao)});
    policies.push_back(admission == "none" ? policy : policy + "+" + admission);
  }
};

Result<std::unique_ptr<Tier>> OpenDefaultDramTier(const DaemonOptions& options) {
  DramTierOptions dram;
  dram.capacity_bytes = options.dram_bytes;
  dram.lock_memory = options.lock_memory;
  dram.max_block_bytes = options.max_block_bytes;
  return OpenDramTier(dram);
}

// The HBM tier, or null when there is none: --hbm-bytes 0, or by default no
// GPU.
Result<std::unique_ptr<Tier>> OpenDefaultHbmTier(const DaemonOptions& options) {
  const int64_t hbm_bytes =
      options.hbm_bytes >= 0 ? options.hbm_bytes : (DeviceAvailable() ? int64_t{1} << 30 : 0);
  if (hbm_bytes <= 0) return std::unique_ptr<Tier>();
  HbmTierOptions hbm;
  hbm.capacity_bytes = static_cast<uint64_t>(hbm_bytes);
  hbm.max_block_bytes = options.max_block_bytes;
  return OpenHbmTier(hbm);
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

// The cold tier's capacity when --rocks-bytes is not given: half of what the
// tier could use, that is the free space plus what it already holds under
// `path` (else each restart of a full tier would halve its capacity); at most
// 64 GiB, at least one block.
uint64_t DefaultRocksCapacity(const DaemonOptions& options, const std::string& path) {
  uint64_t free_bytes = FreeDiskBytes(options.data_dir);
  std::error_code walk_error;  // no exceptions: an unreadable file just counts as 0
  for (std::filesystem::recursive_directory_iterator it(path, walk_error), end;
       !walk_error && it != end; it.increment(walk_error)) {
    if (it->is_regular_file(walk_error)) free_bytes += it->file_size(walk_error);
  }
  return std::max<uint64_t>(std::min<uint64_t>(64ull << 30, free_bytes / 2),
                            options.max_block_bytes);
}

Result<std::unique_ptr<Tier>> OpenDefaultRocksTier(const DaemonOptions& options) {
  RocksTierOptions rocks;
  rocks.path = options.data_dir + "/rocks";
  rocks.capacity_bytes =
      options.rocks_bytes != 0 ? options.rocks_bytes : DefaultRocksCapacity(options, rocks.path);
  rocks.max_block_bytes = options.max_block_bytes;
  rocks.use_wal = options.rocks_wal;
  return OpenRocksTier(rocks);
}

// HBM (when there is one), DRAM, flash (unless --no-flash), RocksDB, the
// other nodes (with --peers) and the shared cluster tier (with
// --cluster-redis).
Result<TierStack> OpenTierStack(const DaemonOptions& options, const CacheSecret& secret) {
  KVTIER_ASSIGN_OR_RETURN(std::unique_ptr<Tier> dram, OpenDefaultDramTier(options));
  KVTIER_ASSIGN_OR_RETURN(std::unique_ptr<Tier> hbm, OpenDefaultHbmTier(options));
  TierStack stack;
  if (hbm)
    stack.Add(std::move(hbm), options.hbm_policy, options.hbm_admission,
              options.hbm_usd_per_gib_month);
  stack.Add(std::move(dram), options.dram_policy, options.dram_admission,
            options.dram_usd_per_gib_month);
  if (options.flash) {
    KVTIER_ASSIGN_OR_RETURN(std::unique_ptr<Tier> flash, OpenDefaultFlashTier(options));
    stack.Add(std::move(flash), options.flash_policy, options.flash_admission,
              options.flash_usd_per_gib_month);
  }
  KVTIER_ASSIGN_OR_RETURN(std::unique_ptr<Tier> rocks, OpenDefaultRocksTier(options));
  stack.rocks = rocks.get();
  stack.Add(std::move(rocks), options.rocks_policy, options.rocks_admission,
            options.rocks_usd_per_gib_month);
  if (!options.peers.empty()) {
    PeerTierOptions p;
    p.self = options.advertise.empty() ? options.listen : options.advertise;
    p.peers = options.peers;
    p.token = secret.PeerToken();
    p.timeout_ms = options.peer_timeout_ms;
    p.max_block_bytes = options.max_block_bytes;
    KVTIER_ASSIGN_OR_RETURN(std::unique_ptr<Tier> peers, OpenPeerTier(p));
    stack.peers = peers.get();
    stack.peers_index = stack.slots.size();
    // Never placed into (accepts_placements is false): its policy only
    // orders this node's view of blocks other nodes hold, priced as the
    // memory they hold them in, so a block reused here is promoted.
    stack.Add(std::move(peers), "lru", "none", options.dram_usd_per_gib_month);
  }
  if (!options.cluster_redis.empty()) {
    RedisTierOptions c;
    c.seeds = options.cluster_redis;
    c.key_prefix = options.cluster_prefix;
    c.capacity_bytes = options.cluster_bytes;
    c.max_block_bytes = options.max_block_bytes;
    c.value_bytes = options.cluster_value_bytes;
    c.command_timeout_ms = options.cluster_timeout_ms;
    KVTIER_ASSIGN_OR_RETURN(std::unique_ptr<Tier> cluster, OpenRedisTier(c));
    stack.cluster = cluster.get();
    stack.Add(std::move(cluster), options.cluster_policy, options.cluster_admission,
              options.cluster_usd_per_gib_month);
  }
  return stack;
}

Result<std::unique_ptr<CacheManager>> OpenCache(const DaemonOptions& options,
                                                std::vector<TierSlot> tiers) {
  CacheManagerOptions co;
  co.placement = options.placement;
  co.sweep_interval_ms = options.sweep_interval_ms;
  return CacheManager::Open(std::move(tiers), co);
}

// The model to serve: the one named, or the default random-weight model,
// written under DATA_DIR/models the first time (so kvtierd always starts).
Result<std::string> ModelPathFor(const DaemonOptions& options) {
  if (!options.model_path.empty()) return options.model_path;
  const std::string dir = options.data_dir + "/models/" + options.default_model_preset;
  std::error_code ec;
  if (std::filesystem::exists(dir + "/config.json", ec)) return dir;
  KVTIER_ASSIGN_OR_RETURN(const ModelConfig config, ModelPreset(options.default_model_preset));
  KVTIER_ASSIGN_OR_RETURN(std::unique_ptr<ModelWeights> w, RandomModel(config, /*seed=*/1));
  std::filesystem::create_directories(dir, ec);
  if (ec) return Status::IOError("cannot create " + dir + ": " + ec.message());
  KVTIER_RETURN_IF_ERROR(WriteSyntheticLlama2cTokenizer(dir + "/tokenizer.bin", config.vocab_size));
  // config.json last: its presence marks a complete model.
  KVTIER_RETURN_IF_ERROR(WriteSafetensorsModel(*w, dir, WeightDType::kFloat32));
  LogInfo("kvtierd_model_created",
          LogFields().Add("dir", dir).Add("preset", options.default_model_preset));
  return dir;
}

// The model's tokenizer, or null when it has none (requests then send token
// ids).
Result<std::unique_ptr<Tokenizer>> LoadTokenizerIfAny(const std::string& model_path,
                                                      int vocab_size) {
  Result<std::unique_ptr<Tokenizer>> tokenizer = LoadTokenizerFor(model_path, vocab_size);
  if (tokenizer.ok() || tokenizer.status().code() != StatusCode::kNotFound) return tokenizer;
  LogWarn("kvtierd_no_tokenizer", LogFields().Add("model", model_path));
  return std::unique_ptr<Tokenizer>();
}

EngineOptions EngineOptionsOf(const DaemonOptions& options) {
  EngineOptions eo;
  eo.block_tokens = options.default_namespace.block_tokens;
  eo.kv_bytes = options.engine_kv_bytes;
  eo.max_batch_seqs = options.engine_max_batch;
  eo.token_budget = options.engine_token_budget;
  eo.threads = options.engine_threads;
  eo.device = options.engine_device;
  eo.gpu_bf16_weights = options.engine_gpu_bf16;
  eo.cpu_bf16_weights = options.engine_cpu_bf16;
  eo.cpu_keep_staged_tiles = options.engine_keep_staged_tiles;
  return eo;
}

// The usage ledger: its own RocksDB under the data directory, every record
// fsync'd before the request it bills is answered.
Result<std::unique_ptr<Ledger>> OpenLedger(const DaemonOptions& options) {
  LedgerOptions lo;
  lo.path = options.data_dir + "/ledger";
  return Ledger::Open(lo);
}

// Named caches: durable (fsync'd) in their own RocksDB, so they survive a
// crash of kvtierd; their KV is recomputed when it has been lost.
Result<std::unique_ptr<NamedCacheRegistry>> OpenNamedCaches(const DaemonOptions& options) {
  NamedCacheOptions no;
  no.path = options.data_dir + "/named_caches";
  return NamedCacheRegistry::Open(no);
}

// Who may call: the holders of the API keys in --api-keys, or, without it,
// anyone. Either way tenants' cache salts and key scopes derive from the
// daemon's secret (DESIGN §2).
Result<std::unique_ptr<Authenticator>> OpenAuthenticator(const DaemonOptions& options) {
  KVTIER_ASSIGN_OR_RETURN(const CacheSecret secret,
                          options.cache_secret_file.empty()
                              ? CacheSecret::LoadOrCreate(options.data_dir)
                              : CacheSecret::Load(options.cache_secret_file));
  if (options.api_keys_file.empty()) return std::make_unique<Authenticator>(secret);
  KVTIER_ASSIGN_OR_RETURN(Authenticator keys,
                          Authenticator::FromFile(options.api_keys_file, secret));
  auto auth = std::make_unique<Authenticator>(std::move(keys));
  LogInfo("kvtierd_api_keys", LogFields().Add("keys", auth->keys()));
  return auth;
}

StreamLimits StreamLimitsOf(const DaemonOptions& options) {
  StreamLimits streams;
  streams.max_streams = options.max_streams;
  streams.max_tenant_streams = options.max_tenant_streams;
  streams.idle_ms = options.stream_idle_ms;
  return streams;
}

Result<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return Status::NotFound("cannot read " + path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// "host:port" with the port replaced by `port` (the one bound when the
// address asked for 0).
std::string WithPort(const std::string& address, int port) {
  return address.substr(0, address.rfind(':')) + ":" + std::to_string(port);
}

}  // namespace

Daemon::Daemon(const DaemonOptions& options) : options_(options) {}

Daemon::~Daemon() {
  Shutdown();
  if (lock_fd_ >= 0) close(lock_fd_);
}

Result<std::unique_ptr<Daemon>> Daemon::Open(const DaemonOptions& options) {
  std::unique_ptr<Daemon> d(new Daemon(options));
  KVTIER_RETURN_IF_ERROR(d->LockDataDir());
  // First: the secret it reads scopes the tiers' keys and the peers' token.
  KVTIER_ASSIGN_OR_RETURN(d->auth_, OpenAuthenticator(options));
  KVTIER_ASSIGN_OR_RETURN(TierStack tiers, OpenTierStack(options, d->auth_->secret()));
  d->rocks_tier_ = tiers.rocks;  // owned by the cache from here on
  d->cluster_tier_ = tiers.cluster;
  d->peer_tier_ = tiers.peers;
  d->peer_tier_index_ = tiers.peers_index;
  KVTIER_ASSIGN_OR_RETURN(d->cache_, OpenCache(options, std::move(tiers.slots)));
  if (options.engine) KVTIER_RETURN_IF_ERROR(d->OpenEngine());
  KVTIER_ASSIGN_OR_RETURN(d->ledger_, OpenLedger(options));
  if (d->engine_) {
    const Namespace ns = d->engine_->CacheNamespace("");
    KVTIER_RETURN_IF_ERROR(d->prices_.Set(ns.model_id + "@" + ns.model_revision, options.price));
  }
  KVTIER_RETURN_IF_ERROR(d->OpenServices(std::move(tiers.policies)));
  return d;
}

// One daemon per data directory: a second one would corrupt the tiers.
Status Daemon::LockDataDir() {
  std::error_code ec;
  std::filesystem::create_directories(options_.data_dir, ec);
  if (ec) {
    return Status::IOError("cannot create data directory " + options_.data_dir + ": " +
                           ec.message());
  }
  const std::string lock_path = options_.data_dir + "/kvtierd.lock";
  lock_fd_ = open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (lock_fd_ < 0) {
    return Status::IOError("cannot open " + lock_path + ": " + std::strerror(errno));
  }
  if (flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    return Status::Unavailable("another kvtierd is using data directory " + options_.data_dir);
  }
  return Status::Ok();
}

Status Daemon::OpenEngine() {
  KVTIER_ASSIGN_OR_RETURN(model_path_, ModelPathFor(options_));
  const std::string& model_path = model_path_;
  Result<std::unique_ptr<ModelWeights>> weights = LoadModel(model_path);
  if (!weights.ok()) {
    return Status(weights.status().code(),
                  "model " + model_path + ": " + weights.status().message());
  }
  weights_ = std::move(*weights);
  KVTIER_ASSIGN_OR_RETURN(tokenizer_, LoadTokenizerIfAny(model_path, weights_->config.vocab_size));
  KVTIER_ASSIGN_OR_RETURN(engine_,
                          Engine::Open(weights_.get(), cache_.get(), EngineOptionsOf(options_)));
  LogInfo(
      "kvtierd_engine",
      LogFields().Add("device", std::string(engine_->device())).Add("gpu", DeviceDescription()));
  engine_->StartLoop();
  return Status::Ok();
}

Status Daemon::OpenServices(std::vector<std::string> tier_policies) {
  KVTIER_RETURN_IF_ERROR(OpenShm());
  services_ = std::make_unique<Services>(*cache_, engine_.get(), tokenizer_.get(), *ledger_,
                                         prices_, options_, *auth_, shm_.get());
  services_->admin.set_authenticator(auth_.get());
  services_->billing.set_authenticator(auth_.get());
  if (services_->context_cache) {
    services_->context_cache->set_authenticator(auth_.get());
    KVTIER_ASSIGN_OR_RETURN(named_caches_, OpenNamedCaches(options_));
    services_->context_api->set_named_caches(named_caches_.get());
  }
  services_->admin.set_tier_policies(std::move(tier_policies));
  services_->admin.set_scale_out(peer_tier_, cluster_tier_);
  if (peer_tier_ != nullptr) {
    services_->peer =
        std::make_unique<PeerService>(*cache_, auth_->secret().PeerToken(), peer_tier_index_);
  }
  if (shm_) services_->admin.set_shm_socket(shm_->socket_path());
  return Status::Ok();
}

// Same-host shared memory for the block API. The default socket (in the
// data directory) is best effort: a path too long for a Unix socket is
// logged and skipped; a path given with --shm-socket must work.
Status Daemon::OpenShm() {
  if (options_.shm_socket == "off") return Status::Ok();
  const bool required = !options_.shm_socket.empty();
  const std::string path =
      required ? options_.shm_socket
               : (std::filesystem::path(options_.data_dir) / "kvtierd.sock").string();
  ShmLimits limits;
  limits.max_region_bytes = options_.shm_max_region_bytes;
  limits.max_total_bytes = options_.shm_max_total_bytes;
  limits.max_tenant_bytes = options_.shm_max_tenant_bytes;
  Result<std::unique_ptr<ShmRegistry>> shm = ShmRegistry::Open(path, limits, *auth_);
  if (shm.ok()) {
    shm_ = std::move(*shm);
    return Status::Ok();
  }
  if (required) return Status::InvalidArgument("--shm-socket: " + shm.status().message());
  LogWarn("kvtierd_shm_skipped",
          LogFields().Add("path", path).Add("error", shm.status().message()));
  return Status::Ok();
}

Status Daemon::Start() {
  KVTIER_RETURN_IF_ERROR(services_->gate.streams().Configure(StreamLimitsOf(options_)));
  // The standard health service (grpc.health.v1.Health) and server reflection,
  // for probes and generic clients that do not have our proto. Both are
  // process-wide switches a builder reads when it is made and started.
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  ConfigureServer(&builder);
  // Descriptors: as many as the hard limit allows, and connections capped
  // below them so files, databases and pipes always find one.
  const uint64_t nofile = RaiseDescriptorLimit();
  const size_t max_connections =
      ConnectionListener::CapUnderLimit(static_cast<size_t>(options_.max_connections), nofile);
  KVTIER_ASSIGN_OR_RETURN(const int port, options_.tls_cert_file.empty()
                                              ? ServePlaintext(&builder, max_connections)
                                              : ServeTls(&builder));
  bound_address_ = WithPort(options_.listen, port);
  MarkServing();
  LogInfo("kvtierd_limits", LogFields()
                                .Add("descriptors", nofile)
                                .Add("max_connections", max_connections)
                                .Add("max_threads", options_.max_threads)
                                .Add("max_streams", options_.max_streams)
                                .Add("max_tenant_streams", options_.max_tenant_streams)
                                .Add("stream_idle_ms", options_.stream_idle_ms));
  KVTIER_RETURN_IF_ERROR(StartMetrics());
  KVTIER_RETURN_IF_ERROR(StartHttp());
  const std::string metrics =
      metrics_ ? WithPort(options_.metrics_listen, metrics_->bound_port()) : std::string();
  const std::string http =
      http_ ? WithPort(options_.http_listen, http_->bound_port()) : std::string();
  services_->admin.set_listen_address(bound_address_, metrics, http);
  LogServing(metrics, http);
  return Status::Ok();
}

// The server's limits, interceptors and services; where it listens is up to
// ServePlaintext or ServeTls.
void Daemon::ConfigureServer(grpc::ServerBuilder* builder) {
  // Never share the port with another process (gRPC turns SO_REUSEPORT on
  // by default): a second daemon on a taken port must fail, not split it.
  builder->AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder->AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, options_.max_streams_per_connection);
  // One streamed chunk (at most 4 MiB) plus its envelope.
  builder->SetMaxReceiveMessageSize((4 << 20) + (64 << 10));
  builder->SetMaxSendMessageSize((4 << 20) + (64 << 10));
  grpc::ResourceQuota quota("kvtierd");  // the builder keeps a reference
  quota.SetMaxThreads(options_.max_threads);
  quota.Resize(options_.grpc_memory_bytes);
  builder->SetResourceQuota(quota);
  // Counting last, so it sees the status the others may have replaced.
  auto interceptors = MalformedRequestInterceptors();
  interceptors.push_back(services_->grpc_requests.InterceptorFactory());
  builder->experimental().SetInterceptorCreators(std::move(interceptors));
  builder->RegisterService(&services_->block_store);
  builder->RegisterService(&services_->admin);
  builder->RegisterService(&services_->billing);
  if (services_->context_cache) builder->RegisterService(services_->context_cache.get());
  if (services_->peer) builder->RegisterService(services_->peer.get());
}

// The health service answers SERVING for "" (the server) by default; each of
// our services is named too, so a probe may ask for the one it uses. Like
// Admin.Health, the standard services need no API key: they are not ours, so
// no call of theirs passes through the authenticator or the call gate.
void Daemon::MarkServing() {
  grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService();
  if (health == nullptr) return;
  for (const char* service : {v1::BlockStore::service_full_name(), v1::Admin::service_full_name(),
                              v1::Billing::service_full_name()}) {
    health->SetServingStatus(service, true);
  }
  if (services_->context_cache) {
    health->SetServingStatus(v1::ContextCache::service_full_name(), true);
  }
}

// Plaintext: kvtierd accepts connections itself (server/connection_listener.h)
// and hands each to the gRPC server.
Result<int> Daemon::ServePlaintext(grpc::ServerBuilder* builder, size_t max_connections) {
  ListenerOptions lo;
  lo.address = options_.listen;
  lo.max_connections = max_connections;
  KVTIER_ASSIGN_OR_RETURN(listener_, ConnectionListener::Bind(lo));
  server_ = builder->BuildAndStart();
  if (!server_) return Status::Unavailable("cannot start the gRPC server");
  grpc::Server* server = server_.get();
  listener_->Start([server](int fd) { grpc::AddInsecureChannelFromFd(server, fd); });
  return listener_->port();
}

// TLS: gRPC listens itself, with the PEM certificate chain and key.
Result<int> Daemon::ServeTls(grpc::ServerBuilder* builder) {
  KVTIER_ASSIGN_OR_RETURN(const std::string cert, ReadFile(options_.tls_cert_file));
  KVTIER_ASSIGN_OR_RETURN(const std::string key, ReadFile(options_.tls_key_file));
  grpc::SslServerCredentialsOptions tls;
  tls.pem_key_cert_pairs.push_back({key, cert});
  int port = 0;
  builder->AddListeningPort(options_.listen, grpc::SslServerCredentials(tls), &port);
  server_ = builder->BuildAndStart();
  if (!server_ || port == 0) {
    server_.reset();
    return Status::Unavailable("cannot listen on " + options_.listen +
                               " (address in use or not valid, or the TLS certificate "
                               "and key are not a valid PEM pair)");
  }
  return port;
}

// Prometheus metrics over HTTP. The default address is best effort (a busy
// port is logged and skipped); one given explicitly must bind, else the
// server is stopped and Start fails.
Status Daemon::StartMetrics() {
  if (options_.metrics_listen.empty()) return Status::Ok();
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
  return Status::Ok();
}

// The HTTP API, over the same ContextApi, gate and keys as gRPC; like the
// metrics endpoint, best effort at its default address.
Status Daemon::StartHttp() {
  if (options_.http_listen.empty() || !services_->context_api) return Status::Ok();
  HttpApiOptions ho;
  ho.listen = options_.http_listen;
  ho.threads = options_.http_threads;
  ho.max_body_bytes = options_.http_max_body_bytes;
  ho.served_model_name = options_.served_model_name;
  ho.model_dir = model_path_;
  Result<std::unique_ptr<HttpApi>> h =
      HttpApi::Start(ho, *services_->context_api, *auth_, services_->gate, SystemClock());
  if (h.ok()) {
    http_ = std::move(*h);
  } else if (options_.http_listen_required) {
    server_->Shutdown();
    server_.reset();
    if (metrics_) metrics_->Stop();
    return h.status();
  } else {
    LogWarn("kvtierd_http_skipped", LogFields().Add("reason", h.status().message()));
  }
  return Status::Ok();
}

void Daemon::LogServing(const std::string& metrics, const std::string& http) const {
  std::string tier_names;
  for (const TierInfo& t : cache_->Stats().tiers) {
    tier_names += (tier_names.empty() ? "" : ",") + t.name;
  }
  LogInfo("kvtierd_serving", LogFields()
                                 .Add("addr", bound_address_)
                                 .Add("http", http)
                                 .Add("metrics", metrics)
                                 .Add("data_dir", options_.data_dir)
                                 .Add("dram_bytes", options_.dram_bytes)
                                 .Add("tiers", tier_names)
                                 .Add("namespace", options_.default_namespace.ToString())
                                 .Add("model", engine_ ? engine_->CacheNamespace("").ToString()
                                                       : std::string("none")));
}

void Daemon::Wait() {
  if (server_) server_->Wait();
}

void Daemon::Shutdown() {
  if (!server_ || shut_down_.exchange(true)) return;
  if (listener_) listener_->Stop();  // no new connections from here on
  // Probes see NOT_SERVING (every service) from the start of the drain.
  if (grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService()) {
    health->Shutdown();
  }
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
  if (http_) http_->Stop();
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
  if (cluster_tier_ != nullptr) {
    if (Result<RedisTierStats> r = RedisTierStatsOf(*cluster_tier_); r.ok()) {
      m.Counter("kvtier_cluster_read_blocks_total", "Blocks read from the cluster tier.",
                r->read_blocks);
      m.Counter("kvtier_cluster_read_bytes_total", "Bytes read from the cluster tier.",
                r->read_bytes);
      m.Counter("kvtier_cluster_read_misses_total",
                "Cluster tier reads that found no good block (absent, expired, damaged, or a "
                "node down).",
                r->read_misses);
      m.Counter("kvtier_cluster_write_blocks_total", "Blocks written to the cluster tier.",
                r->write_blocks);
      m.Counter("kvtier_cluster_write_bytes_total", "Bytes written to the cluster tier.",
                r->write_bytes);
      m.Counter("kvtier_cluster_read_seconds_total", "Time spent in cluster tier reads.",
                r->read_seconds);
      m.Counter("kvtier_cluster_write_seconds_total", "Time spent in cluster tier writes.",
                r->write_seconds);
      m.Counter("kvtier_cluster_lookups_total",
                "Look-ups that asked the cluster tier past this node's index.", r->stat_calls);
      m.Counter("kvtier_cluster_lookup_found_blocks_total",
                "Blocks those look-ups found (written by any node).", r->stat_found);
      m.Counter("kvtier_cluster_commands_total", "Redis commands sent.", r->cluster.commands);
      m.Counter("kvtier_cluster_errors_total",
                "Redis commands that failed: a node down, a timeout, an error reply.",
                r->cluster.errors);
      m.Counter("kvtier_cluster_redirects_total", "MOVED and ASK redirections followed.",
                r->cluster.redirects);
      m.Counter("kvtier_cluster_slot_refreshes_total", "Times the slot map was reloaded.",
                r->cluster.refreshes);
    }
  }
  if (peer_tier_ != nullptr) {
    if (Result<std::vector<PeerStats>> peers = PeerTierStatsOf(*peer_tier_); peers.ok()) {
      for (const PeerStats& p : *peers) {
        const MetricLabels l = {{"peer", p.peer}};
        m.Counter("kvtier_peer_calls_total", "Calls to a peer node.", p.calls, l);
        m.Counter("kvtier_peer_errors_total", "Calls to a peer that failed or timed out.", p.errors,
                  l);
        m.Counter("kvtier_peer_found_blocks_total", "Blocks a peer said it holds.", p.found_blocks,
                  l);
        m.Counter("kvtier_peer_read_blocks_total", "Blocks read from a peer.", p.read_blocks, l);
        m.Counter("kvtier_peer_read_bytes_total", "Bytes read from a peer.", p.read_bytes, l);
        m.Counter("kvtier_peer_written_blocks_total", "Blocks sent to their owner.",
                  p.written_blocks, l);
        m.Counter("kvtier_peer_seconds_total", "Time spent in calls to a peer.", p.seconds, l);
        m.Gauge("kvtier_peer_down", "1 while a peer that failed is being skipped.", p.down ? 1 : 0,
                l);
      }
    }
    m.Counter("kvtier_peer_refused_calls_total",
              "Peer calls refused for a missing or wrong peer token.",
              services_->peer ? services_->peer->refused() : 0);
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
  m.Counter("kvtier_cache_shared_adopted_total",
            "Blocks another node wrote, found in the shared cluster tier after an index miss.",
            s.shared_adopted);
  m.Counter("kvtier_cache_shared_writes_total",
            "Copies of inserted blocks written to the shared cluster tier.", s.shared_writes);
  m.Counter("kvtier_cache_shared_write_failures_total",
            "Copies the shared cluster tier refused or failed (full share, node down).",
            s.shared_write_failures);
  m.Counter("kvtier_cache_read_misses_total", "Block reads that missed.", s.read_misses);
  m.Counter("kvtier_cache_insert_bytes_total", "Bytes inserted.", s.insert_bytes);
  for (auto [kind, value] :
       {std::pair{"placed", s.placed}, std::pair{"promoted", s.promotions},
        std::pair{"demoted", s.demotions}, std::pair{"dropped_for_remat", s.remat_drops},
        std::pair{"dropped", s.drops}, std::pair{"expired", s.expired},
        std::pair{"declined", s.admission_refusals}}) {
    m.Counter("kvtier_cache_decisions_total", "Placement decisions by kind (DESIGN 4).", value,
              {{"kind", kind}});
  }
  m.Counter("kvtier_cache_aged_out_total",
            "Blocks demoted or dropped by the idle review (also in the decisions).", s.aged_out);
  if (engine_) {
    const EngineStats e = engine_->Stats();
    m.Counter("kvtier_engine_requests_total", "Requests submitted to the engine.", e.requests);
    m.Counter("kvtier_engine_prefill_tokens_total", "Prompt tokens computed.", e.prefill_tokens);
    m.Counter("kvtier_engine_decode_tokens_total", "Tokens generated.", e.decode_tokens);
    m.Counter("kvtier_engine_cached_tokens_total", "Prompt tokens loaded from the cache.",
              e.cached_tokens);
    m.Counter("kvtier_engine_preemptions_total", "Sequences preempted.", e.preemptions);
    m.Counter("kvtier_engine_cancelled_total",
              "Requests cancelled: their client went away or a stop string ended them.",
              e.cancelled);
    m.Gauge("kvtier_engine_running", "Sequences running.", e.running);
    m.Gauge("kvtier_engine_waiting", "Sequences waiting.", e.waiting);
  }
  AppendBlockApiMetrics(&m);
  AppendTokenMetrics(s, &m);
  AppendMrcMetrics(cache_->MissRatioCurve(), s.tiers, &m);
  if (services_ && services_->context_api) services_->context_api->AppendMetrics(&m);
  if (http_) http_->AppendMetrics(&m);
  if (services_) services_->grpc_requests.AppendMetrics(&m);
  return m.Text();
}

// The cache and the engine counted in tokens as well as blocks, labelled by
// tier and model in the style of vLLM's and SGLang's metrics, so their
// dashboards' queries carry over. model_name is the model kvtierd serves;
// blocks that clients of the block API store for other models count under it
// too.
void Daemon::AppendTokenMetrics(const CacheStats& s, MetricsText* m) const {
  const std::string model = ServedModelName();
  for (size_t i = 0; i < s.tiers.size() && i < s.traffic.size(); ++i) {
    const TierTraffic& t = s.traffic[i];
    const MetricLabels tier = {{"tier", s.tiers[i].name}, {"model_name", model}};
    m->Counter("kvtier_cache_hit_blocks_by_tier_total",
               "Blocks of lookups' leading runs, by the tier that held them.", t.hit_blocks, tier);
    m->Counter("kvtier_cache_hit_tokens_total",
               "Tokens of lookups' leading runs, by the tier that held them.", t.hit_tokens, tier);
    m->Counter("kvtier_cache_read_blocks_by_tier_total", "Blocks read, by tier.", t.read_blocks,
               tier);
    m->Counter("kvtier_cache_read_bytes_total", "Payload bytes read, by tier.", t.read_bytes, tier);
    m->Counter("kvtier_cache_read_tokens_total", "Tokens of the blocks read, by tier.",
               t.read_tokens, tier);
    for (auto [reason, value] :
         {std::pair{"demoted", t.demoted}, std::pair{"dropped_for_remat", t.dropped_for_remat},
          std::pair{"dropped", t.dropped}, std::pair{"expired", t.expired}}) {
      MetricLabels labels = tier;
      labels.emplace_back("reason", reason);
      m->Counter("kvtier_cache_evictions_total",
                 "Blocks that left a tier, by tier and reason (demoted: moved to a tier below).",
                 value, labels);
    }
  }
  for (size_t c = 0; c < kNumExpiryClasses; ++c) {
    m->Counter("kvtier_cache_expirations_total",
               "Blocks removed because their TTL passed, by the TTL they were written with "
               "(5m, 1h, other, fixed: an absolute expiry).",
               s.expired_by_ttl[c],
               {{"ttl", std::string(ExpiryClassName(static_cast<ExpiryClass>(c)))},
                {"model_name", model}});
  }
  if (!engine_) return;
  const EngineStats e = engine_->Stats();
  m->Counter("kvtier_prompt_tokens_total", "Prompt tokens, by where their KV came from.",
             e.cached_tokens, {{"model_name", model}, {"source", "cache"}});
  m->Counter("kvtier_prompt_tokens_total", "Prompt tokens, by where their KV came from.",
             e.prefill_tokens, {{"model_name", model}, {"source", "computed"}});
  m->Counter("kvtier_generation_tokens_total", "Tokens generated.", e.decode_tokens,
             {{"model_name", model}});
}

// The block API's leases and shared-memory regions.
void Daemon::AppendBlockApiMetrics(MetricsText* m) const {
  if (services_) {
    const LeaseStats l = services_->leases.stats();
    m->Gauge("kvtier_leases_open", "BatchLookup leases open.", l.open);
    m->Gauge("kvtier_leased_blocks", "Blocks the open leases keep from eviction.", l.leased_blocks);
    m->Gauge("kvtier_leased_bytes", "Payload bytes of the blocks the open leases keep.",
             l.leased_bytes);
    for (auto [outcome, value] :
         {std::pair{"granted", l.granted}, std::pair{"released", l.released},
          std::pair{"expired", l.expired}, std::pair{"refused", l.refused}}) {
      m->Counter("kvtier_leases_total", "Leases, by what happened to them.", value,
                 {{"outcome", outcome}});
    }
  }
  if (shm_) {
    const ShmStats s = shm_->stats();
    m->Gauge("kvtier_shm_regions_open", "Shared-memory regions mapped by same-host clients.",
             s.open_regions);
    m->Gauge("kvtier_shm_bytes_open", "Bytes of those regions.", s.open_bytes);
    m->Counter("kvtier_shm_regions_refused_total",
               "Shared-memory handshakes refused (bad key, bad request, limits).", s.refused);
  }
}

// The model name clients use: --served-model-name, else the model's id.
std::string Daemon::ServedModelName() const {
  if (!options_.served_model_name.empty()) return options_.served_model_name;
  return engine_ ? engine_->CacheNamespace("").model_id : std::string();
}

}  // namespace kvtier
