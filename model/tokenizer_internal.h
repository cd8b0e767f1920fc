// What the tokenizer formats share, private to model/'s tokenizer files
// (tokenizer.cc, llama2c_tokenizer.cc, sentencepiece_tokenizer.cc); nothing
// else includes this header: the BPE merge loop both formats run, byte
// pieces, UTF-8 continuation bytes, piece-keyed hash maps, and reading a
// tokenizer file.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <queue>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace kvtier {

// strerror's text for `err`.
std::string ErrnoText(int err);

// A piece of the exact form "<0xHH>" (hex digits in either case) is byte HH.
bool ParseBytePiece(std::string_view piece, unsigned char* byte);

// A UTF-8 continuation byte, 10xxxxxx.
inline bool IsUtf8Continuation(char c) { return (static_cast<unsigned char>(c) & 0xC0) == 0x80; }

// Reads all of `file`. kNotFound when it does not exist, kIOError otherwise.
Result<std::string> ReadTokenizerFile(const std::string& file);

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

}  // namespace kvtier
