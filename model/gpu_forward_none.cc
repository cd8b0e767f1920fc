// GpuForward in a build without CUDA: there is never a device.
#include "model/gpu_forward.h"

namespace kvtier {

struct GpuForward::Impl {};

GpuForward::GpuForward(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
GpuForward::~GpuForward() = default;

Result<std::unique_ptr<GpuForward>> GpuForward::Create(const ModelWeights&,
                                                       const GpuForwardOptions&) {
  return Status::Unavailable("kvtier was built without CUDA: no GPU forward pass");
}

Status GpuForward::Run(std::span<const SeqChunk>, std::vector<float>*) {
  return Status::Unavailable("built without CUDA");
}
Status GpuForward::RunArgmax(std::span<const SeqChunk>, std::vector<TokenId>*) {
  return Status::Unavailable("built without CUDA");
}
Status GpuForward::ReadPage(PageId, std::span<std::byte>) {
  return Status::Unavailable("built without CUDA");
}
Status GpuForward::WritePage(PageId, std::span<const std::byte>) {
  return Status::Unavailable("built without CUDA");
}
Result<std::vector<std::byte>> GpuForward::PackRows(PageId, int) {
  return Status::Unavailable("built without CUDA");
}
Status GpuForward::UnpackRows(PageId, int, std::span<const std::byte>) {
  return Status::Unavailable("built without CUDA");
}
void GpuForward::set_cuda_graphs(bool) {}
void* GpuForward::page_pool() const { return nullptr; }
void* GpuForward::stream() const { return nullptr; }
size_t GpuForward::page_bytes() const { return 0; }

}  // namespace kvtier
