// XXH3 kernels built for AVX512 (this file's compile flags: common/CMakeLists.txt).
#define XXH_VECTOR XXH_AVX512
#define KVTIER_XXH3_KERNELS kAvx512Kernels
#include "common/checksum_kernels_impl.h"
