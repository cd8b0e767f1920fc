// Key-chaining kernels built for AVX512 (this file's compile flags: cache/CMakeLists.txt).
#define XXH_VECTOR XXH_AVX512
#define KVTIER_CHAIN_KERNELS kAvx512ChainKernels
#include "cache/chained_hash_impl.h"
