// Unguessable ids (lease and shared-memory region ids): 128 bits from the
// kernel's random source, as 32 hex digits. Holding one is what lets a
// client use the thing it names, so it must not be predictable.
#pragma once

#include <string>

namespace kvtier {

std::string NewRandomId();

}  // namespace kvtier
