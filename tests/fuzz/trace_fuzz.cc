// Fuzzes the serving-trace readers (replay/trace.h): mooncake JSON Lines, the
// Azure CSV and kvtier's own CSV, chosen by the first input byte.
//
// A trace that parses must be self-consistent: each request's blocks follow
// the previous request's, every block id is dense (below distinct_blocks),
// every tenant index names a tenant, and times start at 0 and never
// decrease. A csv trace written back as csv parses to the same trace.
#include <sstream>

#include "replay/trace.h"
#include "tests/fuzz/fuzz_util.h"

namespace kvtier {
namespace {

void CheckConsistent(const Trace& t) {
  FUZZ_CHECK(!t.tenants.empty());
  uint64_t next_block = 0;
  int64_t last_time = 0;
  for (const TraceRequest& r : t.requests) {
    FUZZ_CHECK(r.first_block == next_block);
    next_block += r.num_blocks;
    FUZZ_CHECK(next_block <= t.blocks.size());
    FUZZ_CHECK(r.tenant < t.tenants.size());
    FUZZ_CHECK(r.time_ms >= last_time);
    last_time = r.time_ms;
    for (uint32_t i = 0; i < r.num_blocks; ++i)
      FUZZ_CHECK(t.BlockTokens(r, i) <= static_cast<uint32_t>(t.block_tokens));
  }
  FUZZ_CHECK(next_block == t.blocks.size());
  if (!t.requests.empty()) FUZZ_CHECK(t.requests.front().time_ms == 0);
  for (uint32_t b : t.blocks) FUZZ_CHECK(b < t.distinct_blocks);
}

// The csv text of `t`, its keys the dense ids.
std::string ToCsv(const Trace& t) {
  std::string out;
  for (const TraceRequest& r : t.requests) {
    out += std::to_string(r.time_ms) + "," + t.tenants[r.tenant] + ",";
    for (uint32_t i = 0; i < r.num_blocks; ++i) {
      if (i > 0) out += ";";
      out += std::to_string(t.blocks[r.first_block + i]);
    }
    out += "\n";
  }
  return out;
}

void CheckSame(const Trace& a, const Trace& b) {
  FUZZ_CHECK(a.requests.size() == b.requests.size());
  for (size_t i = 0; i < a.requests.size(); ++i) {
    const TraceRequest &x = a.requests[i], &y = b.requests[i];
    FUZZ_CHECK(x.time_ms == y.time_ms && x.input_tokens == y.input_tokens &&
               x.output_tokens == y.output_tokens && x.first_block == y.first_block &&
               x.num_blocks == y.num_blocks);
    FUZZ_CHECK(a.tenants[x.tenant] == b.tenants[y.tenant]);
  }
  FUZZ_CHECK(a.blocks == b.blocks);
  FUZZ_CHECK(a.distinct_blocks == b.distinct_blocks);
}

}  // namespace
}  // namespace kvtier

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace kvtier;
  fuzz::FuzzReader in(data, size);
  const uint8_t selector = in.U8();
  TraceOptions o;
  o.format = static_cast<TraceFormat>(selector % 3);
  // At least 256 tokens a block: an Azure line of 2^32 tokens is then at most
  // 2^24 blocks, so a fuzz input cannot ask for more memory than the limit.
  o.block_tokens = 256 << (selector / 3 % 4);
  o.azure_shared_prefix_tokens = (selector & 0x80) ? 4096 : 0;
  std::istringstream text(in.Rest());
  Result<Trace> t = ParseTrace(text, "fuzz", o);
  if (!t.ok()) {
    FUZZ_CHECK(t.status().code() == StatusCode::kInvalidArgument);
    return 0;
  }
  CheckConsistent(*t);
  if (o.format == TraceFormat::kCsv) {
    std::istringstream again(ToCsv(*t));
    Result<Trace> u = ParseTrace(again, "again", o);
    FUZZ_CHECK(u.ok());
    CheckSame(*t, *u);
  }
  return 0;
}
