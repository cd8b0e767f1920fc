// The engine's cache glue (DESIGN §8): the namespace and keys of a
// sequence's blocks, loading a cached prefix into its pages (issued at
// admission, read on the loader thread, landed between steps), and
// publishing the blocks it computes (and its breakpoints' tails).
#include <algorithm>
#include <chrono>

#include "common/log.h"
#include "engine/engine.h"
#include "engine/engine_sequence.h"

namespace kvtier {

Namespace Engine::CacheNamespace(const std::string& cache_salt) const {
  Namespace ns;
  ns.model_id = weights_->config.name.empty() ? "model" : weights_->config.name;
  char rev[17];
  std::snprintf(rev, sizeof(rev), "%016llx", static_cast<unsigned long long>(weights_->digest));
  ns.model_revision = rev;
  ns.kv_dtype = DType::kFloat32;
  ns.block_tokens = options_.block_tokens;
  ns.cache_salt = cache_salt;
  return ns;
}

const PrefixHasher& Engine::HasherFor(const std::string& salt) {
  auto& h = hashers_[salt];
  if (!h) h = std::make_unique<PrefixHasher>(CacheNamespace(salt));
  return *h;
}

void Engine::EnsureKeys(Sequence* seq, int blocks) {
  const size_t have = seq->keys.size();
  if (blocks <= 0 || static_cast<size_t>(blocks) <= have) return;
  const auto want = static_cast<size_t>(blocks), bt = static_cast<size_t>(options_.block_tokens);
  const PrefixHasher& hasher = HasherFor(seq->req.cache_salt);
  // All new blocks in one call: the hasher overlaps their key-free work.
  hasher.AppendKeys(have == 0 ? hasher.seed() : seq->keys.back(),
                    std::span<const TokenId>(seq->tokens).subspan(have * bt, (want - have) * bt),
                    &seq->keys);
}

BlockKey Engine::TailKey(Sequence* seq, int end) {
  const int bt = options_.block_tokens;
  const int full = end / bt;
  EnsureKeys(seq, full);
  const PrefixHasher& hasher = HasherFor(seq->req.cache_salt);
  const BlockKey& prev = full == 0 ? hasher.seed() : seq->keys[full - 1];
  return hasher.TailKey(prev,
                        std::span<const TokenId>(seq->tokens.data() + full * bt, end - full * bt));
}

void Engine::ReportHit(Sequence* seq, uint32_t cache_hit_tokens) {
  seq->result.cache_hit_tokens = cache_hit_tokens;
  if (seq->req.on_admit) seq->req.on_admit(cache_hit_tokens);
}

void Engine::StartPrefixLoad(Sequence* seq) {
  seq->computed = 0;
  seq->published = 0;
  const bool first = !seq->admitted_before;
  if (cache_ == nullptr) {
    if (first) ReportHit(seq, 0);
    return;
  }
  const int bt = options_.block_tokens;
  const int len = static_cast<int>(seq->tokens.size());
  const int full = len / bt;
  EnsureKeys(seq, full);
  auto load = std::make_unique<PrefixLoad>();
  load->prompt_keys.assign(seq->keys.begin(), seq->keys.begin() + full);
  for (const CacheBreakpoint& b : seq->req.breakpoints) {
    const int end = static_cast<int>(b.end);
    if (end % bt != 0 && end <= len) load->tails.emplace_back(end, TailKey(seq, end));
  }
  load->tokens = len;
  load->prompt_tokens = static_cast<int>(seq->req.prompt.size());
  load->first_admission = first;
  if (full > 0 && !forward_->HostPage(seq->pages[0]).empty()) {
    // The loader writes these pages in place: any side copy of them (the
    // CPU's staged tiles, KvPages) is not current from here on. (They are
    // fresh from Allocate, which says so too; this keeps it true if not.)
    for (int i = 0; i < full; ++i) {
      load->pages.push_back(forward_->HostPage(seq->pages[i]));
      kv_.side_rows(seq->pages[i]) = 0;
    }
  }
  load->lookup_in_loader = cache_->has_shared_tiers();
  if (!load->lookup_in_loader) {
    // This node's index only: no I/O, so the look-up is made now.
    load->hit = cache_->Lookup(load->prompt_keys, /*pin=*/true);
    PlanPrefixLoad(load.get());
    if (first) ReportHit(seq, load->cache_hit_tokens);
    if (load->keys.empty() && !load->tail_key) {
      if (first) seq->result.cached_tokens = 0;
      return;  // nothing to read
    }
  }
  seq->load = std::move(load);
  seq->load->issued = std::chrono::steady_clock::now();
  {
    std::lock_guard<std::mutex> lock(load_mu_);
    load_queue_.push_back(seq->load.get());
  }
  load_cv_.notify_all();
}

void Engine::PlanPrefixLoad(PrefixLoad* load) const {
  const int bt = options_.block_tokens;
  const int len = load->tokens;
  const int hit_tokens = static_cast<int>(load->hit.blocks) * bt;
  // A tail record at one of the request's breakpoints inside the next block.
  int tail = 0;
  BlockKey tail_key;
  for (const auto& [end, key] : load->tails) {
    if (end <= hit_tokens || end >= hit_tokens + bt) continue;
    if (end - hit_tokens > tail && cache_->Find(key).ok()) {
      tail = end - hit_tokens;
      tail_key = key;
    }
  }
  load->cache_hit_tokens = static_cast<uint32_t>(std::min(hit_tokens + tail, load->prompt_tokens));
  // Every block found is read, the last one too: the last token is then
  // computed again for its logits (its KV row rewritten with the same bits,
  // DESIGN §8's invariant), rather than its whole block.
  const int loadable = static_cast<int>(load->hit.blocks);
  // The hit's blocks are read in one batch (each tier's in flight together),
  // straight into host pages, or through host memory for a device's pages.
  const size_t page_bytes = kv_.page_bytes();
  load->keys.assign(load->prompt_keys.begin(), load->prompt_keys.begin() + loadable);
  if (load->pages.empty() && loadable > 0) {
    load->staging.resize(page_bytes * static_cast<size_t>(loadable));
  }
  for (int i = 0; i < loadable; ++i) {
    load->dests.push_back(load->pages.empty()
                              ? std::span(load->staging).subspan(page_bytes * i, page_bytes)
                              : load->pages[i]);
  }
  if (tail > 0 && hit_tokens + tail <= len) {
    load->tail_key = tail_key;
    load->tail_rows = tail;
    load->tail.resize(kv_.RowsBytes(tail));
  }
}

void Engine::LoaderMain() {
  for (;;) {
    PrefixLoad* load = nullptr;
    {
      std::unique_lock<std::mutex> lock(load_mu_);
      load_cv_.wait(lock, [&] { return load_stop_ || !load_queue_.empty(); });
      if (load_queue_.empty()) return;  // stopping, and nothing is owed
      load = load_queue_.front();
      load_queue_.pop_front();
    }
    if (load->lookup_in_loader) {
      load->hit = cache_->Lookup(load->prompt_keys, /*pin=*/true);
      PlanPrefixLoad(load);
    }
    if (!load->keys.empty()) load->reads = ReadInParts(load->keys, load->dests);
    const bool whole = std::all_of(
        load->reads.begin(), load->reads.end(),
        [&](const Result<uint64_t>& n) { return n.ok() && *n == load->dests.front().size(); });
    if (load->tail_key && whole) load->tail_read = cache_->Read(*load->tail_key, load->tail);
    load->landed = std::chrono::steady_clock::now();
    {
      std::lock_guard<std::mutex> lock(load_mu_);
      load->done = true;
    }
    load_cv_.notify_all();
  }
}

std::vector<Result<uint64_t>> Engine::ReadInParts(std::span<const BlockKey> keys,
                                                  std::span<const std::span<std::byte>> dests) {
  constexpr int64_t kMinPartBlocks = 4;
  const auto n = static_cast<int64_t>(std::min(keys.size(), dests.size()));
  const int64_t parts = std::clamp<int64_t>(n / kMinPartBlocks, 1, read_pool_->size());
  if (parts == 1) return cache_->ReadBatch(keys, dests);
  std::vector<std::vector<Result<uint64_t>>> got(static_cast<size_t>(parts));
  read_pool_->ParallelFor(parts, [&](int64_t p) {
    const auto b = static_cast<size_t>(n * p / parts), e = static_cast<size_t>(n * (p + 1) / parts);
    got[static_cast<size_t>(p)] =
        cache_->ReadBatch(keys.subspan(b, e - b), dests.subspan(b, e - b));
  });
  std::vector<Result<uint64_t>> reads;
  reads.reserve(static_cast<size_t>(n));
  for (auto& part : got) {
    for (auto& r : part) reads.push_back(std::move(r));
  }
  return reads;
}

void Engine::StopLoader() {
  {
    std::lock_guard<std::mutex> lock(load_mu_);
    load_stop_ = true;
  }
  load_cv_.notify_all();
  if (loader_.joinable()) loader_.join();
}

void Engine::LandLoads(StepStats* stats, bool wait) {
  std::vector<Sequence*> landed;
  {
    std::unique_lock<std::mutex> lock(load_mu_);
    auto collect = [&] {
      for (auto& s : running_) {
        if (s->load && s->load->done) landed.push_back(s.get());
      }
      return !landed.empty();
    };
    if (!collect() && wait) load_cv_.wait(lock, collect);
  }
  for (Sequence* s : landed) FinishLoad(s, stats);
}

void Engine::SettleLoad(Sequence* seq, StepStats* stats) {
  if (!seq->load) return;
  {
    std::unique_lock<std::mutex> lock(load_mu_);
    load_cv_.wait(lock, [&] { return seq->load->done; });
  }
  FinishLoad(seq, stats);
}

void Engine::FinishLoad(Sequence* seq, StepStats* stats) {
  const std::unique_ptr<PrefixLoad> load = std::move(seq->load);
  if (load->lookup_in_loader && load->first_admission) ReportHit(seq, load->cache_hit_tokens);
  const size_t page_bytes = kv_.page_bytes();
  int loaded = 0;
  for (size_t i = 0; i < load->keys.size(); ++i) {
    Result<uint64_t> n = load->reads[i];
    if (n.ok() && *n == page_bytes && !load->staging.empty()) {
      Status w = forward_->WritePage(seq->pages[i], load->dests[i]);
      if (!w.ok()) n = w;
    }
    if (!n.ok() || *n != page_bytes) {
      // Dropped, corrupt or of another shape: the rest is prefilled.
      ++stats_.cache_read_failures;
      break;
    }
    ++loaded;
  }
  int tokens = loaded * options_.block_tokens;
  if (load->tail_key && loaded == static_cast<int>(load->keys.size())) {
    const Result<uint64_t>& n = load->tail_read;
    if (n.ok() && *n == load->tail.size() &&
        forward_->UnpackRows(seq->pages[loaded], load->tail_rows, load->tail).ok()) {
      tokens += load->tail_rows;
    } else {
      ++stats_.cache_read_failures;
    }
  }
  // At least one token is always computed: its logits are what we need.
  tokens = std::min(tokens, load->tokens - 1);
  seq->computed = tokens;
  seq->published = loaded;
  stats_.cached_tokens += static_cast<uint64_t>(tokens);
  if (stats != nullptr) stats->cached_tokens += tokens;
  if (load->first_admission) {
    seq->result.cached_tokens = static_cast<uint32_t>(tokens);
    seq->result.load_ms =
        std::chrono::duration<double, std::milli>(load->landed - load->issued).count();
  }
}

Result<std::span<const std::byte>> Engine::PageBytes(PageId page) {
  std::span<std::byte> host = forward_->HostPage(page);
  if (!host.empty()) return std::span<const std::byte>(host);
  page_scratch_.resize(kv_.page_bytes());
  KVTIER_RETURN_IF_ERROR(forward_->ReadPage(page, page_scratch_));
  return std::span<const std::byte>(page_scratch_);
}

void Engine::Publish(Sequence* seq) {
  if (cache_ == nullptr) return;
  if (seq->req.breakpoints_only) {
    PublishBreakpoints(seq);
    return;
  }
  const int bt = options_.block_tokens;
  const int full = seq->computed / bt;
  if (seq->published >= full) return;
  EnsureKeys(seq, full);
  BlockMeta meta;
  meta.ttl_ms = options_.cache_ttl_ms;
  meta.tokens = static_cast<uint32_t>(bt);
  meta.stream = StreamOf(HasherFor(seq->req.cache_salt).seed());
  // Prefill of a block: two FLOPs per active parameter per token.
  meta.remat_flops = 2.0 * static_cast<double>(weights_->config.ActiveParams()) * bt;
  for (int i = seq->published; i < full; ++i) {
    meta.parent = i > 0 ? std::optional<BlockKey>(seq->keys[i - 1]) : std::nullopt;
    Result<std::span<const std::byte>> page = PageBytes(seq->pages[i]);
    Status s = page.ok() ? cache_->Insert(seq->keys[i], *page, meta) : page.status();
    if (s.ok()) {
      ++seq->result.published_blocks;
      ++stats_.published_blocks;
    } else {
      // A full cache is not an error for the request: the block is simply
      // not cached, and a later request recomputes it.
      ++stats_.publish_failures;
    }
  }
  seq->published = full;
}

void Engine::PublishBreakpoints(Sequence* seq) {
  const std::vector<CacheBreakpoint>& bps = seq->req.breakpoints;
  if (bps.empty()) return;
  const int bt = options_.block_tokens;
  int last = 0, last_1h = 0;
  for (const CacheBreakpoint& b : bps) {
    last = std::max(last, static_cast<int>(b.end));
    if (b.ttl == TtlClass::k1h) last_1h = std::max(last_1h, static_cast<int>(b.end));
  }
  const int64_t start = seq->req.start_ms;
  BlockMeta meta;
  meta.tokens = static_cast<uint32_t>(bt);
  meta.stream = StreamOf(HasherFor(seq->req.cache_salt).seed());
  meta.remat_flops = 2.0 * static_cast<double>(weights_->config.ActiveParams()) * bt;
  auto store = [&](const BlockKey& key, std::span<const std::byte> payload, TtlClass ttl,
                   uint32_t tokens) {
    if (seq->req.fixed_expiry_ms > 0) {
      meta.ttl_ms = 0;
      meta.expiry_ms = seq->req.fixed_expiry_ms;
    } else {
      meta.ttl_ms = TtlMs(ttl);
      meta.expiry_ms = start + meta.ttl_ms;  // lifetime from the start of the request
    }
    meta.tokens = tokens;
    if (cache_->Insert(key, payload, meta).ok()) {
      ++seq->result.published_blocks;
      ++stats_.published_blocks;
    } else {
      ++stats_.publish_failures;
    }
  };
  // Full blocks inside the last breakpoint.
  const int full = std::min(seq->computed, last) / bt;
  EnsureKeys(seq, full);
  for (int i = seq->published; i < full; ++i) {
    meta.parent = i > 0 ? std::optional<BlockKey>(seq->keys[i - 1]) : std::nullopt;
    Result<std::span<const std::byte>> page = PageBytes(seq->pages[i]);
    if (!page.ok()) {
      ++stats_.publish_failures;
      continue;
    }
    store(seq->keys[i], *page, (i + 1) * bt <= last_1h ? TtlClass::k1h : TtlClass::k5m,
          static_cast<uint32_t>(bt));
  }
  seq->published = std::max(seq->published, full);
  // Tails, once their prefix is computed.
  while (seq->tails_published < bps.size() &&
         static_cast<int>(bps[seq->tails_published].end) <= seq->computed) {
    const CacheBreakpoint& b = bps[seq->tails_published++];
    const int end = static_cast<int>(b.end);
    const int rows = end % bt;
    if (rows == 0) continue;  // ends on a block boundary: the block is the record
    meta.parent = end / bt > 0 ? std::optional<BlockKey>(seq->keys[end / bt - 1]) : std::nullopt;
    Result<std::vector<std::byte>> tail = forward_->PackRows(seq->pages[end / bt], rows);
    if (!tail.ok()) {
      ++stats_.publish_failures;
      continue;
    }
    store(TailKey(seq, end), *tail, b.ttl, static_cast<uint32_t>(rows));
  }
}

}  // namespace kvtier
