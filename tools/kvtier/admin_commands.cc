// The commands about the daemon itself: health, stats and billing report.
#include <cstdio>
#include <ctime>
#include <functional>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "tools/kvtier/command.h"

namespace kvtier::cli {

using nlohmann::json;

Exit Health(const Command& c) {
  Result<v1::HealthResponse> h = c.client.Health();
  if (!h.ok()) return Exit(kExitFailed, "no daemon answers: " + h.status().message());
  std::ostringstream text;
  text << h->status() << " kvtierd " << h->version() << " at " << h->listen() << ", up "
       << h->uptime_ms() / 1000 << " s\n";
  c.out.Print({{"ok", true},
               {"status", h->status()},
               {"version", h->version()},
               {"listen", h->listen()},
               {"uptime_ms", h->uptime_ms()}},
              text.str());
  return {};
}

namespace {

json StatsJson(const v1::StatsResponse& s) {
  json tiers = json::array();
  for (const v1::TierStats& t : s.tiers()) {
    tiers.push_back({{"name", t.name()},
                     {"capacity_bytes", t.capacity_bytes()},
                     {"used_bytes", t.used_bytes()},
                     {"allocated_bytes", t.allocated_bytes()},
                     {"blocks", t.blocks()},
                     {"read_bytes_per_s", t.read_bytes_per_s()},
                     {"write_bytes_per_s", t.write_bytes_per_s()},
                     {"persistent", t.persistent()},
                     {"corruption_errors", t.corruption_errors()},
                     {"io_errors", t.io_errors()},
                     {"max_block_bytes", t.max_block_bytes()},
                     {"policy", t.policy()},
                     {"cost_per_s", t.cost_per_s()},
                     {"drain_time_s", t.drain_time_s()}});
  }
  json j = {{"ok", true},
            {"tiers", tiers},
            {"indexed_blocks", s.indexed_blocks()},
            {"lookups", s.lookups()},
            {"lookup_blocks", s.lookup_blocks()},
            {"lookup_hit_blocks", s.lookup_hit_blocks()},
            {"reads", s.reads()},
            {"read_hits", s.read_hits()},
            {"read_misses", s.read_misses()},
            {"inserts", s.inserts()},
            {"refreshes", s.refreshes()},
            {"insert_bytes", s.insert_bytes()},
            {"insert_failures", s.insert_failures()},
            {"admission_refusals", s.admission_refusals()},
            {"demotions", s.demotions()},
            {"demotion_failures", s.demotion_failures()},
            {"drops", s.drops()},
            {"expired", s.expired()},
            {"placed", s.placed()},
            {"promotions", s.promotions()},
            {"promotion_skips", s.promotion_skips()},
            {"remat_drops", s.remat_drops()},
            {"aged_out", s.aged_out()},
            {"corruption_misses", s.corruption_misses()},
            {"default_block_tokens", s.default_block_tokens()},
            {"default_namespace", s.default_namespace()}};
  j["shared_adopted"] = s.shared_adopted();
  j["shared_writes"] = s.shared_writes();
  j["shared_write_failures"] = s.shared_write_failures();
  if (s.peers_size() > 0) {
    json peers = json::array();
    for (const v1::PeerNodeStats& p : s.peers()) {
      peers.push_back({{"peer", p.peer()},
                       {"calls", p.calls()},
                       {"errors", p.errors()},
                       {"found_blocks", p.found_blocks()},
                       {"read_blocks", p.read_blocks()},
                       {"read_bytes", p.read_bytes()},
                       {"written_blocks", p.written_blocks()},
                       {"seconds", p.seconds()},
                       {"down", p.down()}});
    }
    j["peers"] = peers;
  }
  if (s.has_cluster()) {
    const v1::ClusterTierStats& c = s.cluster();
    j["cluster"] = {{"read_blocks", c.read_blocks()},
                    {"read_bytes", c.read_bytes()},
                    {"read_misses", c.read_misses()},
                    {"write_blocks", c.write_blocks()},
                    {"write_bytes", c.write_bytes()},
                    {"read_seconds", c.read_seconds()},
                    {"write_seconds", c.write_seconds()},
                    {"commands", c.commands()},
                    {"errors", c.errors()},
                    {"redirects", c.redirects()},
                    {"slot_refreshes", c.slot_refreshes()}};
  }
  if (s.has_engine()) {
    const v1::EngineStats& e = s.engine();
    j["engine"] = {{"model", e.model()},
                   {"params", e.params()},
                   {"steps", e.steps()},
                   {"requests", e.requests()},
                   {"finished", e.finished()},
                   {"preemptions", e.preemptions()},
                   {"prefill_tokens", e.prefill_tokens()},
                   {"decode_tokens", e.decode_tokens()},
                   {"cached_tokens", e.cached_tokens()},
                   {"published_blocks", e.published_blocks()},
                   {"publish_failures", e.publish_failures()},
                   {"running", e.running()},
                   {"waiting", e.waiting()},
                   {"free_pages", e.free_pages()},
                   {"total_pages", e.total_pages()}};
  }
  return j;
}

std::string StatsText(const v1::StatsResponse& s) {
  std::ostringstream text;
  text << "tiers:\n";
  for (const v1::TierStats& t : s.tiers()) {
    text << "  " << t.name() << " (" << t.policy() << ", drains in " << t.drain_time_s()
         << " s): " << t.blocks() << " blocks, " << t.used_bytes() << " / " << t.capacity_bytes()
         << " bytes used, read " << t.read_bytes_per_s() / 1e9 << " GB/s, write "
         << t.write_bytes_per_s() / 1e9 << " GB/s (measured at start), " << t.corruption_errors()
         << " corruption errors, " << t.io_errors() << " I/O errors\n";
  }
  text << "indexed blocks: " << s.indexed_blocks() << "\nlookups: " << s.lookups() << " ("
       << s.lookup_hit_blocks() << " of " << s.lookup_blocks()
       << " blocks hit)\nreads: " << s.reads() << " (" << s.read_hits() << " hits, "
       << s.read_misses() << " misses)\ninserts: " << s.inserts() << " (+" << s.refreshes()
       << " refreshes, " << s.insert_bytes() << " bytes, " << s.insert_failures() << " refused, "
       << s.admission_refusals() << " declined by admission)\nplacement: " << s.placed()
       << " placed, " << s.promotions() << " promoted, " << s.demotions() << " demoted, "
       << s.remat_drops() << " dropped for recompute (" << s.aged_out() << " of these aged out), "
       << s.drops() << " dropped with no tier below, " << s.expired()
       << " expired\ndefault namespace: " << s.default_namespace() << "\n";
  if (s.shared_adopted() + s.shared_writes() + s.shared_write_failures() > 0 ||
      s.peers_size() > 0 || s.has_cluster()) {
    text << "shared: " << s.shared_adopted() << " blocks found that other nodes wrote, "
         << s.shared_writes() << " copies sent, " << s.shared_write_failures() << " refused\n";
  }
  for (const v1::PeerNodeStats& p : s.peers()) {
    text << "peer " << p.peer() << (p.down() ? " (DOWN)" : "") << ": " << p.calls() << " calls ("
         << p.errors() << " failed, " << (p.calls() > 0 ? p.seconds() / p.calls() * 1e3 : 0)
         << " ms each), " << p.found_blocks() << " blocks found, " << p.read_blocks() << " read ("
         << p.read_bytes() << " bytes), " << p.written_blocks() << " sent\n";
  }
  if (s.has_cluster()) {
    const v1::ClusterTierStats& c = s.cluster();
    text << "cluster tier: " << c.read_blocks() << " blocks read (" << c.read_bytes() << " bytes, "
         << c.read_misses() << " misses), " << c.write_blocks() << " written (" << c.write_bytes()
         << " bytes), " << c.commands() << " Redis commands, " << c.errors() << " errors, "
         << c.redirects() << " redirections, " << c.slot_refreshes() << " slot-map reloads\n";
  }
  if (s.has_engine()) {
    const v1::EngineStats& e = s.engine();
    text << "engine: " << e.model() << ", " << e.params() << " params, " << e.requests()
         << " requests (" << e.finished() << " finished, " << e.running() << " running, "
         << e.waiting() << " waiting), " << e.prefill_tokens() << " prefill + " << e.decode_tokens()
         << " decode tokens, " << e.cached_tokens() << " tokens from the cache, "
         << e.published_blocks() << " blocks published, " << e.free_pages() << " / "
         << e.total_pages() << " KV pages free\n";
  }
  return text.str();
}

}  // namespace

Exit Stats(const Command& c) {
  if (c.flags.Has("mrc")) return StatsMrc(c);
  if (c.flags.Has("mrc-add")) return UsageError("--mrc-add needs --mrc");
  KVTIER_ASSIGN_OR_RETURN(const v1::StatsResponse s, c.client.Stats());
  c.out.Print(StatsJson(s), StatsText(s));
  return {};
}

namespace {

// "YYYY-MM-DD" (UTC midnight) or Unix ms.
Result<int64_t> DayOrMs(const std::string& text) {
  int y = 0, m = 0, d = 0;
  char tail = 0;
  if (std::sscanf(text.c_str(), "%4d-%2d-%2d%c", &y, &m, &d, &tail) == 3) {
    std::tm tm{};
    tm.tm_year = y - 1900;
    tm.tm_mon = m - 1;
    tm.tm_mday = d;
    const std::time_t t = timegm(&tm);
    if (m < 1 || m > 12 || d < 1 || d > 31 || t < 0) {
      return Status::InvalidArgument("'" + text + "' is not a day YYYY-MM-DD");
    }
    return static_cast<int64_t>(t) * 1000;
  }
  Result<int64_t> ms = ParseInt(text);
  if (!ms.ok()) return Status::InvalidArgument("'" + text + "' is neither YYYY-MM-DD nor Unix ms");
  return ms;
}

Result<v1::BillingReportRequest> BillingRequestFromFlags(const FlagSet& flags, bool json) {
  v1::BillingReportRequest req;
  req.set_tenant(flags.Get("tenant"));
  if (req.tenant().empty()) return Status::InvalidArgument("billing report needs --tenant");
  for (auto [flag, setter] : {std::pair<const char*, std::function<void(int64_t)>>{
                                  "from", [&](int64_t v) { req.set_from_ms(v); }},
                              {"to", [&](int64_t v) { req.set_to_ms(v); }}}) {
    if (!flags.Has(flag)) continue;
    Result<int64_t> v = DayOrMs(flags.Get(flag));
    if (!v.ok()) {
      return Status::InvalidArgument("--" + std::string(flag) + ": " + v.status().message());
    }
    setter(*v);
  }
  req.set_group_by(flags.Get("group-by", "model"));
  req.set_format(json ? "json" : flags.Get("format", "table"));
  return req;
}

}  // namespace

// Prints the report as the daemon rendered it (table, CSV or JSON).
Exit BillingReport(const Command& c) {
  Result<v1::BillingReportRequest> req = BillingRequestFromFlags(c.flags, c.out.as_json());
  if (!req.ok()) return UsageError(req.status());
  KVTIER_ASSIGN_OR_RETURN(const v1::BillingReportResponse r, c.client.BillingReport(*req));
  std::cout << r.rendered();
  if (!r.rendered().empty() && r.rendered().back() != '\n') std::cout << "\n";
  return {};
}

}  // namespace kvtier::cli
