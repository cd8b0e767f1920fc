#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "model/tokenizer.h"
#include "model/tokenizer_internal.h"

// llama2.c's tokenizer.bin: encode and decode exactly as run.c does, and a
// synthetic tokenizer.bin for random-weight models.

namespace kvtier {

static_assert(std::endian::native == std::endian::little,
              "tokenizer.bin is little-endian; a big-endian host needs byte swaps");

namespace {

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

// Reads a little-endian 32-bit value at `*offset` and advances it; false when
// fewer than 4 bytes remain.
template <typename T>
bool ReadScalar(std::string_view bytes, size_t* offset, T* value) {
  static_assert(sizeof(T) == 4);
  if (bytes.size() - *offset < sizeof(T)) return false;
  std::memcpy(value, bytes.data() + *offset, sizeof(T));
  *offset += sizeof(T);
  return true;
}

// The tokenizer of a tokenizer.bin's bytes, for a model of `vocab_size`
// (>= kSpecialTokens) tokens. kCorruption, saying what does not fit, when the
// bytes are truncated or inconsistent.
Result<std::unique_ptr<Tokenizer>> ParseLlama2cTokenizer(std::string_view bytes, int vocab_size) {
  size_t offset = 0;
  int32_t max_token_length = 0;
  if (!ReadScalar(bytes, &offset, &max_token_length)) {
    return Status::Corruption("truncated header (" + std::to_string(bytes.size()) + " bytes)");
  }
  if (max_token_length <= 0 || max_token_length > kMaxPieceBytes) {
    return Status::Corruption("max_token_length " + std::to_string(max_token_length) +
                              " is out of range");
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
      return Status::Corruption("truncated at token " + std::to_string(id) + " of " +
                                std::to_string(vocab_size) + " (offset " + std::to_string(offset) +
                                "); is vocab_size right?");
    }
    if (len < 0 || len > max_token_length) {
      return Status::Corruption("token " + std::to_string(id) + " has length " +
                                std::to_string(len) + " outside [0, max_token_length " +
                                std::to_string(max_token_length) + "]");
    }
    if (bytes.size() - offset < static_cast<size_t>(len)) {
      return Status::Corruption("truncated inside token " + std::to_string(id) + " (offset " +
                                std::to_string(offset) + ", needs " + std::to_string(len) +
                                " bytes)");
    }
    pieces.emplace_back(bytes.data() + offset, static_cast<size_t>(len));
    scores.push_back(score);
    offset += static_cast<size_t>(len);
  }
  if (offset != bytes.size()) {
    return Status::Corruption(std::to_string(bytes.size() - offset) + " trailing bytes after " +
                              std::to_string(vocab_size) + " tokens; is vocab_size right?");
  }
  return std::unique_ptr<Tokenizer>(
      std::make_unique<Llama2cTokenizer>(std::move(pieces), std::move(scores)));
}

}  // namespace

Result<std::unique_ptr<Tokenizer>> LoadLlama2cTokenizer(const std::string& file, int vocab_size) {
  if (vocab_size < kSpecialTokens) {
    return Status::InvalidArgument(
        "llama2.c tokenizer needs vocab_size >= 3 (<unk>, BOS, EOS), got " +
        std::to_string(vocab_size));
  }
  KVTIER_ASSIGN_OR_RETURN(const std::string bytes, ReadTokenizerFile(file));
  Result<std::unique_ptr<Tokenizer>> tok = ParseLlama2cTokenizer(bytes, vocab_size);
  if (!tok.ok()) return Status::Corruption("tokenizer " + file + ": " + tok.status().message());
  return tok;
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
