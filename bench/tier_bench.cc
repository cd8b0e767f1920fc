// Tier throughput, side by side with the physical baseline in one run.
//  - DRAM tier write/read of 1 MiB blocks against memcpy of the same sizes
//    between the same kinds of (page-aligned) buffers (goal >= 0.9). Our path
//    also computes and verifies an XXH3-64 per block; the ratio shows what
//    that costs.
//  - RocksDB tier put/get MB/s for 256 KiB and 4 MiB values, without and with
//    LZ4, on KV-like data (bf16 values of a normal distribution), with the
//    data's LZ4 ratio: the measurement behind the default compression.
//  - Flash tier write and read of 1 MiB blocks at queue depth 32 against fio
//    (ioengine=io_uring, direct=1, registered buffers, the same block size and
//    depth) on a file of the same size in the same directory (goal >= 0.9).
//    Our blocks carry a 4 KiB header page each, so a 1 MiB block is a
//    1 MiB + 4 KiB I/O; the GB/s counted are payload bytes.
// Variants alternate round by round and medians are compared: the machine is
// shared and noisy. Usage: tier_bench [--json] [--dir DIR] (DIR: where the
// flash log, the fio file and the RocksDB database go; default the temp dir).
#include <lz4.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <iostream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <span>

#include "tiers/dram/dram_tier.h"
#include "tiers/flash/flash_tier.h"
#include "tiers/rocks/rocks_tier.h"

namespace kvtier {
namespace {

using Seconds = std::chrono::duration<double>;

std::vector<double> InterleavedMedians(const std::vector<std::function<void()>>& variants,
                                       int rounds) {
  std::vector<std::vector<double>> samples(variants.size());
  for (int r = 0; r < rounds; ++r) {
    for (size_t v = 0; v < variants.size(); ++v) {
      auto t0 = std::chrono::steady_clock::now();
      variants[v]();
      samples[v].push_back(Seconds(std::chrono::steady_clock::now() - t0).count());
    }
  }
  std::vector<double> med;
  for (auto& s : samples) {
    std::nth_element(s.begin(), s.begin() + static_cast<long>(s.size() / 2), s.end());
    med.push_back(s[s.size() / 2]);
  }
  return med;
}

// bf16 values of N(0, 1): roughly what K and V activations look like.
std::vector<std::byte> KvLikeBytes(size_t n, uint32_t seed) {
  std::vector<std::byte> out(n);
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  for (size_t i = 0; i + 2 <= n; i += 2) {
    float f = dist(rng);
    uint32_t bits;
    std::memcpy(&bits, &f, 4);
    const uint16_t bf16 = static_cast<uint16_t>(bits >> 16);
    std::memcpy(out.data() + i, &bf16, 2);
  }
  return out;
}

// Page-aligned memory, as real callers' (pinned) staging buffers are. A plain
// std::vector starts 16 bytes into a page, and copying between it and the
// page-aligned arena then hits 4K aliasing (loads alias earlier stores),
// which measured a 2.7x slower read here: a property of the buffers, not of
// the tier, so every variant uses page-aligned buffers.
struct PageBuffer {
  explicit PageBuffer(size_t n)
      : p(static_cast<std::byte*>(std::aligned_alloc(4096, (n + 4095) / 4096 * 4096))), size(n) {
    std::memset(p, 1, size);
  }
  ~PageBuffer() { std::free(p); }
  std::span<std::byte> span() { return {p, size}; }
  std::byte* p;
  size_t size;
};

nlohmann::json BenchDram() {
  constexpr size_t kBlock = 1 << 20, kBlocks = 256;  // 256 MiB working set
  DramTierOptions o;
  o.capacity_bytes = (kBlock + (64 << 10)) * kBlocks;
  auto tier = OpenDramTier(o);
  if (!tier.ok()) return {{"error", tier.status().ToString()}};
  const std::vector<std::byte> data = KvLikeBytes(kBlock * kBlocks, 1);
  PageBuffer src_buf(data.size()), dst_buf(data.size());
  PageBuffer arena_like(data.size());  // memcpy's counterpart of the arena
  std::memcpy(src_buf.p, data.data(), data.size());
  std::span<std::byte> src = src_buf.span(), dst = dst_buf.span();
  std::vector<WriteOp> writes;
  std::vector<ReadOp> reads;
  for (size_t i = 0; i < kBlocks; ++i) {
    BlockKey k{7, i};
    writes.push_back({k, src.subspan(i * kBlock, kBlock), kNoExpiry});
    reads.push_back({k, dst.subspan(i * kBlock, kBlock)});
  }
  WriteSync(**tier, writes);  // first touch of the arena, outside the timing
  auto med = InterleavedMedians(
      {[&] { WriteSync(**tier, writes); },
       [&] { std::memcpy(arena_like.p, src.data(), src.size()); }, [&] { ReadSync(**tier, reads); },
       [&] { std::memcpy(dst.data(), arena_like.p, dst.size()); }},
      15);
  const double bytes = static_cast<double>(src.size());
  const bool same = std::equal(src.begin(), src.end(), dst.begin());
  nlohmann::json j = {{"block_bytes", kBlock},
                      {"working_set_bytes", src.size()},
                      {"dram_write_gbps", bytes / med[0] / 1e9},
                      {"memcpy_write_gbps", bytes / med[1] / 1e9},
                      {"dram_read_gbps", bytes / med[2] / 1e9},
                      {"memcpy_read_gbps", bytes / med[3] / 1e9},
                      {"dram_write_ratio_vs_memcpy", med[1] / med[0]},
                      {"dram_read_ratio_vs_memcpy", med[3] / med[2]},
                      {"read_back_exact", same}};
  std::printf(
      "DRAM tier, 1 MiB blocks, 256 MiB: write %.2f GB/s vs memcpy %.2f (ratio %.3f), "
      "read %.2f GB/s vs memcpy %.2f (ratio %.3f)\n",
      j["dram_write_gbps"].get<double>(), j["memcpy_write_gbps"].get<double>(),
      j["dram_write_ratio_vs_memcpy"].get<double>(), j["dram_read_gbps"].get<double>(),
      j["memcpy_read_gbps"].get<double>(), j["dram_read_ratio_vs_memcpy"].get<double>());
  return j;
}

nlohmann::json BenchRocks(const std::filesystem::path& dir) {
  nlohmann::json out = nlohmann::json::object();
  for (RocksCompression c : {RocksCompression::kNone, RocksCompression::kLz4}) {
    const std::string cname = c == RocksCompression::kNone ? "none" : "lz4";
    for (size_t value : {size_t{256} << 10, size_t{4} << 20}) {
      std::filesystem::remove_all(dir);
      RocksTierOptions o;
      o.path = dir.string();
      o.compression = c;
      o.read_bytes_per_s = o.write_bytes_per_s = 1;  // skip calibration
      auto tier = OpenRocksTier(o);
      if (!tier.ok()) return {{"error", tier.status().ToString()}};
      const size_t total = 128 << 20;
      const size_t n = total / value;
      std::vector<std::byte> data = KvLikeBytes(total, 2);
      std::vector<std::byte> back(total);
      std::vector<WriteOp> writes;
      std::vector<ReadOp> reads;
      for (size_t i = 0; i < n; ++i) {
        writes.push_back({BlockKey{9, i}, std::span(data).subspan(i * value, value), kNoExpiry});
        reads.push_back({BlockKey{9, i}, std::span(back).subspan(i * value, value)});
      }
      auto t0 = std::chrono::steady_clock::now();
      WriteSync(**tier, writes);
      auto t1 = std::chrono::steady_clock::now();
      tier->reset();  // reopen: reads come from files, not the memtable
      tier = OpenRocksTier(o);
      auto t2 = std::chrono::steady_clock::now();
      auto r = ReadSync(**tier, reads);
      auto t3 = std::chrono::steady_clock::now();
      const bool ok =
          std::all_of(r.begin(), r.end(), [](auto& x) { return x.status.ok(); }) && back == data;
      const std::string key = cname + "_" + std::to_string(value >> 10) + "k";
      out[key] = {{"put_mbps", total / Seconds(t1 - t0).count() / 1e6},
                  {"get_mbps", total / Seconds(t3 - t2).count() / 1e6},
                  {"read_back_exact", ok}};
      std::printf("RocksDB tier, %s, %zu KiB values: put %.0f MB/s, get %.0f MB/s%s\n",
                  cname.c_str(), value >> 10, out[key]["put_mbps"].get<double>(),
                  out[key]["get_mbps"].get<double>(), ok ? "" : " (READ BACK FAILED)");
    }
  }
  // How compressible is KV-like data? (The reason compression is off by default.)
  std::vector<std::byte> sample = KvLikeBytes(4 << 20, 3);
  std::vector<char> comp(LZ4_compressBound(static_cast<int>(sample.size())));
  const int c =
      LZ4_compress_default(reinterpret_cast<const char*>(sample.data()), comp.data(),
                           static_cast<int>(sample.size()), static_cast<int>(comp.size()));
  out["lz4_ratio_kv_like"] = static_cast<double>(sample.size()) / std::max(c, 1);
  std::printf("LZ4 on KV-like bf16 data: %.3fx\n", out["lz4_ratio_kv_like"].get<double>());
  std::filesystem::remove_all(dir);
  return out;
}

// Keeps up to `depth` single-block operations in flight, as an engine
// streaming blocks would; returns the seconds it took and whether every op
// succeeded.
std::pair<double, bool> Pipelined(size_t n, int depth,
                                  const std::function<void(size_t, IoCallback)>& submit) {
  std::mutex m;
  std::condition_variable cv;
  int outstanding = 0;
  bool ok = true;
  const auto t0 = std::chrono::steady_clock::now();
  for (size_t i = 0; i < n; ++i) {
    {
      std::unique_lock<std::mutex> lock(m);
      cv.wait(lock, [&] { return outstanding < depth; });
      ++outstanding;
    }
    submit(i, [&](std::vector<IoResult> r) {
      std::lock_guard<std::mutex> lock(m);
      ok = ok && r[0].status.ok();
      --outstanding;
      cv.notify_all();
    });
  }
  std::unique_lock<std::mutex> lock(m);
  cv.wait(lock, [&] { return outstanding == 0; });
  return {Seconds(std::chrono::steady_clock::now() - t0).count(), ok};
}

// Runs one fio job; returns its bandwidth in bytes/s, or 0 if fio failed.
double RunFio(const std::string& rw, const std::filesystem::path& file, uint64_t size,
              uint64_t block, int depth) {
  const std::string cmd =
      "fio --name=kvtier --output-format=json --ioengine=io_uring --direct=1 "
      "--fixedbufs=1 --rw=" +
      rw + " --filename=" + file.string() + " --size=" + std::to_string(size) +
      " --bs=" + std::to_string(block) + " --iodepth=" + std::to_string(depth) + " 2>/dev/null";
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return 0;
  std::string out;
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof buf, p)) out.append(buf, n);
  if (pclose(p) != 0) return 0;
  auto j = nlohmann::json::parse(out.substr(std::min(out.find('{'), out.size())), nullptr, false);
  if (j.is_discarded() || !j.contains("jobs") || j["jobs"].empty()) return 0;
  return j["jobs"][0][rw == "write" ? "write" : "read"].value("bw_bytes", 0.0);
}

nlohmann::json BenchFlash(const std::filesystem::path& dir) {
  constexpr uint64_t kBlock = 1 << 20, kRegion = 16 << 20, kDevice = 256ull << 20;
  constexpr int kDepth = 32, kRounds = 15;
  if (std::system("fio --version >/dev/null 2>&1") != 0) {
    std::printf("flash: fio is not installed (tools/deps.sh --bench installs it); skipped\n");
    return {{"error", "fio not installed"}};
  }
  std::filesystem::create_directories(dir);
  const std::filesystem::path log = dir / "flash.log", fio_file = dir / "fio.dat";
  FlashTierOptions o;
  o.path = log.string();
  o.device_bytes = kDevice;
  o.region_bytes = kRegion;
  o.queue_depth = kDepth;
  o.read_bytes_per_s = o.write_bytes_per_s = 1;  // skip calibration
  PageBuffer src(64 * kBlock), dst(64 * kBlock);
  {
    std::mt19937_64 rng(4);
    for (size_t i = 0; i + 8 <= src.size; i += 8) {
      const uint64_t v = rng();
      std::memcpy(src.p + i, &v, 8);
    }
  }
  size_t n = 0;
  bool exact = true;
  std::vector<double> ours_w, ours_r, fio_w, fio_r;
  for (int round = 0; round < kRounds; ++round) {
    std::filesystem::remove(log);
    auto tier = OpenFlashTier(o);
    if (!tier.ok()) return {{"error", tier.status().ToString()}};
    n = (*tier)->Info().capacity_bytes / (kBlock + 4096);
    auto block = [&](PageBuffer& b, size_t i) {
      return b.span().subspan((i % 64) * kBlock, kBlock);
    };
    auto ours_write = [&] {
      auto [secs, ok] = Pipelined(n, kDepth, [&](size_t i, IoCallback cb) {
        WriteOp op{BlockKey{11, i}, block(src, i), kNoExpiry};
        (*tier)->Write(std::span(&op, 1), std::move(cb));
      });
      exact = exact && ok;
      ours_w.push_back(static_cast<double>(n * kBlock) / secs);
    };
    auto ours_read = [&] {
      auto [secs, ok] = Pipelined(n, kDepth, [&](size_t i, IoCallback cb) {
        ReadOp op{BlockKey{11, i}, block(dst, i)};
        (*tier)->Read(std::span(&op, 1), std::move(cb));
      });
      // The last 64 blocks read are still in dst: check them against src.
      exact = exact && ok && std::memcmp(src.p, dst.p, dst.size) == 0;
      ours_r.push_back(static_cast<double>(n * kBlock) / secs);
    };
    auto fio_write = [&] {
      std::filesystem::remove(fio_file);
      fio_w.push_back(RunFio("write", fio_file, kDevice, kBlock, kDepth));
    };
    auto fio_read = [&] { fio_r.push_back(RunFio("read", fio_file, kDevice, kBlock, kDepth)); };
    // Each pass runs next to its peer, and who goes first alternates, so a
    // drift in the disk's speed does not favour either.
    if (round % 2 == 0) {
      ours_write();
      fio_write();
      ours_read();
      fio_read();
    } else {
      fio_write();
      ours_write();
      fio_read();
      ours_read();
    }
    tier->reset();
  }
  std::filesystem::remove(log);
  std::filesystem::remove(fio_file);
  auto quantile = [](std::vector<double> v, double q) {
    std::sort(v.begin(), v.end());
    return v[static_cast<size_t>(std::llround(q * static_cast<double>(v.size() - 1)))];
  };
  auto median = [&](const std::vector<double>& v) { return quantile(v, 0.5); };
  const double ow = median(ours_w), orr = median(ours_r), fw = median(fio_w), fr = median(fio_r);
  // The disk's speed drifts from second to second: compare each round's
  // passes with each other (they ran back to back) and take the median.
  std::vector<double> write_ratio, read_ratio;
  for (int i = 0; i < kRounds; ++i) {
    write_ratio.push_back(fio_w[i] > 0 ? ours_w[i] / fio_w[i] : 0.0);
    read_ratio.push_back(fio_r[i] > 0 ? ours_r[i] / fio_r[i] : 0.0);
  }
  nlohmann::json j = {
      {"block_bytes", kBlock},
      {"queue_depth", kDepth},
      {"file_bytes", kDevice},
      {"blocks", n},
      {"flash_write_gbps", ow / 1e9},
      {"flash_read_gbps", orr / 1e9},
      {"fio_write_gbps", fw / 1e9},
      {"fio_read_gbps", fr / 1e9},
      {"rounds", kRounds},
      {"flash_write_ratio_vs_fio", median(write_ratio)},
      {"flash_read_ratio_vs_fio", median(read_ratio)},
      {"flash_write_ratio_quartiles", {quantile(write_ratio, 0.25), quantile(write_ratio, 0.75)}},
      {"flash_read_ratio_quartiles", {quantile(read_ratio, 0.25), quantile(read_ratio, 0.75)}},
      {"read_back_exact", exact}};
  for (int i = 0; i < kRounds; ++i) {
    std::printf("  flash round %d: write %.2f vs fio %.2f GB/s, read %.2f vs fio %.2f GB/s\n", i,
                ours_w[i] / 1e9, fio_w[i] / 1e9, ours_r[i] / 1e9, fio_r[i] / 1e9);
  }
  std::printf(
      "flash tier, 1 MiB blocks, QD %d, %llu MiB file: write %.2f GB/s vs fio %.2f (median "
      "paired ratio %.3f), read %.2f GB/s vs fio %.2f (median paired ratio %.3f)%s\n",
      kDepth, static_cast<unsigned long long>(kDevice >> 20), ow / 1e9, fw / 1e9,
      j["flash_write_ratio_vs_fio"].get<double>(), orr / 1e9, fr / 1e9,
      j["flash_read_ratio_vs_fio"].get<double>(), exact ? "" : " (READ BACK FAILED)");
  return j;
}

}  // namespace
}  // namespace kvtier

int main(int argc, char** argv) {
  bool json = false;
  std::string only;  // dram, flash or rocks: run just that part
  std::filesystem::path base = std::filesystem::temp_directory_path();
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--json") {
      json = true;
    } else if (a == "--dir" && i + 1 < argc) {
      base = argv[++i];
    } else if (a == "--only" && i + 1 < argc) {
      only = argv[++i];
    } else {
      std::fprintf(stderr, "usage: tier_bench [--json] [--dir DIR] [--only dram|flash|rocks]\n");
      return 2;
    }
  }
  const std::filesystem::path dir = base / ("kvtier_tier_bench_" + std::to_string(getpid()));
  nlohmann::json j = {{"bench", "tier"}};
  if (only.empty() || only == "dram") {
    j["dram"] = kvtier::BenchDram();
    j["dram_read_ratio_vs_memcpy"] = j["dram"]["dram_read_ratio_vs_memcpy"];
    j["dram_write_ratio_vs_memcpy"] = j["dram"]["dram_write_ratio_vs_memcpy"];
  }
  if (only.empty() || only == "flash") {
    j["flash"] = kvtier::BenchFlash(dir / "flash");
    j["flash_write_ratio_vs_fio"] = j["flash"].value("flash_write_ratio_vs_fio", 0.0);
    j["flash_read_ratio_vs_fio"] = j["flash"].value("flash_read_ratio_vs_fio", 0.0);
  }
  if (only.empty() || only == "rocks") j["rocks"] = kvtier::BenchRocks(dir / "rocks");
  std::filesystem::remove_all(dir);
  if (json) std::cout << j.dump() << std::endl;
  return 0;
}
