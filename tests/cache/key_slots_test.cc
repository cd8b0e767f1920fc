// KeySlots and SlotList against std::unordered_map / std::list over a long
// random mix of operations (many collisions: a tiny table grows from 64).
#include "cache/key_slots.h"

#include <gtest/gtest.h>

#include <list>
#include <random>
#include <unordered_map>

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

}  // namespace
}  // namespace kvtier
