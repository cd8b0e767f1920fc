#include "replay/tier_scenario.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>

#include "cache/admission.h"
#include "cache/eviction_policy.h"
#include "common/kv_geometry.h"

namespace kvtier {
namespace {

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

// Typed access to one JSON object, naming the field in every error.
class Fields {
 public:
  Fields(const nlohmann::json& j, std::string where) : j_(j), where_(std::move(where)) {}

  Status CheckObject(const std::vector<std::string>& known) const {
    if (!j_.is_object()) return Error("", "must be an object");
    for (const auto& [k, v] : j_.items()) {
      if (std::find(known.begin(), known.end(), k) == known.end()) {
        return Error(k, "is not a field here (known: " + Join(known) + ")");
      }
    }
    return Status::Ok();
  }
  bool Has(const std::string& k) const { return j_.contains(k); }
  const nlohmann::json& at(const std::string& k) const { return j_.at(k); }

  // A number in the allowed range; `fallback` when absent (nullopt: required).
  Result<double> Number(const std::string& k, std::optional<double> fallback, double min,
                        bool min_exclusive) const {
    if (!j_.contains(k)) {
      if (fallback) return *fallback;
      return Error(k, "is required");
    }
    const nlohmann::json& v = j_.at(k);
    if (!v.is_number()) return Error(k, "must be a number");
    const double d = v.get<double>();
    if (!std::isfinite(d) || d < min || (min_exclusive && d == min)) {
      return Error(k, std::string("must be a finite number ") + (min_exclusive ? "> " : ">= ") +
                          FormatNumber(min));
    }
    return d;
  }
  Result<std::string> String(const std::string& k, std::optional<std::string> fallback) const {
    if (!j_.contains(k)) {
      if (fallback) return *fallback;
      return Error(k, "is required");
    }
    if (!j_.at(k).is_string() || j_.at(k).get<std::string>().empty()) {
      return Error(k, "must be a non-empty string");
    }
    return j_.at(k).get<std::string>();
  }
  Status Error(const std::string& k, const std::string& what) const {
    return Status::InvalidArgument(where_ + (k.empty() ? "" : "." + k) + " " + what);
  }

 private:
  static std::string Join(const std::vector<std::string>& v) {
    std::string s;
    for (const std::string& x : v) s += (s.empty() ? "" : ", ") + x;
    return s;
  }
  static std::string FormatNumber(double d) {
    std::ostringstream o;
    o << d;
    return o.str();
  }
  const nlohmann::json& j_;
  std::string where_;
};

// KV bytes per token: given, or from the geometry.
Result<double> KvBytesPerToken(const Fields& m) {
  if (m.Has("kv_bytes_per_token")) {
    for (const char* k : {"layers", "kv_heads", "head_dim", "dtype"}) {
      if (m.Has(k)) return m.Error(k, "and kv_bytes_per_token exclude each other");
    }
    return m.Number("kv_bytes_per_token", std::nullopt, 0, true);
  }
  KVTIER_ASSIGN_OR_RETURN(const double layers, m.Number("layers", std::nullopt, 1, false));
  KVTIER_ASSIGN_OR_RETURN(const double heads, m.Number("kv_heads", std::nullopt, 1, false));
  KVTIER_ASSIGN_OR_RETURN(const double dim, m.Number("head_dim", std::nullopt, 1, false));
  KVTIER_ASSIGN_OR_RETURN(const std::string dtype, m.String("dtype", "bf16"));
  const std::optional<DType> d = ParseDType(dtype);
  if (!d) return m.Error("dtype", "must be f32, f16 or bf16");
  for (double x : {layers, heads, dim}) {
    if (x != std::floor(x) || x > 1e6) {
      return m.Error("", "layers, kv_heads and head_dim must be whole numbers");
    }
  }
  KvGeometry g;
  g.layers = static_cast<int>(layers);
  g.kv_heads = static_cast<int>(heads);
  g.head_dim = static_cast<int>(dim);
  g.dtype = *d;
  return static_cast<double>(g.BytesPerToken());
}

// The scenario's sections, each into `s`; a section left out keeps the
// defaults of TierScenario.
Status ParseModel(const Fields& m, TierScenario* s) {
  KVTIER_RETURN_IF_ERROR(m.CheckObject(
      {"name", "kv_bytes_per_token", "layers", "kv_heads", "head_dim", "dtype", "active_params"}));
  KVTIER_ASSIGN_OR_RETURN(s->model, m.String("name", "model"));
  KVTIER_ASSIGN_OR_RETURN(s->kv_bytes_per_token, KvBytesPerToken(m));
  KVTIER_ASSIGN_OR_RETURN(s->active_params, m.Number("active_params", std::nullopt, 0, true));
  return Status::Ok();
}

Status ParseGpu(const Fields& gpu, TierScenario* s) {
  KVTIER_RETURN_IF_ERROR(gpu.CheckObject({"prefill_flops_per_s", "usd_per_hour"}));
  KVTIER_ASSIGN_OR_RETURN(s->prefill_flops_per_s, gpu.Number("prefill_flops_per_s", 4e14, 0, true));
  KVTIER_ASSIGN_OR_RETURN(s->gpu_usd_per_hour, gpu.Number("usd_per_hour", 2.5, 0, false));
  return Status::Ok();
}

Status ParsePlacement(const Fields& p, TierScenario* s) {
  KVTIER_RETURN_IF_ERROR(p.CheckObject({"fetch_budget_ms", "default_idle_s"}));
  KVTIER_ASSIGN_OR_RETURN(const double budget_ms, p.Number("fetch_budget_ms", 1000, 0, true));
  s->fetch_budget_s = budget_ms / 1000;
  KVTIER_ASSIGN_OR_RETURN(s->default_idle_s, p.Number("default_idle_s", 600, 0, true));
  return Status::Ok();
}

// ttl_s and occupancy_samples.
Status ParseReplayFigures(const Fields& top, TierScenario* s) {
  KVTIER_ASSIGN_OR_RETURN(const double ttl_s, top.Number("ttl_s", 0.0, 0, false));
  if (ttl_s > 1e9) return top.Error("ttl_s", "must be at most 1e9 seconds");
  s->ttl_ms = static_cast<int64_t>(std::ceil(ttl_s * 1000));  // a TTL, however short, is one
  KVTIER_ASSIGN_OR_RETURN(const double samples, top.Number("occupancy_samples", 240, 1, false));
  if (samples > 100000 || samples != std::floor(samples)) {
    return top.Error("occupancy_samples", "must be a whole number up to 100000");
  }
  s->occupancy_samples = static_cast<int>(samples);
  return Status::Ok();
}

Result<ScenarioTier> ParseScenarioTier(const Fields& t) {
  KVTIER_RETURN_IF_ERROR(t.CheckObject(
      {"name", "capacity_gib", "read_gb_per_s", "usd_per_gib_month", "policy", "admission"}));
  ScenarioTier tier;
  KVTIER_ASSIGN_OR_RETURN(tier.name, t.String("name", std::nullopt));
  KVTIER_ASSIGN_OR_RETURN(const double gib, t.Number("capacity_gib", std::nullopt, 0, true));
  KVTIER_ASSIGN_OR_RETURN(const double gbps, t.Number("read_gb_per_s", std::nullopt, 0, true));
  if (gib > 1e9) return t.Error("capacity_gib", "must be at most 1e9 (an exbibyte)");
  tier.capacity_bytes = gib * kGiB;
  tier.read_bytes_per_s = gbps * 1e9;
  KVTIER_ASSIGN_OR_RETURN(tier.usd_per_gib_month,
                          t.Number("usd_per_gib_month", std::nullopt, 0, false));
  KVTIER_ASSIGN_OR_RETURN(tier.policy, t.String("policy", "lru"));
  if (NewEvictionPolicy(tier.policy) == nullptr) {
    return t.Error("policy", "'" + tier.policy + "' is not an eviction policy");
  }
  KVTIER_ASSIGN_OR_RETURN(tier.admission, t.String("admission", "none"));
  if (!IsAdmissionFilterName(tier.admission)) {
    return t.Error("admission", "'" + tier.admission + "' is not an admission filter");
  }
  return tier;
}

// "cluster": {"shared_tier": {...}}: the cluster replay's shared tier.
Status ParseCluster(const Fields& c, const std::string& where, TierScenario* s) {
  KVTIER_RETURN_IF_ERROR(c.CheckObject({"shared_tier"}));
  if (!c.Has("shared_tier")) return Status::Ok();
  const Fields t(c.at("shared_tier"), where + ".shared_tier");
  KVTIER_RETURN_IF_ERROR(t.CheckObject({"name", "capacity_gib", "read_gb_per_s", "latency_ms",
                                        "usd_per_gib_month", "policy", "admission", "max_ttl_s"}));
  ScenarioSharedTier shared;
  KVTIER_ASSIGN_OR_RETURN(shared.name, t.String("name", "cluster"));
  for (const ScenarioTier& local : s->tiers) {
    if (local.name == shared.name) {
      return t.Error("name", "'" + shared.name + "' is the name of a local tier");
    }
  }
  KVTIER_ASSIGN_OR_RETURN(const double gib, t.Number("capacity_gib", std::nullopt, 0, true));
  if (gib > 1e9) return t.Error("capacity_gib", "must be at most 1e9 (an exbibyte)");
  shared.capacity_bytes = gib * kGiB;
  KVTIER_ASSIGN_OR_RETURN(const double gbps, t.Number("read_gb_per_s", std::nullopt, 0, true));
  shared.read_bytes_per_s = gbps * 1e9;
  KVTIER_ASSIGN_OR_RETURN(const double latency_ms, t.Number("latency_ms", 0.0, 0, false));
  if (latency_ms > 60000) return t.Error("latency_ms", "must be at most 60000 (a minute)");
  shared.latency_s = latency_ms / 1000;
  KVTIER_ASSIGN_OR_RETURN(shared.usd_per_gib_month,
                          t.Number("usd_per_gib_month", std::nullopt, 0, false));
  KVTIER_ASSIGN_OR_RETURN(shared.policy, t.String("policy", "lru"));
  if (NewEvictionPolicy(shared.policy) == nullptr) {
    return t.Error("policy", "'" + shared.policy + "' is not an eviction policy");
  }
  KVTIER_ASSIGN_OR_RETURN(shared.admission, t.String("admission", "none"));
  if (!IsAdmissionFilterName(shared.admission)) {
    return t.Error("admission", "'" + shared.admission + "' is not an admission filter");
  }
  KVTIER_ASSIGN_OR_RETURN(const double max_ttl_s, t.Number("max_ttl_s", 3600.0, 0, false));
  if (max_ttl_s > 1e9) return t.Error("max_ttl_s", "must be at most 1e9 seconds");
  shared.max_ttl_ms = static_cast<int64_t>(std::ceil(max_ttl_s * 1000));
  s->shared_tier = std::move(shared);
  return Status::Ok();
}

}  // namespace

Status ValidateTierScenario(const TierScenario& s) {
  if (s.tiers.empty() || s.tiers.size() > 8) {
    return Status::InvalidArgument("a scenario needs 1 to 8 tiers");
  }
  if (!(s.kv_bytes_per_token > 0) || !(s.active_params > 0) || !(s.prefill_flops_per_s > 0) ||
      !(s.gpu_usd_per_hour >= 0) || !(s.fetch_budget_s > 0) || !(s.default_idle_s > 0) ||
      s.ttl_ms < 0 || s.occupancy_samples < 1) {
    return Status::InvalidArgument(
        "scenario figures: KV bytes per token, active parameters, FLOP/s, fetch budget and "
        "default idle time must be > 0; GPU price and TTL >= 0");
  }
  for (const ScenarioTier& t : s.tiers) {
    if (!(t.capacity_bytes > 0) || !(t.read_bytes_per_s > 0) || !(t.usd_per_gib_month >= 0)) {
      return Status::InvalidArgument("tier '" + t.name +
                                     "': capacity and bandwidth must be > 0, price >= 0");
    }
    if (NewEvictionPolicy(t.policy) == nullptr) {
      return Status::InvalidArgument("tier '" + t.name + "': unknown eviction policy '" + t.policy +
                                     "'");
    }
    if (!IsAdmissionFilterName(t.admission)) {
      return Status::InvalidArgument("tier '" + t.name + "': unknown admission filter '" +
                                     t.admission + "'");
    }
  }
  if (const std::optional<ScenarioSharedTier>& t = s.shared_tier) {
    if (!(t->capacity_bytes > 0) || !(t->read_bytes_per_s > 0) || !(t->latency_s >= 0) ||
        !(t->usd_per_gib_month >= 0) || t->max_ttl_ms < 0) {
      return Status::InvalidArgument("shared tier '" + t->name +
                                     "': capacity and bandwidth must be > 0, latency, price "
                                     "and maximum TTL >= 0");
    }
    for (const ScenarioTier& local : s.tiers) {
      if (local.name == t->name) {
        return Status::InvalidArgument("shared tier '" + t->name +
                                       "' has the name of a local tier");
      }
    }
    if (NewEvictionPolicy(t->policy) == nullptr) {
      return Status::InvalidArgument("shared tier '" + t->name + "': unknown eviction policy '" +
                                     t->policy + "'");
    }
    if (!IsAdmissionFilterName(t->admission)) {
      return Status::InvalidArgument("shared tier '" + t->name + "': unknown admission filter '" +
                                     t->admission + "'");
    }
  }
  return Status::Ok();
}

Result<TierScenario> ParseTierScenario(const std::string& text, const std::string& name) {
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return Status::InvalidArgument(name + ": not valid JSON");
  const Fields top(j, name + ":");
  KVTIER_RETURN_IF_ERROR(top.CheckObject(
      {"name", "model", "gpu", "placement", "ttl_s", "tiers", "occupancy_samples", "cluster"}));
  TierScenario s;
  KVTIER_ASSIGN_OR_RETURN(s.name, top.String("name", std::filesystem::path(name).stem().string()));
  if (!top.Has("model")) return top.Error("model", "is required");
  KVTIER_RETURN_IF_ERROR(ParseModel(Fields(top.at("model"), name + ": model"), &s));
  if (top.Has("gpu")) {
    KVTIER_RETURN_IF_ERROR(ParseGpu(Fields(top.at("gpu"), name + ": gpu"), &s));
  }
  if (top.Has("placement")) {
    KVTIER_RETURN_IF_ERROR(ParsePlacement(Fields(top.at("placement"), name + ": placement"), &s));
  }
  KVTIER_RETURN_IF_ERROR(ParseReplayFigures(top, &s));
  if (!top.Has("tiers") || !top.at("tiers").is_array() || top.at("tiers").empty() ||
      top.at("tiers").size() > 8) {
    return top.Error("tiers", "must be a list of 1 to 8 tiers, the top (fastest) first");
  }
  for (size_t i = 0; i < top.at("tiers").size(); ++i) {
    const Fields t(top.at("tiers")[i], name + ": tiers[" + std::to_string(i) + "]");
    KVTIER_ASSIGN_OR_RETURN(ScenarioTier tier, ParseScenarioTier(t));
    for (const ScenarioTier& other : s.tiers) {
      if (other.name == tier.name) return t.Error("name", "'" + tier.name + "' is used twice");
    }
    s.tiers.push_back(std::move(tier));
  }
  if (top.Has("cluster")) {  // after the tiers: its name may not repeat theirs
    KVTIER_RETURN_IF_ERROR(
        ParseCluster(Fields(top.at("cluster"), name + ": cluster"), name + ": cluster", &s));
  }
  KVTIER_RETURN_IF_ERROR(ValidateTierScenario(s));
  return s;
}

Result<TierScenario> ReadTierScenario(const std::string& path) {
  std::ifstream in(path);
  if (!in) return Status::NotFound("cannot open scenario " + path);
  std::ostringstream text;
  text << in.rdbuf();
  if (text.str().size() > (1u << 20)) {
    return Status::InvalidArgument(path + ": a scenario is at most 1 MiB");
  }
  return ParseTierScenario(text.str(), path);
}

}  // namespace kvtier
