#include "replay/cluster_replay.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <memory>
#include <optional>
#include <utility>

#include "cache/admission.h"
#include "cache/cache_manager.h"
#include "cache/eviction_policy.h"
#include "cache/placement.h"
#include "common/clock.h"
#include "common/flags.h"
#include "common/rendezvous.h"
#include "replay/replay_tier.h"

namespace kvtier {
namespace {

constexpr int64_t kEpochMs = 1'700'000'000'000;  // the replay clock's time of the first request

// --- The nodes -------------------------------------------------------------------

// One node: its scenario stack (and view of the shared tier) under its own
// CacheManager. The tiers point at the ledger and the traffic, which the
// manager (declared after them) does not outlive.
struct Node {
  explicit Node(size_t tiers) : ledger(tiers) {}
  MoveLedger ledger;
  SharedTraffic traffic;
  std::unique_ptr<CacheManager> cache;
  uint64_t requests = 0;
  uint64_t tokens = 0;
};

// The cluster: the clock every node runs on, the shared store, the nodes.
struct Cluster {
  explicit Cluster(const ClusterReplayOptions& o) : options(o) {}
  ClusterReplayOptions options;
  ManualClock clock{kEpochMs};
  std::unique_ptr<SharedReplayStore> store;  // null without a shared tier
  size_t local_tiers = 0;                    // a node's stack: these, then the shared view
  uint64_t store_units = 0;                  // the whole store's capacity, tokens
  std::vector<std::unique_ptr<Node>> nodes;
};

// Opens one more node: the scenario's local tiers, then its view of the
// shared store.
Status OpenNode(const Trace& trace, const TierScenario& sc, Cluster& cluster) {
  const size_t stack = sc.tiers.size() + (sc.shared_tier ? 1 : 0);
  auto node = std::make_unique<Node>(stack);
  KVTIER_ASSIGN_OR_RETURN(std::vector<TierSlot> slots,
                          ReplayTierSlots(trace, sc, &node->ledger, &cluster.clock));
  CacheManagerOptions options = ReplayCacheOptions(sc, &cluster.clock);
  if (const std::optional<ScenarioSharedTier>& st = sc.shared_tier) {
    // CheckClusterReplay made sure it holds a block.
    const uint64_t share = cluster.store_units / static_cast<uint64_t>(cluster.options.nodes);
    const double bpt = sc.kv_bytes_per_token;
    TierSlot slot;
    slot.tier = NewSharedTierView(st->name, cluster.store.get(), share, st->read_bytes_per_s / bpt,
                                  sc.tiers.size(), &node->ledger, &node->traffic, &cluster.clock);
    PolicyOptions po;
    po.capacity_bytes = share;
    slot.policy = NewEvictionPolicy(st->policy, po);
    if (st->admission != "none") {
      AdmissionOptions ao;
      ao.capacity_blocks = std::max<uint64_t>(1, share / trace.block_tokens);
      slot.admission = NewAdmissionFilter(st->admission, ao);
    }
    // Its price: the node's share of the store, as kvtierd prices its share.
    slot.cost_per_s =
        CostPerSecond(st->capacity_bytes / cluster.options.nodes, st->usd_per_gib_month);
    slots.push_back(std::move(slot));
    options.background_shared_writes = false;  // the replay writes them after each request
    options.shared_max_ttl_ms = st->max_ttl_ms;
  }
  KVTIER_ASSIGN_OR_RETURN(node->cache, CacheManager::Open(std::move(slots), options));
  cluster.nodes.push_back(std::move(node));
  return Status::Ok();
}

Result<std::unique_ptr<Cluster>> OpenCluster(const Trace& trace, const TierScenario& sc,
                                             const ClusterReplayOptions& options) {
  auto cluster = std::make_unique<Cluster>(options);
  cluster->local_tiers = sc.tiers.size();
  if (sc.shared_tier) {
    cluster->store = std::make_unique<SharedReplayStore>(&cluster->clock);
    cluster->store_units =
        static_cast<uint64_t>(std::floor(sc.shared_tier->capacity_bytes / sc.kv_bytes_per_token));
  }
  for (int n = 0; n < options.nodes; ++n) KVTIER_RETURN_IF_ERROR(OpenNode(trace, sc, *cluster));
  return cluster;
}

// A deterministic pseudo-random number per request (SplitMix64's finalizer).
uint64_t Mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// --- The replay ------------------------------------------------------------------

// One replay of a trace through a cluster (see the header). Per request,
// Run moves the clock (sampling occupancy and sweeping every node and the
// store on the way), routes the request, serves it from its node and
// tallies it against no cache; Finish turns the tallies into the result.
class ClusterReplay {
 public:
  ClusterReplay(const Trace& trace, const TierScenario& sc, Cluster& cluster);

  Status Run(const std::function<void(double)>& progress);
  ClusterReplayResult Finish();

 private:
  struct Hit {
    size_t blocks = 0;
    uint64_t tokens = 0;
    double fetch_s = 0;  // its blocks brought back one after another
  };
  // Occupancy at one instant, at full size: per local tier summed over the
  // nodes, and the store.
  struct Sample {
    double time_ms = 0;
    std::vector<double> local_bytes;
    double shared_bytes = 0;
  };

  size_t Route(const TraceRequest& req, uint64_t index) const;
  void MoveClockTo(const TraceRequest& req);
  void SampleOccupancy(double time_ms);
  Hit Serve(Node& node, const TraceRequest& req);
  Status InsertAfter(Node& node, const TraceRequest& req, size_t hit_blocks);
  void WriteThrough(Node& node);
  void Tally(Node& node, const TraceRequest& req, const Hit& hit);
  void CollectCosts();
  void CollectStats();

  const Trace& trace_;
  const TierScenario& sc_;
  Cluster& cluster_;
  const Rendezvous rendezvous_;
  const double bpt_;                  // KV bytes per token
  const double prefill_s_per_token_;  // 2 · active_params / FLOP/s
  const int64_t end_ms_;              // the last request's time
  const double sample_step_ms_;
  const std::vector<std::byte> payload_;  // a block's worth of units (tokens)
  ClusterReplayResult r_;

  double next_sample_ms_ = 0;
  int64_t next_sweep_ms_ = 0;
  std::vector<BlockKey> keys_;  // the current request's
  std::vector<Sample> samples_;
  double ttft_cold_ = 0, ttft_tiered_ = 0, fetch_s_ = 0;
  double fetch_units_ = 0;  // hit tokens fetched from the shared tier
};

std::vector<std::string> NodeNames(int nodes) {
  std::vector<std::string> names;
  for (int n = 0; n < nodes; ++n) names.push_back("node" + std::to_string(n));
  return names;
}

ClusterReplay::ClusterReplay(const Trace& trace, const TierScenario& sc, Cluster& cluster)
    : trace_(trace),
      sc_(sc),
      cluster_(cluster),
      rendezvous_(NodeNames(cluster.options.nodes)),
      bpt_(sc.kv_bytes_per_token),
      prefill_s_per_token_(2 * sc.active_params / sc.prefill_flops_per_s),
      end_ms_(trace.requests.empty() ? 0 : trace.requests.back().time_ms),
      sample_step_ms_(std::max(1.0, static_cast<double>(end_ms_) / sc.occupancy_samples)),
      payload_(static_cast<size_t>(trace.block_tokens)) {
  r_.scenario = sc.name;
  r_.nodes = cluster.options.nodes;
  r_.routing = ClusterRoutingName(cluster.options);
  r_.duration_s = static_cast<double>(end_ms_) / 1000;
  for (const ScenarioTier& t : sc.tiers) r_.tier_names.push_back(t.name);
  if (sc.shared_tier) {
    r_.shared_tier = sc.shared_tier->name;
    r_.tier_names.push_back(sc.shared_tier->name);
  }
  r_.tier_hit_blocks.assign(r_.tier_names.size(), 0);
}

Status ClusterReplay::Run(const std::function<void(double)>& progress) {
  for (const TraceRequest& req : trace_.requests) {
    MoveClockTo(req);
    keys_.clear();
    for (uint32_t i = 0; i < req.num_blocks; ++i) {
      keys_.push_back(BlockKey{0, trace_.blocks[req.first_block + i]});
    }
    Node& node = *cluster_.nodes[Route(req, r_.requests)];
    const Hit hit = Serve(node, req);
    KVTIER_RETURN_IF_ERROR(InsertAfter(node, req, hit.blocks));
    WriteThrough(node);
    Tally(node, req, hit);
    if (progress && r_.requests % 1024 == 0) {
      progress(static_cast<double>(r_.requests) / static_cast<double>(trace_.requests.size()));
    }
  }
  SampleOccupancy(static_cast<double>(end_ms_));
  return Status::Ok();
}

// keys_ holds the request's keys.
size_t ClusterReplay::Route(const TraceRequest& req, uint64_t index) const {
  const auto nodes = static_cast<uint64_t>(cluster_.options.nodes);
  if (cluster_.options.routing == ClusterRouting::kRandom) return Mix(index) % nodes;
  if (req.num_blocks == 0) return 0;
  const size_t depth = std::min<size_t>(req.num_blocks, cluster_.options.prefix_blocks);
  return rendezvous_.Owner(keys_[depth - 1]);  // a chained key names its whole prefix
}

void ClusterReplay::MoveClockTo(const TraceRequest& req) {
  cluster_.clock.SetMs(kEpochMs + req.time_ms);
  while (req.time_ms >= next_sample_ms_) {
    SampleOccupancy(next_sample_ms_);
    next_sample_ms_ += sample_step_ms_;
  }
  if (req.time_ms >= next_sweep_ms_) {
    // As each kvtierd's sweeper does, every second: expiry, then aged
    // blocks. Blocks adopted from the shared tier carry its expiry.
    for (const std::unique_ptr<Node>& node : cluster_.nodes) {
      if (sc_.ttl_ms > 0 || cluster_.store) {
        while (node->cache->SweepExpired(4096) == 4096) {
        }
      }
      node->cache->ReviewIdle(SIZE_MAX);
    }
    if (cluster_.store) cluster_.store->DropExpired();
    next_sweep_ms_ = req.time_ms + 1000;
  }
}

void ClusterReplay::SampleOccupancy(double time_ms) {
  Sample s;
  s.time_ms = time_ms;
  s.local_bytes.assign(cluster_.local_tiers, 0);
  for (const std::unique_ptr<Node>& node : cluster_.nodes) {
    const CacheStats stats = node->cache->Stats();
    for (size_t i = 0; i < cluster_.local_tiers; ++i) {
      s.local_bytes[i] += stats.tiers[i].used_bytes * bpt_;
    }
  }
  if (cluster_.store) s.shared_bytes = cluster_.store->used_units() * bpt_;
  // The state after the last request replaces a sample taken at the same
  // time before it, so no instant weighs twice.
  if (!samples_.empty() && samples_.back().time_ms == s.time_ms) samples_.pop_back();
  samples_.push_back(std::move(s));
}

// Looks the request up on its node, counts its hit per tier, then runs the
// promotions the lookup queued.
ClusterReplay::Hit ClusterReplay::Serve(Node& node, const TraceRequest& req) {
  const PrefixHit prefix = node.cache->Lookup(keys_);
  Hit hit;
  hit.blocks = prefix.blocks;
  for (size_t i = 0; i < prefix.blocks; ++i) {
    const uint32_t tokens = trace_.BlockTokens(req, static_cast<uint32_t>(i));
    const size_t tier = prefix.entries[i].tier;
    ++r_.tier_hit_blocks[tier];
    if (tier < cluster_.local_tiers) {
      hit.fetch_s += tokens * bpt_ / sc_.tiers[tier].read_bytes_per_s;
    } else {
      hit.fetch_s += sc_.shared_tier->latency_s + tokens * bpt_ / sc_.shared_tier->read_bytes_per_s;
      ++r_.shared_hit_blocks;
      r_.shared_hit_tokens += tokens;
      fetch_units_ += tokens;
    }
    hit.tokens += tokens;
  }
  node.cache->RunPromotions();
  return hit;
}

// Every block after the leading cached run, as the single-node replay
// inserts them (a full stack refusing a block is not an error).
Status ClusterReplay::InsertAfter(Node& node, const TraceRequest& req, size_t hit_blocks) {
  return InsertAfterHit(*node.cache, node.ledger, trace_, sc_, req, keys_, hit_blocks, payload_);
}

// The copies of the request's inserts, as kvtierd's sharer thread writes
// them, here at once so the replay is deterministic.
void ClusterReplay::WriteThrough(Node& node) {
  if (!cluster_.store) return;
  node.traffic.writing_through = true;
  node.cache->RunSharedWrites();
  node.traffic.writing_through = false;
}

void ClusterReplay::Tally(Node& node, const TraceRequest& req, const Hit& hit) {
  const double cold = req.input_tokens * prefill_s_per_token_;
  ttft_cold_ += cold;
  ttft_tiered_ += (req.input_tokens - hit.tokens) * prefill_s_per_token_ + hit.fetch_s;
  fetch_s_ += hit.fetch_s;
  ++r_.requests;
  r_.block_refs += req.num_blocks;
  r_.block_hits += hit.blocks;
  r_.tokens += req.input_tokens;
  r_.hit_tokens += hit.tokens;
  ++node.requests;
  node.tokens += req.input_tokens;
}

ClusterReplayResult ClusterReplay::Finish() {
  CollectStats();
  CollectCosts();
  return std::move(r_);
}

// The managers' counters, the network's bytes and each node's load.
void ClusterReplay::CollectStats() {
  uint64_t busiest = 0;
  for (const std::unique_ptr<Node>& node : cluster_.nodes) {
    const CacheStats s = node->cache->Stats();
    r_.shared_adopted += s.shared_adopted;
    r_.shared_writes += s.shared_writes;
    r_.shared_write_failures += s.shared_write_failures;
    r_.shared_write_skips += s.shared_write_skips;
    r_.promotions += s.promotions;
    r_.demotions += s.demotions;
    r_.remat_drops += s.remat_drops;
    r_.drops += s.drops;
    r_.expired += s.expired;
    r_.network_copy_bytes += node->traffic.read_units * bpt_;
    r_.network_write_bytes += node->traffic.write_units * bpt_;
    r_.shared_write_through_bytes += node->traffic.write_through_units * bpt_;
    r_.node_requests.push_back(node->requests);
    r_.node_tokens.push_back(node->tokens);
    busiest = std::max(busiest, node->tokens);
  }
  r_.network_fetch_bytes = fetch_units_ * bpt_;
  r_.busiest_node_token_share =
      r_.tokens > 0 ? static_cast<double>(busiest) / static_cast<double>(r_.tokens) : 0;
}

// Tiers provisioned per node × N plus the shared tier, or used by the bytes
// held (mean occupancy), and the GPU's time, as the single-node replay's
// CostSummary counts them.
void ClusterReplay::CollectCosts() {
  const double samples = static_cast<double>(samples_.size());
  for (size_t t = 0; t < cluster_.local_tiers; ++t) {
    const ScenarioTier& st = sc_.tiers[t];
    double mean_bytes = 0;
    for (const Sample& s : samples_) mean_bytes += s.local_bytes[t];
    mean_bytes /= samples;
    // One node's tier over the trace; used: the bytes all nodes held in it.
    const double usd = CostPerSecond(st.capacity_bytes, st.usd_per_gib_month) * r_.duration_s;
    r_.local_tier_usd += usd * cluster_.options.nodes;
    r_.local_tier_usd_used += usd * mean_bytes / st.capacity_bytes;
  }
  if (const std::optional<ScenarioSharedTier>& st = sc_.shared_tier) {
    double sum = 0;
    for (const Sample& s : samples_) {
      sum += s.shared_bytes;
      r_.shared_peak_used_bytes = std::max(r_.shared_peak_used_bytes, s.shared_bytes);
    }
    r_.shared_mean_used_bytes = sum / samples;
    r_.shared_tier_usd = CostPerSecond(st->capacity_bytes, st->usd_per_gib_month) * r_.duration_s;
    r_.shared_tier_usd_used = r_.shared_tier_usd * r_.shared_mean_used_bytes / st->capacity_bytes;
  }
  const double requests = std::max<double>(1, r_.requests);
  const double gpu_usd_per_s = sc_.gpu_usd_per_hour / 3600;
  CostSummary c;
  c.tier_usd = r_.local_tier_usd + r_.shared_tier_usd;
  c.tier_usd_used = r_.local_tier_usd_used + r_.shared_tier_usd_used;
  c.input_tokens = static_cast<double>(r_.tokens);
  c.hit_tokens = r_.hit_tokens;
  c.gpu_s = static_cast<double>(r_.tokens - r_.hit_tokens) * prefill_s_per_token_ + fetch_s_;
  c.gpu_usd = c.gpu_s * gpu_usd_per_s;
  c.mean_ttft_s = ttft_tiered_ / requests;
  r_.tiered = c;
  CostSummary cold;
  cold.input_tokens = c.input_tokens;
  cold.gpu_s = static_cast<double>(r_.tokens) * prefill_s_per_token_;
  cold.gpu_usd = cold.gpu_s * gpu_usd_per_s;
  cold.mean_ttft_s = ttft_cold_ / requests;
  r_.no_cache = cold;
  r_.ttft_saved_s = ttft_cold_ - ttft_tiered_;
}

}  // namespace

Status ParseClusterRouting(std::string_view text, ClusterReplayOptions* options) {
  if (text == "random") {
    options->routing = ClusterRouting::kRandom;
    return Status::Ok();
  }
  if (text == "prefix") {
    options->routing = ClusterRouting::kPrefix;
    options->prefix_blocks = 1;
    return Status::Ok();
  }
  constexpr std::string_view kPrefixOf = "prefix:";
  if (text.substr(0, kPrefixOf.size()) == kPrefixOf) {
    Result<int64_t> k = ParseInt(text.substr(kPrefixOf.size()));
    if (k.ok() && *k >= 1 && *k <= 1'000'000) {
      options->routing = ClusterRouting::kPrefix;
      options->prefix_blocks = static_cast<int>(*k);
      return Status::Ok();
    }
  }
  return Status::InvalidArgument("'" + std::string(text) +
                                 "' is not a routing: prefix (by the first block), prefix:K (by "
                                 "the first K blocks, K from 1 to 1000000) or random");
}

std::string ClusterRoutingName(const ClusterReplayOptions& options) {
  if (options.routing == ClusterRouting::kRandom) return "random";
  return options.prefix_blocks == 1 ? "prefix" : "prefix:" + std::to_string(options.prefix_blocks);
}

Status CheckClusterReplay(const Trace& trace, const TierScenario& sc,
                          const ClusterReplayOptions& options) {
  KVTIER_RETURN_IF_ERROR(ValidateTierScenario(sc));
  if (options.nodes < 1 || options.nodes > kMaxClusterNodes) {
    return Status::InvalidArgument("a cluster has 1 to " + std::to_string(kMaxClusterNodes) +
                                   " nodes, not " + std::to_string(options.nodes));
  }
  if (options.prefix_blocks < 1) {
    return Status::InvalidArgument("prefix routing needs at least one block");
  }
  for (const ScenarioTier& t : sc.tiers) {
    if (std::floor(t.capacity_bytes / sc.kv_bytes_per_token) < trace.block_tokens) {
      return Status::InvalidArgument("tier '" + t.name + "' holds less than one block of " +
                                     std::to_string(trace.block_tokens) + " tokens");
    }
  }
  if (const std::optional<ScenarioSharedTier>& st = sc.shared_tier) {
    const auto units =
        static_cast<uint64_t>(std::floor(st->capacity_bytes / sc.kv_bytes_per_token));
    if (units / static_cast<uint64_t>(options.nodes) < static_cast<uint64_t>(trace.block_tokens)) {
      return Status::InvalidArgument(
          "shared tier '" + st->name + "': a node's share (1/" + std::to_string(options.nodes) +
          ") holds less than one block of " + std::to_string(trace.block_tokens) + " tokens");
    }
  }
  return Status::Ok();
}

Result<ClusterReplayResult> ReplayCluster(const Trace& trace, const TierScenario& sc,
                                          const ClusterReplayOptions& options,
                                          const std::function<void(double)>& progress) {
  KVTIER_RETURN_IF_ERROR(CheckClusterReplay(trace, sc, options));
  const auto wall0 = std::chrono::steady_clock::now();
  KVTIER_ASSIGN_OR_RETURN(std::unique_ptr<Cluster> cluster, OpenCluster(trace, sc, options));
  ClusterReplay replay(trace, sc, *cluster);
  KVTIER_RETURN_IF_ERROR(replay.Run(progress));
  ClusterReplayResult r = replay.Finish();
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - wall0).count();
  return r;
}

}  // namespace kvtier
