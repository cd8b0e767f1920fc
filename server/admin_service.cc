#include "server/admin_service.h"

#include <grpcpp/grpcpp.h>

#include <cmath>

#include "proto/status_codes.h"
#include "server/block_scope.h"
#include "server/peer_tier.h"
#include "tiers/cluster/redis_tier.h"

namespace kvtier {
namespace {

void FillMrc(const MrcSnapshot& s, v1::MrcStats* out) {
  out->set_uses(s.uses);
  out->set_sampled_uses(s.sampled_uses);
  out->set_sampling_rate(s.sampling_rate);
  out->set_sampled_blocks(s.sampled_keys);
  out->set_max_sampled_blocks(s.max_sampled_keys);
  for (const MrcPoint& p : s.curve) {
    v1::MrcPoint* point = out->add_curve();
    point->set_size_bytes(p.size_bytes);
    point->set_hit_ratio(p.hit_ratio);
  }
}

}  // namespace

const char* KvtierVersion() { return "0.1.0"; }

AdminService::AdminService(CacheManager& cache, const Engine* engine,
                           const Namespace& default_namespace, Clock* clock, CallGate& gate)
    : cache_(cache),
      engine_(engine),
      default_namespace_(default_namespace),
      clock_(clock),
      started_ms_(clock->NowMs()),
      gate_(gate) {}

grpc::ServerUnaryReactor* AdminService::Health(grpc::CallbackServerContext* ctx,
                                               const v1::HealthRequest*, v1::HealthResponse* resp) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  auto pass = gate_.Enter();
  if (!pass) {
    reactor->Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, "kvtierd is shutting down"));
    return reactor;
  }
  resp->set_status("SERVING");
  resp->set_version(KvtierVersion());
  resp->set_uptime_ms(clock_->NowMs() - started_ms_);
  {
    std::lock_guard<std::mutex> lock(mu_);
    resp->set_listen(listen_);
    resp->set_metrics_listen(metrics_listen_);
    resp->set_http_listen(http_listen_);
    resp->set_shm_socket(shm_socket_);
  }
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::Status AdminService::Stats(grpc::ServerContext* ctx, const v1::StatsRequest*,
                                 v1::StatsResponse* resp) {
  auto pass = gate_.Enter();
  if (!pass) return grpc::Status(grpc::StatusCode::UNAVAILABLE, "kvtierd is shutting down");
  if (auth_ != nullptr && auth_->enabled()) {
    if (grpc::Status s = auth_->AuthenticateAdmin(ctx); !s.ok()) return s;
  }
  const CacheStats s = cache_.Stats();
  for (const TierInfo& t : s.tiers) {
    v1::TierStats* out = resp->add_tiers();
    out->set_name(t.name);
    out->set_capacity_bytes(t.capacity_bytes);
    out->set_used_bytes(t.used_bytes);
    out->set_allocated_bytes(t.allocated_bytes);
    out->set_blocks(t.blocks);
    out->set_read_bytes_per_s(t.read_bytes_per_s);
    out->set_write_bytes_per_s(t.write_bytes_per_s);
    out->set_persistent(t.persistent);
    out->set_corruption_errors(t.corruption_errors);
    out->set_io_errors(t.io_errors);
    out->set_max_block_bytes(t.max_block_bytes);
    const size_t i = static_cast<size_t>(resp->tiers_size() - 1);
    if (i < policies_.size()) out->set_policy(policies_[i]);
    const CostModel& model = cache_.cost_model();
    if (i < model.tier_count()) {
      out->set_cost_per_s(model.tier(i).cost_per_s);
      const double drain = model.DrainTimeS(i);
      if (std::isfinite(drain)) out->set_drain_time_s(drain);
    }
  }
  resp->set_indexed_blocks(s.indexed_blocks);
  resp->set_lookups(s.lookups);
  resp->set_lookup_blocks(s.lookup_blocks);
  resp->set_lookup_hit_blocks(s.lookup_hit_blocks);
  resp->set_reads(s.reads);
  resp->set_read_hits(s.read_hits);
  resp->set_read_misses(s.read_misses);
  resp->set_inserts(s.inserts);
  resp->set_refreshes(s.refreshes);
  resp->set_insert_bytes(s.insert_bytes);
  resp->set_insert_failures(s.insert_failures);
  resp->set_admission_refusals(s.admission_refusals);
  resp->set_demotions(s.demotions);
  resp->set_demotion_failures(s.demotion_failures);
  resp->set_drops(s.drops);
  resp->set_expired(s.expired);
  resp->set_corruption_misses(s.corruption_misses);
  resp->set_placed(s.placed);
  resp->set_promotions(s.promotions);
  resp->set_promotion_skips(s.promotion_skips);
  resp->set_remat_drops(s.remat_drops);
  resp->set_aged_out(s.aged_out);
  resp->set_shared_adopted(s.shared_adopted);
  resp->set_shared_writes(s.shared_writes);
  resp->set_shared_write_failures(s.shared_write_failures);
  if (peer_tier_ != nullptr) {
    if (Result<std::vector<PeerStats>> peers = PeerTierStatsOf(*peer_tier_); peers.ok()) {
      for (const PeerStats& p : *peers) {
        v1::PeerNodeStats* out = resp->add_peers();
        out->set_peer(p.peer);
        out->set_calls(p.calls);
        out->set_errors(p.errors);
        out->set_found_blocks(p.found_blocks);
        out->set_read_blocks(p.read_blocks);
        out->set_read_bytes(p.read_bytes);
        out->set_written_blocks(p.written_blocks);
        out->set_seconds(p.seconds);
        out->set_down(p.down);
      }
    }
  }
  if (cluster_tier_ != nullptr) {
    if (Result<RedisTierStats> c = RedisTierStatsOf(*cluster_tier_); c.ok()) {
      v1::ClusterTierStats* out = resp->mutable_cluster();
      out->set_read_blocks(c->read_blocks);
      out->set_read_bytes(c->read_bytes);
      out->set_read_misses(c->read_misses);
      out->set_write_blocks(c->write_blocks);
      out->set_write_bytes(c->write_bytes);
      out->set_read_seconds(c->read_seconds);
      out->set_write_seconds(c->write_seconds);
      out->set_commands(c->cluster.commands);
      out->set_errors(c->cluster.errors);
      out->set_redirects(c->cluster.redirects);
      out->set_slot_refreshes(c->cluster.refreshes);
    }
  }
  FillMrc(cache_.MissRatioCurve(), resp->mutable_mrc());
  resp->set_default_block_tokens(static_cast<uint32_t>(default_namespace_.block_tokens));
  resp->set_default_namespace(default_namespace_.ToString());
  if (engine_ != nullptr) {
    const EngineStats e = engine_->Stats();
    const Namespace ns = engine_->CacheNamespace("");
    v1::EngineStats* out = resp->mutable_engine();
    out->set_model(ns.model_id + "@" + ns.model_revision);
    out->set_params(engine_->weights().config.ActiveParams());
    out->set_steps(e.steps);
    out->set_requests(e.requests);
    out->set_finished(e.finished);
    out->set_preemptions(e.preemptions);
    out->set_cancelled(e.cancelled);
    out->set_prefill_tokens(e.prefill_tokens);
    out->set_decode_tokens(e.decode_tokens);
    out->set_cached_tokens(e.cached_tokens);
    out->set_published_blocks(e.published_blocks);
    out->set_publish_failures(e.publish_failures);
    out->set_running(e.running);
    out->set_waiting(e.waiting);
    out->set_free_pages(e.free_pages);
    out->set_total_pages(e.total_pages);
  }
  return grpc::Status::OK;
}

namespace {

void FillCosts(const CacheManager& cache, const PlacementCosts& costs,
               google::protobuf::RepeatedPtrField<v1::TierCost>* out) {
  for (size_t t = 0; t < costs.tier_costs.size(); ++t) {
    v1::TierCost* c = out->Add();
    c->set_tier(cache.tier_name(t));
    c->set_allowed(std::isfinite(costs.tier_costs[t]));
    if (c->allowed()) c->set_cost_usd(costs.tier_costs[t]);
    const double drain = cache.cost_model().DrainTimeS(t);
    if (std::isfinite(drain)) c->set_drain_time_s(drain);
  }
}

}  // namespace

grpc::Status AdminService::Explain(grpc::ServerContext* ctx, const v1::ExplainRequest* req,
                                   v1::ExplainResponse* resp) {
  auto pass = gate_.Enter();
  if (!pass) return grpc::Status(grpc::StatusCode::UNAVAILABLE, "kvtierd is shutting down");
  // The key is a tenant's (its block calls' view of it, DESIGN §2): the
  // admin names the tenant ("" = its own) and the namespace.
  if (auth_ == nullptr) return grpc::Status(grpc::StatusCode::INTERNAL, "no authenticator");
  Principal admin;
  if (grpc::Status s = auth_->Authenticate(ctx, "", &admin); !s.ok()) return s;
  if (!admin.admin) {
    return grpc::Status(grpc::StatusCode::PERMISSION_DENIED, "this call needs an admin API key");
  }
  std::optional<BlockKey> visible = BlockKey::FromBytes(req->key());
  if (!visible) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "key must be 16 bytes, not " + std::to_string(req->key().size()));
  }
  Result<BlockScope> scope =
      ResolveBlockScope(default_namespace_, auth_->secret(),
                        auth_->PrincipalOf(req->tenant().empty() ? admin.tenant : req->tenant()),
                        req->has_namespace_(), req->namespace_());
  if (!scope.ok()) return ToGrpcStatus(scope.status());
  Result<BlockExplanation> x = cache_.Explain(scope->Stored(*visible));
  if (!x.ok()) return grpc::Status(grpc::StatusCode::NOT_FOUND, x.status().message());
  const IndexEntry& e = x->entry;
  v1::BlockInfo* b = resp->mutable_block();
  b->set_key(req->key());
  b->set_size_bytes(e.bytes);
  b->set_tier(x->tier_name);
  if (e.expiry_ms != kNoExpiry) b->set_expire_time_ms(e.expiry_ms);
  resp->set_decision(DecisionKindName(e.decision.kind));
  if (e.decision.kind == DecisionKind::kPromoted || e.decision.kind == DecisionKind::kDemoted) {
    resp->set_from_tier(cache_.tier_name(e.decision.from_tier));
  }
  resp->set_decided_at_ms(e.decision.at_ms);
  resp->set_decision_idle_s(e.decision.idle_s);
  FillCosts(cache_, x->decision_costs, resp->mutable_decision_costs());
  resp->set_remat_known(std::isfinite(x->decision_costs.remat_cost));
  if (resp->remat_known()) resp->set_remat_cost_usd(x->decision_costs.remat_cost);
  resp->set_ttl_ms(e.ttl_ms);
  if (x->reuse_estimate_s) resp->set_reuse_estimate_s(*x->reuse_estimate_s);
  resp->set_expected_idle_s(x->expected_idle_s);
  resp->set_reuse_probability(x->reuse_probability);
  resp->set_depth(e.depth);
  resp->set_uses(e.uses);
  FillCosts(cache_, x->costs_now, resp->mutable_costs_now());
  resp->set_pins(e.pins);
  resp->set_cached_children(e.cached_children);
  resp->set_tokens(e.tokens);
  resp->set_last_access_ms(e.last_access_ms);
  return grpc::Status::OK;
}

}  // namespace kvtier
