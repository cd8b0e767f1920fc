// Key-chaining kernels built for SSE2 (this file's compile flags: cache/CMakeLists.txt).
#define XXH_VECTOR XXH_SSE2
#define KVTIER_CHAIN_KERNELS kSse2ChainKernels
#include "cache/chained_hash_impl.h"
