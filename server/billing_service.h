// BillingService: per-tenant billing reports from the usage ledger
// (DESIGN §7): requests, tokens by kind, cost with caching, cost had nothing
// been cached, savings and hit ratio, by model or by UTC day, as fields and,
// on request, rendered as a table, CSV or JSON.
#pragma once

#include "common/clock.h"
#include "context/ledger.h"
#include "proto/kvtier.grpc.pb.h"
#include "server/auth.h"
#include "server/call_gate.h"

namespace kvtier {

class BillingService final : public v1::Billing::Service {
 public:
  // `ledger` must outlive the service.
  BillingService(const Ledger& ledger, Clock* clock, CallGate& gate)
      : ledger_(ledger), clock_(clock), gate_(gate) {}

  // API keys (set once, before serving; default: open).
  void set_authenticator(const Authenticator* auth) { auth_ = auth; }

  grpc::Status Report(grpc::ServerContext* ctx, const v1::BillingReportRequest* req,
                      v1::BillingReportResponse* resp) override;

 private:
  const Ledger& ledger_;
  Clock* const clock_;
  CallGate& gate_;
  const Authenticator* auth_ = nullptr;
};

}  // namespace kvtier
