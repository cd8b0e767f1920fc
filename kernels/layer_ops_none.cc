// The GPU launchers of layer_ops.cuh in a build without CUDA.
#include "kernels/layer_ops.cuh"

namespace kvtier {

Status RmsNormRows(const float*, const float*, int64_t, int, float, float*, GpuStream) {
  return Status::Unavailable("kvtier was built without CUDA");
}
Status RopeRows(float*, int64_t, int, int, const int32_t*, const float*, const float*, int,
                GpuStream) {
  return Status::Unavailable("kvtier was built without CUDA");
}
Status SwiGlu(const float*, const float*, int64_t, float*, GpuStream) {
  return Status::Unavailable("kvtier was built without CUDA");
}
Status AddInPlace(float*, const float*, int64_t, GpuStream) {
  return Status::Unavailable("kvtier was built without CUDA");
}
Status GatherRows(const float*, int64_t, const int32_t*, int64_t, int, float*, GpuStream) {
  return Status::Unavailable("kvtier was built without CUDA");
}

}  // namespace kvtier
