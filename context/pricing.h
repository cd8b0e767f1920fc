// Prices (DESIGN §6): a per-model table of $/MTok figures and the cost of a
// request's usage, with and without caching.
//
// Amounts are integer nano-dollars (1e-9 $) so that sums over a ledger are
// exact: a price of $3/MTok is 3000 n$ per token; multipliers are applied to
// the per-token rate once and rounded to the nano-dollar. Immutable once
// built; thread-safe.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "common/status.h"
#include "context/usage.h"

namespace kvtier {

using NanoUsd = int64_t;
inline constexpr NanoUsd kNanoUsdPerUsd = 1'000'000'000;

struct ModelPrice {
  double input_usd_per_mtok = 3.0;         // base input price
  double output_usd_per_mtok = 15.0;       // output price
  double write_5m_multiplier = 1.25;       // of the input price, for 5m cache writes
  double write_1h_multiplier = 2.0;        // of the input price, for 1h cache writes
  double read_multiplier = 0.1;            // of the input price, for cache reads
  double storage_usd_per_mtok_hour = 1.0;  // named caches, per million tokens per hour

  Status Validate() const;  // every figure finite and >= 0
};

struct PricedUsage {
  NanoUsd input = 0, write_5m = 0, write_1h = 0, read = 0, output = 0;
  NanoUsd total() const { return input + write_5m + write_1h + read + output; }
  // What the request would have cost had nothing been cached: every prompt
  // token at the base input price.
  NanoUsd without_cache = 0;
};

// The per-token rate of `usd_per_mtok` times `multiplier`, in nano-dollars.
NanoUsd RatePerToken(double usd_per_mtok, double multiplier = 1.0);

PricedUsage Price(const ModelPrice& price, const Usage& usage);

// The storage charge of a named cache of `tokens` held for `hours`.
NanoUsd StorageCharge(const ModelPrice& price, uint64_t tokens, double hours);

// "12.345678" (dollars, to the micro-dollar) for reports.
std::string FormatUsd(NanoUsd amount);

class PriceTable {
 public:
  // Every model without an entry of its own pays `default_price`.
  explicit PriceTable(ModelPrice default_price = {}) : default_(default_price) {}
  Status Set(const std::string& model, const ModelPrice& price);
  const ModelPrice& For(const std::string& model) const;

 private:
  ModelPrice default_;
  std::map<std::string, ModelPrice> by_model_;
};

}  // namespace kvtier
