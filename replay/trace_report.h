// The reports of kvtier-trace's multi-tier replay (replay/tier_replay.h): its
// terminal tables, JSON, Markdown, CSV and tier-occupancy plot, and the
// gnuplot runner both of the tool's plots use; and of its cluster mode
// (replay/cluster_replay.h).
#pragma once

#include <nlohmann/json.hpp>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "common/status.h"
#include "replay/cluster_replay.h"
#include "replay/tier_replay.h"

namespace kvtier {

// Renders a gnuplot script (its data written beside it); kUnavailable when
// gnuplot fails or is not installed.
Status RunGnuplot(const std::string& script);

// part / whole, 0 when whole is 0.
double Share(double part, double whole);
// "12.3 GiB": binary units for capacities and bytes moved.
std::string Bytes(double b);

// The scenario's replay: one JSON object (kvtier-trace --json's "scenario"),
// the terminal table, Markdown tables, and CSV (--tier-csv: a row per tier,
// then one per way of serving the trace).
nlohmann::json ScenarioJson(const TierScenario& sc, const TierReplayResult& r);
void PrintScenario(const TierScenario& sc, const TierReplayResult& r);
void ScenarioMarkdown(std::ostream& md, const TierScenario& sc, const TierReplayResult& r);
void WriteTierCsv(std::ostream& csv, const TierReplayResult& r);
// DIR/occupancy.{dat,gp,svg}: each tier's used fraction of its capacity over
// the trace's time.
Status PlotOccupancy(const std::string& dir, const std::string& trace, const TierScenario& sc,
                     const TierReplayResult& r);

// --tier-policies: the same stack replayed once per policy.
using TierPolicyRuns = std::vector<std::pair<std::string, TierReplayResult>>;
nlohmann::json TierPoliciesJson(const TierPolicyRuns& runs);
void PrintTierPolicies(const TierPolicyRuns& runs);
void TierPoliciesMarkdown(std::ostream& md, const TierPolicyRuns& runs);

// --cluster-nodes: the scenario replayed by N nodes, one run per N. JSON
// (kvtier-trace --json's "cluster": an object per run), the terminal table
// and Markdown.
using ClusterRuns = std::vector<ClusterReplayResult>;
nlohmann::json ClusterJson(const ClusterRuns& runs);
void PrintCluster(const TierScenario& sc, const ClusterRuns& runs);
void ClusterMarkdown(std::ostream& md, const TierScenario& sc, const ClusterRuns& runs);

}  // namespace kvtier
