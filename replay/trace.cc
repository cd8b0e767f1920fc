#include "replay/trace.h"

#include <charconv>
#include <fstream>
#include <nlohmann/json.hpp>
#include <unordered_map>

namespace kvtier {
namespace {

// Dense ids for trace block names, in order of first appearance.
template <typename Name>
class DenseIds {
 public:
  uint32_t Of(const Name& name) {
    auto [it, added] = ids_.try_emplace(name, static_cast<uint32_t>(ids_.size()));
    return it->second;
  }
  uint32_t size() const { return static_cast<uint32_t>(ids_.size()); }

 private:
  std::unordered_map<Name, uint32_t> ids_;
};

class Builder {
 public:
  Builder(const std::string& name, const TraceOptions& o) : name_(name) {
    trace_.block_tokens = o.format == TraceFormat::kMooncake ? 512 : o.block_tokens;
  }
  Status Error(int64_t line, const std::string& what) const {
    return Status::InvalidArgument(name_ + ":" + std::to_string(line) + ": " + what);
  }
  // Starts a request; its blocks follow with AddBlock.
  Status Begin(int64_t line, int64_t time_ms, int64_t input, int64_t output, uint32_t tenant) {
    if (input < 0 || output < 0 || input > UINT32_MAX || output > UINT32_MAX) {
      return Error(line, "token counts must be non-negative 32-bit integers");
    }
    if (!trace_.requests.empty() && time_ms < last_time_) {
      return Error(line, "timestamps must not decrease");
    }
    if (trace_.requests.empty()) first_time_ = time_ms;
    TraceRequest r;
    // Times are kept from the first request's: they must fit an int64 then.
    if (__builtin_sub_overflow(time_ms, first_time_, &r.time_ms)) {
      return Error(line, "timestamps span more than 2^63 ms");
    }
    last_time_ = time_ms;
    r.input_tokens = static_cast<uint32_t>(input);
    r.output_tokens = static_cast<uint32_t>(output);
    r.tenant = tenant;
    r.first_block = static_cast<uint32_t>(trace_.blocks.size());
    trace_.requests.push_back(r);
    return Status::Ok();
  }
  void AddBlock(uint32_t id) {
    trace_.blocks.push_back(id);
    ++trace_.requests.back().num_blocks;
  }
  uint32_t Tenant(const std::string& t) {
    const uint32_t id = tenants_.Of(t);
    if (id == trace_.tenants.size()) trace_.tenants.push_back(t);
    return id;
  }
  Trace Finish(uint32_t distinct) {
    trace_.distinct_blocks = distinct;
    if (trace_.tenants.empty()) trace_.tenants.push_back("");
    return std::move(trace_);
  }
  const Trace& trace() const { return trace_; }

 private:
  std::string name_;
  Trace trace_;
  DenseIds<std::string> tenants_;
  int64_t first_time_ = 0, last_time_ = 0;
};

bool ParseInt(std::string_view s, int64_t* out) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r'))
    s.remove_suffix(1);
  if (s.empty()) return false;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  return ec == std::errc() && p == s.data() + s.size();
}

std::vector<std::string_view> Split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  size_t start = 0;
  for (size_t i = 0; i <= s.size(); ++i) {
    if (i == s.size() || s[i] == sep) {
      out.push_back(s.substr(start, i - start));
      start = i + 1;
    }
  }
  return out;
}

// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
int64_t DaysFromCivil(int64_t y, int64_t m, int64_t d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const int64_t yoe = y - era * 400;
  const int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + doe - 719468;
}

// "YYYY-MM-DD HH:MM:SS[.fraction]" as Unix ms; false when malformed.
bool ParseTimestamp(std::string_view s, int64_t* ms) {
  int64_t y, mo, d, h, mi, sec;
  if (s.size() < 19 || s[4] != '-' || s[7] != '-' || s[10] != ' ' || s[13] != ':' || s[16] != ':' ||
      !ParseInt(s.substr(0, 4), &y) || !ParseInt(s.substr(5, 2), &mo) ||
      !ParseInt(s.substr(8, 2), &d) || !ParseInt(s.substr(11, 2), &h) ||
      !ParseInt(s.substr(14, 2), &mi) || !ParseInt(s.substr(17, 2), &sec)) {
    return false;
  }
  if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60) return false;
  int64_t frac_ms = 0;
  if (s.size() > 19) {
    if (s[19] != '.' || s.size() == 20) return false;
    int64_t scale = 100;
    for (size_t i = 20; i < s.size(); ++i) {
      if (s[i] < '0' || s[i] > '9') return false;
      frac_ms += (s[i] - '0') * scale;
      scale /= 10;
    }
  }
  *ms = ((DaysFromCivil(y, mo, d) * 24 + h) * 60 + mi) * 60000 + sec * 1000 + frac_ms;
  return true;
}

Result<Trace> ParseMooncake(std::istream& in, Builder& b) {
  DenseIds<int64_t> ids;
  std::string line;
  for (int64_t n = 1; std::getline(in, line); ++n) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object()) return b.Error(n, "not a JSON object");
    for (const char* key : {"timestamp", "input_length", "output_length"}) {
      if (!j.contains(key) || !j[key].is_number_integer()) {
        return b.Error(n, std::string("\"") + key + "\" must be an integer");
      }
    }
    if (!j.contains("hash_ids") || !j["hash_ids"].is_array()) {
      return b.Error(n, "\"hash_ids\" must be an array of integers");
    }
    KVTIER_RETURN_IF_ERROR(b.Begin(n, j["timestamp"].get<int64_t>(),
                                   j["input_length"].get<int64_t>(),
                                   j["output_length"].get<int64_t>(), b.Tenant("")));
    for (const auto& h : j["hash_ids"]) {
      if (!h.is_number_integer()) return b.Error(n, "\"hash_ids\" must be an array of integers");
      b.AddBlock(ids.Of(h.get<int64_t>()));
    }
  }
  return b.Finish(ids.size());
}

Result<Trace> ParseAzure(std::istream& in, Builder& b, const TraceOptions& o) {
  if (o.azure_shared_prefix_tokens < 0) {
    return Status::InvalidArgument("the shared prefix must be >= 0 tokens");
  }
  const int64_t bt = o.block_tokens;
  const int64_t shared = o.azure_shared_prefix_tokens / bt;  // whole shared blocks
  uint32_t next = static_cast<uint32_t>(shared);             // ids 0..shared-1 are shared
  std::string line;
  bool header = true;
  for (int64_t n = 1; std::getline(in, line); ++n) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    if (header) {
      header = false;
      if (line.rfind("TIMESTAMP", 0) == 0) continue;
    }
    const std::vector<std::string_view> f = Split(line, ',');
    if (f.size() != 3) return b.Error(n, "expected TIMESTAMP,ContextTokens,GeneratedTokens");
    int64_t t, input, output;
    if (!ParseTimestamp(f[0], &t)) return b.Error(n, "bad timestamp '" + std::string(f[0]) + "'");
    if (!ParseInt(f[1], &input) || !ParseInt(f[2], &output)) {
      return b.Error(n, "token counts must be integers");
    }
    KVTIER_RETURN_IF_ERROR(b.Begin(n, t, input, output, b.Tenant("")));
    const int64_t blocks = (input + bt - 1) / bt;
    for (int64_t i = 0; i < blocks; ++i) {
      // A block entirely inside the shared prefix is the shared one.
      b.AddBlock(i < shared && (i + 1) * bt <= input ? static_cast<uint32_t>(i) : next++);
    }
  }
  return b.Finish(next);
}

Result<Trace> ParseCsv(std::istream& in, Builder& b) {
  DenseIds<std::string> ids;
  std::string line;
  bool first = true;
  for (int64_t n = 1; std::getline(in, line); ++n) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || line[0] == '#') continue;
    if (first) {
      first = false;
      if (line.rfind("time", 0) == 0) continue;
    }
    const std::vector<std::string_view> f = Split(line, ',');
    if (f.size() != 3) return b.Error(n, "expected time_ms,tenant,keys");
    int64_t t;
    if (!ParseInt(f[0], &t)) return b.Error(n, "time_ms must be an integer");
    const std::vector<std::string_view> keys = Split(f[2], ';');
    const int64_t tokens = static_cast<int64_t>(keys.size()) * b.trace().block_tokens;
    KVTIER_RETURN_IF_ERROR(b.Begin(n, t, tokens, 0, b.Tenant(std::string(f[1]))));
    for (std::string_view k : keys) {
      if (k.empty()) return b.Error(n, "empty block key");
      b.AddBlock(ids.Of(std::string(k)));
    }
  }
  return b.Finish(ids.size());
}

}  // namespace

Result<TraceFormat> ParseTraceFormat(const std::string& name) {
  if (name == "mooncake") return TraceFormat::kMooncake;
  if (name == "azure") return TraceFormat::kAzure;
  if (name == "csv") return TraceFormat::kCsv;
  return Status::InvalidArgument("trace format must be mooncake, azure or csv, got '" + name + "'");
}

uint32_t Trace::BlockTokens(const TraceRequest& r, uint32_t i) const {
  const uint64_t start = static_cast<uint64_t>(i) * block_tokens;
  if (start >= r.input_tokens) return 0;
  return static_cast<uint32_t>(std::min<uint64_t>(block_tokens, r.input_tokens - start));
}

Result<Trace> ParseTrace(std::istream& in, const std::string& name, const TraceOptions& o) {
  if (o.block_tokens < 1) return Status::InvalidArgument("block_tokens must be positive");
  Builder b(name, o);
  switch (o.format) {
    case TraceFormat::kMooncake:
      return ParseMooncake(in, b);
    case TraceFormat::kAzure:
      return ParseAzure(in, b, o);
    case TraceFormat::kCsv:
      return ParseCsv(in, b);
  }
  return Status::InvalidArgument("unknown trace format");
}

Result<Trace> ReadTrace(const std::string& path, const TraceOptions& o) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::NotFound("cannot open trace " + path);
  return ParseTrace(in, path, o);
}

}  // namespace kvtier
