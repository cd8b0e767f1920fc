// XXH3 kernels built for AVX2 (this file's compile flags: common/CMakeLists.txt).
#define XXH_VECTOR XXH_AVX2
#define KVTIER_XXH3_KERNELS kAvx2Kernels
#include "common/checksum_kernels_impl.h"
