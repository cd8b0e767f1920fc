#include "tools/admin_service.h"

#include <grpcpp/grpcpp.h>

namespace kvtier {

const char* KvtierVersion() { return "0.1.0"; }

AdminService::AdminService(CacheManager& cache, const Engine* engine,
                           const Namespace& default_namespace, Clock* clock, CallGate& gate)
    : cache_(cache),
      engine_(engine),
      default_namespace_(default_namespace),
      clock_(clock),
      started_ms_(clock->NowMs()),
      gate_(gate) {}

grpc::Status AdminService::Health(grpc::ServerContext*, const v1::HealthRequest*,
                                  v1::HealthResponse* resp) {
  auto pass = gate_.Enter();
  if (!pass) return grpc::Status(grpc::StatusCode::UNAVAILABLE, "kvtierd is shutting down");
  resp->set_status("SERVING");
  resp->set_version(KvtierVersion());
  resp->set_uptime_ms(clock_->NowMs() - started_ms_);
  {
    std::lock_guard<std::mutex> lock(mu_);
    resp->set_listen(listen_);
  }
  return grpc::Status::OK;
}

grpc::Status AdminService::Stats(grpc::ServerContext*, const v1::StatsRequest*,
                                 v1::StatsResponse* resp) {
  auto pass = gate_.Enter();
  if (!pass) return grpc::Status(grpc::StatusCode::UNAVAILABLE, "kvtierd is shutting down");
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
  resp->set_demotions(s.demotions);
  resp->set_demotion_failures(s.demotion_failures);
  resp->set_drops(s.drops);
  resp->set_expired(s.expired);
  resp->set_corruption_misses(s.corruption_misses);
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

}  // namespace kvtier
