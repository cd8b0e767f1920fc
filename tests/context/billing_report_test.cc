// Billing reports: a scripted day of ledger records, aggregated by model and
// by UTC day, checked against sums computed here from the token counts and
// the per-token rates, and rendered as a table, CSV and JSON that are parsed
// back.
#include "context/billing_report.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

namespace kvtier {
namespace {

using namespace std::chrono;

const std::string kTenant = "acme";

// Two models with every price spelled out, so the expected amounts below do
// not depend on pricing defaults.
ModelPrice LargePrice() {
  ModelPrice p;
  p.input_usd_per_mtok = 3.0;  // 3000 n$/token
  p.output_usd_per_mtok = 15.0;
  p.write_5m_multiplier = 1.25;
  p.write_1h_multiplier = 2.0;
  p.read_multiplier = 0.1;
  p.storage_usd_per_mtok_hour = 1.0;
  return p;
}
ModelPrice SmallPrice() {
  ModelPrice p;
  p.input_usd_per_mtok = 0.8;  // 800 n$/token
  p.output_usd_per_mtok = 4.0;
  p.write_5m_multiplier = 1.25;
  p.write_1h_multiplier = 2.0;
  p.read_multiplier = 0.1;
  p.storage_usd_per_mtok_hour = 0.5;
  return p;
}

// Per-token rates in nano-dollars, written out by hand: input, 5m write,
// 1h write, read, output.
struct Rates {
  int64_t input, write_5m, write_1h, read, output;
};
const std::map<std::string, Rates> kRates = {
    {"large", {3000, 3750, 6000, 300, 15000}},
    {"small", {800, 1000, 1600, 80, 4000}},
};

int64_t MidnightMs() {  // 2025-03-15T00:00:00Z
  return duration_cast<milliseconds>(sys_days{2025y / March / 15}.time_since_epoch()).count();
}

UsageRecord Request(const std::string& model, const std::string& id, int64_t time_ms,
                    const Usage& usage) {
  UsageRecord r;
  r.tenant = kTenant;
  r.request_id = id;
  r.model = model;
  r.time_ms = time_ms;
  r.usage = usage;
  r.cost = Price(model == "large" ? LargePrice() : SmallPrice(), usage);
  return r;
}

UsageRecord Storage(const std::string& model, const std::string& id, int64_t time_ms,
                    uint64_t tokens, double hours) {
  UsageRecord r;
  r.kind = RecordKind::kStorage;
  r.tenant = kTenant;
  r.request_id = id;
  r.model = model;
  r.time_ms = time_ms;
  r.cache_name = "cachedContents/" + id;
  r.storage_tokens = tokens;
  r.storage_hours = hours;
  r.storage_cost = StorageCharge(model == "large" ? LargePrice() : SmallPrice(), tokens, hours);
  return r;
}

// 18 requests every 20 minutes from 22:00 on the 14th to 03:40 on the 15th,
// alternating models, and three storage charges; plus records the report
// must ignore (another tenant, outside the period).
std::vector<UsageRecord> ScriptedDay() {
  std::vector<UsageRecord> v;
  const int64_t start = MidnightMs() - 2 * 3600 * 1000;
  for (int i = 0; i < 18; ++i) {
    Usage u;
    u.input_tokens = 50 + 7 * i;
    u.cache_creation_5m = i % 3 == 0 ? 2048 + 13 * i : 0;
    u.cache_creation_1h = i % 4 == 1 ? 4096 : 0;
    u.cache_read_input_tokens = i < 2 ? 0 : 1024 * (i % 5) + 333;
    u.output_tokens = 100 + 11 * i;
    v.push_back(Request(i % 2 == 0 ? "large" : "small", "req-" + std::to_string(i),
                        start + i * 20 * 60 * 1000, u));
  }
  // 200000 tokens * $1/MTok/h * 2 h = $0.40; 50000 * $0.5 * 0.5 h = $0.0125;
  // 10000 * $1 * 0.25 h = $0.0025.
  v.push_back(Storage("large", "store-1", start + 30 * 60 * 1000, 200000, 2.0));
  v.push_back(Storage("small", "store-2", MidnightMs() + 3600 * 1000, 50000, 0.5));
  v.push_back(Storage("large", "store-3", MidnightMs() - 1, 10000, 0.25));
  UsageRecord other = v[0];
  other.tenant = "someone-else";
  v.push_back(other);
  UsageRecord late = v[1];
  late.time_ms = MidnightMs() + 86400 * 1000;
  v.push_back(late);
  return v;
}

constexpr int64_t kFrom = 1741989600000;  // 2025-03-14T22:00:00Z
constexpr int64_t kTo = 1742014800000;    // 2025-03-15T05:00:00Z

// The expected row of the records that `pick` selects, summed here from the
// token counts and the hand-written rates (storage from the literals above).
ReportRow Expected(const std::string& group, const std::function<bool(const UsageRecord&)>& pick) {
  ReportRow e;
  e.group = group;
  const std::map<std::string, NanoUsd> storage = {
      {"store-1", 400'000'000}, {"store-2", 12'500'000}, {"store-3", 2'500'000}};
  for (const UsageRecord& r : ScriptedDay()) {
    if (r.tenant != kTenant || r.time_ms < kFrom || r.time_ms >= kTo || !pick(r)) continue;
    if (r.kind == RecordKind::kStorage) {
      e.cost += storage.at(r.request_id);
      e.storage_cost += storage.at(r.request_id);
      continue;
    }
    const Rates& k = kRates.at(r.model);
    const Usage& u = r.usage;
    ++e.requests;
    e.input_tokens += u.input_tokens;
    e.cache_creation_5m += u.cache_creation_5m;
    e.cache_creation_1h += u.cache_creation_1h;
    e.cache_read_input_tokens += u.cache_read_input_tokens;
    e.output_tokens += u.output_tokens;
    e.cost += static_cast<int64_t>(u.input_tokens) * k.input +
              static_cast<int64_t>(u.cache_creation_5m) * k.write_5m +
              static_cast<int64_t>(u.cache_creation_1h) * k.write_1h +
              static_cast<int64_t>(u.cache_read_input_tokens) * k.read +
              static_cast<int64_t>(u.output_tokens) * k.output;
    e.cost_without_cache += static_cast<int64_t>(u.input_tokens + u.cache_creation_5m +
                                                 u.cache_creation_1h + u.cache_read_input_tokens) *
                                k.input +
                            static_cast<int64_t>(u.output_tokens) * k.output;
  }
  e.savings = e.cost_without_cache - e.cost;
  const uint64_t prompt =
      e.input_tokens + e.cache_creation_5m + e.cache_creation_1h + e.cache_read_input_tokens;
  e.cache_hit_ratio = prompt ? static_cast<double>(e.cache_read_input_tokens) / prompt : 0;
  return e;
}

void ExpectRow(const ReportRow& got, const ReportRow& want) {
  SCOPED_TRACE("row " + want.group);
  EXPECT_EQ(got.group, want.group);
  EXPECT_EQ(got.requests, want.requests);
  EXPECT_EQ(got.input_tokens, want.input_tokens);
  EXPECT_EQ(got.cache_creation_5m, want.cache_creation_5m);
  EXPECT_EQ(got.cache_creation_1h, want.cache_creation_1h);
  EXPECT_EQ(got.cache_read_input_tokens, want.cache_read_input_tokens);
  EXPECT_EQ(got.output_tokens, want.output_tokens);
  EXPECT_EQ(got.cost, want.cost);
  EXPECT_EQ(got.cost_without_cache, want.cost_without_cache);
  EXPECT_EQ(got.savings, want.savings);
  EXPECT_EQ(got.storage_cost, want.storage_cost);
  EXPECT_DOUBLE_EQ(got.cache_hit_ratio, want.cache_hit_ratio);
}

BillingReport Report(GroupBy by) {
  const std::vector<UsageRecord> records = ScriptedDay();
  return BuildReport(kTenant, kFrom, kTo, by, records);
}

TEST(BillingReportTest, ScriptIsWhatTheTestsAssume) {
  EXPECT_EQ(kFrom, MidnightMs() - 2 * 3600 * 1000);
  EXPECT_EQ(kTo, MidnightMs() + 5 * 3600 * 1000);
  for (const UsageRecord& r : ScriptedDay()) EXPECT_TRUE(ValidateUsageRecord(r).ok());
}

TEST(BillingReportTest, ByModelTotalsMatchAnIndependentSum) {
  const BillingReport report = Report(GroupBy::kModel);
  EXPECT_EQ(report.tenant, kTenant);
  EXPECT_EQ(report.group_by, GroupBy::kModel);
  ASSERT_EQ(report.rows.size(), 2u);
  ExpectRow(report.rows[0], Expected("large", [](auto& r) { return r.model == "large"; }));
  ExpectRow(report.rows[1], Expected("small", [](auto& r) { return r.model == "small"; }));
  ExpectRow(report.total, Expected("total", [](auto&) { return true; }));
  EXPECT_EQ(report.total.requests, 18u);
  EXPECT_EQ(report.total.storage_cost, 415'000'000);
  EXPECT_EQ(report.rows[0].cost + report.rows[1].cost, report.total.cost);
}

TEST(BillingReportTest, ByDaySplitsAtUtcMidnight) {
  const BillingReport report = Report(GroupBy::kDay);
  ASSERT_EQ(report.rows.size(), 2u);
  // 22:00-23:40 on the 14th: requests 0..5, and store-1 and store-3 (one ms
  // before midnight); the 15th: requests 6..17 and store-2.
  const ReportRow day14 =
      Expected("2025-03-14", [](const UsageRecord& r) { return r.time_ms < MidnightMs(); });
  const ReportRow day15 =
      Expected("2025-03-15", [](const UsageRecord& r) { return r.time_ms >= MidnightMs(); });
  EXPECT_EQ(day14.requests, 6u);
  EXPECT_EQ(day15.requests, 12u);
  EXPECT_EQ(day14.storage_cost, 402'500'000);
  ExpectRow(report.rows[0], day14);
  ExpectRow(report.rows[1], day15);
  ExpectRow(report.total, Expected("total", [](auto&) { return true; }));
}

TEST(BillingReportTest, HitRatioAndNegativeSavings) {
  Usage hit;
  hit.input_tokens = 100;
  hit.cache_read_input_tokens = 900;
  hit.output_tokens = 10;
  Usage write;
  write.input_tokens = 0;
  write.cache_creation_1h = 1000;
  const std::vector<UsageRecord> records = {Request("large", "a", kFrom, write)};
  // A first request that only writes the cache costs more than no cache.
  BillingReport first = BuildReport(kTenant, kFrom, kTo, GroupBy::kModel, records);
  EXPECT_EQ(first.total.cache_hit_ratio, 0.0);
  EXPECT_EQ(first.total.cost, 1000 * 6000);
  EXPECT_EQ(first.total.cost_without_cache, 1000 * 3000);
  EXPECT_EQ(first.total.savings, -1000 * 3000);
  // Then one that reads 900 of its 1000 prompt tokens.
  std::vector<UsageRecord> both = records;
  both.push_back(Request("large", "b", kFrom + 1, hit));
  BillingReport second = BuildReport(kTenant, kFrom, kTo, GroupBy::kModel, both);
  EXPECT_DOUBLE_EQ(second.total.cache_hit_ratio, 900.0 / 2000.0);
  EXPECT_EQ(second.total.savings, -3'000'000 + 900 * (3000 - 300));
  // No request at all: the ratio is 0, not NaN.
  BillingReport empty = BuildReport(kTenant, kFrom, kTo, GroupBy::kDay, {});
  EXPECT_TRUE(empty.rows.empty());
  EXPECT_EQ(empty.total.cache_hit_ratio, 0.0);
  EXPECT_EQ(empty.total.group, "total");
}

TEST(BillingReportTest, UtcDays) {
  EXPECT_EQ(UtcDay(0), "1970-01-01");
  EXPECT_EQ(UtcDay(-1), "1969-12-31");
  EXPECT_EQ(UtcDay(MidnightMs() - 1), "2025-03-14");
  EXPECT_EQ(UtcDay(MidnightMs()), "2025-03-15");
  EXPECT_EQ(UtcDay(951782400000), "2000-02-29");
}

// "12.345678" -> 12345678 micro-dollars, without floating point.
int64_t ParseMicros(const std::string& s) {
  const bool negative = !s.empty() && s[0] == '-';
  const std::string digits = negative ? s.substr(1) : s;
  const size_t dot = digits.find('.');
  EXPECT_NE(dot, std::string::npos) << s;
  EXPECT_EQ(digits.size() - dot, 7u) << s;
  const int64_t v =
      std::stoll(digits.substr(0, dot)) * 1'000'000 + std::stoll(digits.substr(dot + 1));
  return negative ? -v : v;
}

int64_t Micros(NanoUsd n) { return (n >= 0 ? n + 500 : n - 500) / 1000; }

int64_t Cents(int64_t micros) { return (micros >= 0 ? micros + 5000 : micros - 5000) / 10000; }

TEST(BillingReportTest, CsvCarriesTheNumbers) {
  for (GroupBy by : {GroupBy::kModel, GroupBy::kDay}) {
    const BillingReport report = Report(by);
    std::istringstream in(FormatCsv(report));
    std::vector<std::vector<std::string>> lines;
    for (std::string line; std::getline(in, line);) {
      std::vector<std::string> cells;
      std::istringstream ls(line);
      for (std::string cell; std::getline(ls, cell, ',');) cells.push_back(cell);
      lines.push_back(cells);
    }
    ASSERT_EQ(lines.size(), report.rows.size() + 2);
    const std::vector<std::string> header = lines[0];
    ASSERT_EQ(header.size(), 12u);
    EXPECT_EQ(header[0], "group");
    EXPECT_EQ(header[8], "cost_usd");
    EXPECT_EQ(lines.back()[0], "total");
    for (const char* column :
         {"cost_usd", "cost_without_cache_usd", "savings_usd", "storage_cost_usd", "requests",
          "input_tokens", "cache_read_input_tokens", "output_tokens"}) {
      SCOPED_TRACE(column);
      const size_t c = std::find(header.begin(), header.end(), column) - header.begin();
      ASSERT_LT(c, header.size());
      const bool money = std::string(column).ends_with("_usd");
      int64_t sum = 0;
      for (size_t i = 1; i + 1 < lines.size(); ++i) {
        sum += money ? ParseMicros(lines[i][c]) : std::stoll(lines[i][c]);
      }
      const int64_t total = money ? ParseMicros(lines.back()[c]) : std::stoll(lines.back()[c]);
      if (money) {
        // Each row is rounded to the micro-dollar: the sum is within a
        // micro-dollar per row of the total, and equal to the cent.
        EXPECT_LE(std::abs(sum - total), static_cast<int64_t>(report.rows.size()));
        EXPECT_EQ(Cents(sum), Cents(total));
      } else {
        EXPECT_EQ(sum, total);
      }
    }
    const size_t cost = 8;
    EXPECT_EQ(ParseMicros(lines.back()[cost]), Micros(report.total.cost));
    for (size_t i = 0; i < report.rows.size(); ++i) {
      EXPECT_EQ(lines[i + 1][0], report.rows[i].group);
      EXPECT_EQ(lines[i + 1][cost], FormatUsd(report.rows[i].cost));
      EXPECT_NEAR(std::stod(lines[i + 1][7]), report.rows[i].cache_hit_ratio, 1e-6);
    }
  }
}

TEST(BillingReportTest, CsvQuotesGroupsWithCommas) {
  Usage u;
  u.input_tokens = 1;
  const std::vector<UsageRecord> records = {Request("large", "a", kFrom, u)};
  std::vector<UsageRecord> odd = records;
  odd[0].model = "vendor,\"model\"";
  const std::string csv = FormatCsv(BuildReport(kTenant, kFrom, kTo, GroupBy::kModel, odd));
  EXPECT_NE(csv.find("\n\"vendor,\"\"model\"\"\",1,1,"), std::string::npos) << csv;
}

TEST(BillingReportTest, JsonSumsExactlyInNanoDollars) {
  for (GroupBy by : {GroupBy::kModel, GroupBy::kDay}) {
    const BillingReport report = Report(by);
    const nlohmann::json j = nlohmann::json::parse(FormatJson(report));
    EXPECT_EQ(j["tenant"], kTenant);
    EXPECT_EQ(j["from_ms"].get<int64_t>(), kFrom);
    EXPECT_EQ(j["to_ms"].get<int64_t>(), kTo);
    EXPECT_EQ(j["group_by"], by == GroupBy::kDay ? "day" : "model");
    ASSERT_EQ(j["rows"].size(), report.rows.size());
    const nlohmann::json& total = j["total"];
    EXPECT_EQ(total["group"], "total");
    for (const char* amount : {"cost", "cost_without_cache", "savings", "storage_cost"}) {
      SCOPED_TRACE(amount);
      const std::string exact = std::string(amount) + "_nanousd";
      int64_t sum_nano = 0, sum_micros = 0;
      for (const auto& row : j["rows"]) {
        sum_nano += row[exact].get<int64_t>();
        sum_micros += ParseMicros(row[amount].get<std::string>());
        EXPECT_EQ(row[amount].get<std::string>(), FormatUsd(row[exact].get<int64_t>()));
      }
      EXPECT_EQ(sum_nano, total[exact].get<int64_t>());
      EXPECT_EQ(Cents(sum_micros), Cents(ParseMicros(total[amount].get<std::string>())));
    }
    const ReportRow want = Expected("total", [](auto&) { return true; });
    EXPECT_EQ(total["cost_nanousd"].get<int64_t>(), want.cost);
    EXPECT_EQ(total["cost_without_cache_nanousd"].get<int64_t>(), want.cost_without_cache);
    EXPECT_EQ(total["savings_nanousd"].get<int64_t>(), want.savings);
    EXPECT_EQ(total["storage_cost_nanousd"].get<int64_t>(), 415'000'000);
    EXPECT_EQ(total["requests"].get<uint64_t>(), 18u);
    for (const char* tokens : {"input_tokens", "cache_creation_5m", "cache_creation_1h",
                               "cache_read_input_tokens", "output_tokens", "requests"}) {
      uint64_t sum = 0;
      for (const auto& row : j["rows"]) sum += row[tokens].get<uint64_t>();
      EXPECT_EQ(sum, total[tokens].get<uint64_t>()) << tokens;
    }
    EXPECT_DOUBLE_EQ(total["cache_hit_ratio"].get<double>(), want.cache_hit_ratio);
  }
}

TEST(BillingReportTest, TableShowsTheNumbers) {
  for (GroupBy by : {GroupBy::kModel, GroupBy::kDay}) {
    const BillingReport report = Report(by);
    const std::string table = FormatTable(report);
    std::istringstream in(table);
    std::vector<std::string> lines;
    for (std::string line; std::getline(in, line);) lines.push_back(line);
    // Title, header, rule, rows, rule, total.
    ASSERT_EQ(lines.size(), report.rows.size() + 5) << table;
    EXPECT_NE(lines[0].find("tenant acme"), std::string::npos) << table;
    EXPECT_EQ(lines[1].rfind(by == GroupBy::kDay ? "day" : "model", 0), 0u) << table;
    auto expect_row = [&](const std::string& line, const ReportRow& row) {
      std::istringstream cells(line);
      std::vector<std::string> c;
      for (std::string cell; cells >> cell;) c.push_back(cell);
      ASSERT_EQ(c.size(), 12u) << line;
      EXPECT_EQ(c[0], row.group);
      EXPECT_EQ(c[1], std::to_string(row.requests));
      EXPECT_EQ(c[2], std::to_string(row.input_tokens));
      EXPECT_EQ(c[5], std::to_string(row.cache_read_input_tokens));
      EXPECT_EQ(c[8], FormatUsd(row.cost));
      EXPECT_EQ(c[9], FormatUsd(row.cost_without_cache));
      EXPECT_EQ(c[10], FormatUsd(row.savings));
      EXPECT_EQ(c[11], FormatUsd(row.storage_cost));
    };
    for (size_t i = 0; i < report.rows.size(); ++i) expect_row(lines[3 + i], report.rows[i]);
    expect_row(lines.back(), report.total);
  }
}

}  // namespace
}  // namespace kvtier
