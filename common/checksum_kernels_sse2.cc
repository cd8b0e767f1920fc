// XXH3 kernels built for SSE2 (this file's compile flags: common/CMakeLists.txt).
#define XXH_VECTOR XXH_SSE2
#define KVTIER_XXH3_KERNELS kSse2Kernels
#include "common/checksum_kernels_impl.h"
