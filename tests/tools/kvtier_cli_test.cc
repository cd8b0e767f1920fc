// kvtier, the binary, on command lines it refuses before it calls a daemon:
// each exits 2 and says why, then prints the usage text; with --json the
// same error is a JSON object on stdout. No daemon runs: the address given
// is never dialled.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>

#include "tests/tools/run_cli.h"

namespace kvtier {
namespace {

using testing::RunCli;

// Nothing listens here, and none of these command lines gets to dial it.
constexpr char kNoDaemon[] = "127.0.0.1:1";
constexpr char kUsageStart[] = "usage: kvtier [--addr HOST:PORT]";

bool Contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// A bare `cache` once read past the command line's words (a segfault).
TEST(KvtierCliTest, CacheWithoutASubcommandPrintsItsUsage) {
  const std::string error = "cache takes: create, get NAME, list, update NAME, delete NAME";
  std::string out;
  EXPECT_EQ(RunCli("kvtier", {"--addr", kNoDaemon, "cache"}, &out), 2) << out;
  EXPECT_TRUE(Contains(out, "kvtier: " + error + "\n" + kUsageStart)) << out;

  ASSERT_EQ(RunCli("kvtier", {"--addr", kNoDaemon, "--json", "cache"}, &out), 2) << out;
  const nlohmann::json j = nlohmann::json::parse(out);
  EXPECT_EQ(j, (nlohmann::json{{"ok", false}, {"error", error}}));

  // A subcommand without the NAME it needs, and one that does not exist.
  for (const char* sub : {"get", "update", "delete", "bogus"}) {
    EXPECT_EQ(RunCli("kvtier", {"--addr", kNoDaemon, "cache", sub}, &out), 2) << sub << ": " << out;
    EXPECT_TRUE(Contains(out, error)) << sub << ": " << out;
  }
}

TEST(KvtierCliTest, AnUnknownCommandExits2WithTheUsage) {
  std::string out;
  EXPECT_EQ(RunCli("kvtier", {"--addr", kNoDaemon, "frobnicate"}, &out), 2) << out;
  EXPECT_TRUE(Contains(out, "kvtier: unknown command 'frobnicate'\n" + std::string(kUsageStart)))
      << out;
  EXPECT_EQ(RunCli("kvtier", {"--addr", kNoDaemon}, &out), 2) << out;
  EXPECT_TRUE(Contains(out, "kvtier: give exactly one command")) << out;
  EXPECT_EQ(RunCli("kvtier", {"--addr", kNoDaemon, "--no-such-flag", "health"}, &out), 2) << out;
  EXPECT_TRUE(Contains(out, kUsageStart)) << out;
}

TEST(KvtierCliTest, HelpPrintsTheUsageAndExits0) {
  std::string out;
  EXPECT_EQ(RunCli("kvtier", {"--help"}, &out), 0) << out;
  EXPECT_EQ(out.rfind(kUsageStart, 0), 0u) << out;
}

}  // namespace
}  // namespace kvtier
