// Billing reports (DESIGN §7): a tenant's ledger records over a period,
// aggregated by model or by UTC day, rendered as a table, CSV or JSON.
//
// Every amount is summed in integer nano-dollars, so a report's rows add up
// to its total exactly; the renderers print dollars to the micro-dollar
// (FormatUsd), and JSON also carries the exact `*_nanousd` integers.
// Pure functions; thread-safe.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "context/ledger.h"
#include "context/pricing.h"

namespace kvtier {

enum class GroupBy { kModel, kDay };

const char* GroupByName(GroupBy group_by);  // "model" or "day"

struct ReportRow {
  std::string group;      // the model, the UTC day "YYYY-MM-DD", or "total"
  uint64_t requests = 0;  // request records; storage records are not requests
  // Token sums over request records (Usage's fields).
  uint64_t input_tokens = 0, cache_creation_5m = 0, cache_creation_1h = 0,
           cache_read_input_tokens = 0, output_tokens = 0;
  NanoUsd cost = 0;  // what was billed: requests with caching, plus storage
  // What the requests would have cost had nothing been cached (and no named
  // cache been stored): every prompt token at the base input price.
  NanoUsd cost_without_cache = 0;
  // cost_without_cache - cost. Negative when cache writes and storage have
  // cost more than reads have saved so far (typical at first).
  NanoUsd savings = 0;
  NanoUsd storage_cost = 0;  // the part of `cost` that is named-cache storage
  // cache_read_input_tokens over prompt tokens (input + writes + reads); 0
  // when there were none.
  double cache_hit_ratio = 0;
};

struct BillingReport {
  std::string tenant;
  int64_t from_ms = 0, to_ms = 0;  // the period [from_ms, to_ms), Unix epoch ms
  GroupBy group_by = GroupBy::kModel;
  std::vector<ReportRow> rows;  // sorted by group (so days run in date order)
  ReportRow total;              // group "total"
};

// Aggregates `records` (as Ledger::Scan returns them). Records of another
// tenant or outside [from_ms, to_ms) are ignored. Groups with no record do not
// appear.
BillingReport BuildReport(const std::string& tenant, int64_t from_ms, int64_t to_ms,
                          GroupBy group_by, std::span<const UsageRecord> records);

// "YYYY-MM-DD", the UTC calendar day of `time_ms`.
std::string UtcDay(int64_t time_ms);

// A fixed-width text table for people: a title line, a header, the rows and
// the total; amounts in dollars (FormatUsd), hit ratio in percent.
std::string FormatTable(const BillingReport& report);

// CSV (RFC 4180 quoting, \n line ends): a header row, one row per group, then the "total" row.
// Amounts in dollars via FormatUsd, hit ratio as a fraction to 6 places.
std::string FormatCsv(const BillingReport& report);

// A JSON object {tenant, from_ms, to_ms, group_by, rows: [...], total: {...}};
// each row has its token counts, cache_hit_ratio, and each amount both as a
// dollar string ("cost": "1.234567") and as integer nano-dollars
// ("cost_nanousd": 1234567000).
std::string FormatJson(const BillingReport& report);

}  // namespace kvtier
