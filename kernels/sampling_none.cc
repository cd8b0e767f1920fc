// The GPU launchers of sampling.cuh in a build without CUDA.
#include "kernels/sampling.cuh"

namespace kvtier {

Status ArgmaxRows(const float*, int64_t, int, int32_t*, GpuStream) {
  return Status::Unavailable("kvtier was built without CUDA");
}
Status SampleTopP(const float*, int64_t, int, const float*, const float*, const float*, int32_t*,
                  GpuStream) {
  return Status::Unavailable("kvtier was built without CUDA");
}

}  // namespace kvtier
