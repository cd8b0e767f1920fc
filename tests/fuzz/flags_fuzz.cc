// Fuzzes the command-line and config parsers (common/flags.h and kvtierd's
// ParseDaemonFlags with its JSON --config file), chosen by the first byte:
//   0: FlagSet over NUL-separated arguments;
//   1: ParseBytes / ParseInt / ParseNonNegative / ParseTokenList;
//   2: the rest of the input as a kvtierd --config file;
//   3: the rest as NUL-separated kvtierd arguments (no --config).
// Numbers that parse print back to themselves (or the same value); token
// lists hold non-negative ids, at most the limit; a FlagSet keeps only flags
// it declared; bad input is refused with a message, never a crash.
#include <cmath>
#include <vector>

#include "common/flags.h"
#include "server/daemon_flags.h"
#include "tests/fuzz/fuzz_util.h"

namespace kvtier {
namespace {

std::vector<std::string> SplitNul(const std::string& s) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= s.size() && out.size() < 64) {
    size_t end = s.find('\0', start);
    if (end == std::string::npos) end = s.size();
    out.push_back(s.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

void FuzzFlagSet(const std::string& rest) {
  FlagSet f;
  f.Value("listen");
  f.Value("dram-bytes");
  f.Bool("no-flash");
  const std::vector<std::string> args = SplitNul(rest);
  const Status s = f.Parse(args);
  if (!s.ok()) {
    FUZZ_CHECK(s.code() == StatusCode::kInvalidArgument && !s.message().empty());
    return;
  }
  if (f.Has("no-flash")) FUZZ_CHECK(f.Get("no-flash") == "true");
  FUZZ_CHECK(f.positional().size() <= args.size());
  for (const std::string& p : f.positional()) FUZZ_CHECK(p.rfind("--", 0) != 0 || p == "--");
}

void FuzzNumbers(const std::string& text) {
  if (Result<int64_t> v = ParseInt(text); v.ok()) {
    FUZZ_CHECK(*v >= 0);
    FUZZ_CHECK(*ParseInt(std::to_string(*v)) == *v);
  }
  if (Result<uint64_t> v = ParseBytes(text); v.ok()) {
    Result<uint64_t> again = ParseBytes(std::to_string(*v));
    // Sizes past int64 exist only with a unit; written as plain digits they
    // are refused.
    FUZZ_CHECK(again.ok() ? *again == *v : *v > static_cast<uint64_t>(INT64_MAX));
  }
  if (Result<double> v = ParseNonNegative(text); v.ok()) {
    FUZZ_CHECK(std::isfinite(*v) && *v >= 0);
  }
  const size_t limit = 1 + text.size() % 4096;
  Result<std::vector<int32_t>> ids = ParseTokenList(text, limit);
  if (ids.ok()) {
    FUZZ_CHECK(!ids->empty() && ids->size() <= limit);
    std::string back;
    for (int32_t id : *ids) {
      FUZZ_CHECK(id >= 0);
      back += (back.empty() ? "" : ",") + std::to_string(id);
    }
    Result<std::vector<int32_t>> again = ParseTokenList(back, limit);
    FUZZ_CHECK(again.ok() && *again == *ids);
  } else {
    FUZZ_CHECK(ids.status().code() == StatusCode::kInvalidArgument ||
               ids.status().code() == StatusCode::kResourceExhausted);
  }
}

void FuzzDaemonArgs(std::vector<std::string> args) {
  args.insert(args.begin(), "kvtierd");
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  bool help = false;
  Result<DaemonOptions> o = ParseDaemonFlags(static_cast<int>(args.size()), argv.data(), &help);
  if (!o.ok()) FUZZ_CHECK(!o.status().message().empty());
}

}  // namespace
}  // namespace kvtier

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace kvtier;
  fuzz::FuzzReader in(data, size);
  const uint8_t selector = in.U8() % 4;
  const std::string rest = in.Rest();
  switch (selector) {
    case 0:
      FuzzFlagSet(rest);
      break;
    case 1:
      FuzzNumbers(rest);
      break;
    case 2: {
      const std::string path = fuzz::ScratchDir() + "/config.json";
      fuzz::WriteFile(path, rest);
      FuzzDaemonArgs({"--config", path});
      break;
    }
    default: {
      std::vector<std::string> args = SplitNul(rest);
      for (std::string& a : args) {
        if (a.rfind("--config", 0) == 0) a = "--help";  // never read another file
      }
      FuzzDaemonArgs(args);
      break;
    }
  }
  return 0;
}
