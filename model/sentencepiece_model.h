// SentencePieceModel: what a sentencepiece `tokenizer.model` says, read
// straight from the protobuf wire format, with no protobuf library.
//
// A tokenizer.model is a serialized `sentencepiece.ModelProto` (proto2, see
// sentencepiece_model.proto). Only the fields below are read; every other
// field is skipped by its wire type. The parser checks the wire format and the
// enum ranges, not whether the vocabulary makes sense (no pieces, no <unk>,
// duplicates): that is the tokenizer's job (model/sentencepiece_tokenizer.cc).
//
// A plain value. Parsing never trusts a length or a count in the input: what
// it allocates is linear in the input's size.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace kvtier {

struct SentencePieceModel {
  // ModelProto.SentencePiece.Type.
  enum class PieceType : int32_t {
    kNormal = 1,       // an ordinary piece; BPE merges make these
    kUnknown = 2,      // <unk>: text the vocabulary cannot spell
    kControl = 3,      // <s>, </s>, <pad>: never produced from text, decode to ""
    kUserDefined = 4,  // always one symbol wherever it appears in the text
    kUnused = 5,       // merged through, then split back into its parts
    kByte = 6,         // <0xHH>: one byte, for byte fallback
  };
  // TrainerSpec.ModelType.
  enum class ModelType : int32_t { kUnigram = 1, kBpe = 2, kWord = 3, kChar = 4 };

  struct Piece {
    std::string text;                     // U+2581 stands for a space
    float score = 0.0f;                   // BPE merge priority, higher first
    PieceType type = PieceType::kNormal;  // proto default
  };

  // TrainerSpec: how the model was trained; a few fields matter for encoding.
  // Defaults are the proto's.
  struct TrainerSpec {
    ModelType model_type = ModelType::kUnigram;  // field 3
    bool treat_whitespace_as_suffix = false;     // field 24
    bool byte_fallback = false;                  // field 35: unknown text as <0xHH> pieces
    int32_t unk_id = 0;                          // field 40
    int32_t bos_id = 1;                          // field 41; -1 when there is none
    int32_t eos_id = 2;                          // field 42; -1 when there is none
    int32_t pad_id = -1;                         // field 43; -1 when there is none
    std::string unk_surface = " \xE2\x81\x87 ";  // field 44: what <unk> decodes to
  };
  // NormalizerSpec: how text is normalized before encoding.
  struct NormalizerSpec {
    std::string name;                      // field 1: "identity", "nmt_nfkc", ...
    std::string precompiled_charsmap;      // field 2: the compiled rule; empty for identity
    bool add_dummy_prefix = true;          // field 3: a space before the text
    bool remove_extra_whitespaces = true;  // field 4: trim, and collapse runs of spaces
    bool escape_whitespaces = true;        // field 5: spaces become U+2581
  };

  std::vector<Piece> pieces;    // field 1, indexed by token id
  TrainerSpec trainer;          // field 2
  NormalizerSpec normalizer;    // field 3
  NormalizerSpec denormalizer;  // field 5: applied after decoding (only its rule is used)
};

// Parses a serialized ModelProto. kCorruption for anything that is not one:
// truncated or overlong varints, lengths past the end, groups (wire types 3
// and 4) or undefined wire types, field number 0, a known field with the wrong
// wire type, an enum value outside its range. Never fails otherwise; an empty
// input is an empty model.
Result<SentencePieceModel> ParseSentencePieceModel(std::string_view bytes);

}  // namespace kvtier
