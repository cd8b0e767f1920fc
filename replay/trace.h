// Serving traces for the eviction-policy benchmarks (DESIGN §5, §11): what
// each request asked for, as a run of prefix blocks.
//
// Formats:
//  - mooncake: Mooncake's FAST'25 JSON Lines, one request per line with
//    exactly `timestamp` (ms), `input_length`, `output_length` and `hash_ids`
//    (chained prefix-block ids of 512-token blocks).
//  - azure: the Azure LLM inference CSV (`TIMESTAMP,ContextTokens,
//    GeneratedTokens`, absolute timestamps with fractional seconds, CRLF
//    allowed). It has no prefix hashes: every block is the request's own,
//    unless `azure_shared_prefix_tokens` > 0, which gives every request the
//    same synthetic leading blocks (one system prompt shared by all): a
//    labelled assumption, not data.
//  - csv: `time_ms,tenant,keys` with keys separated by `;` (any strings,
//    one per block of `block_tokens` tokens); a first line starting with
//    `time` is a header; `#` starts a comment line. Keys are as given (two
//    tenants sharing a key share the block).
//
// Block ids are made dense (0..distinct-1) in order of first appearance, so
// a replay can index arrays by them. Malformed input is kInvalidArgument
// naming the file and line; nothing is returned then.
#pragma once

#include <cstdint>
#include <istream>
#include <string>
#include <vector>

#include "common/status.h"

namespace kvtier {

enum class TraceFormat { kMooncake, kAzure, kCsv };
Result<TraceFormat> ParseTraceFormat(const std::string& name);

struct TraceOptions {
  TraceFormat format = TraceFormat::kMooncake;
  int block_tokens = 512;  // azure and csv (mooncake's blocks are 512 tokens)
  int64_t azure_shared_prefix_tokens = 0;
};

struct TraceRequest {
  int64_t time_ms = 0;  // from the trace's first request
  uint32_t input_tokens = 0;
  uint32_t output_tokens = 0;
  uint32_t tenant = 0;       // index into Trace::tenants
  uint32_t first_block = 0;  // its blocks: Trace::blocks[first_block, first_block + num_blocks)
  uint32_t num_blocks = 0;
};

struct Trace {
  int block_tokens = 512;
  std::vector<TraceRequest> requests;
  std::vector<uint32_t> blocks;      // dense block ids, each request's in prefix order
  uint32_t distinct_blocks = 0;      // the footprint
  std::vector<std::string> tenants;  // "" for traces without tenants

  // Tokens of block i of request r: block_tokens, less for a final partial block.
  uint32_t BlockTokens(const TraceRequest& r, uint32_t i) const;
};

Result<Trace> ReadTrace(const std::string& path, const TraceOptions& options);
// `name` labels errors ("name:line: ...").
Result<Trace> ParseTrace(std::istream& in, const std::string& name, const TraceOptions& options);

}  // namespace kvtier
