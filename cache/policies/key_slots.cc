#include "cache/policies/key_slots.h"

namespace kvtier {

int32_t KeySlots::Add(const BlockKey& key) {
  if ((size_ + 1) * 4 > table_.size() * 3) Grow();  // load factor <= 3/4
  int32_t slot;
  if (!free_.empty()) {
    slot = free_.back();
    free_.pop_back();
    keys_[slot] = key;
  } else {
    slot = static_cast<int32_t>(keys_.size());
    keys_.push_back(key);
  }
  const uint32_t h = Hash(key);
  size_t i = h & mask_;
  while (table_[i].slot != kNone) i = (i + 1) & mask_;
  table_[i] = Cell{slot, h};
  ++size_;
  return slot;
}

void KeySlots::Remove(int32_t slot) {
  size_t i = Hash(keys_[slot]) & mask_;
  while (table_[i].slot != slot) i = (i + 1) & mask_;
  // Backward-shift deletion: pull later cells of the probe run into the
  // hole when their home cell is not between the hole and them.
  for (size_t j = (i + 1) & mask_;; j = (j + 1) & mask_) {
    const Cell c = table_[j];
    if (c.slot == kNone) break;
    const size_t home = c.hash & mask_;
    const bool stays = i <= j ? (i < home && home <= j) : (i < home || home <= j);
    if (!stays) {
      table_[i] = c;
      i = j;
    }
  }
  table_[i] = Cell{};
  free_.push_back(slot);
  --size_;
}

void KeySlots::Grow() {
  const size_t cap = table_.empty() ? 64 : table_.size() * 2;
  std::vector<Cell> old(cap);
  old.swap(table_);
  mask_ = cap - 1;
  for (const Cell& c : old) {
    if (c.slot == kNone) continue;
    size_t i = c.hash & mask_;
    while (table_[i].slot != kNone) i = (i + 1) & mask_;
    table_[i] = c;
  }
}

}  // namespace kvtier
