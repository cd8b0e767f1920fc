#include "model/tokenizer.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <optional>
#include <queue>
#include <string>
#include <system_error>
#include <unordered_map>
#include <utility>

#include "model/sentencepiece_model.h"

namespace kvtier {

static_assert(std::endian::native == std::endian::little,
              "tokenizer.bin is little-endian; a big-endian host needs byte swaps");

namespace {

namespace fs = std::filesystem;

// llama2.c's fixed layout: run.c hard-codes these ids.
constexpr TokenId kLlama2cBos = 1;
constexpr TokenId kLlama2cEos = 2;
constexpr int kByteTokenOffset = 3;  // byte b is token b + 3
constexpr int kSpecialTokens = 3;    // <unk>, BOS, EOS
constexpr int kByteTokens = 256;
constexpr int kPrintableAscii = 0x7F - 0x20;  // 95 single-character pieces
// No real vocabulary has a piece this long; a larger length is a corrupt file.
constexpr int32_t kMaxPieceBytes = 1 << 16;
// run.c starts its best-merge search at this score and compares with `>`, so a
// pair whose merged piece scores at or below it never merges.
constexpr float kNoMergeScore = -1e10f;

std::string ErrnoText(int err) { return std::error_code(err, std::generic_category()).message(); }

// A piece of the exact form "<0xHH>" (hex digits in either case) is byte HH.
bool ParseBytePiece(std::string_view piece, unsigned char* byte) {
  if (piece.size() != 6 || piece.substr(0, 3) != "<0x" || piece[5] != '>') return false;
  int value = 0;
  for (char c : piece.substr(3, 2)) {
    int digit;
    if (c >= '0' && c <= '9') {
      digit = c - '0';
    } else if (c >= 'A' && c <= 'F') {
      digit = c - 'A' + 10;
    } else if (c >= 'a' && c <= 'f') {
      digit = c - 'a' + 10;
    } else {
      return false;
    }
    value = value * 16 + digit;
  }
  *byte = static_cast<unsigned char>(value);
  return true;
}

bool IsUtf8Continuation(char c) { return (static_cast<unsigned char>(c) & 0xC0) == 0x80; }

// Reads all of `file`. kNotFound when it does not exist, kIOError otherwise.
Result<std::string> ReadWholeFile(const std::string& file) {
  int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int err = errno;
    if (err == ENOENT || err == ENOTDIR)
      return Status::NotFound("tokenizer " + file + " not found");
    return Status::IOError("cannot open tokenizer " + file + ": " + ErrnoText(err));
  }
  std::string bytes;
  struct stat st;
  if (::fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) bytes.reserve(static_cast<size_t>(st.st_size));
  char buf[1 << 16];
  while (true) {
    ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int err = errno;
      ::close(fd);
      return Status::IOError("cannot read tokenizer " + file + ": " + ErrnoText(err));
    }
    if (n == 0) break;
    bytes.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return bytes;
}

// A pair of adjacent symbols that can merge: its priority, and a value handed
// back to the caller when the merge happens (the merged token id, say).
struct PairMerge {
  float score;
  int32_t merged;
};

// The BPE merge loop of both formats: while some adjacent pair of symbols can
// merge, merge the pair with the highest score, the leftmost among equals.
// run.c's encode() and sentencepiece's BPE model agree on that rule.
//
// Done naively (rescan every pair after each merge) it is O(n^2). Here the
// candidate pairs sit in a max-heap ordered by (score, leftmost), over a
// linked list of symbols; a symbol's version changes whenever it does, so a
// heap entry built from an older version is stale and skipped. Every current
// pair has exactly one live entry, so each pop is exactly the naive loop's
// choice. Positions in the list keep their original order, so "leftmost" is
// "smallest original index of the left symbol". O(n log n).
//
// The caller owns the `n` symbols, indexed 0..n-1. `score_pair(left, right)`
// returns std::optional<PairMerge>: whether that adjacent pair can merge. It
// is asked about each pair once, when the pair forms: left to right at the
// start, then (prev, merged) and (merged, next) after each merge, the order
// in which sentencepiece asks. `merge(left, right, merged)` folds symbol
// `right` into symbol `left`. Returns the indices of the surviving symbols, in
// order.
template <typename ScorePair, typename MergePair>
std::vector<int> MergeAdjacentPairs(int n, ScorePair&& score_pair, MergePair&& merge) {
  struct Link {
    int prev;  // -1 at the start
    int next;  // n at the end
    uint32_t version;
    bool alive;
  };
  std::vector<Link> links(n);
  for (int i = 0; i < n; ++i) links[i] = {i - 1, i + 1, 0, true};

  struct Candidate {
    float score;
    int left;
    int right;
    int32_t merged;
    uint32_t left_version;
    uint32_t right_version;
  };
  // std::priority_queue pops the largest: higher score, then smaller `left`.
  auto lower = [](const Candidate& a, const Candidate& b) {
    if (a.score != b.score) return a.score < b.score;
    return a.left > b.left;
  };
  std::priority_queue<Candidate, std::vector<Candidate>, decltype(lower)> heap(lower);
  auto consider = [&](int left, int right) {
    if (left < 0 || right >= n) return;
    std::optional<PairMerge> m = score_pair(left, right);
    if (!m) return;
    heap.push({m->score, left, right, m->merged, links[left].version, links[right].version});
  };
  for (int i = 0; i + 1 < n; ++i) consider(i, i + 1);

  while (!heap.empty()) {
    Candidate c = heap.top();
    heap.pop();
    Link& left = links[c.left];
    Link& right = links[c.right];
    if (!left.alive || !right.alive || left.next != c.right || left.version != c.left_version ||
        right.version != c.right_version) {
      continue;
    }
    merge(c.left, c.right, c.merged);
    ++left.version;
    right.alive = false;
    ++right.version;
    left.next = right.next;
    if (right.next < n) links[right.next].prev = c.left;
    consider(left.prev, c.left);
    consider(c.left, left.next);
  }

  std::vector<int> kept;
  for (int i = 0; i < n; i = links[i].next) kept.push_back(i);
  return kept;
}

// Hash-map keys looked up by string_view without building a std::string.
struct PieceHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};

class Llama2cTokenizer final : public Tokenizer {
 public:
  Llama2cTokenizer(std::vector<std::string> pieces, std::vector<float> scores)
      : pieces_(std::move(pieces)), scores_(std::move(scores)) {
    ids_.reserve(pieces_.size());
    // On a duplicated piece the lowest id wins (emplace keeps the first).
    for (size_t i = 0; i < pieces_.size(); ++i) ids_.emplace(pieces_[i], static_cast<TokenId>(i));
  }

  int vocab_size() const override { return static_cast<int>(pieces_.size()); }
  TokenId bos_id() const override { return kLlama2cBos; }
  TokenId eos_id() const override { return kLlama2cEos; }

  Result<std::vector<TokenId>> Encode(std::string_view text, bool add_bos,
                                      bool add_eos) const override;
  std::string DecodePiece(TokenId prev, TokenId token) const override;

 private:
  // The id of the piece spelled `s`, or -1.
  TokenId Lookup(std::string_view s) const {
    auto it = ids_.find(s);
    return it == ids_.end() ? -1 : it->second;
  }
  // Appends the byte-fallback tokens of `bytes`; kInvalidArgument when the
  // vocabulary is too small to hold them.
  Status AppendByteTokens(std::string_view bytes, std::vector<TokenId>* out) const {
    for (char c : bytes) {
      TokenId id = static_cast<unsigned char>(c) + kByteTokenOffset;
      if (id >= vocab_size()) {
        return Status::InvalidArgument("byte " + std::to_string(static_cast<unsigned char>(c)) +
                                       " has no piece and the vocabulary (" +
                                       std::to_string(vocab_size()) + ") has no byte tokens");
      }
      out->push_back(id);
    }
    return Status::Ok();
  }
  // Applies run.c's merge loop to `tokens` in place.
  void Merge(std::vector<TokenId>* tokens) const;

  std::vector<std::string> pieces_;  // indexed by id
  std::vector<float> scores_;        // merge priority by id, higher first
  std::unordered_map<std::string, TokenId, PieceHash, std::equal_to<>> ids_;
};

Result<std::vector<TokenId>> Llama2cTokenizer::Encode(std::string_view text, bool add_bos,
                                                      bool add_eos) const {
  std::vector<TokenId> tokens;
  tokens.reserve(text.size() + 3);
  // As in run.c, BOS is in the sequence during merging (no piece ever merges
  // with it in practice, but the result must match run.c exactly).
  if (add_bos) tokens.push_back(kLlama2cBos);
  if (!text.empty()) {
    // The dummy prefix. run.c assumes " " is a piece; without one we fall back
    // to its byte token instead of run.c's invalid id -1.
    TokenId space = Lookup(" ");
    if (space >= 0) {
      tokens.push_back(space);
    } else {
      KVTIER_RETURN_IF_ERROR(AppendByteTokens(" ", &tokens));
    }
  }
  // run.c's character split: a group starts at any byte and takes the UTF-8
  // continuation bytes that follow, up to 4 bytes in all. A group that is not
  // a piece (including any malformed UTF-8) becomes its byte tokens.
  size_t i = 0;
  while (i < text.size()) {
    size_t start = i++;
    while (i < text.size() && IsUtf8Continuation(text[i]) && i - start < 4) ++i;
    std::string_view group = text.substr(start, i - start);
    TokenId id = Lookup(group);
    if (id >= 0) {
      tokens.push_back(id);
    } else {
      KVTIER_RETURN_IF_ERROR(AppendByteTokens(group, &tokens));
    }
  }
  Merge(&tokens);
  if (add_eos) tokens.push_back(kLlama2cEos);
  return tokens;
}

// run.c's merge loop: a pair merges into the piece spelled by the two pieces
// joined, if there is one and it scores above run.c's floor.
void Llama2cTokenizer::Merge(std::vector<TokenId>* tokens) const {
  std::vector<TokenId>& ids = *tokens;
  if (ids.size() < 2) return;
  std::string joined;
  joined.reserve(64);
  auto score_pair = [&](int left, int right) -> std::optional<PairMerge> {
    joined.assign(pieces_[ids[left]]);
    joined.append(pieces_[ids[right]]);
    TokenId merged = Lookup(joined);
    // `!(x > threshold)` also keeps NaN scores out, as run.c's `>` does.
    if (merged < 0 || !(scores_[merged] > kNoMergeScore)) return std::nullopt;
    return PairMerge{scores_[merged], merged};
  };
  auto merge = [&](int left, int /*right*/, int32_t merged) { ids[left] = merged; };
  const std::vector<int> kept = MergeAdjacentPairs(static_cast<int>(ids.size()), score_pair, merge);
  std::vector<TokenId> merged_ids;
  merged_ids.reserve(kept.size());
  for (int i : kept) merged_ids.push_back(ids[i]);
  ids = std::move(merged_ids);
}

std::string Llama2cTokenizer::DecodePiece(TokenId prev, TokenId token) const {
  if (token < 0 || token >= vocab_size()) return "";
  std::string_view piece = pieces_[token];
  if (prev == kLlama2cBos && !piece.empty() && piece[0] == ' ') piece.remove_prefix(1);
  unsigned char byte;
  if (ParseBytePiece(piece, &byte)) return std::string(1, static_cast<char>(byte));
  return std::string(piece);
}

// ---------------------------------------------------------------------------
// sentencepiece
//
// Our own reading of sentencepiece's BPE encoder (libsentencepiece cannot be
// linked: it carries its own protobuf, which clashes with libprotobuf). What
// it does, step by step, as sentencepiece's processor does:
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

// Reads a little-endian 32-bit value at `*offset` and advances it; false when
// fewer than 4 bytes remain.
template <typename T>
bool ReadScalar(const std::string& bytes, size_t* offset, T* value) {
  static_assert(sizeof(T) == 4);
  if (bytes.size() - *offset < sizeof(T)) return false;
  std::memcpy(value, bytes.data() + *offset, sizeof(T));
  *offset += sizeof(T);
  return true;
}

}  // namespace

std::string Tokenizer::Decode(TokenId prev, std::span<const TokenId> tokens) const {
  std::string text;
  for (TokenId token : tokens) {
    text += DecodePiece(prev, token);
    prev = token;
  }
  return text;
}

Result<std::unique_ptr<Tokenizer>> LoadLlama2cTokenizer(const std::string& file, int vocab_size) {
  if (vocab_size < kSpecialTokens) {
    return Status::InvalidArgument(
        "llama2.c tokenizer needs vocab_size >= 3 (<unk>, BOS, EOS), got " +
        std::to_string(vocab_size));
  }
  Result<std::string> read = ReadWholeFile(file);
  if (!read.ok()) return read.status();
  const std::string& bytes = read.value();
  auto corrupt = [&](const std::string& what) {
    return Status::Corruption("tokenizer " + file + ": " + what);
  };

  size_t offset = 0;
  int32_t max_token_length = 0;
  if (!ReadScalar(bytes, &offset, &max_token_length)) {
    return corrupt("truncated header (" + std::to_string(bytes.size()) + " bytes)");
  }
  if (max_token_length <= 0 || max_token_length > kMaxPieceBytes) {
    return corrupt("max_token_length " + std::to_string(max_token_length) + " is out of range");
  }
  std::vector<std::string> pieces;
  std::vector<float> scores;
  // Each token takes at least 8 bytes; do not trust vocab_size for the reserve.
  const size_t plausible = std::min<size_t>(vocab_size, bytes.size() / 8);
  pieces.reserve(plausible);
  scores.reserve(plausible);
  for (int id = 0; id < vocab_size; ++id) {
    float score;
    int32_t len;
    if (!ReadScalar(bytes, &offset, &score) || !ReadScalar(bytes, &offset, &len)) {
      return corrupt("truncated at token " + std::to_string(id) + " of " +
                     std::to_string(vocab_size) + " (offset " + std::to_string(offset) +
                     "); is vocab_size right?");
    }
    if (len < 0 || len > max_token_length) {
      return corrupt("token " + std::to_string(id) + " has length " + std::to_string(len) +
                     " outside [0, max_token_length " + std::to_string(max_token_length) + "]");
    }
    if (bytes.size() - offset < static_cast<size_t>(len)) {
      return corrupt("truncated inside token " + std::to_string(id) + " (offset " +
                     std::to_string(offset) + ", needs " + std::to_string(len) + " bytes)");
    }
    pieces.emplace_back(bytes.data() + offset, static_cast<size_t>(len));
    scores.push_back(score);
    offset += static_cast<size_t>(len);
  }
  if (offset != bytes.size()) {
    return corrupt(std::to_string(bytes.size() - offset) + " trailing bytes after " +
                   std::to_string(vocab_size) + " tokens; is vocab_size right?");
  }
  return std::unique_ptr<Tokenizer>(
      std::make_unique<Llama2cTokenizer>(std::move(pieces), std::move(scores)));
}

Result<std::unique_ptr<Tokenizer>> LoadSentencePieceTokenizer(const std::string& file) {
  std::error_code ec;
  if (!fs::is_regular_file(file, ec)) {
    return Status::NotFound("sentencepiece model " + file + " not found");
  }
  Result<std::string> read = ReadWholeFile(file);
  if (!read.ok()) return read.status();
  auto with_file = [&](const Status& s) {
    return Status(s.code(), "sentencepiece model " + file + ": " + s.message());
  };
  Result<SentencePieceModel> model = ParseSentencePieceModel(read.value());
  if (!model.ok()) return with_file(model.status());
  Result<std::unique_ptr<Tokenizer>> tok = SentencePieceTokenizer::Create(std::move(model).value());
  if (!tok.ok()) return with_file(tok.status());
  return tok;
}

Result<std::unique_ptr<Tokenizer>> LoadTokenizerFor(const std::string& model_path, int vocab_size) {
  std::error_code ec;
  const fs::path path(model_path);
  const fs::file_status st = fs::status(path, ec);
  if (ec || !fs::exists(st)) return Status::NotFound("model path " + model_path + " not found");
  fs::path dir = fs::is_directory(st) ? path : path.parent_path();
  if (dir.empty()) dir = ".";

  if (fs::is_regular_file(dir / "tokenizer.model", ec)) {
    return LoadSentencePieceTokenizer((dir / "tokenizer.model").string());
  }
  if (fs::is_regular_file(dir / "tokenizer.bin", ec)) {
    return LoadLlama2cTokenizer((dir / "tokenizer.bin").string(), vocab_size);
  }
  std::vector<std::string> candidates;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.size() >= 7 && name.starts_with("tok") && name.ends_with(".bin") &&
        it->is_regular_file(ec)) {
      candidates.push_back(name);
    }
  }
  if (ec) return Status::IOError("cannot list " + dir.string() + ": " + ec.message());
  std::sort(candidates.begin(), candidates.end());
  if (candidates.size() == 1) {
    return LoadLlama2cTokenizer((dir / candidates[0]).string(), vocab_size);
  }
  if (candidates.empty()) {
    return Status::NotFound("no tokenizer.model, tokenizer.bin or tok*.bin in " + dir.string());
  }
  // Several: the one named after the model's vocabulary (llama2.c's
  // tok512.bin for a 512-token model) settles it; otherwise it is ambiguous.
  const std::string by_vocab = "tok" + std::to_string(vocab_size) + ".bin";
  if (std::find(candidates.begin(), candidates.end(), by_vocab) != candidates.end()) {
    return LoadLlama2cTokenizer((dir / by_vocab).string(), vocab_size);
  }
  std::string names;
  for (const std::string& name : candidates) names += (names.empty() ? "" : ", ") + name;
  return Status::NotFound("no single tokenizer in " + dir.string() + ": several tok*.bin (" +
                          names + ") and none is " + by_vocab);
}

Status WriteSyntheticLlama2cTokenizer(const std::string& file, int vocab_size) {
  constexpr int kFixed = kSpecialTokens + kByteTokens + kPrintableAscii;
  if (vocab_size < kFixed) {
    return Status::InvalidArgument("synthetic tokenizer needs vocab_size >= " +
                                   std::to_string(kFixed) + ", got " + std::to_string(vocab_size));
  }
  std::vector<std::string> pieces;
  pieces.reserve(vocab_size);
  pieces.push_back("<unk>");
  pieces.push_back("\n<s>\n");
  pieces.push_back("\n</s>\n");
  for (int b = 0; b < kByteTokens; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    pieces.push_back(name);
  }
  for (int c = 0x20; c < 0x7F; ++c) pieces.push_back(std::string(1, static_cast<char>(c)));

  // Multi-character pieces, breadth first: the roots are a space and the
  // letters, and each piece is extended by each letter, so words and
  // space-prefixed words (" the") appear as in a real BPE vocabulary. Every
  // prefix of a piece is an earlier piece, so merges reach all of them.
  // Letters go most frequent first so the common pairs come early.
  constexpr std::string_view kLetters = "etaoinshrdlcumwfgypbvkjxqz";
  std::vector<std::string> frontier;
  frontier.push_back(" ");
  for (char c : kLetters) frontier.push_back(std::string(1, c));
  while (static_cast<int>(pieces.size()) < vocab_size) {
    std::vector<std::string> next;
    next.reserve(frontier.size() * kLetters.size());
    for (const std::string& stem : frontier) {
      for (char c : kLetters) {
        if (static_cast<int>(pieces.size()) >= vocab_size) break;
        pieces.push_back(stem + c);
        next.push_back(pieces.back());
      }
    }
    frontier = std::move(next);
  }

  std::string bytes;
  int32_t max_token_length = 0;
  for (const std::string& p : pieces) {
    max_token_length = std::max<int32_t>(max_token_length, static_cast<int32_t>(p.size()));
  }
  auto put = [&bytes](const auto& value) {
    static_assert(sizeof(value) == 4);
    bytes.append(reinterpret_cast<const char*>(&value), sizeof(value));
  };
  put(max_token_length);
  for (int id = 0; id < vocab_size; ++id) {
    // Specials and byte tokens score 0; after them scores fall strictly, so an
    // earlier (shorter, more frequent) piece merges first.
    const int first_scored = kSpecialTokens + kByteTokens;
    float score = id < first_scored ? 0.0f : -static_cast<float>(id - first_scored);
    put(score);
    put(static_cast<int32_t>(pieces[id].size()));
    bytes += pieces[id];
  }

  // Atomic: a unique temporary beside the target, renamed over it.
  std::string tmp = file + ".XXXXXX";
  int fd = ::mkstemp(tmp.data());
  if (fd < 0) return Status::IOError("cannot create " + tmp + ": " + ErrnoText(errno));
  auto fail = [&](const std::string& what, int err) {
    ::close(fd);
    ::unlink(tmp.c_str());
    return Status::IOError(what + " " + tmp + ": " + ErrnoText(err));
  };
  if (::fchmod(fd, 0644) != 0) return fail("cannot chmod", errno);
  size_t written = 0;
  while (written < bytes.size()) {
    ssize_t n = ::write(fd, bytes.data() + written, bytes.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail("cannot write", errno);
    written += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) return fail("cannot sync", errno);
  if (::close(fd) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    return Status::IOError("cannot close " + tmp + ": " + ErrnoText(err));
  }
  if (::rename(tmp.c_str(), file.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    return Status::IOError("cannot rename " + tmp + " to " + file + ": " + ErrnoText(err));
  }
  return Status::Ok();
}

}  // namespace kvtier
