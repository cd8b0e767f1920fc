// Key-chaining kernels built for AVX2 (this file's compile flags: cache/CMakeLists.txt).
#define XXH_VECTOR XXH_AVX2
#define KVTIER_CHAIN_KERNELS kAvx2ChainKernels
#include "cache/chained_hash_impl.h"
