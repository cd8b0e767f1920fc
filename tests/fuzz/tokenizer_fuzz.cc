// Fuzzes both tokenizer loaders and the tokenizers they give
// (model/tokenizer.h, model/sentencepiece_model.h). Input: a selector
// byte, a u16 vocabulary size (llama2.c only: the file does not record it), a
// u16 text length and the text, then the tokenizer file:
//   even selector: a llama2.c tokenizer.bin;
//   odd selector:  a sentencepiece tokenizer.model (also parsed directly).
// A tokenizer that loads encodes the text to ids inside its vocabulary (BOS
// and EOS where asked) or refuses it with kInvalidArgument, and decodes any
// id, in range or not, without failing.
#include <algorithm>

#include "model/sentencepiece_model.h"
#include "model/tokenizer.h"
#include "tests/fuzz/fuzz_util.h"

namespace kvtier {
namespace {

void Exercise(const Tokenizer& t, const std::string& text, uint8_t selector) {
  FUZZ_CHECK(t.vocab_size() > 0);
  FUZZ_CHECK(t.bos_id() < t.vocab_size() && t.eos_id() < t.vocab_size());
  const bool bos = selector & 2, eos = selector & 4;
  Result<std::vector<TokenId>> ids = t.Encode(text, bos, eos);
  if (!ids.ok()) {
    FUZZ_CHECK(ids.status().code() == StatusCode::kInvalidArgument);
    return;
  }
  for (TokenId id : *ids) FUZZ_CHECK(id >= 0 && id < t.vocab_size());
  if (bos && t.bos_id() >= 0) FUZZ_CHECK(!ids->empty() && ids->front() == t.bos_id());
  if (eos && t.eos_id() >= 0) FUZZ_CHECK(!ids->empty() && ids->back() == t.eos_id());
  const std::string decoded = t.Decode(bos ? t.bos_id() : -1, *ids);
  (void)decoded;
  for (TokenId id : {-1, 0, t.vocab_size() - 1, t.vocab_size(), 1 << 30}) {
    (void)t.DecodePiece(t.bos_id(), id);
    (void)t.DecodePiece(id, 0);
  }
}

}  // namespace
}  // namespace kvtier

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace kvtier;
  fuzz::FuzzReader in(data, size);
  const uint8_t selector = in.U8();
  const int vocab = in.U16();
  const std::string text = in.Bytes(in.U16() % 1024);
  const std::string file = in.Rest();
  const std::string path = fuzz::ScratchDir() + "/tokenizer";
  fuzz::WriteFile(path, file);
  Result<std::unique_ptr<Tokenizer>> t = Status::NotFound("unset");
  if (selector % 2 == 0) {
    t = LoadLlama2cTokenizer(path, vocab);
    if (t.ok()) FUZZ_CHECK((*t)->vocab_size() == vocab);
  } else {
    Result<SentencePieceModel> m = ParseSentencePieceModel(file);
    t = LoadSentencePieceTokenizer(path);
    // The loader parses with the same reader: it loads only what parses.
    if (t.ok()) FUZZ_CHECK(m.ok() && static_cast<int>(m->pieces.size()) == (*t)->vocab_size());
    if (!m.ok()) FUZZ_CHECK(m.status().code() == StatusCode::kCorruption);
  }
  if (std::getenv("KVTIER_FUZZ_VERBOSE") != nullptr) {  // for checking seeds
    std::fprintf(stderr, "load: %s\n", t.status().ToString().c_str());
  }
  if (!t.ok()) {
    FUZZ_CHECK(t.status().code() != StatusCode::kNotFound);
    return 0;
  }
  Exercise(**t, text, selector);
  return 0;
}
