// device.h for builds without the CUDA toolkit: there is never a device.
#include "kernels/device.h"

namespace kvtier {
namespace {
Status NoCuda() { return Status::Unavailable("kvtier was built without CUDA"); }
}  // namespace

bool DeviceAvailable() { return false; }
std::string DeviceDescription() { return "built without CUDA"; }
Result<DeviceBuffer> DeviceBuffer::Allocate(size_t) { return NoCuda(); }
DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& o) noexcept {
  std::swap(ptr_, o.ptr_);
  std::swap(bytes_, o.bytes_);
  return *this;
}
DeviceBuffer::~DeviceBuffer() = default;
Status CopyToDevice(void*, const void*, size_t) { return NoCuda(); }
Status CopyToHost(void*, const void*, size_t) { return NoCuda(); }
Status SynchronizeStream(GpuStream) { return NoCuda(); }
Status PinHostMemory(void*, size_t) { return NoCuda(); }
void UnpinHostMemory(void*) {}

}  // namespace kvtier
