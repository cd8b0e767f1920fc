#include "tiers/cluster/redis_tier.h"

#include <algorithm>
#include <array>
#include <chrono>
#include <cstring>
#include <functional>
#include <mutex>
#include <optional>
#include <queue>
#include <unordered_map>
#include <utility>

#define XXH_STATIC_LINKING_ONLY  // XXH3_state_t on the stack
#include <xxhash.h>

#include "common/checksum.h"
#include "common/log.h"
#include "tiers/calibration.h"

namespace kvtier {
namespace {

constexpr uint32_t kMagic = 0x4b564331;  // "KVC1"
constexpr uint32_t kVersion = 1;
constexpr size_t kHeaderBytes = 48;

void PutU64(std::byte* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<std::byte>(v >> (56 - 8 * i));
}
uint64_t GetU64(const std::byte* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}

struct Header {
  uint64_t bytes = 0;
  uint64_t xxh3 = 0;
  uint64_t value_bytes = 0;
  int64_t expiry_ms = kNoExpiry;

  uint64_t Values() const { return bytes == 0 ? 1 : (bytes + value_bytes - 1) / value_bytes; }
  void Encode(std::byte* p) const {
    PutU64(p, (static_cast<uint64_t>(kMagic) << 32) | kVersion);
    PutU64(p + 8, bytes);
    PutU64(p + 16, xxh3);
    PutU64(p + 24, value_bytes);
    PutU64(p + 32, static_cast<uint64_t>(expiry_ms));
    PutU64(p + 40, Checksum64(std::span<const std::byte>(p, 40)));
  }
  // nullopt: not a header of ours, or one that fails its own checksum.
  static std::optional<Header> Decode(std::string_view v) {
    if (v.size() < kHeaderBytes) return std::nullopt;
    const auto* p = reinterpret_cast<const std::byte*>(v.data());
    if (GetU64(p) != ((static_cast<uint64_t>(kMagic) << 32) | kVersion) ||
        GetU64(p + 40) != Checksum64(std::span<const std::byte>(p, 40))) {
      return std::nullopt;
    }
    Header h{GetU64(p + 8), GetU64(p + 16), GetU64(p + 24), static_cast<int64_t>(GetU64(p + 32))};
    if (h.value_bytes == 0) return std::nullopt;
    return h;
  }
};

// A block's values change together: each change is one Lua script, which
// Redis runs atomically (all of a block's values share a hash slot, so one
// node runs it), and a read is one MGET. A reader therefore sees a block
// whole, before or after a replace, never a header of one version with the
// chunks of another; and a change judged on a header read earlier is made
// only if that header is still there.
//
// KEYS: the block's values, meta first. ARGV: the values, then the PXAT
// expiry ("" for none).
constexpr std::string_view kWriteScript = R"(local at = ARGV[#KEYS + 1]
for i, k in ipairs(KEYS) do
  if at == '' then redis.call('SET', k, ARGV[i]) else redis.call('SET', k, ARGV[i], 'PXAT', at) end
end
return #KEYS)";
// KEYS: the block's values, meta first. ARGV: the header the change was
// judged on, the new header ("": unlink the values), the PXAT expiry ("":
// none). Returns 1 if made, 0 if the block had changed (or is gone).
constexpr std::string_view kChangeIfScript = R"(local h = redis.call('GETRANGE', KEYS[1], 0, 47)
if h ~= ARGV[1] then return 0 end
if ARGV[2] == '' then
  redis.call('UNLINK', unpack(KEYS))
  return 1
end
redis.call('SETRANGE', KEYS[1], 0, ARGV[2])
for _, k in ipairs(KEYS) do
  if ARGV[3] == '' then redis.call('PERSIST', k) else redis.call('PEXPIREAT', k, ARGV[3]) end
end
return 1)";

double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

class RedisTier final : public Tier {
 public:
  RedisTier(const RedisTierOptions& o, std::unique_ptr<RedisCluster> cluster)
      : options_(o), cluster_(std::move(cluster)) {}

  void SetBandwidth(const Bandwidth& b) { bandwidth_ = b; }

  std::string MetaKey(const BlockKey& key) const {
    return options_.key_prefix + ":{" + key.ToHex() + "}";
  }
  std::vector<std::string> Keys(const BlockKey& key, uint64_t values) const {
    std::vector<std::string> keys{MetaKey(key)};
    for (uint64_t i = 1; i < values; ++i) keys.push_back(keys[0] + ":" + std::to_string(i));
    return keys;
  }
  uint64_t ValuesFor(uint64_t bytes) const {
    return bytes == 0 ? 1 : (bytes + options_.value_bytes - 1) / options_.value_bytes;
  }

  // Redis's PXAT for an expiry on our clock ("" for none).
  std::string RedisExpiry(int64_t expiry_ms) const {
    if (expiry_ms == kNoExpiry) return {};
    const int64_t delta = expiry_ms - options_.clock->NowMs();
    return std::to_string(SystemClock()->NowMs() + std::max<int64_t>(delta, 1));
  }

  TierInfo Info() const override {
    TierInfo i;
    i.name = options_.name;
    i.capacity_bytes = options_.capacity_bytes;
    {
      std::lock_guard<std::mutex> lock(mu_);
      i.used_bytes = used_bytes_;
      i.allocated_bytes = used_bytes_;
      i.blocks = owned_.size();
      i.corruption_errors = corruption_errors_;
    }
    i.max_block_bytes = options_.max_block_bytes;
    i.read_bytes_per_s = bandwidth_.read_bytes_per_s;
    i.write_bytes_per_s = bandwidth_.write_bytes_per_s;
    i.persistent = true;
    i.shared = true;
    i.io_errors = cluster_->Stats().errors;
    return i;
  }

  void Write(std::span<const WriteOp> ops, IoCallback done) override {
    const auto start = std::chrono::steady_clock::now();
    std::vector<IoResult> results(ops.size());
    // Owned arguments: keys, meta values, expiries. Reserved up front so the
    // views the commands hold stay valid.
    std::vector<std::vector<std::string>> keys(ops.size());
    std::vector<std::vector<std::byte>> metas(ops.size());
    std::vector<std::string> pxats(ops.size());
    std::vector<RedisCommand> cmds;
    std::vector<size_t> meta_cmd(ops.size(), SIZE_MAX);
    std::vector<std::string> counts(ops.size());
    const int64_t now = options_.clock->NowMs();
    static constexpr std::string_view kEval = "EVAL";
    uint64_t reserved = 0;
    for (size_t i = 0; i < ops.size(); ++i) {
      const WriteOp& op = ops[i];
      const uint64_t n = op.payload.size();
      if (n == 0) {
        results[i] = IoResult(Status::InvalidArgument("a block payload may not be empty"));
        continue;
      }
      if (n > options_.max_block_bytes) {
        results[i] = IoResult(Status::ResourceExhausted(
            "a block of " + std::to_string(n) + " bytes is larger than the cluster tier accepts (" +
            std::to_string(options_.max_block_bytes) + ")"));
        continue;
      }
      if (op.expiry_ms <= now) {  // expired already: nothing to keep
        results[i] = IoResult(Status::Ok(), n);
        continue;
      }
      {
        std::lock_guard<std::mutex> lock(mu_);
        auto had = [&] {
          const auto it = owned_.find(op.key);
          return it == owned_.end() ? uint64_t{0} : it->second.bytes;
        };
        if (used_bytes_ + reserved - had() + n > options_.capacity_bytes) {
          ForgetExpiredLocked(now);  // their values are gone from the store by now
        }
        if (used_bytes_ + reserved - had() + n > options_.capacity_bytes) {
          results[i] = IoResult(Status::ResourceExhausted(
              "cluster tier full: this node's share of " + std::to_string(options_.capacity_bytes) +
              " bytes is used"));
          continue;
        }
        reserved += n;
      }
      Header h{n, Checksum64(op.payload), options_.value_bytes, op.expiry_ms};
      const uint64_t values = h.Values();
      keys[i] = Keys(op.key, values);
      pxats[i] = RedisExpiry(op.expiry_ms);
      const size_t first = std::min<uint64_t>(n, options_.value_bytes);
      metas[i].resize(kHeaderBytes + first);
      h.Encode(metas[i].data());
      if (first > 0) std::memcpy(metas[i].data() + kHeaderBytes, op.payload.data(), first);
      counts[i] = std::to_string(values);
      RedisCommand c;
      c.args = {kEval, kWriteScript, counts[i]};
      for (const std::string& k : keys[i]) c.args.push_back(k);
      c.args.push_back(
          std::string_view(reinterpret_cast<const char*>(metas[i].data()), metas[i].size()));
      for (uint64_t v = 1; v < values; ++v) {
        const size_t off = v * options_.value_bytes;
        const size_t len = std::min<uint64_t>(n - off, options_.value_bytes);
        c.args.push_back(
            std::string_view(reinterpret_cast<const char*>(op.payload.data()) + off, len));
      }
      c.args.push_back(pxats[i]);
      c.key = keys[i][0];
      meta_cmd[i] = cmds.size();
      cmds.push_back(std::move(c));
    }
    const std::vector<Result<RedisReply>> replies = cluster_->Run(cmds);
    uint64_t blocks = 0, bytes = 0;
    for (size_t i = 0; i < ops.size(); ++i) {
      if (meta_cmd[i] == SIZE_MAX) continue;
      if (const Result<RedisReply>& r = replies[meta_cmd[i]]; !r.ok()) {
        results[i] = IoResult(r.status());
        continue;
      }
      const uint64_t n = ops[i].payload.size();
      {
        std::lock_guard<std::mutex> lock(mu_);
        OwnLocked(ops[i].key, n, ops[i].expiry_ms);
      }
      ++blocks;
      bytes += n;
      results[i] = IoResult(Status::Ok(), n);
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      stats_.write_blocks += blocks;
      stats_.write_bytes += bytes;
      stats_.write_seconds += Seconds(start);
    }
    done(std::move(results));
  }

  void Read(std::span<const ReadOp> ops, IoCallback done) override {
    const auto start = std::chrono::steady_clock::now();
    std::vector<IoResult> results(ops.size());
    std::vector<std::vector<std::string>> keys(ops.size());
    std::vector<RedisCommand> cmds;
    static constexpr std::string_view kMget = "MGET";
    for (size_t i = 0; i < ops.size(); ++i) {
      // As many chunk values as the destination can hold: one MGET, one trip.
      keys[i] = Keys(ops[i].key, ValuesFor(std::max<uint64_t>(ops[i].dest.size(), 1)));
      RedisCommand c;
      c.args.push_back(kMget);
      for (const std::string& k : keys[i]) c.args.push_back(k);
      c.key = keys[i][0];
      cmds.push_back(std::move(c));
    }
    const std::vector<Result<RedisReply>> replies = cluster_->Run(cmds);
    uint64_t hits = 0, bytes = 0, misses = 0, corrupt = 0;
    const int64_t now = options_.clock->NowMs();
    std::vector<RedisCommand> unlinks;
    std::vector<std::vector<std::string>> damaged_names;
    std::vector<std::string> counts;
    damaged_names.reserve(ops.size());
    counts.reserve(ops.size());
    for (size_t i = 0; i < ops.size(); ++i) {
      results[i] = ReadOne(ops[i], replies[i], now, &corrupt);
      if (results[i].status.IsCorruption()) {
        // Removed for every node, not only forgotten here; but only as it
        // was read (a block replaced since is another block).
        const std::string_view meta = replies[i]->at(0).str();
        const std::optional<Header> h = Header::Decode(meta);
        damaged_names.push_back(Keys(ops[i].key, h ? h->Values() : 1));
        counts.emplace_back();
        unlinks.push_back(
            ChangeIf(damaged_names.back(), meta.substr(0, kHeaderBytes), "", "", &counts.back()));
      }
      if (results[i].status.ok()) {
        ++hits;
        bytes += results[i].bytes;
      } else {
        ++misses;
      }
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      stats_.read_blocks += hits;
      stats_.read_bytes += bytes;
      stats_.read_misses += misses;
      stats_.read_seconds += Seconds(start);
      corruption_errors_ += corrupt;
    }
    if (!unlinks.empty()) (void)cluster_->Run(unlinks);
    done(std::move(results));
  }

  IoResult ReadOne(const ReadOp& op, const Result<RedisReply>& reply, int64_t now,
                   uint64_t* corrupt) const {
    const std::string what = "block " + op.key.ToHex();
    if (!reply.ok()) return IoResult(reply.status());
    const RedisReply& r = *reply;
    if (r.size() == 0 || r.at(0).type() != RedisReply::Type::kString) {
      return IoResult(Status::NotFound(what + " is not in the cluster tier"));
    }
    const std::string_view meta = r.at(0).str();
    const std::optional<Header> h = Header::Decode(meta);
    if (!h || h->value_bytes != options_.value_bytes) {
      ++*corrupt;
      return IoResult(Status::Corruption(what + ": its header in the cluster tier is damaged"));
    }
    if (h->expiry_ms <= now) return IoResult(Status::NotFound(what + " has expired"));
    if (h->bytes > op.dest.size()) {
      return IoResult(
          Status::ResourceExhausted(what + " needs " + std::to_string(h->bytes) + " bytes"),
          h->bytes);
    }
    const uint64_t values = h->Values();
    if (values > r.size()) {
      return IoResult(Status::NotFound(what + ": not every value was fetched"));
    }
    // Every part present and of its size before a byte is copied.
    std::vector<std::string_view> parts(values);
    for (uint64_t v = 0; v < values; ++v) {
      const size_t want = std::min<uint64_t>(h->bytes - v * h->value_bytes, h->value_bytes);
      if (v == 0) {
        parts[v] = meta.substr(kHeaderBytes);
      } else if (r.at(v).type() != RedisReply::Type::kString) {
        // Evicted or expired on its own: a miss, not damage.
        return IoResult(Status::NotFound(what + ": value " + std::to_string(v) + " is gone"));
      } else {
        parts[v] = r.at(v).str();
      }
      if (parts[v].size() != want) {
        ++*corrupt;
        return IoResult(Status::Corruption(what + ": value " + std::to_string(v) + " has " +
                                           std::to_string(parts[v].size()) + " bytes, not " +
                                           std::to_string(want)));
      }
    }
    // The checksum is of the values as received, not read back from dest:
    // a destination someone else writes meanwhile (a client's shared
    // memory) cannot make a good block fail (common/checksum.h).
    uint64_t sum = 0;
    if (values == 1) {
      sum = CopyAndChecksum64(std::as_bytes(std::span(parts[0])), op.dest.first(h->bytes));
    } else {
      XXH3_state_t state;
      XXH3_64bits_reset(&state);
      for (uint64_t v = 0; v < values; ++v) {
        std::memcpy(op.dest.data() + v * h->value_bytes, parts[v].data(), parts[v].size());
        XXH3_64bits_update(&state, parts[v].data(), parts[v].size());
      }
      sum = XXH3_64bits_digest(&state);
    }
    if (sum != h->xxh3) {
      std::memset(op.dest.data(), 0, h->bytes);
      ++*corrupt;
      return IoResult(Status::Corruption(what + " failed its checksum in the cluster tier"));
    }
    return IoResult(Status::Ok(), h->bytes, sum);
  }

  // Each key's header (nullopt: absent, unreadable, damaged), one trip;
  // `raw` (if not null) gets the bytes read, for a change made only if they
  // are still there (kChangeIfScript).
  std::vector<std::optional<Header>> Headers(std::span<const BlockKey> keys,
                                             std::vector<Status>* errors = nullptr,
                                             std::vector<std::string>* raw = nullptr) {
    std::vector<std::string> names;
    names.reserve(keys.size());
    for (const BlockKey& k : keys) names.push_back(MetaKey(k));
    static constexpr std::string_view kGetrange = "GETRANGE", kZero = "0";
    static const std::string kLast = std::to_string(kHeaderBytes - 1);
    std::vector<RedisCommand> cmds;
    for (const std::string& n : names) cmds.push_back({{kGetrange, n, kZero, kLast}, n});
    const std::vector<Result<RedisReply>> replies = cluster_->Run(cmds);
    std::vector<std::optional<Header>> out(keys.size());
    if (raw != nullptr) raw->assign(keys.size(), std::string());
    for (size_t i = 0; i < keys.size(); ++i) {
      if (!replies[i].ok()) {
        if (errors != nullptr) errors->push_back(replies[i].status());
        continue;
      }
      out[i] = Header::Decode(replies[i]->str());
      if (raw != nullptr) (*raw)[i] = std::string(replies[i]->str());
    }
    return out;
  }

  // One kChangeIfScript call for a block whose header read `seen` and which
  // has `values` values: `header` "" unlinks them.
  RedisCommand ChangeIf(const std::vector<std::string>& names, std::string_view seen,
                        std::string_view header, std::string_view at, std::string* count) const {
    static constexpr std::string_view kEval = "EVAL";
    *count = std::to_string(names.size());
    RedisCommand c;
    c.args = {kEval, kChangeIfScript, *count};
    for (const std::string& n : names) c.args.push_back(n);
    c.args.push_back(seen);
    c.args.push_back(header);
    c.args.push_back(at);
    c.key = names[0];
    return c;
  }

  // Erases the blocks this node wrote (or recovered); another node's block
  // is only forgotten here: its writer manages it, and its expiry ends it.
  Status Erase(std::span<const BlockKey> all) override {
    std::vector<BlockKey> keys;
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (const BlockKey& k : all) {
        if (owned_.count(k) > 0) keys.push_back(k);
      }
    }
    if (keys.empty()) return Status::Ok();
    return Unlink(keys);
  }

  Status Unlink(std::span<const BlockKey> keys) {
    std::vector<Status> errors;
    const std::vector<std::optional<Header>> headers = Headers(keys, &errors);
    if (!errors.empty()) return errors.front();
    std::vector<std::vector<std::string>> names(keys.size());
    std::vector<RedisCommand> cmds;
    static constexpr std::string_view kUnlink = "UNLINK";
    for (size_t i = 0; i < keys.size(); ++i) {
      // Without a readable header, the meta value alone (chunks expire).
      names[i] = Keys(keys[i], headers[i] ? headers[i]->Values() : 1);
      RedisCommand c;
      c.args.push_back(kUnlink);
      for (const std::string& n : names[i]) c.args.push_back(n);
      c.key = names[i][0];
      cmds.push_back(std::move(c));
    }
    for (const Result<RedisReply>& r : cluster_->Run(cmds)) {
      if (!r.ok()) return r.status();
    }
    std::lock_guard<std::mutex> lock(mu_);
    for (const BlockKey& k : keys) {
      const auto it = owned_.find(k);
      if (it == owned_.end()) continue;
      used_bytes_ -= it->second.bytes;
      owned_.erase(it);
    }
    return Status::Ok();
  }

  void OwnLocked(const BlockKey& key, uint64_t bytes, int64_t expiry_ms) {
    Owned& o = owned_[key];
    used_bytes_ = used_bytes_ - o.bytes + bytes;
    o = Owned{bytes, expiry_ms};
    if (expiry_ms != kNoExpiry) expiries_.push({expiry_ms, key});
  }
  // Forgets the owned blocks whose expiry has passed (the store has dropped
  // them), earliest first: a heap of expiries, whose items for blocks since
  // rewritten or erased are skipped.
  void ForgetExpiredLocked(int64_t now) {
    while (!expiries_.empty() && expiries_.top().first <= now) {
      const auto [expiry, key] = expiries_.top();
      expiries_.pop();
      const auto it = owned_.find(key);
      if (it == owned_.end() || it->second.expiry_ms != expiry) continue;
      used_bytes_ -= it->second.bytes;
      owned_.erase(it);
    }
  }

  // A block replaced since its header was read keeps the replacement's
  // expiry (the replace set it): the header and expiries are changed only
  // if the header read is still there.
  Status SetExpiry(std::span<const BlockKey> keys, int64_t expiry_ms) override {
    std::vector<Status> errors;
    std::vector<std::string> seen;
    const std::vector<std::optional<Header>> headers = Headers(keys, &errors, &seen);
    if (!errors.empty()) return errors.front();
    std::vector<std::vector<std::string>> names(keys.size());
    std::vector<std::array<std::byte, kHeaderBytes>> encoded(keys.size());
    std::vector<std::string> counts(keys.size());
    const std::string at = RedisExpiry(expiry_ms);
    std::vector<RedisCommand> cmds;
    for (size_t i = 0; i < keys.size(); ++i) {
      if (!headers[i]) continue;  // absent: not an error
      Header h = *headers[i];
      h.expiry_ms = expiry_ms;
      h.Encode(encoded[i].data());
      names[i] = Keys(keys[i], h.Values());
      cmds.push_back(
          ChangeIf(names[i], seen[i],
                   std::string_view(reinterpret_cast<const char*>(encoded[i].data()), kHeaderBytes),
                   at, &counts[i]));
    }
    for (const Result<RedisReply>& r : cluster_->Run(cmds)) {
      if (!r.ok()) return r.status();
    }
    std::lock_guard<std::mutex> lock(mu_);
    for (const BlockKey& k : keys) {
      const auto it = owned_.find(k);
      if (it != owned_.end()) OwnLocked(k, it->second.bytes, expiry_ms);  // its new expiry
    }
    return Status::Ok();
  }

  Status Recover(IndexSink& sink) override {
    const std::string pattern = options_.key_prefix + ":{*}";
    const int64_t now = options_.clock->NowMs();
    static constexpr std::string_view kScan = "SCAN", kMatch = "MATCH", kCount = "COUNT",
                                      kBatch = "1000";
    for (const std::string& master : cluster_->Masters()) {
      std::string cursor = "0";
      do {
        const std::string_view args[] = {kScan, cursor, kMatch, pattern, kCount, kBatch};
        KVTIER_ASSIGN_OR_RETURN(const RedisReply r, cluster_->RunOn(master, args));
        if (r.size() != 2) return Status::IOError("redis: SCAN answered something else");
        cursor = std::string(r.at(0).str());
        std::vector<BlockKey> keys;
        const RedisReply names = r.at(1);
        for (size_t i = 0; i < names.size(); ++i) {
          const std::string_view n = names.at(i).str();
          const size_t open = n.find('{'), close = n.find('}');
          if (open == std::string_view::npos || close != n.size() - 1) continue;
          std::optional<BlockKey> k = BlockKey::FromHex(n.substr(open + 1, close - open - 1));
          if (k && !IsCalibrationKey(*k)) keys.push_back(*k);
        }
        const std::vector<std::optional<Header>> headers = Headers(keys);
        std::lock_guard<std::mutex> lock(mu_);
        for (size_t i = 0; i < keys.size(); ++i) {
          if (!headers[i] || headers[i]->expiry_ms <= now) continue;
          sink.Announce(keys[i], headers[i]->bytes, headers[i]->expiry_ms);
          OwnLocked(keys[i], headers[i]->bytes, headers[i]->expiry_ms);
        }
      } while (cursor != "0");
    }
    return Status::Ok();
  }

  std::vector<std::optional<BlockStat>> Stat(std::span<const BlockKey> keys) override {
    const std::vector<std::optional<Header>> headers = Headers(keys);
    const int64_t now = options_.clock->NowMs();
    std::vector<std::optional<BlockStat>> out(keys.size());
    uint64_t found = 0;
    for (size_t i = 0; i < keys.size(); ++i) {
      if (!headers[i] || headers[i]->expiry_ms <= now ||
          headers[i]->value_bytes != options_.value_bytes) {
        continue;
      }
      out[i] = BlockStat{headers[i]->bytes, headers[i]->expiry_ms};
      ++found;
    }
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.stat_calls;
    stats_.stat_found += found;
    return out;
  }

  RedisTierStats Stats() const {
    std::lock_guard<std::mutex> lock(mu_);
    RedisTierStats s = stats_;
    s.cluster = cluster_->Stats();
    return s;
  }

 private:
  const RedisTierOptions options_;
  std::unique_ptr<RedisCluster> cluster_;
  Bandwidth bandwidth_;
  mutable std::mutex mu_;
  struct Owned {
    uint64_t bytes = 0;
    int64_t expiry_ms = kNoExpiry;
  };
  std::unordered_map<BlockKey, Owned, BlockKeyHash> owned_;  // guarded by mu_: this node's blocks
  // Their expiries, earliest on top (guarded by mu_).
  std::priority_queue<std::pair<int64_t, BlockKey>, std::vector<std::pair<int64_t, BlockKey>>,
                      std::greater<>>
      expiries_;
  uint64_t used_bytes_ = 0;         // guarded by mu_
  uint64_t corruption_errors_ = 0;  // guarded by mu_
  RedisTierStats stats_;            // guarded by mu_
};

}  // namespace

Result<std::unique_ptr<Tier>> OpenRedisTier(const RedisTierOptions& options) {
  if (options.seeds.empty()) {
    return Status::InvalidArgument("the cluster tier needs at least one Redis node (seeds)");
  }
  if (options.key_prefix.empty() || options.key_prefix.find_first_of("{}") != std::string::npos) {
    return Status::InvalidArgument("cluster tier key_prefix must be non-empty, without { or }");
  }
  if (options.value_bytes < 4096 || options.value_bytes > (512ull << 20)) {
    return Status::InvalidArgument("cluster tier value_bytes must be in [4 KiB, 512 MiB]");
  }
  if (options.capacity_bytes == 0 || options.max_block_bytes == 0) {
    return Status::InvalidArgument("cluster tier capacity and max block size must be > 0");
  }
  if (options.clock == nullptr) return Status::InvalidArgument("the cluster tier needs a clock");
  RedisClusterOptions c;
  c.seeds = options.seeds;
  c.connect_timeout_ms = options.connect_timeout_ms;
  c.command_timeout_ms = options.command_timeout_ms;
  KVTIER_ASSIGN_OR_RETURN(std::unique_ptr<RedisCluster> cluster, RedisCluster::Connect(c));
  auto tier = std::make_unique<RedisTier>(options, std::move(cluster));
  // Shared: other nodes may calibrate at once (the keys are this node's
  // own), and a node that dies mid-way leaves samples that expire.
  CalibrationOptions calibration;
  calibration.expiry_ms = options.clock->NowMs() + 10 * 60 * 1000;
  const Bandwidth bandwidth =
      ConfiguredOrMeasured(*tier, options.read_bytes_per_s, options.write_bytes_per_s, calibration);
  tier->SetBandwidth(bandwidth);
  LogInfo("cluster_tier_open", LogFields()
                                   .Add("seeds", options.seeds.front())
                                   .Add("prefix", options.key_prefix)
                                   .Add("capacity_bytes", options.capacity_bytes)
                                   .Add("read_bytes_per_s", bandwidth.read_bytes_per_s)
                                   .Add("write_bytes_per_s", bandwidth.write_bytes_per_s));
  return std::unique_ptr<Tier>(std::move(tier));
}

Result<RedisTierStats> RedisTierStatsOf(Tier& tier) {
  auto* r = dynamic_cast<RedisTier*>(&tier);
  if (r == nullptr) return Status::InvalidArgument("not a cluster tier");
  return r->Stats();
}

std::vector<std::string> RedisTierKeysForTesting(Tier& tier, const BlockKey& key,
                                                 uint64_t payload_bytes) {
  auto* r = dynamic_cast<RedisTier*>(&tier);
  if (r == nullptr) return {};
  return r->Keys(key, r->ValuesFor(payload_bytes));
}

}  // namespace kvtier
