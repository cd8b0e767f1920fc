#include "server/billing_service.h"

#include <grpcpp/grpcpp.h>

#include "context/billing_report.h"
#include "proto/status_codes.h"

namespace kvtier {
namespace {

void FillRow(const ReportRow& r, v1::BillingReportRow* out) {
  out->set_group(r.group);
  out->set_requests(r.requests);
  out->set_input_tokens(r.input_tokens);
  out->set_cache_creation_5m_input_tokens(r.cache_creation_5m);
  out->set_cache_creation_1h_input_tokens(r.cache_creation_1h);
  out->set_cache_read_input_tokens(r.cache_read_input_tokens);
  out->set_output_tokens(r.output_tokens);
  out->set_cost_nanousd(r.cost);
  out->set_cost_without_cache_nanousd(r.cost_without_cache);
  out->set_savings_nanousd(r.savings);
  out->set_storage_nanousd(r.storage_cost);
  out->set_cache_hit_ratio(r.cache_hit_ratio);
}

}  // namespace

grpc::Status BillingService::Report(grpc::ServerContext* ctx, const v1::BillingReportRequest* req,
                                    v1::BillingReportResponse* resp) {
  auto pass = gate_.Enter();
  if (!pass) return grpc::Status(grpc::StatusCode::UNAVAILABLE, "kvtierd is shutting down");
  // A tenant sees only its own bills: with keys, the key's tenant.
  std::string tenant = req->tenant();
  if (auth_ != nullptr && auth_->enabled()) {
    Principal p;
    if (grpc::Status s = auth_->Authenticate(ctx, req->tenant(), &p); !s.ok()) return s;
    tenant = p.tenant;
  }
  if (tenant.empty()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "a report needs a tenant");
  }
  GroupBy group_by;
  if (req->group_by().empty() || req->group_by() == "model") {
    group_by = GroupBy::kModel;
  } else if (req->group_by() == "day") {
    group_by = GroupBy::kDay;
  } else {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "group_by must be \"model\" or \"day\", not \"" + req->group_by() + "\"");
  }
  const std::string& format = req->format();
  if (!format.empty() && format != "table" && format != "csv" && format != "json") {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "format must be \"table\", \"csv\" or \"json\", not \"" + format + "\"");
  }
  const int64_t to = req->to_ms() == 0 ? clock_->NowMs() + 1 : req->to_ms();
  if (req->from_ms() < 0 || to <= req->from_ms()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "the period must have from_ms >= 0 and to_ms after from_ms");
  }
  Result<std::vector<UsageRecord>> records = ledger_.Scan(tenant, req->from_ms(), to);
  if (!records.ok()) return ToGrpcStatus(records.status());
  const BillingReport report = BuildReport(tenant, req->from_ms(), to, group_by, *records);
  for (const ReportRow& r : report.rows) FillRow(r, resp->add_rows());
  FillRow(report.total, resp->mutable_total());
  if (format == "table") resp->set_rendered(FormatTable(report));
  if (format == "csv") resp->set_rendered(FormatCsv(report));
  if (format == "json") resp->set_rendered(FormatJson(report));
  return grpc::Status::OK;
}

}  // namespace kvtier
