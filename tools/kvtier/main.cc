// kvtier: the command-line client of kvtierd.
//
// main parses the flags, checks the shape of the command line, opens a
// client from the connection flags and runs the command (command.h) that
// the table below names.
#include <iostream>

#include "tools/kvtier/cli_flags.h"
#include "tools/kvtier/command.h"

namespace kvtier::cli {

namespace {

struct CommandSpec {
  const char* name;
  Exit (*run)(const Command&);
};

constexpr CommandSpec kCommands[] = {
    {"health", Health},     {"stats", Stats},     {"lookup", Lookup},
    {"put", Put},           {"get", Get},         {"delete", Delete},
    {"generate", Generate}, {"explain", Explain}, {"billing", BillingReport},
    {"cache", Cache}};

// One command word, except `explain KEY`, `billing report` and
// `cache SUBCOMMAND [NAME]`, whose words their commands check.
Exit CheckCommandWords(const std::vector<std::string>& args) {
  const std::string command = args.empty() ? "" : args[0];
  if (command == "billing" && (args.size() != 2 || args[1] != "report")) {
    return UsageError("billing has one subcommand: billing report", true);
  }
  const bool more_words = (command == "explain" && args.size() == 2) || command == "billing" ||
                          (command == "cache" && args.size() >= 2);
  if (args.size() != 1 && !more_words) return UsageError("give exactly one command", true);
  return {};
}

Exit RunCommand(const FlagSet& flags, const Output& out) {
  const std::vector<std::string>& args = flags.positional();
  if (Exit e = CheckCommandWords(args); e.code != kExitOk) return e;
  Result<ClientOptions> options = ConnectionOptions(flags);
  if (!options.ok()) return UsageError(options.status());
  Client client(*options);
  for (const CommandSpec& command : kCommands) {
    if (args[0] == command.name) return command.run(Command{flags, args, client, out});
  }
  return UsageError("unknown command '" + args[0] + "'", true);
}

int Main(int argc, char** argv) {
  FlagSet flags = CliFlags();
  if (Status s = flags.Parse(std::vector<std::string>(argv + 1, argv + argc)); !s.ok()) {
    return Output(/*json=*/false).Finish(UsageError(s.message(), /*show_usage=*/true));
  }
  if (flags.Has("help")) {
    std::cout << kUsage;
    return kExitOk;
  }
  const Output out(flags.Has("json"));
  return out.Finish(RunCommand(flags, out));
}

}  // namespace

}  // namespace kvtier::cli

int main(int argc, char** argv) { return kvtier::cli::Main(argc, argv); }
