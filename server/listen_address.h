// "host:port" and "[v6host]:port" as kvtierd's flags take them.
#pragma once

#include <string>
#include <string_view>

#include "common/status.h"

namespace kvtier {

// Splits `listen` into host and port (0..65535; 0 = any free port).
// InvalidArgument names `flag` and shows `example`.
Status ParseListenAddress(const std::string& listen, std::string_view flag,
                          std::string_view example, std::string* host, int* port);

}  // namespace kvtier
