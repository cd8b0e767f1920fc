// Crash loop (issue 16): the real kvtierd under a concurrent load of block
// Puts, Generates and CreateCaches is killed with SIGKILL at random points N
// times and restarted on the same data directory. After every restart each
// item a client was told was done (the call returned OK) is checked:
//
//  - a block reads back with exactly the bytes that were put, or is a clean
//    miss (NOT_FOUND): a cache may lose a block, never change one;
//  - a named cache exists and holds the tokens it was created with;
//  - a ledger record is there exactly once with the usage the client was
//    told: every Generate and CreateCache runs as a tenant of its own, so
//    that tenant's billing report is that one request.
//
// Blocks go to the durable tiers: with the default prices the cold tier
// (RocksDB) is cheapest for them; in odd cycles DRAM and RocksDB are priced
// out so that they land on flash. The Put's answer says which tier took it.
//
// The kill points are random (the seed is printed; set KVTIER_CRASH_SEED to
// replay a run's requests and kill targets, KVTIER_CRASH_CYCLES for N): the
// daemon is killed once the load has had a random number of acknowledgements,
// with the other calls still in flight, and now and then once more as soon as
// it serves again. Nothing here depends on speed.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "proto/client.h"
#include "proto/status_codes.h"
#include "tests/server/daemon_client.h"
#include "tests/server/daemon_process.h"
#include "tests/shared_data.h"

namespace kvtier {
namespace {

using testing::AsBytes;
using testing::ClientFor;
using testing::DaemonProcess;
using testing::TempDir;

constexpr int kDefaultCycles = 10;
constexpr int kPutWorkers = 2;
constexpr int kGenerateWorkers = 2;
constexpr int32_t kVocab = 512;  // stories260K, and the default "tiny-8k" model

// stories260K's checkpoint, or "" without it: the daemon's own random model.
std::string ModelPath() {
  return std::filesystem::exists(Stories260KCheckpoint()) ? Stories260KCheckpoint() : "";
}

uint64_t EnvOr(const char* name, uint64_t fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::strtoull(v, nullptr, 10) : fallback;
}

// The payload of a block is a function of its key, so any copy of a key's
// block that ever existed has the same bytes.
std::string Payload(const BlockKey& key, size_t size) {
  std::string s(size, '\0');
  uint64_t x = key.hi ^ (key.lo * 0x9e3779b97f4a7c15ull);
  for (auto& c : s) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    c = static_cast<char>(x >> 56);
  }
  return s;
}

std::vector<int32_t> RandomTokens(std::mt19937_64& rng, size_t n) {
  std::uniform_int_distribution<int32_t> id(3, kVocab - 1);
  std::vector<int32_t> t(n);
  for (auto& v : t) v = id(rng);
  return t;
}

struct AckedBlock {
  BlockKey key;
  size_t size = 0;
  std::string tier;
  int cycle = 0;
};

struct AckedCache {
  std::string tenant;
  std::string name;
  uint64_t tokens = 0;
  int cycle = 0;
};

// A request billed to a tenant of its own: its report must be this usage.
struct AckedRecord {
  std::string tenant;
  std::string what;  // "generate" or "create"
  uint64_t input = 0, creation_5m = 0, creation_1h = 0, read = 0, output = 0;
  bool storage = false;  // a CreateCache also records a storage charge
  int cycle = 0;
};

// Everything acknowledged so far, across cycles; filled by the load threads.
class Acks {
 public:
  void Add(AckedBlock b) {
    Note(nullptr, [&] { blocks_.push_back(std::move(b)); });
  }
  void Add(AckedCache c) {
    Note(&caches_count_, [&] { caches_.push_back(std::move(c)); });
  }
  void Add(AckedRecord r) {
    Note(&records_count_, [&] { records_.push_back(std::move(r)); });
  }
  void Error(const std::string& rpc, grpc::StatusCode code) {
    std::lock_guard<std::mutex> l(mu_);
    ++errors_[rpc + " " + GrpcCodeName(code)];
  }
  // Waits until `n` acknowledgements, at least one named cache and one more
  // ledger record among them, have come since the last ResetCount(),
  // or `guard` has passed (a hang guard: false then).
  bool WaitForCount(int n, std::chrono::seconds guard) {
    std::unique_lock<std::mutex> l(mu_);
    return cv_.wait_for(l, guard, [&] {
      return count_ >= n && caches_count_ > 0 && records_count_ > caches_count_;
    });
  }
  void ResetCount() {
    std::lock_guard<std::mutex> l(mu_);
    count_ = caches_count_ = records_count_ = 0;
  }
  // Read only while no load thread runs.
  const std::vector<AckedBlock>& blocks() const { return blocks_; }
  const std::vector<AckedCache>& caches() const { return caches_; }
  const std::vector<AckedRecord>& records() const { return records_; }
  const std::map<std::string, int>& errors() const { return errors_; }

 private:
  template <typename F>
  void Note(int* kind_count, F add) {
    {
      std::lock_guard<std::mutex> l(mu_);
      add();
      ++count_;
      if (kind_count != nullptr) ++*kind_count;
    }
    cv_.notify_all();
  }
  std::mutex mu_;
  std::condition_variable cv_;
  int count_ = 0;                      // guarded by mu_
  int caches_count_ = 0;               // guarded by mu_
  int records_count_ = 0;              // guarded by mu_
  std::vector<AckedBlock> blocks_;     // guarded by mu_
  std::vector<AckedCache> caches_;     // guarded by mu_
  std::vector<AckedRecord> records_;   // guarded by mu_
  std::map<std::string, int> errors_;  // "RPC CODE" -> count, guarded by mu_
};

// One load thread: a stream of one kind of call until `stop`, its requests
// drawn from `rng` (so a seed replays them).
void PutLoad(Client& c, std::mt19937_64 rng, int cycle, const std::atomic<bool>& stop,
             const std::atomic<bool>& killed, Acks& acks) {
  std::uniform_int_distribution<size_t> size(4 << 10, 256 << 10);
  while (!stop.load()) {
    const BlockKey key{rng(), rng()};
    const size_t n = size(rng);
    const std::string payload = Payload(key, n);
    v1::PutHeader h;
    h.set_key(key.ToByteString());
    h.set_ttl_seconds(rng() % 2 == 0 ? 0 : 86400);
    Result<v1::PutResponse> r = c.Put(h, AsBytes(payload));
    if (r.ok()) {
      acks.Add(AckedBlock{key, n, r->block().tier(), cycle});
    } else if (!killed.load()) {
      acks.Error("Put", ToGrpcStatus(r.status()).error_code());
    }
  }
}

void GenerateLoad(Client& c, std::mt19937_64 rng, int cycle, int worker,
                  const std::atomic<bool>& stop, const std::atomic<bool>& killed, Acks& acks) {
  for (int i = 0; !stop.load(); ++i) {
    const std::string id =
        "crash-" + std::to_string(cycle) + "-g" + std::to_string(worker) + "-" + std::to_string(i);
    v1::GenerateRequest req;
    req.set_tenant(id);
    req.set_request_id(id);
    req.set_max_tokens(2 + static_cast<uint32_t>(rng() % 6));
    req.set_ignore_eos(true);
    if (rng() % 2 == 0) {
      for (int32_t t : RandomTokens(rng, 8 + rng() % 120)) req.add_token_ids(t);
    } else {
      // A marked prefix of one or two blocks (cached with a 1h TTL) and a tail.
      v1::Segment* head = req.add_segments();
      for (int32_t t : RandomTokens(rng, 64 * (1 + rng() % 2))) head->add_token_ids(t);
      head->mutable_cache_control()->set_ttl("1h");
      v1::Segment* tail = req.add_segments();
      for (int32_t t : RandomTokens(rng, 1 + rng() % 40)) tail->add_token_ids(t);
    }
    v1::GenerateResponse resp;
    grpc::Status s = c.GenerateRaw(req, &resp);
    if (s.ok()) {
      const v1::Usage& u = resp.usage();
      acks.Add(AckedRecord{id, "generate", u.input_tokens(),
                           u.cache_creation().ephemeral_5m_input_tokens(),
                           u.cache_creation().ephemeral_1h_input_tokens(),
                           u.cache_read_input_tokens(), u.output_tokens(), false, cycle});
    } else if (!killed.load()) {
      acks.Error("Generate", s.error_code());
    }
  }
}

void CreateCacheLoad(Client& c, std::mt19937_64 rng, int cycle, const std::atomic<bool>& stop,
                     const std::atomic<bool>& killed, Acks& acks) {
  for (int i = 0; !stop.load(); ++i) {
    const std::string id = "crash-" + std::to_string(cycle) + "-c" + std::to_string(i);
    v1::CreateCacheRequest req;
    req.set_tenant(id);
    req.set_request_id(id);
    const std::vector<int32_t> tokens = RandomTokens(rng, 16 + rng() % 150);
    req.mutable_token_ids()->Add(tokens.begin(), tokens.end());
    req.set_ttl_seconds(86400);
    req.set_display_name(id);
    v1::NamedCacheInfo info;
    grpc::Status s = c.context_cache().CreateCache(c.NewContext().get(), req, &info);
    if (s.ok()) {
      acks.Add(AckedCache{id, info.name(), tokens.size(), cycle});
      acks.Add(AckedRecord{id, "create", tokens.size(), 0, 0, 0, 0, true, cycle});
    } else if (!killed.load()) {
      acks.Error("CreateCache", s.error_code());
    }
  }
}

struct Tally {
  int hits = 0, misses = 0, wrong = 0;
};

// Checks every acknowledged item against a freshly restarted daemon. Each
// problem is a test failure naming the item and the cycle it was acked in.
void CheckAcked(Client& c, const Acks& acks, int after_cycle, std::map<std::string, Tally>* tiers) {
  tiers->clear();
  for (const AckedBlock& b : acks.blocks()) {
    Tally& t = (*tiers)[b.tier];
    Result<FetchedBlock> got = c.Get(b.key);
    if (got.ok()) {
      if (got->payload == Payload(b.key, b.size)) {
        ++t.hits;
      } else {
        ++t.wrong;
        ADD_FAILURE() << "after cycle " << after_cycle << ": block " << b.key.ToHex() << " (put to "
                      << b.tier << " in cycle " << b.cycle << ", " << b.size << " bytes) read back "
                      << got->payload.size() << " different bytes";
      }
    } else if (got.status().IsNotFound()) {
      ++t.misses;
    } else {
      ++t.wrong;
      ADD_FAILURE() << "after cycle " << after_cycle << ": block " << b.key.ToHex() << " (put to "
                    << b.tier << " in cycle " << b.cycle
                    << ") is neither its bytes nor a miss: " << got.status();
    }
  }
  for (const AckedCache& a : acks.caches()) {
    v1::CacheRef ref;
    ref.set_tenant(a.tenant);
    ref.set_name(a.name);
    v1::NamedCacheInfo info;
    grpc::Status s = c.context_cache().GetCache(c.NewContext().get(), ref, &info);
    if (!s.ok()) {
      ADD_FAILURE() << "after cycle " << after_cycle << ": named cache " << a.name << " of "
                    << a.tenant << " (created in cycle " << a.cycle
                    << ") is lost: " << GrpcCodeName(s.error_code()) << " " << s.error_message();
    } else {
      EXPECT_EQ(info.tokens(), a.tokens)
          << "after cycle " << after_cycle << ": named cache " << a.name << " of " << a.tenant;
    }
  }
  for (const AckedRecord& r : acks.records()) {
    v1::BillingReportRequest req;
    req.set_tenant(r.tenant);
    Result<v1::BillingReportResponse> rep = c.BillingReport(req);
    const std::string what = "after cycle " + std::to_string(after_cycle) + ": the " + r.what +
                             " ledger record of " + r.tenant + " (acked in cycle " +
                             std::to_string(r.cycle) + ")";
    if (!rep.ok()) {
      ADD_FAILURE() << what << ": no report: " << rep.status();
      continue;
    }
    const v1::BillingReportRow& t = rep->total();
    if (t.requests() != 1) {
      ADD_FAILURE() << what << " is there " << t.requests() << " times, not once";
      continue;
    }
    EXPECT_EQ(t.input_tokens(), r.input) << what;
    EXPECT_EQ(t.cache_creation_5m_input_tokens(), r.creation_5m) << what;
    EXPECT_EQ(t.cache_creation_1h_input_tokens(), r.creation_1h) << what;
    EXPECT_EQ(t.cache_read_input_tokens(), r.read) << what;
    EXPECT_EQ(t.output_tokens(), r.output) << what;
    if (r.storage) {
      EXPECT_GT(t.storage_nanousd(), 0) << what << ": its storage charge is lost";
    } else {
      EXPECT_EQ(t.storage_nanousd(), 0) << what;
    }
  }
}

std::vector<std::string> DaemonArgs(int cycle) {
  std::vector<std::string> args = {"--dram-bytes",           "64M", "--metrics-listen", "",
                                   "--min-cacheable-tokens", "64"};
  if (const std::string model = ModelPath(); !model.empty()) {
    args.insert(args.end(), {"--model", model});
  }
  // Odd cycles price DRAM and RocksDB out: blocks land on flash.
  if (cycle % 2 == 1) args.insert(args.end(), {"--dram-price", "1000", "--rocks-price", "1000"});
  return args;
}

TEST(CrashLoopTest, EveryAcknowledgedBlockCacheAndLedgerRecordSurvivesSigkill) {
  const uint64_t seed = EnvOr("KVTIER_CRASH_SEED", std::random_device{}());
  const int cycles = static_cast<int>(EnvOr("KVTIER_CRASH_CYCLES", kDefaultCycles));
  std::printf("crash loop: seed %llu (KVTIER_CRASH_SEED=%llu replays it), %d kills, model %s\n",
              static_cast<unsigned long long>(seed), static_cast<unsigned long long>(seed), cycles,
              ModelPath().empty() ? "(the daemon's own)" : ModelPath().c_str());
  RecordProperty("seed", std::to_string(seed));
  std::mt19937_64 rng(seed);
  const std::string dir = TempDir("crash_loop");
  Acks acks;
  std::map<std::string, Tally> tiers;
  int early_kills = 0;
  for (int cycle = 0; cycle <= cycles; ++cycle) {
    DaemonProcess d;
    ASSERT_TRUE(d.Start(dir, DaemonArgs(cycle)))
        << "kvtierd did not restart after kill " << cycle << ": exit " << d.exit_code();
    // Now and then a second kill as soon as it serves, before any request:
    // whatever the restart began in the background is cut short.
    if (cycle > 0 && rng() % 3 == 0) {
      ++early_kills;
      EXPECT_EQ(d.Stop(SIGKILL), 128 + SIGKILL);
      ASSERT_TRUE(d.Start(dir, DaemonArgs(cycle)))
          << "kvtierd did not restart after an early kill in cycle " << cycle << ": exit "
          << d.exit_code();
    }
    std::unique_ptr<Client> checker = ClientFor(d);
    CheckAcked(*checker, acks, cycle - 1, &tiers);
    if (::testing::Test::HasFailure()) {
      std::printf("crash loop: seed %llu failed after kill %d\n",
                  static_cast<unsigned long long>(seed), cycle);
      return;
    }
    if (cycle == cycles) {
      EXPECT_EQ(d.Stop(SIGTERM), 0) << "kvtierd did not shut down cleanly after the crash loop";
      break;
    }
    // The load, until a random number of calls have been acknowledged.
    const int target = 10 + static_cast<int>(rng() % 50);
    const auto kill_delay = std::chrono::microseconds(rng() % 2000);
    std::atomic<bool> stop{false};
    std::atomic<bool> killed{false};  // errors after this are the kill's
    std::vector<std::unique_ptr<Client>> clients;
    std::vector<std::thread> load;
    acks.ResetCount();
    auto client = [&] { return clients.emplace_back(ClientFor(d)).get(); };
    for (int w = 0; w < kPutWorkers; ++w) {
      load.emplace_back(PutLoad, std::ref(*client()), std::mt19937_64(rng()), cycle,
                        std::cref(stop), std::cref(killed), std::ref(acks));
    }
    for (int w = 0; w < kGenerateWorkers; ++w) {
      load.emplace_back(GenerateLoad, std::ref(*client()), std::mt19937_64(rng()), cycle, w,
                        std::cref(stop), std::cref(killed), std::ref(acks));
    }
    load.emplace_back(CreateCacheLoad, std::ref(*client()), std::mt19937_64(rng()), cycle,
                      std::cref(stop), std::cref(killed), std::ref(acks));
    const bool reached = acks.WaitForCount(target, std::chrono::seconds(120));
    std::this_thread::sleep_for(kill_delay);
    killed = true;
    EXPECT_EQ(d.Stop(SIGKILL), 128 + SIGKILL);
    stop = true;
    for (auto& t : load) t.join();
    ASSERT_TRUE(reached) << "the load got fewer than " << target << " acknowledgements in cycle "
                         << cycle;
  }
  for (const auto& [tier, t] : tiers) {
    std::printf("crash loop: blocks put to %s: %d read back, %d missed, %d wrong\n", tier.c_str(),
                t.hits, t.misses, t.wrong);
  }
  std::printf(
      "crash loop: %zu blocks, %zu named caches, %zu ledger records acked over %d kills under "
      "load and %d right after a restart\n",
      acks.blocks().size(), acks.caches().size(), acks.records().size(), cycles, early_kills);
  for (const auto& [what, n] : acks.errors()) {
    std::printf("crash loop: load error %s x%d\n", what.c_str(), n);
  }
  // The loop checked something on each durable tier, and most of it survived.
  EXPECT_GT(tiers["flash"].hits, 0) << "no block acked on flash read back";
  EXPECT_GT(tiers["rocks"].hits, 0) << "no block acked on the cold tier read back";
  EXPECT_GT(acks.caches().size(), 0u);
  EXPECT_GT(acks.records().size(), acks.caches().size());
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace kvtier
