// The HBM tier's CUDA backend in a build without CUDA: never available, so
// the tier runs on its host stand-in.
#include "tiers/hbm/hbm_backend.h"

namespace kvtier {

Result<std::unique_ptr<HbmBackend>> NewCudaHbmBackend(int, uint64_t) {
  return Status::Unavailable("kvtier was built without CUDA");
}

}  // namespace kvtier
