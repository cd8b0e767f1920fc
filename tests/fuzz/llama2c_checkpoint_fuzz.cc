// Fuzzes the llama2.c checkpoint loader (model/model_weights.h,
// LoadLlama2cCheckpoint): the input is the checkpoint file. A checkpoint that
// loads is a valid model whose tensors lie in its storage, and survives a
// round trip through safetensors bit for bit.
#include "tests/fuzz/fuzz_util.h"
#include "tests/fuzz/model_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace kvtier;
  const std::string path = fuzz::ScratchDir() + "/model.bin";
  fuzz::WriteFile(path, {reinterpret_cast<const char*>(data), size});
  Result<std::unique_ptr<ModelWeights>> w = LoadLlama2cCheckpoint(path);
  if (!w.ok()) {
    FUZZ_CHECK(!w.status().message().empty());
    FUZZ_CHECK(w.status().code() != StatusCode::kNotFound);
    return 0;
  }
  fuzz::CheckModel(**w);
  fuzz::CheckRoundTrip(**w);
  return 0;
}
