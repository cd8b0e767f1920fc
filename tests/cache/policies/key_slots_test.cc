// KeySlots, SlotLists and SlotHeap against std::unordered_map, std::list and
// std::set over long random mixes of operations (many collisions: a tiny
// table grows from 64).
#include "cache/policies/key_slots.h"

#include <gtest/gtest.h>

#include <limits>
#include <list>
#include <random>
#include <set>
#include <unordered_map>
#include <utility>

namespace kvtier {
namespace {

TEST(KeySlotsTest, AgreesWithAMapOverARandomMix) {
  KeySlots slots;
  std::unordered_map<BlockKey, int32_t, BlockKeyHash> want;
  std::mt19937_64 rng(11);
  for (int step = 0; step < 200000; ++step) {
    const BlockKey k{rng() % 3, rng() % 5000};  // hi varies too
    const int32_t found = slots.Find(k);
    auto it = want.find(k);
    ASSERT_EQ(found != KeySlots::kNone, it != want.end()) << step;
    if (it != want.end()) {
      ASSERT_EQ(found, it->second);
      ASSERT_EQ(slots.key(found), k);
      if (rng() % 2) {
        slots.Remove(found);
        want.erase(it);
      }
    } else {
      want[k] = slots.Add(k);
    }
    ASSERT_EQ(slots.size(), want.size());
  }
  for (const auto& [k, s] : want) EXPECT_EQ(slots.Find(k), s);
  EXPECT_LE(slots.slot_bound(), 3u * 5000);  // freed slots are reused
}

TEST(SlotListTest, KeepsOrderThroughPushMoveAndUnlink) {
  SlotList l;
  l.Reserve(8);
  std::list<int32_t> want;
  std::mt19937 rng(3);
  std::vector<bool> in(8, false);
  for (int step = 0; step < 10000; ++step) {
    const int32_t s = static_cast<int32_t>(rng() % 8);
    if (!in[s]) {
      l.PushFront(s);
      want.push_front(s);
      in[s] = true;
    } else if (rng() % 2) {
      l.MoveToFront(s);
      want.remove(s);
      want.push_front(s);
    } else {
      l.Unlink(s);
      want.remove(s);
      in[s] = false;
    }
    std::vector<int32_t> got;
    for (int32_t x = l.head(); x != SlotList::kNone; x = l.next(x)) got.push_back(x);
    ASSERT_EQ(got, std::vector<int32_t>(want.begin(), want.end())) << step;
    std::vector<int32_t> back;
    for (int32_t x = l.tail(); x != SlotList::kNone; x = l.prev(x)) back.insert(back.begin(), x);
    ASSERT_EQ(back, got);
  }
}

TEST(SlotListsTest, SlotsMoveBetweenListsAndEachListKeepsItsOrderAndLength) {
  constexpr int kSlots = 12, kLists = 3;
  SlotLists l(kLists);
  l.Reserve(kSlots);
  std::vector<std::list<int32_t>> want(kLists);
  std::vector<int> in(kSlots, -1);  // the slot's list, or -1
  std::mt19937 rng(5);
  for (int step = 0; step < 20000; ++step) {
    const int32_t s = static_cast<int32_t>(rng() % kSlots);
    const int to = static_cast<int>(rng() % kLists);
    if (in[s] < 0) {
      l.PushFront(to, s);
      want[to].push_front(s);
      in[s] = to;
    } else if (rng() % 3) {
      l.MoveToFront(in[s], to, s);
      want[in[s]].remove(s);
      want[to].push_front(s);
      in[s] = to;
    } else {
      l.Unlink(in[s], s);
      want[in[s]].remove(s);
      in[s] = -1;
    }
    for (int i = 0; i < kLists; ++i) {
      std::vector<int32_t> got;
      for (int32_t x = l.head(i); x != SlotLists::kNone; x = l.next(x)) got.push_back(x);
      ASSERT_EQ(got, std::vector<int32_t>(want[i].begin(), want[i].end())) << step;
      ASSERT_EQ(l.size(i), want[i].size());
      ASSERT_EQ(l.tail(i), want[i].empty() ? SlotLists::kNone : want[i].back());
    }
  }
}

TEST(SlotHeapTest, AgreesWithAnOrderedSetThroughPushUpdateEraseAndPop) {
  using P = HeapKey;
  SlotHeap heap;
  std::set<std::pair<P, int32_t>> want;
  std::vector<P> priority(300);
  std::vector<bool> in(300, false);
  std::mt19937_64 rng(17);
  uint64_t seq = 0;
  for (int step = 0; step < 100000; ++step) {
    const int32_t s = static_cast<int32_t>(rng() % 300);
    const P p{rng() % 50, seq++};  // many equal first halves
    const int op = static_cast<int>(rng() % 4);
    if (!in[s]) {
      heap.Push(s, p);
      want.emplace(p, s);
      priority[s] = p;
      in[s] = true;
    } else if (op == 0) {
      heap.Update(s, p);  // up or down
      want.erase({priority[s], s});
      want.emplace(p, s);
      priority[s] = p;
    } else if (op == 1) {
      heap.Erase(s);
      want.erase({priority[s], s});
      in[s] = false;
    } else if (op == 2 && !want.empty()) {
      const int32_t top = heap.Pop();
      ASSERT_EQ(top, want.begin()->second) << step;
      want.erase(want.begin());
      in[top] = false;
    }
    ASSERT_EQ(heap.size(), want.size());
    if (!want.empty()) {
      ASSERT_EQ(heap.top(), want.begin()->second) << step;
      ASSERT_EQ(heap.top_priority(), want.begin()->first);
    }
    for (int32_t x = 0; x < 300; ++x) ASSERT_EQ(heap.contains(x), in[x]);
  }
  // Popping everything gives the set's order.
  for (const auto& [p, s] : want) {
    ASSERT_EQ(heap.priority(heap.top()), p);
    ASSERT_EQ(heap.Pop(), s);
  }
  EXPECT_TRUE(heap.empty());
}

TEST(SlotHeapTest, HeapKeysOrderLikeTheNumbersTheyMap) {
  const std::vector<double> d = {-std::numeric_limits<double>::infinity(),
                                 -1e300,
                                 -2.5,
                                 -1e-300,
                                 -0.0,
                                 0.0,
                                 1e-300,
                                 1.0,
                                 1.5,
                                 1e300,
                                 std::numeric_limits<double>::infinity()};
  for (size_t i = 0; i + 1 < d.size(); ++i) EXPECT_LT(OrderedBits(d[i]), OrderedBits(d[i + 1]));
  const std::vector<int64_t> v = {std::numeric_limits<int64_t>::min(), -5, -1, 0, 1, 7,
                                  std::numeric_limits<int64_t>::max()};
  for (size_t i = 0; i + 1 < v.size(); ++i) EXPECT_LT(OrderedBits(v[i]), OrderedBits(v[i + 1]));
  EXPECT_TRUE((HeapKey{1, 9}) < (HeapKey{2, 0}));
  EXPECT_TRUE((HeapKey{2, 0}) < (HeapKey{2, 1}));
  EXPECT_FALSE((HeapKey{2, 1}) < (HeapKey{2, 1}));
  EXPECT_FALSE((HeapKey{3, 0}) < (HeapKey{2, 5}));
}

}  // namespace
}  // namespace kvtier
