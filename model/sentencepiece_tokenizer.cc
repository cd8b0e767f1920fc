#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <unordered_map>
#include <utility>
#include <vector>

#include "model/sentencepiece_model.h"
#include "model/tokenizer.h"
#include "model/tokenizer_internal.h"

// sentencepiece's tokenizer.model: our own reading of sentencepiece's BPE encoder (libsentencepiece
// cannot be linked: it carries its own protobuf, which clashes with libprotobuf). What it does,
// step by step, as sentencepiece's processor does:
//  1. Normalize. Only the identity rule is supported (no NFKC tables): the
//     text is cut into units (a user-defined piece, one valid UTF-8
//     character, or one malformed byte, which becomes U+FFFD); with
//     remove_extra_whitespaces leading spaces are dropped, runs of spaces
//     collapse to one and trailing ones go; add_dummy_prefix puts a space in
//     front; escape_whitespaces turns every space into U+2581.
//  2. Split into symbols: a user-defined piece is one symbol that never
//     merges (the longest one that matches); otherwise each UTF-8 character
//     is a symbol.
//  3. Merge (MergeAdjacentPairs): a pair merges when its text is a NORMAL,
//     USER_DEFINED or UNUSED piece, scored by that piece's score.
//  4. Each symbol left is its piece's id; an UNUSED piece splits back into
//     the two halves it was merged from. Text that is no piece is <unk>:
//     with byte_fallback each of its bytes becomes its <0xHH> piece, without
//     it a run of unknown symbols is one <unk>.

namespace kvtier {
namespace {

namespace fs = std::filesystem;

// U+2581, sentencepiece's visible space.
constexpr std::string_view kSpaceMarker = "\xE2\x96\x81";
// U+FFFD, what sentencepiece's normalizer makes of a malformed UTF-8 byte.
constexpr std::string_view kReplacementCharacter = "\xEF\xBF\xBD";

// The length of the valid UTF-8 character `text` starts with (shortest form,
// no surrogates, at most U+10FFFF), or 0 when it does not start with one.
size_t ValidUtf8CharLength(std::string_view text) {
  if (text.empty()) return 0;
  const auto lead = static_cast<unsigned char>(text[0]);
  if (lead < 0x80) return 1;
  size_t length;
  uint32_t smallest;  // below this the encoding is overlong
  if ((lead & 0xE0) == 0xC0) {
    length = 2;
    smallest = 0x80;
  } else if ((lead & 0xF0) == 0xE0) {
    length = 3;
    smallest = 0x800;
  } else if ((lead & 0xF8) == 0xF0) {
    length = 4;
    smallest = 0x10000;
  } else {
    return 0;
  }
  if (text.size() < length) return 0;
  uint32_t code_point = lead & (0x7F >> length);
  for (size_t i = 1; i < length; ++i) {
    if (!IsUtf8Continuation(text[i])) return 0;
    code_point = (code_point << 6) | (static_cast<unsigned char>(text[i]) & 0x3F);
  }
  if (code_point < smallest || code_point > 0x10FFFF ||
      (code_point >= 0xD800 && code_point <= 0xDFFF)) {
    return 0;
  }
  return length;
}

// The length of a UTF-8 character judged by its first byte alone, as
// sentencepiece splits normalized (hence valid) text into symbols.
size_t Utf8LengthFromLeadByte(char lead) {
  const auto high = static_cast<unsigned char>(lead) >> 4;
  return high < 0xC ? 1 : high < 0xE ? 2 : high == 0xE ? 3 : 4;
}

std::string_view ModelTypeName(SentencePieceModel::ModelType type) {
  switch (type) {
    case SentencePieceModel::ModelType::kUnigram:
      return "UNIGRAM";
    case SentencePieceModel::ModelType::kBpe:
      return "BPE";
    case SentencePieceModel::ModelType::kWord:
      return "WORD";
    case SentencePieceModel::ModelType::kChar:
      return "CHAR";
  }
  return "unknown";
}

class SentencePieceTokenizer final : public Tokenizer {
 public:
  // Checks the vocabulary as sentencepiece does when it loads a model
  // (kCorruption), then that we can encode with it (kInvalidArgument).
  static Result<std::unique_ptr<Tokenizer>> Create(SentencePieceModel model) {
    std::unique_ptr<SentencePieceTokenizer> tok(new SentencePieceTokenizer(std::move(model)));
    KVTIER_RETURN_IF_ERROR(tok->Init());
    return std::unique_ptr<Tokenizer>(std::move(tok));
  }

  int vocab_size() const override { return static_cast<int>(model_.pieces.size()); }
  TokenId bos_id() const override { return bos_; }
  TokenId eos_id() const override { return eos_; }

  // A BOS or EOS the vocabulary does not have (id -1) is left out.
  Result<std::vector<TokenId>> Encode(std::string_view text, bool add_bos,
                                      bool add_eos) const override;

  // As sentencepiece's own decoder: control pieces (BOS, EOS, padding)
  // decode to "", <unk> to the model's unk_surface, byte pieces to their
  // byte, and U+2581 to a space. Right after BOS a leading U+2581 (the dummy
  // prefix) goes, when the model adds a dummy prefix or removes extra spaces.
  std::string DecodePiece(TokenId prev, TokenId token) const override;

 private:
  using PieceType = SentencePieceModel::PieceType;
  using PieceIds = std::unordered_map<std::string, TokenId, PieceHash, std::equal_to<>>;
  // For each UNUSED piece made by a merge, the two halves it was made from.
  using UnusedHalves =
      std::unordered_map<std::string_view, std::pair<std::string_view, std::string_view>>;

  explicit SentencePieceTokenizer(SentencePieceModel model) : model_(std::move(model)) {}

  Status Init();
  // The length of the longest user-defined piece `text` starts with, or 0.
  size_t MatchUserDefined(std::string_view text) const;
  // The next unit of normalization at the start of (non-empty) `text`: the
  // normalized text of the unit, and how many bytes of `text` it takes.
  std::pair<std::string_view, size_t> NextNormalizationUnit(std::string_view text) const;
  std::string Normalize(std::string_view text) const;
  // sentencepiece's lookup of a finished symbol: reserved pieces (<unk>,
  // control, byte) first, then the others, else <unk>.
  TokenId PieceToId(std::string_view piece) const {
    if (auto it = reserved_.find(piece); it != reserved_.end()) return it->second;
    if (auto it = mergeable_.find(piece); it != mergeable_.end()) return it->second;
    return unk_;
  }
  // Appends the (piece, id) of `piece`, split back into its halves while it is
  // an UNUSED piece.
  void Resegment(std::string_view piece, const UnusedHalves& halves,
                 std::vector<std::pair<std::string_view, TokenId>>* out) const;

  SentencePieceModel model_;  // the pieces (indexed by id) and the options
  PieceIds mergeable_;        // NORMAL, USER_DEFINED and UNUSED pieces: what merges make
  PieceIds reserved_;         // UNKNOWN, CONTROL and BYTE pieces
  PieceIds user_defined_;
  std::vector<size_t> user_defined_lengths_;  // distinct, longest first
  std::array<TokenId, 256> byte_ids_{};       // the <0xHH> pieces, with byte_fallback
  TokenId unk_ = -1;
  TokenId bos_ = -1;
  TokenId eos_ = -1;
  bool strip_bos_space_ = false;  // whether the piece after BOS loses its U+2581
};

Status SentencePieceTokenizer::Init() {
  const auto& pieces = model_.pieces;
  if (pieces.empty()) return Status::Corruption("has no pieces");
  if (pieces.size() > static_cast<size_t>(std::numeric_limits<TokenId>::max())) {
    return Status::Corruption("has " + std::to_string(pieces.size()) + " pieces, too many");
  }
  int bytes_found = 0;
  for (size_t i = 0; i < pieces.size(); ++i) {
    const auto& piece = pieces[i];
    const auto id = static_cast<TokenId>(i);
    const std::string where = "piece " + std::to_string(id);
    if (piece.text.empty()) return Status::Corruption(where + " is empty");
    if (std::isnan(piece.score)) return Status::Corruption(where + " has a NaN score");
    const bool mergeable = piece.type == PieceType::kNormal ||
                           piece.type == PieceType::kUserDefined ||
                           piece.type == PieceType::kUnused;
    PieceIds& ids = mergeable ? mergeable_ : reserved_;
    if (auto [it, inserted] = ids.emplace(piece.text, id); !inserted) {
      return Status::Corruption(where + " (\"" + piece.text.substr(0, 64) + "\") repeats piece " +
                                std::to_string(it->second));
    }
    switch (piece.type) {
      case PieceType::kUnknown:
        if (unk_ >= 0) {
          return Status::Corruption(where + " is a second <unk> (the first is " +
                                    std::to_string(unk_) + ")");
        }
        unk_ = id;
        break;
      case PieceType::kUserDefined:
        user_defined_.emplace(piece.text, id);
        user_defined_lengths_.push_back(piece.text.size());
        break;
      case PieceType::kByte: {
        if (!model_.trainer.byte_fallback) {
          return Status::Corruption(where + " is a byte piece but byte_fallback is off");
        }
        // Exactly "<0xHH>" with upper-case digits, the only form sentencepiece
        // accepts (so each byte has one piece: duplicates are caught above).
        unsigned char byte = 0;
        char canonical[8] = "";
        if (ParseBytePiece(piece.text, &byte)) {
          std::snprintf(canonical, sizeof(canonical), "<0x%02X>", byte);
        }
        if (piece.text != canonical) {
          return Status::Corruption(where + " (\"" + piece.text.substr(0, 64) +
                                    "\") is not a byte piece <0xHH>");
        }
        byte_ids_[byte] = id;
        ++bytes_found;
        break;
      }
      default:
        break;
    }
  }
  if (unk_ < 0) return Status::Corruption("has no <unk> piece");
  if (model_.trainer.byte_fallback && bytes_found != 256) {
    return Status::Corruption("has byte_fallback but " + std::to_string(bytes_found) +
                              " of the 256 byte pieces");
  }
  std::sort(user_defined_lengths_.begin(), user_defined_lengths_.end(), std::greater<>());
  user_defined_lengths_.erase(
      std::unique(user_defined_lengths_.begin(), user_defined_lengths_.end()),
      user_defined_lengths_.end());

  // What we do not implement.
  if (model_.trainer.model_type != SentencePieceModel::ModelType::kBpe) {
    return Status::InvalidArgument("is a " + std::string(ModelTypeName(model_.trainer.model_type)) +
                                   " model; only BPE sentencepiece models are supported");
  }
  const auto& norm = model_.normalizer;
  if ((norm.name != "identity" && !norm.name.empty()) || !norm.precompiled_charsmap.empty()) {
    return Status::InvalidArgument(
        "normalizes with rule \"" + norm.name + "\" (" +
        std::to_string(norm.precompiled_charsmap.size()) +
        " bytes of tables); only the identity rule is supported (no NFKC)");
  }
  if (!model_.denormalizer.precompiled_charsmap.empty()) {
    return Status::InvalidArgument("has a denormalization rule, which is not supported");
  }
  if (model_.trainer.treat_whitespace_as_suffix) {
    return Status::InvalidArgument("treats whitespace as a suffix, which is not supported");
  }

  auto special = [&](int32_t id) { return id >= 0 && id < vocab_size() ? id : TokenId{-1}; };
  bos_ = special(model_.trainer.bos_id);
  eos_ = special(model_.trainer.eos_id);
  strip_bos_space_ = norm.add_dummy_prefix || norm.remove_extra_whitespaces;
  return Status::Ok();
}

size_t SentencePieceTokenizer::MatchUserDefined(std::string_view text) const {
  for (size_t length : user_defined_lengths_) {
    if (length <= text.size() && user_defined_.contains(text.substr(0, length))) return length;
  }
  return 0;
}

std::pair<std::string_view, size_t> SentencePieceTokenizer::NextNormalizationUnit(
    std::string_view text) const {
  if (size_t n = MatchUserDefined(text); n > 0) return {text.substr(0, n), n};
  if (size_t n = ValidUtf8CharLength(text); n > 0) return {text.substr(0, n), n};
  return {kReplacementCharacter, 1};
}

std::string SentencePieceTokenizer::Normalize(std::string_view text) const {
  const auto& spec = model_.normalizer;
  std::string out;
  if (spec.remove_extra_whitespaces) {
    while (!text.empty()) {
      auto [unit, taken] = NextNormalizationUnit(text);
      if (unit != " ") break;
      text.remove_prefix(taken);
    }
  }
  if (text.empty()) return out;  // no dummy prefix for nothing
  out.reserve(text.size() * 3);
  const std::string_view space = spec.escape_whitespaces ? kSpaceMarker : " ";
  if (spec.add_dummy_prefix) out.append(space);
  // Whether the last unit kept ended in a space: then the next unit's leading
  // spaces are extra.
  bool after_space = spec.remove_extra_whitespaces;
  while (!text.empty()) {
    auto [unit, taken] = NextNormalizationUnit(text);
    text.remove_prefix(taken);
    if (after_space) {
      while (!unit.empty() && unit.front() == ' ') unit.remove_prefix(1);
    }
    if (unit.empty()) continue;
    for (char c : unit) {
      if (c == ' ') {
        out.append(space);
      } else {
        out.push_back(c);
      }
    }
    after_space = spec.remove_extra_whitespaces && unit.back() == ' ';
  }
  if (spec.remove_extra_whitespaces) {
    // Also drops a U+2581 the text itself ends with, as sentencepiece does.
    while (out.ends_with(space)) out.resize(out.size() - space.size());
  }
  return out;
}

void SentencePieceTokenizer::Resegment(
    std::string_view piece, const UnusedHalves& halves,
    std::vector<std::pair<std::string_view, TokenId>>* out) const {
  const TokenId id = PieceToId(piece);
  if (model_.pieces[id].type == PieceType::kUnused) {
    // Each half is shorter than the piece, so this ends.
    if (auto it = halves.find(piece); it != halves.end()) {
      Resegment(it->second.first, halves, out);
      Resegment(it->second.second, halves, out);
      return;
    }
  }
  out->emplace_back(piece, id);
}

Result<std::vector<TokenId>> SentencePieceTokenizer::Encode(std::string_view text, bool add_bos,
                                                            bool add_eos) const {
  std::vector<TokenId> tokens;
  if (add_bos && bos_ >= 0) tokens.push_back(bos_);
  const std::string normalized_text = Normalize(text);
  const std::string_view normalized = normalized_text;

  // The initial symbols, as byte ranges of `normalized`.
  struct Symbol {
    size_t begin;
    size_t end;
    bool frozen;  // a user-defined piece: never merges
  };
  std::vector<Symbol> symbols;
  symbols.reserve(normalized.size());
  for (size_t pos = 0; pos < normalized.size();) {
    const std::string_view rest = normalized.substr(pos);
    size_t length = MatchUserDefined(rest);
    const bool frozen = length > 0;
    if (!frozen) length = std::min(rest.size(), Utf8LengthFromLeadByte(rest[0]));
    symbols.push_back({pos, pos + length, frozen});
    pos += length;
  }
  auto text_of = [&](int i) {
    return normalized.substr(symbols[i].begin, symbols[i].end - symbols[i].begin);
  };

  UnusedHalves unused_halves;
  auto score_pair = [&](int left, int right) -> std::optional<PairMerge> {
    if (symbols[left].frozen || symbols[right].frozen) return std::nullopt;
    // Adjacent symbols are adjacent ranges.
    const std::string_view joined =
        normalized.substr(symbols[left].begin, symbols[right].end - symbols[left].begin);
    auto it = mergeable_.find(joined);
    if (it == mergeable_.end()) return std::nullopt;
    const auto& piece = model_.pieces[it->second];
    // The halves seen last win, as in sentencepiece.
    if (piece.type == PieceType::kUnused) unused_halves[joined] = {text_of(left), text_of(right)};
    return PairMerge{piece.score, it->second};
  };
  auto merge = [&](int left, int right, int32_t /*merged*/) {
    symbols[left].end = symbols[right].end;
  };
  const std::vector<int> kept =
      MergeAdjacentPairs(static_cast<int>(symbols.size()), score_pair, merge);

  std::vector<std::pair<std::string_view, TokenId>> pieces;
  pieces.reserve(kept.size());
  for (int i : kept) Resegment(text_of(i), unused_halves, &pieces);
  bool prev_unknown = false;
  for (const auto& [piece, id] : pieces) {
    const bool unknown = model_.pieces[id].type == PieceType::kUnknown;
    if (unknown && model_.trainer.byte_fallback) {
      for (char c : piece) tokens.push_back(byte_ids_[static_cast<unsigned char>(c)]);
    } else if (!(unknown && prev_unknown)) {  // a run of unknowns is one <unk>
      tokens.push_back(id);
    }
    prev_unknown = unknown;
  }
  if (add_eos && eos_ >= 0) tokens.push_back(eos_);
  return tokens;
}

std::string SentencePieceTokenizer::DecodePiece(TokenId prev, TokenId token) const {
  if (token < 0 || token >= vocab_size()) return "";
  const auto& piece = model_.pieces[token];
  switch (piece.type) {
    case PieceType::kControl:
      return "";
    case PieceType::kUnknown:
      return model_.trainer.unk_surface;
    case PieceType::kByte: {
      unsigned char byte = 0;
      ParseBytePiece(piece.text, &byte);  // checked in Init
      return std::string(1, static_cast<char>(byte));
    }
    default:
      break;
  }
  std::string_view rest = piece.text;
  if (strip_bos_space_ && bos_ >= 0 && prev == bos_ && rest.starts_with(kSpaceMarker)) {
    rest.remove_prefix(kSpaceMarker.size());
  }
  std::string text;
  text.reserve(rest.size());
  while (!rest.empty()) {
    if (rest.starts_with(kSpaceMarker)) {
      text.push_back(' ');
      rest.remove_prefix(kSpaceMarker.size());
    } else {
      text.push_back(rest.front());
      rest.remove_prefix(1);
    }
  }
  return text;
}

// The tokenizer a tokenizer.model's bytes describe: kCorruption when they are
// not a model or its vocabulary is inconsistent, kInvalidArgument when it is
// a model we do not encode with.
Result<std::unique_ptr<Tokenizer>> ParseSentencePieceTokenizer(std::string_view bytes) {
  KVTIER_ASSIGN_OR_RETURN(SentencePieceModel model, ParseSentencePieceModel(bytes));
  return SentencePieceTokenizer::Create(std::move(model));
}

}  // namespace

Result<std::unique_ptr<Tokenizer>> LoadSentencePieceTokenizer(const std::string& file) {
  std::error_code ec;
  if (!fs::is_regular_file(file, ec)) {
    return Status::NotFound("sentencepiece model " + file + " not found");
  }
  KVTIER_ASSIGN_OR_RETURN(const std::string bytes, ReadTokenizerFile(file));
  Result<std::unique_ptr<Tokenizer>> tok = ParseSentencePieceTokenizer(bytes);
  if (!tok.ok()) {
    const Status s = tok.status();
    return Status(s.code(), "sentencepiece model " + file + ": " + s.message());
  }
  return tok;
}

}  // namespace kvtier
