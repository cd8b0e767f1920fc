// block_api_bench: an engine's load of a long cached prefix through the block
// API (issue 19), against memcpy of the same bytes, side by side in one run.
//
// It starts its own kvtierd (the binary beside this one), stores a prefix of
// --prefix-tokens tokens as blocks of --block-tokens tokens and
// --bytes-per-token bytes of KV per token (default 2048 x 16 x 128 KiB: a
// 2K-token prefix of a Llama-3-8B-shaped model in bf16, 256 MiB), then times,
// best of --rounds:
//   memcpy      the same bytes, block by block, from one buffer to another
//               (one thread: a load is one engine thread's copy);
//   shm         BatchGet of every block into a shared-memory region (the
//               daemon copies each block out of its tier, checksum verified,
//               straight into the region), the client not re-hashing;
//   shm+verify  the same, the client also checking each block's XXH3-64;
//   grpc        BatchGet with the payloads in gRPC messages over loopback.
// Ratio = memcpy time / path time (1.0 = the physical limit of one copy).
// The daemon is told host memory is free (--dram-price 0), so every block is
// held in DRAM: this measures the path of a load from DRAM, not placement
// (which would put blocks with no reuse history in the cold tier).
//
// Usage: block_api_bench [--json] [--prefix-tokens N] [--block-tokens N]
//                        [--bytes-per-token N] [--rounds N] [--kvtierd PATH]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "bench/own_daemon.h"
#include "proto/client.h"

namespace kvtier {
namespace {

using Clock = std::chrono::steady_clock;

struct Args {
  bool json = false;
  int prefix_tokens = 2048;
  int block_tokens = 16;
  uint64_t bytes_per_token = 128 << 10;
  int rounds = 5;
  std::string kvtierd;
};

[[noreturn]] void Usage(const std::string& why) {
  std::fprintf(stderr,
               "block_api_bench: %s\nusage: block_api_bench [--json] [--prefix-tokens N] "
               "[--block-tokens N] [--bytes-per-token N] [--rounds N] [--kvtierd PATH]\n",
               why.c_str());
  std::exit(2);
}

Args ParseArgs(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string f = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) Usage(f + " needs a value");
      return argv[++i];
    };
    auto number = [&]() -> long long {
      const std::string v = value();
      char* end = nullptr;
      const long long n = std::strtoll(v.c_str(), &end, 10);
      if (end == v.c_str() || *end != '\0' || n <= 0) Usage(f + " needs a positive integer");
      return n;
    };
    if (f == "--json") {
      a.json = true;
    } else if (f == "--prefix-tokens") {
      a.prefix_tokens = static_cast<int>(number());
    } else if (f == "--block-tokens") {
      a.block_tokens = static_cast<int>(number());
    } else if (f == "--bytes-per-token") {
      a.bytes_per_token = static_cast<uint64_t>(number());
    } else if (f == "--rounds") {
      a.rounds = static_cast<int>(number());
    } else if (f == "--kvtierd") {
      a.kvtierd = value();
    } else {
      Usage("unknown flag " + f);
    }
  }
  if (a.prefix_tokens < a.block_tokens) Usage("--prefix-tokens is less than one block");
  return a;
}

double Since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// The best of `rounds` timings of fn (which returns false on failure).
template <typename Fn>
double Best(int rounds, Fn fn) {
  double best = 1e30;
  for (int r = 0; r < rounds; ++r) {
    const auto t0 = Clock::now();
    if (!fn()) return -1;
    best = std::min(best, Since(t0));
  }
  return best;
}

int Main(int argc, char** argv) {
  const Args args = ParseArgs(argc, argv);
  const size_t blocks = static_cast<size_t>(args.prefix_tokens / args.block_tokens);
  const size_t block_bytes = args.block_tokens * args.bytes_per_token;
  const size_t total = blocks * block_bytes;

  bench::OwnDaemon daemon;
  const std::string dram = std::to_string(2 * total / (1 << 20) + 64) + "M";
  if (!daemon.Start(
          args.kvtierd,
          {"--no-engine", "--metrics-listen", "", "--http-listen", "", "--dram-bytes", dram,
           "--no-flash", "--dram-price", "0", "--block-tokens", std::to_string(args.block_tokens),
           "--max-block-bytes", std::to_string(block_bytes), "--max-payload-bytes",
           std::to_string(2 * total), "--max-tenant-payload-bytes", std::to_string(2 * total)},
          "block_api_bench")) {
    return 1;
  }
  ClientOptions co;
  co.address = daemon.address();
  co.timeout_ms = 600'000;
  co.chunk_bytes = 4 << 20;
  Client client(co);
  Result<v1::HealthResponse> health = client.Health();
  if (!health.ok() || health->shm_socket().empty()) {
    std::fprintf(stderr, "block_api_bench: no kvtierd with shared memory\n");
    return 1;
  }

  // The prefix: keys from the daemon, payloads distinct per block.
  v1::BatchLookupRequest look;
  for (int t = 0; t < args.prefix_tokens; ++t) look.add_token_ids(t + 1);
  look.set_return_keys(true);
  Result<v1::BatchLookupResponse> keys = client.BatchLookup(look);
  if (!keys.ok()) {
    std::fprintf(stderr, "block_api_bench: %s\n", keys.status().ToString().c_str());
    return 1;
  }
  std::vector<std::byte> src(total);
  for (size_t i = 0; i < total; i += 64) src[i] = static_cast<std::byte>(i / 64 * 2654435761u);
  std::vector<BatchPutItem> items;
  for (size_t b = 0; b < blocks; ++b) {
    BatchPutItem item{*BlockKey::FromBytes(keys->keys(static_cast<int>(b))), std::nullopt,
                      std::span(src).subspan(b * block_bytes, block_bytes)};
    if (b > 0) item.parent = items.back().key;
    item.tokens = static_cast<uint32_t>(args.block_tokens);
    items.push_back(item);
  }
  v1::BatchPutHeader put_header;
  put_header.set_ttl_seconds(300);  // the 5-minute class: a prefix reused soon
  Result<v1::BatchPutResponse> put = client.BatchPut(put_header, items);
  if (!put.ok()) {
    std::fprintf(stderr, "block_api_bench: BatchPut: %s\n", put.status().ToString().c_str());
    return 1;
  }
  for (const auto& r : put->results()) {
    if (r.code() != 0) {
      std::fprintf(stderr, "block_api_bench: a block was refused: %s\n", r.message().c_str());
      return 1;
    }
  }
  Result<v1::BatchLookupResponse> where = client.BatchLookup(look);
  const std::string tier = where.ok() && where->hits_size() > 0 ? where->hits(0).tier() : "?";

  // memcpy: the same blocks into a destination of the same size.
  std::vector<std::byte> dst(total);
  std::memcpy(dst.data(), src.data(), total);  // fault the pages in first
  const double memcpy_s = Best(args.rounds, [&] {
    for (size_t b = 0; b < blocks; ++b) {
      std::memcpy(dst.data() + b * block_bytes, src.data() + b * block_bytes, block_bytes);
    }
    return true;
  });

  Result<std::unique_ptr<ShmMapping>> region =
      ShmMapping::Open(health->shm_socket(), total, /*api_key=*/"");
  if (!region.ok()) {
    std::fprintf(stderr, "block_api_bench: %s\n", region.status().ToString().c_str());
    return 1;
  }
  std::memset((*region)->bytes().data(), 0, total);  // fault the pages in first
  v1::BatchGetRequest get;
  for (size_t b = 0; b < blocks; ++b) get.add_keys(keys->keys(static_cast<int>(b)));
  v1::BatchGetRequest shm_get = get;
  for (size_t b = 0; b < blocks; ++b) shm_get.add_shm_offsets(b * block_bytes);
  auto all_ok = [&](const Result<std::vector<BatchFetched>>& r) {
    if (!r.ok()) return false;
    for (const BatchFetched& f : *r) {
      if (!f.status.ok()) return false;
    }
    return true;
  };
  const double shm_s = Best(args.rounds, [&] {
    return all_ok(client.BatchGet(shm_get, region->get(), /*verify=*/false));
  });
  const double shm_verify_s = Best(args.rounds, [&] {
    return all_ok(client.BatchGet(shm_get, region->get(), /*verify=*/true));
  });
  const bool same = std::memcmp((*region)->bytes().data(), src.data(), total) == 0;
  const double grpc_s = Best(args.rounds, [&] { return all_ok(client.BatchGet(get)); });
  if (shm_s < 0 || shm_verify_s < 0 || grpc_s < 0 || !same) {
    std::fprintf(stderr, "block_api_bench: a BatchGet failed or returned other bytes\n");
    return 1;
  }

  const double gib = static_cast<double>(total) / (1 << 30);
  std::printf("prefix: %d tokens, %zu blocks of %zu KiB (%.0f MiB), held in %s\n",
              args.prefix_tokens, blocks, block_bytes >> 10, gib * 1024, tier.c_str());
  std::printf("%-12s %10s %10s %8s\n", "path", "ms", "GiB/s", "ratio");
  auto row = [&](const char* name, double s) {
    std::printf("%-12s %10.2f %10.2f %8.2f\n", name, s * 1e3, gib / s, memcpy_s / s);
  };
  row("memcpy", memcpy_s);
  row("shm", shm_s);
  row("shm+verify", shm_verify_s);
  row("grpc", grpc_s);
  if (args.json) {
    nlohmann::json j = {{"bench", "block_api_bench"},
                        {"prefix_tokens", args.prefix_tokens},
                        {"block_tokens", args.block_tokens},
                        {"block_bytes", block_bytes},
                        {"total_bytes", total},
                        {"tier", tier},
                        {"memcpy_gib_s", gib / memcpy_s},
                        {"shm_gib_s", gib / shm_s},
                        {"shm_verify_gib_s", gib / shm_verify_s},
                        {"grpc_gib_s", gib / grpc_s},
                        {"shm_vs_memcpy", memcpy_s / shm_s},
                        {"shm_verify_vs_memcpy", memcpy_s / shm_verify_s},
                        {"grpc_vs_memcpy", memcpy_s / grpc_s}};
    std::printf("%s\n", j.dump().c_str());
  }
  return 0;
}

}  // namespace
}  // namespace kvtier

int main(int argc, char** argv) { return kvtier::Main(argc, argv); }
