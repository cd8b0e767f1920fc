// Command-line parsing shared by kvtierd and the kvtier CLI.
//
// Flags are `--name value` or `--name=value`; a flag declared boolean takes no
// value. Anything not starting with `--` is a positional argument. Unknown
// flags and missing values are errors that name the flag.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace kvtier {

class FlagSet {
 public:
  // Declares a flag that takes a value, or (boolean) none.
  void Value(std::string name) { values_.insert(std::move(name)); }
  void Bool(std::string name) { bools_.insert(std::move(name)); }

  // Parses args (without argv[0]). May be called once.
  Status Parse(const std::vector<std::string>& args);

  bool Has(const std::string& name) const { return given_.count(name) > 0; }
  std::string Get(const std::string& name, std::string fallback = "") const;
  const std::vector<std::string>& positional() const { return positional_; }

 private:
  std::set<std::string> values_, bools_;
  std::map<std::string, std::string> given_;
  std::vector<std::string> positional_;
};

// A command-line tool's failure: prints "TOOL: msg" on stderr, and for a
// usage error (code 2) how to get help; returns `code` for main to return.
int ToolFail(std::string_view tool, const std::string& msg, int code);

// "1048576", "64K", "512M", "2G", "1T" (binary multiples; "KiB" etc. accepted).
Result<uint64_t> ParseBytes(std::string_view text);
// A non-negative integer that fits in int64.
Result<int64_t> ParseInt(std::string_view text);
// A finite, non-negative decimal number ("2.5", "4e14").
Result<double> ParseNonNegative(std::string_view text);
// Token ids: comma-separated items, each an id or an inclusive range "A..B",
// e.g. "1..64,7,9". Ids are int32 >= 0. At most `max_tokens` ids.
Result<std::vector<int32_t>> ParseTokenList(std::string_view text, size_t max_tokens);

}  // namespace kvtier
