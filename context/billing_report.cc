#include "context/billing_report.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>

namespace kvtier {
namespace {

void Add(ReportRow* row, const UsageRecord& r) {
  if (r.kind == RecordKind::kStorage) {
    row->cost += r.storage_cost;
    row->storage_cost += r.storage_cost;
    return;
  }
  ++row->requests;
  row->input_tokens += r.usage.input_tokens;
  row->cache_creation_5m += r.usage.cache_creation_5m;
  row->cache_creation_1h += r.usage.cache_creation_1h;
  row->cache_read_input_tokens += r.usage.cache_read_input_tokens;
  row->output_tokens += r.usage.output_tokens;
  row->cost += r.cost.total();
  row->cost_without_cache += r.cost.without_cache;
}

void Finish(ReportRow* row) {
  row->savings = row->cost_without_cache - row->cost;
  const uint64_t prompt = row->input_tokens + row->cache_creation_5m + row->cache_creation_1h +
                          row->cache_read_input_tokens;
  row->cache_hit_ratio =
      prompt == 0 ? 0.0
                  : static_cast<double>(row->cache_read_input_tokens) / static_cast<double>(prompt);
}

std::string Ratio(double r) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.6f", r);
  return buf;
}

std::string Percent(double r) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f%%", r * 100.0);
  return buf;
}

std::string CsvField(const std::string& s) {
  if (s.find_first_of(",\"\r\n") == std::string::npos) return s;
  std::string q = "\"";
  for (char c : s) {
    if (c == '"') q.push_back('"');
    q.push_back(c);
  }
  q.push_back('"');
  return q;
}

std::vector<std::string> Cells(const ReportRow& row, bool table) {
  return {row.group,
          std::to_string(row.requests),
          std::to_string(row.input_tokens),
          std::to_string(row.cache_creation_5m),
          std::to_string(row.cache_creation_1h),
          std::to_string(row.cache_read_input_tokens),
          std::to_string(row.output_tokens),
          table ? Percent(row.cache_hit_ratio) : Ratio(row.cache_hit_ratio),
          FormatUsd(row.cost),
          FormatUsd(row.cost_without_cache),
          FormatUsd(row.savings),
          FormatUsd(row.storage_cost)};
}

const std::vector<std::string>& CsvHeader() {
  static const std::vector<std::string> kHeader = {"group",
                                                   "requests",
                                                   "input_tokens",
                                                   "cache_creation_5m",
                                                   "cache_creation_1h",
                                                   "cache_read_input_tokens",
                                                   "output_tokens",
                                                   "cache_hit_ratio",
                                                   "cost_usd",
                                                   "cost_without_cache_usd",
                                                   "savings_usd",
                                                   "storage_cost_usd"};
  return kHeader;
}

nlohmann::ordered_json RowJson(const ReportRow& row) {
  nlohmann::ordered_json j;
  j["group"] = row.group;
  j["requests"] = row.requests;
  j["input_tokens"] = row.input_tokens;
  j["cache_creation_5m"] = row.cache_creation_5m;
  j["cache_creation_1h"] = row.cache_creation_1h;
  j["cache_read_input_tokens"] = row.cache_read_input_tokens;
  j["output_tokens"] = row.output_tokens;
  j["cache_hit_ratio"] = row.cache_hit_ratio;
  const std::pair<const char*, NanoUsd> amounts[] = {{"cost", row.cost},
                                                     {"cost_without_cache", row.cost_without_cache},
                                                     {"savings", row.savings},
                                                     {"storage_cost", row.storage_cost}};
  for (const auto& [name, amount] : amounts) {
    j[name] = FormatUsd(amount);
    j[std::string(name) + "_nanousd"] = amount;
  }
  return j;
}

}  // namespace

const char* GroupByName(GroupBy group_by) { return group_by == GroupBy::kDay ? "day" : "model"; }

std::string UtcDay(int64_t time_ms) {
  using namespace std::chrono;
  const sys_days day = floor<days>(sys_time<milliseconds>(milliseconds(time_ms)));
  const year_month_day ymd(day);
  char buf[32];
  std::snprintf(buf, sizeof buf, "%04d-%02u-%02u", static_cast<int>(ymd.year()),
                static_cast<unsigned>(ymd.month()), static_cast<unsigned>(ymd.day()));
  return buf;
}

BillingReport BuildReport(const std::string& tenant, int64_t from_ms, int64_t to_ms,
                          GroupBy group_by, std::span<const UsageRecord> records) {
  BillingReport report;
  report.tenant = tenant;
  report.from_ms = from_ms;
  report.to_ms = to_ms;
  report.group_by = group_by;
  std::map<std::string, ReportRow> groups;
  report.total.group = "total";
  for (const UsageRecord& r : records) {
    if (r.tenant != tenant || r.time_ms < from_ms || r.time_ms >= to_ms) continue;
    std::string key = group_by == GroupBy::kDay ? UtcDay(r.time_ms) : r.model;
    ReportRow& row = groups[key];
    if (row.group.empty()) row.group = std::move(key);
    Add(&row, r);
    Add(&report.total, r);
  }
  report.rows.reserve(groups.size());
  for (auto& [key, row] : groups) {
    Finish(&row);
    report.rows.push_back(std::move(row));
  }
  Finish(&report.total);
  return report;
}

std::string FormatTable(const BillingReport& report) {
  const std::vector<std::string> header = {GroupByName(report.group_by),
                                           "requests",
                                           "input",
                                           "write 5m",
                                           "write 1h",
                                           "read",
                                           "output",
                                           "hit",
                                           "cost $",
                                           "no-cache $",
                                           "savings $",
                                           "storage $"};
  std::vector<std::vector<std::string>> lines = {header};
  for (const ReportRow& row : report.rows) lines.push_back(Cells(row, true));
  lines.push_back(Cells(report.total, true));
  std::vector<size_t> width(header.size(), 0);
  for (const auto& line : lines) {
    for (size_t i = 0; i < line.size(); ++i) width[i] = std::max(width[i], line[i].size());
  }
  std::string out = "tenant " + report.tenant + ", [" + std::to_string(report.from_ms) + ", " +
                    std::to_string(report.to_ms) + ") ms, ";
  if (report.from_ms < report.to_ms) {
    out += "UTC " + UtcDay(report.from_ms) + " .. " + UtcDay(report.to_ms - 1) + ", ";
  }
  out += "by " + std::string(GroupByName(report.group_by)) + "\n";
  auto emit = [&](const std::vector<std::string>& line) {
    std::string text;
    for (size_t i = 0; i < line.size(); ++i) {
      if (i > 0) text += "  ";
      const size_t pad = width[i] - line[i].size();
      // The group is left-aligned, numbers right-aligned.
      text += i == 0 ? line[i] + std::string(pad, ' ') : std::string(pad, ' ') + line[i];
    }
    while (!text.empty() && text.back() == ' ') text.pop_back();
    out += text + "\n";
  };
  size_t rule = 0;
  for (size_t w : width) rule += w + 2;
  rule -= 2;
  for (size_t i = 0; i < lines.size(); ++i) {
    if (i == 1 || i + 1 == lines.size()) out += std::string(rule, '-') + "\n";
    emit(lines[i]);
  }
  return out;
}

std::string FormatCsv(const BillingReport& report) {
  auto line = [](const std::vector<std::string>& cells) {
    std::string s;
    for (size_t i = 0; i < cells.size(); ++i) {
      if (i > 0) s.push_back(',');
      s += CsvField(cells[i]);
    }
    return s + "\n";
  };
  std::string out = line(CsvHeader());
  for (const ReportRow& row : report.rows) out += line(Cells(row, false));
  return out + line(Cells(report.total, false));
}

std::string FormatJson(const BillingReport& report) {
  nlohmann::ordered_json j;
  j["tenant"] = report.tenant;
  j["from_ms"] = report.from_ms;
  j["to_ms"] = report.to_ms;
  j["group_by"] = GroupByName(report.group_by);
  j["rows"] = nlohmann::ordered_json::array();
  for (const ReportRow& row : report.rows) j["rows"].push_back(RowJson(row));
  j["total"] = RowJson(report.total);
  // Invalid UTF-8 (which a ledger never stores) is replaced, never thrown.
  return j.dump(2, ' ', false, nlohmann::ordered_json::error_handler_t::replace) + "\n";
}

}  // namespace kvtier
