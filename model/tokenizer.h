// Tokenizer: text <-> token ids for a model (DESIGN §8).
//
// Two formats: llama2.c's tokenizer.bin, encoded and decoded exactly as run.c
// does (llama2c_tokenizer.cc), and sentencepiece's tokenizer.model, BPE models
// read by our own wire-format reader (sentencepiece_tokenizer.cc,
// sentencepiece_model.h; Debian's libsentencepiece cannot share a process with
// libprotobuf). Token ids are accepted directly everywhere, so a model without
// a tokenizer still serves requests given as ids.
//
// Immutable after load; thread-safe.
#pragma once

#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "common/token.h"

namespace kvtier {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  virtual int vocab_size() const = 0;
  virtual TokenId bos_id() const = 0;  // -1 if the vocabulary has none
  virtual TokenId eos_id() const = 0;  // -1 if the vocabulary has none

  // The ids of `text`, with BOS (and EOS) prepended (appended) when asked.
  // kInvalidArgument for text that cannot be encoded (never for valid UTF-8).
  virtual Result<std::vector<TokenId>> Encode(std::string_view text, bool add_bos,
                                              bool add_eos) const = 0;
  // The text of `token` when it follows `prev` (run.c's decode: after BOS one
  // leading space is stripped; byte tokens <0xHH> are the raw byte). Ids out
  // of range decode to "".
  virtual std::string DecodePiece(TokenId prev, TokenId token) const = 0;

  // The text of a run of tokens that follows `prev` (BOS for a sequence that
  // starts with BOS), piece by piece.
  std::string Decode(TokenId prev, std::span<const TokenId> tokens) const;
};

// llama2.c tokenizer.bin: int32 max_token_length, then per token float32
// score, int32 len, len bytes. `vocab_size` comes from the model (the file does
// not record it). Errors: kNotFound, kCorruption (truncated or inconsistent).
Result<std::unique_ptr<Tokenizer>> LoadLlama2cTokenizer(const std::string& file, int vocab_size);
// sentencepiece tokenizer.model. Errors: kNotFound, kCorruption (malformed or
// inconsistent), kInvalidArgument (a model kind we do not encode: not BPE, or
// a normalizer other than identity), kIOError.
Result<std::unique_ptr<Tokenizer>> LoadSentencePieceTokenizer(const std::string& file);
// The tokenizer beside a model: in the model's directory (or the directory of
// a checkpoint file), tokenizer.model, else tokenizer.bin, else the only
// tok*.bin. kNotFound when there is none.
Result<std::unique_ptr<Tokenizer>> LoadTokenizerFor(const std::string& model_path, int vocab_size);

// Writes a llama2.c tokenizer.bin for a random-weight model of `vocab_size`
// (>= 259 + 95): ids 0 <unk>, 1 BOS, 2 EOS, 3..258 the byte tokens <0x00>..<0xFF>,
// then the 95 printable ASCII characters, then deterministic multi-character
// pieces, each the concatenation of an earlier piece and a character, with
// falling scores, so BPE merges reach them. kInvalidArgument for a smaller
// vocabulary, kIOError on write failure.
Status WriteSyntheticLlama2cTokenizer(const std::string& file, int vocab_size);

}  // namespace kvtier
