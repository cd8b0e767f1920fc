// Argument checks shared by the GPU launchers and their CPU twins.
#include <string>

#include "kernels/kv_pack.cuh"
#include "kernels/kv_pack_internal.h"

namespace kvtier {

Status KvPageLayout::Validate() const {
  KVTIER_RETURN_IF_ERROR(geometry.Validate());
  if (page_tokens <= 0 || (page_tokens & (page_tokens - 1)) != 0 ||
      geometry.block_tokens % page_tokens != 0) {
    return Status::InvalidArgument("page_tokens must be a power of two dividing block_tokens " +
                                   std::to_string(geometry.block_tokens) + ", got " +
                                   std::to_string(page_tokens));
  }
  if (num_pages <= 0) return Status::InvalidArgument("the page pool has no pages");
  return Status::Ok();
}

Status CheckPackArguments(const KvPageLayout& layout, const void* src, const int32_t* page_table,
                          int64_t num_blocks, const void* dst) {
  KVTIER_RETURN_IF_ERROR(layout.Validate());
  if (num_blocks < 0) return Status::InvalidArgument("num_blocks is negative");
  if (num_blocks > 0 && (src == nullptr || dst == nullptr || page_table == nullptr)) {
    return Status::InvalidArgument("null buffer passed to KV pack/unpack");
  }
  return Status::Ok();
}

}  // namespace kvtier
