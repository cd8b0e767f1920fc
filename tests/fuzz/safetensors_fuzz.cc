// Fuzzes the Hugging Face loader (model/model_weights.h,
// LoadSafetensorsModel). Input: a u16 length, that many bytes of config.json,
// then model.safetensors. A model that loads is valid, its tensors lie in its
// storage, and it survives a round trip through the writer bit for bit.
#include <filesystem>

#include "tests/fuzz/fuzz_util.h"
#include "tests/fuzz/model_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace kvtier;
  fuzz::FuzzReader in(data, size);
  const std::string config = in.Bytes(in.U16());
  const std::string dir = fuzz::ScratchDir() + "/model";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  fuzz::WriteFile(dir + "/config.json", config);
  fuzz::WriteFile(dir + "/model.safetensors", in.Rest());
  Result<std::unique_ptr<ModelWeights>> w = LoadSafetensorsModel(dir);
  if (!w.ok()) {
    FUZZ_CHECK(!w.status().message().empty());
    return 0;
  }
  fuzz::CheckModel(**w);
  fuzz::CheckRoundTrip(**w);
  return 0;
}
