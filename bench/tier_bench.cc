// Tier throughput, side by side with the physical baseline in one run.
//  - DRAM tier write/read of 1 MiB blocks against memcpy of the same sizes
//    between the same kinds of (page-aligned) buffers (goal >= 0.9). Our path
//    also computes and verifies an XXH3-64 per block; the ratio shows what
//    that costs.
//  - RocksDB tier put/get MB/s for 256 KiB and 4 MiB values, without and with
//    LZ4, on KV-like data (bf16 values of a normal distribution), with the
//    data's LZ4 ratio: the measurement behind the default compression.
// Variants alternate round by round and medians are compared: the machine is
// shared and noisy. The flash tier and its fio comparison come with the flash
// tier itself.
#include <lz4.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <iostream>
#include <nlohmann/json.hpp>
#include <random>
#include <span>

#include "tiers/dram/dram_tier.h"
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
  auto tier = NewDramTier(o);
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

}  // namespace
}  // namespace kvtier

int main(int argc, char** argv) {
  bool json = argc > 1 && std::string(argv[1]) == "--json";
  std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("kvtier_tier_bench_" + std::to_string(getpid()));
  nlohmann::json j = {{"bench", "tier"}};
  j["dram"] = kvtier::BenchDram();
  j["dram_read_ratio_vs_memcpy"] = j["dram"]["dram_read_ratio_vs_memcpy"];
  j["dram_write_ratio_vs_memcpy"] = j["dram"]["dram_write_ratio_vs_memcpy"];
  j["rocks"] = kvtier::BenchRocks(dir);
  if (json) std::cout << j.dump() << std::endl;
  return 0;
}
