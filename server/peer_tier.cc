#include "server/peer_tier.h"

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <mutex>

#include "common/checksum.h"
#include "common/rendezvous.h"
#include "proto/kvtier.grpc.pb.h"
#include "server/peer_service.h"

namespace kvtier {
namespace {

int64_t SteadyMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

int64_t ToProtoExpiry(int64_t expiry_ms) { return expiry_ms == kNoExpiry ? 0 : expiry_ms; }
int64_t FromProtoExpiry(int64_t expiry_ms) { return expiry_ms == 0 ? kNoExpiry : expiry_ms; }

class PeerTier final : public Tier {
 public:
  explicit PeerTier(const PeerTierOptions& o) : options_(o), ring_(Nodes(o)) {
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(static_cast<int>(kPeerCallBytes + (1 << 20)));
    args.SetMaxSendMessageSize(static_cast<int>(kPeerCallBytes + (1 << 20)));
    for (const std::string& name : ring_.nodes()) {
      auto p = std::make_unique<Peer>();
      p->stats.peer = name;
      if (name != options_.self) {
        p->stub = v1::Peer::NewStub(
            grpc::CreateCustomChannel(name, grpc::InsecureChannelCredentials(), args));
      }
      peers_.push_back(std::move(p));
    }
  }

  TierInfo Info() const override {
    TierInfo i;
    i.name = "peers";
    i.capacity_bytes = uint64_t{1} << 50;  // not storage of ours: nothing is placed here
    i.max_block_bytes = std::min<uint64_t>(options_.max_block_bytes, kPeerCallBytes);
    i.read_bytes_per_s = options_.bytes_per_s;
    i.write_bytes_per_s = options_.bytes_per_s;
    i.shared = true;
    i.accepts_placements = false;
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& p : peers_) {
      i.io_errors += p->stats.errors;
      i.corruption_errors += p->corrupt;
    }
    return i;
  }

  void Write(std::span<const WriteOp> ops, IoCallback done) override {
    std::vector<IoResult> results(ops.size());
    // Each remote owner's blocks, in calls of at most kPeerCallBytes.
    std::vector<std::vector<size_t>> by_owner(peers_.size());
    for (size_t i = 0; i < ops.size(); ++i) {
      const size_t owner = ring_.Owner(ops[i].key);
      if (ring_.nodes()[owner] == options_.self) {
        results[i] = IoResult(Status::Ok(), ops[i].payload.size());  // it is here already
      } else if (ops[i].payload.size() > kPeerCallBytes) {
        results[i] = IoResult(Status::ResourceExhausted("a block of " +
                                                        std::to_string(ops[i].payload.size()) +
                                                        " bytes is larger than a peer call"));
      } else {
        by_owner[owner].push_back(i);
      }
    }
    for (size_t owner = 0; owner < peers_.size(); ++owner) {
      const std::vector<size_t>& mine = by_owner[owner];
      for (size_t begin = 0; begin < mine.size();) {
        v1::PeerWriteRequest req;
        uint64_t bytes = 0;
        size_t end = begin;
        while (end < mine.size() &&
               (end == begin || bytes + ops[mine[end]].payload.size() <= kPeerCallBytes)) {
          const WriteOp& op = ops[mine[end]];
          v1::PeerBlock* b = req.add_blocks();
          b->set_key(op.key.ToByteString());
          b->set_found(true);
          b->set_payload(op.payload.data(), op.payload.size());
          b->set_payload_xxh3(Checksum64(op.payload));
          b->set_expire_time_ms(ToProtoExpiry(op.expiry_ms));
          bytes += op.payload.size();
          ++end;
        }
        v1::PeerWriteResponse resp;
        const Status s = Call(owner, [&](grpc::ClientContext* ctx) {
          return peers_[owner]->stub->Write(ctx, req, &resp);
        });
        for (size_t j = begin; j < end; ++j) {
          const size_t i = mine[j];
          const bool stored = s.ok() && static_cast<int>(j - begin) < resp.stored_size() &&
                              resp.stored(static_cast<int>(j - begin));
          results[i] =
              stored ? IoResult(Status::Ok(), ops[i].payload.size())
                     : IoResult(s.ok() ? Status::ResourceExhausted("peer " + ring_.nodes()[owner] +
                                                                   " did not store the block")
                                       : s);
          if (stored) {
            std::lock_guard<std::mutex> lock(mu_);
            ++peers_[owner]->stats.written_blocks;
            peers_[owner]->stats.written_bytes += ops[i].payload.size();
          }
        }
        begin = end;
      }
    }
    done(std::move(results));
  }

  void Read(std::span<const ReadOp> ops, IoCallback done) override {
    std::vector<IoResult> results(ops.size(), IoResult(Status::NotFound("not held by a peer")));
    std::vector<std::vector<size_t>> by_owner(peers_.size());
    for (size_t i = 0; i < ops.size(); ++i) {
      const size_t owner = ring_.Owner(ops[i].key);
      if (ring_.nodes()[owner] != options_.self) by_owner[owner].push_back(i);
    }
    for (size_t owner = 0; owner < peers_.size(); ++owner) {
      const std::vector<size_t>& mine = by_owner[owner];
      for (size_t begin = 0; begin < mine.size();) {
        // As many keys as their buffers' bytes fit one answer.
        v1::PeerReadRequest req;
        uint64_t bytes = 0;
        size_t end = begin;
        while (end < mine.size() &&
               (end == begin || bytes + ops[mine[end]].dest.size() <= kPeerCallBytes)) {
          req.add_keys(ops[mine[end]].key.ToByteString());
          bytes += ops[mine[end]].dest.size();
          ++end;
        }
        v1::PeerReadResponse resp;
        const Status s = Call(owner, [&](grpc::ClientContext* ctx) {
          return peers_[owner]->stub->Read(ctx, req, &resp);
        });
        for (size_t j = begin; j < end; ++j) {
          const size_t i = mine[j];
          const int k = static_cast<int>(j - begin);
          if (!s.ok()) {
            results[i] = IoResult(s);
          } else if (k < resp.blocks_size() && resp.blocks(k).found()) {
            results[i] = Land(owner, resp.blocks(k), ops[i]);
          }
        }
        begin = end;
      }
    }
    done(std::move(results));
  }

  Status Erase(std::span<const BlockKey>) override { return Status::Ok(); }
  Status SetExpiry(std::span<const BlockKey>, int64_t) override { return Status::Ok(); }
  Status Recover(IndexSink&) override { return Status::Ok(); }

  std::vector<std::optional<BlockStat>> Stat(std::span<const BlockKey> keys) override {
    std::vector<std::optional<BlockStat>> out(keys.size());
    std::vector<std::vector<size_t>> by_owner(peers_.size());
    for (size_t i = 0; i < keys.size(); ++i) {
      const size_t owner = ring_.Owner(keys[i]);
      if (ring_.nodes()[owner] != options_.self) by_owner[owner].push_back(i);
    }
    for (size_t owner = 0; owner < peers_.size(); ++owner) {
      if (by_owner[owner].empty()) continue;
      v1::PeerStatRequest req;
      for (size_t i : by_owner[owner]) req.add_keys(keys[i].ToByteString());
      v1::PeerStatResponse resp;
      const Status s = Call(owner, [&](grpc::ClientContext* ctx) {
        return peers_[owner]->stub->Stat(ctx, req, &resp);
      });
      if (!s.ok()) continue;  // a miss
      uint64_t found = 0;
      for (int k = 0; k < resp.blocks_size() && k < static_cast<int>(by_owner[owner].size()); ++k) {
        const v1::PeerBlockStat& b = resp.blocks(k);
        if (!b.found()) continue;
        out[by_owner[owner][k]] = BlockStat{b.size_bytes(), FromProtoExpiry(b.expire_time_ms())};
        ++found;
      }
      std::lock_guard<std::mutex> lock(mu_);
      peers_[owner]->stats.found_blocks += found;
    }
    return out;
  }

  std::vector<PeerStats> Stats() const {
    std::vector<PeerStats> out;
    const int64_t now = SteadyMs();
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& p : peers_) {
      if (p->stub == nullptr) continue;  // this node
      PeerStats s = p->stats;
      s.down = now < p->down_until_ms;
      out.push_back(s);
    }
    return out;
  }

 private:
  struct Peer {
    std::unique_ptr<v1::Peer::Stub> stub;  // null for this node
    PeerStats stats;                       // guarded by PeerTier::mu_
    uint64_t corrupt = 0;                  // guarded by PeerTier::mu_
    int64_t down_until_ms = 0;             // guarded by PeerTier::mu_
  };

  static std::vector<std::string> Nodes(const PeerTierOptions& o) {
    std::vector<std::string> n = o.peers;
    n.push_back(o.self);
    return n;
  }

  // One call to peer `owner` with the token and the deadline; a peer that
  // failed lately is not called (its keys are misses).
  template <typename Fn>
  Status Call(size_t owner, Fn&& fn) {
    Peer& p = *peers_[owner];
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (SteadyMs() < p.down_until_ms) {
        return Status::Unavailable("peer " + p.stats.peer + " failed a moment ago");
      }
    }
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::milliseconds(options_.timeout_ms));
    ctx.AddMetadata(std::string(kPeerTokenHeader), options_.token);
    const auto start = std::chrono::steady_clock::now();
    const grpc::Status g = fn(&ctx);
    const double s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::lock_guard<std::mutex> lock(mu_);
    ++p.stats.calls;
    p.stats.seconds += s;
    if (g.ok()) return Status::Ok();
    ++p.stats.errors;
    p.down_until_ms = SteadyMs() + options_.down_ms;
    return Status::Unavailable("peer " + p.stats.peer + ": " + g.error_message());
  }

  // A block a peer sent: checked against its checksum, then copied out.
  IoResult Land(size_t owner, const v1::PeerBlock& b, const ReadOp& op) {
    const std::string& payload = b.payload();
    if (payload.size() > op.dest.size()) {
      return IoResult(
          Status::ResourceExhausted("block needs " + std::to_string(payload.size()) + " bytes"),
          payload.size());
    }
    const auto* src = reinterpret_cast<const std::byte*>(payload.data());
    const uint64_t sum =
        CopyAndChecksum64(std::span(src, payload.size()), op.dest.first(payload.size()));
    std::lock_guard<std::mutex> lock(mu_);
    if (sum != b.payload_xxh3()) {
      std::memset(op.dest.data(), 0, payload.size());
      ++peers_[owner]->corrupt;
      return IoResult(Status::Corruption("a block from peer " + peers_[owner]->stats.peer +
                                         " failed its checksum"));
    }
    ++peers_[owner]->stats.read_blocks;
    peers_[owner]->stats.read_bytes += payload.size();
    return IoResult(Status::Ok(), payload.size(), sum);
  }

  const PeerTierOptions options_;
  const Rendezvous ring_;
  std::vector<std::unique_ptr<Peer>> peers_;  // one per ring_ node, same order
  mutable std::mutex mu_;
};

}  // namespace

Result<std::unique_ptr<Tier>> OpenPeerTier(const PeerTierOptions& options) {
  if (options.self.empty()) return Status::InvalidArgument("the peer tier needs this node's name");
  if (options.token.empty()) return Status::InvalidArgument("the peer tier needs the peer token");
  if (options.timeout_ms <= 0) return Status::InvalidArgument("peer timeout must be > 0 ms");
  for (const std::string& p : options.peers) {
    if (p == options.self) {
      return Status::InvalidArgument("--peers lists this node itself (" + p + ")");
    }
  }
  return std::unique_ptr<Tier>(new PeerTier(options));
}

Result<std::vector<PeerStats>> PeerTierStatsOf(Tier& tier) {
  auto* p = dynamic_cast<PeerTier*>(&tier);
  if (p == nullptr) return Status::InvalidArgument("not a peer tier");
  return p->Stats();
}

}  // namespace kvtier
