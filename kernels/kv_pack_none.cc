// The GPU launchers of kv_pack.cuh in a build without CUDA.
#include "kernels/kv_pack.cuh"

namespace kvtier {

Status PackKvBlocks(const KvPageLayout&, const void*, const int32_t*, int64_t, void*, GpuStream) {
  return Status::Unavailable("kvtier was built without CUDA");
}
Status UnpackKvBlocks(const KvPageLayout&, const void*, const int32_t*, int64_t, void*, GpuStream) {
  return Status::Unavailable("kvtier was built without CUDA");
}

}  // namespace kvtier
