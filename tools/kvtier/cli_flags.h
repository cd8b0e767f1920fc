// kvtier's flags and the readers that more than one command shares: the
// connection, the token list, block keys and the namespace flags. A reader
// returns kInvalidArgument naming the flag; the command turns that into a
// command-line error (exit 2).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "common/block_key.h"
#include "common/flags.h"
#include "common/status.h"
#include "proto/client.h"

namespace kvtier::cli {

// Every flag kvtier takes, for every command.
FlagSet CliFlags();

// A whole file; nullopt when it cannot be opened.
std::optional<std::string> ReadFile(const std::string& path);

// The connection: --addr, --timeout-ms, --tls-ca and --api-key, the unset
// ones from $KVTIER_ADDR, $KVTIER_TLS_CA and $KVTIER_API_KEY.
Result<ClientOptions> ConnectionOptions(const FlagSet& flags);

// --tokens: comma-separated ids and ranges.
Result<std::vector<int32_t>> TokensFlag(const FlagSet& flags);

// The block key in flag --`name` (32 hex digits).
Result<BlockKey> KeyFlag(const FlagSet& flags, const std::string& name);

// The namespace flags; unset ones take the daemon's defaults.
Result<v1::Namespace> NamespaceFlags(const FlagSet& flags);

}  // namespace kvtier::cli
