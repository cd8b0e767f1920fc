#include "cache/key_slots.h"

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
  size_t i = Hash(key) & mask_;
  while (table_[i] != kNone) i = (i + 1) & mask_;
  table_[i] = slot;
  ++size_;
  return slot;
}

void KeySlots::Remove(int32_t slot) {
  size_t i = Hash(keys_[slot]) & mask_;
  while (table_[i] != slot) i = (i + 1) & mask_;
  // Backward-shift deletion: pull later entries of the probe run into the
  // hole when their home position is not between the hole and them.
  for (size_t j = (i + 1) & mask_;; j = (j + 1) & mask_) {
    const int32_t s = table_[j];
    if (s == kNone) break;
    const size_t home = Hash(keys_[s]) & mask_;
    const bool stays = i <= j ? (i < home && home <= j) : (i < home || home <= j);
    if (!stays) {
      table_[i] = s;
      i = j;
    }
  }
  table_[i] = kNone;
  free_.push_back(slot);
  --size_;
}

void KeySlots::Grow() {
  const size_t cap = table_.empty() ? 64 : table_.size() * 2;
  table_.assign(cap, kNone);
  mask_ = cap - 1;
  std::vector<bool> live(keys_.size(), true);
  for (int32_t s : free_) live[s] = false;
  for (size_t s = 0; s < keys_.size(); ++s) {
    if (!live[s]) continue;
    size_t i = Hash(keys_[s]) & mask_;
    while (table_[i] != kNone) i = (i + 1) & mask_;
    table_[i] = static_cast<int32_t>(s);
  }
}

}  // namespace kvtier
