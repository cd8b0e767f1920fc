#include "context/pricing.h"

#include <cmath>
#include <cstdio>

namespace kvtier {

Status ModelPrice::Validate() const {
  for (double v : {input_usd_per_mtok, output_usd_per_mtok, write_5m_multiplier,
                   write_1h_multiplier, read_multiplier, storage_usd_per_mtok_hour}) {
    if (!std::isfinite(v) || v < 0) {
      return Status::InvalidArgument("prices and multipliers must be finite and >= 0");
    }
  }
  return Status::Ok();
}

NanoUsd RatePerToken(double usd_per_mtok, double multiplier) {
  // $/MTok * 1e9 n$/$ / 1e6 tokens/MTok = 1e3 n$ per token per $/MTok.
  return static_cast<NanoUsd>(std::llround(usd_per_mtok * multiplier * 1000.0));
}

PricedUsage Price(const ModelPrice& p, const Usage& u) {
  const NanoUsd in = RatePerToken(p.input_usd_per_mtok);
  PricedUsage c;
  c.input = static_cast<NanoUsd>(u.input_tokens) * in;
  c.write_5m = static_cast<NanoUsd>(u.cache_creation_5m) *
               RatePerToken(p.input_usd_per_mtok, p.write_5m_multiplier);
  c.write_1h = static_cast<NanoUsd>(u.cache_creation_1h) *
               RatePerToken(p.input_usd_per_mtok, p.write_1h_multiplier);
  c.read = static_cast<NanoUsd>(u.cache_read_input_tokens) *
           RatePerToken(p.input_usd_per_mtok, p.read_multiplier);
  c.output = static_cast<NanoUsd>(u.output_tokens) * RatePerToken(p.output_usd_per_mtok);
  c.without_cache = static_cast<NanoUsd>(u.prompt_tokens()) * in + c.output;
  return c;
}

NanoUsd StorageCharge(const ModelPrice& p, uint64_t tokens, double hours) {
  return static_cast<NanoUsd>(
      std::llround(static_cast<double>(tokens) * p.storage_usd_per_mtok_hour * 1000.0 * hours));
}

std::string FormatUsd(NanoUsd amount) {
  const bool negative = amount < 0;
  const uint64_t a = negative ? static_cast<uint64_t>(-amount) : static_cast<uint64_t>(amount);
  // Rounded half up to the micro-dollar.
  const uint64_t micros = (a + 500) / 1000;
  char buf[48];
  std::snprintf(buf, sizeof buf, "%s%llu.%06llu", negative ? "-" : "",
                static_cast<unsigned long long>(micros / 1'000'000),
                static_cast<unsigned long long>(micros % 1'000'000));
  return buf;
}

Status PriceTable::Set(const std::string& model, const ModelPrice& price) {
  KVTIER_RETURN_IF_ERROR(price.Validate());
  by_model_[model] = price;
  return Status::Ok();
}

const ModelPrice& PriceTable::For(const std::string& model) const {
  auto it = by_model_.find(model);
  return it == by_model_.end() ? default_ : it->second;
}

}  // namespace kvtier
