// The GPU launchers of attention.cuh in a build without CUDA.
#include "kernels/attention.cuh"

namespace kvtier {

Status StoreKv(const KvPagesView&, const AttentionBatch&, int, const float*, const float*,
               GpuStream) {
  return Status::Unavailable("kvtier was built without CUDA");
}
Status PagedAttentionDecode(const KvPagesView&, const AttentionBatch&, const AttentionParams&,
                            const float*, float*, GpuStream) {
  return Status::Unavailable("kvtier was built without CUDA");
}
Status PagedAttentionPrefill(const KvPagesView&, const AttentionBatch&, const AttentionParams&,
                             const float*, float*, GpuStream) {
  return Status::Unavailable("kvtier was built without CUDA");
}

}  // namespace kvtier
