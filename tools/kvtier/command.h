// kvtier's commands. A command builds its request from the flags (a failure
// there is the command line's: exit 2), calls the daemon (a failure there
// exits 1) and prints the reply as text, or as one JSON object with --json.
// main.cc checks the command words and picks the command from its table.
#pragma once

#include <string>
#include <vector>

#include "common/flags.h"
#include "proto/client.h"
#include "tools/kvtier/output.h"

namespace kvtier::cli {

// What a command works with: the parsed command line, the client and the
// output.
struct Command {
  const FlagSet& flags;
  const std::vector<std::string>& args;  // the positional words, the command's name first
  Client& client;
  const Output& out;
};

// The daemon itself (admin_commands.cc): health, stats, billing report.
Exit Health(const Command& c);
Exit Stats(const Command& c);
// stats --mrc (mrc_report.cc): the estimated miss-ratio curve and each
// tier's what-if.
Exit StatsMrc(const Command& c);
Exit BillingReport(const Command& c);

// The block API (block_commands.cc): lookup, put, get, delete, explain.
Exit Lookup(const Command& c);
Exit Put(const Command& c);
Exit Get(const Command& c);
Exit Delete(const Command& c);
Exit Explain(const Command& c);

// A prompt through the daemon's engine (generate.cc).
Exit Generate(const Command& c);

// Named caches (cache_commands.cc): `cache SUBCOMMAND [NAME]`.
Exit Cache(const Command& c);

}  // namespace kvtier::cli
