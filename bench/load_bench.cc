// load_bench: kvtierd under concurrent load, through its gRPC API on loopback
// (issue 16). For a bounded time, BlockStore Put clients store new blocks, Get
// clients read blocks stored beforehand, and Generate clients run prompts
// through the engine, all at once. It prints per RPC the throughput, p50 and
// p99 latency, errors by status code, and the daemon's resident memory.
//
// The ratio, measured side by side in the same run: BlockStore Get payload
// bytes/s against loopback TCP bytes/s (one connection, blocks of the same
// size written and read by two threads) -- the physical path a Get takes
// minus gRPC, protobuf, checksums and the tiers. memcpy bandwidth of the same
// block size over a 64 MiB working set is printed beside it. The references
// are measured before and after the load; their mean is the baseline.
//
// Usage: load_bench [--json] [--seconds S] [--addr HOST:PORT [--daemon-pid PID]]
//                   [--put-clients N] [--get-clients N] [--generate-clients N]
//                   [--block-bytes SIZE] [--get-blocks N] [--max-tokens N]
//                   [--kvtierd PATH] [--model PATH] [--daemon-args "FLAGS"]
//                   [--api-key KEY]
// Without --addr it starts its own kvtierd (the binary beside this one) on a
// temporary data directory, with the stories260K model from
// $KVTIER_SHARED_DATA (default ../shared/data) when it is there.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "bench/own_daemon.h"
#include "common/flags.h"
#include "proto/client.h"
#include "proto/status_codes.h"

namespace kvtier {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

struct Args {
  bool json = false;
  double seconds = 10;
  std::string addr;  // "" = start a daemon
  int daemon_pid = -1;
  int put_clients = 2;
  int get_clients = 2;
  int generate_clients = 2;
  uint64_t block_bytes = 256 << 10;
  int get_blocks = 64;  // blocks stored before the load, read by the Get clients
  int max_tokens = 16;  // per Generate
  std::string kvtierd;  // "" = beside this binary
  std::string model;    // "" = stories260K when present, else the daemon's own
  std::string daemon_args;
  std::string api_key;
};

[[noreturn]] void Usage(const std::string& why) {
  std::fprintf(stderr,
               "load_bench: %s\n"
               "usage: load_bench [--json] [--seconds S] [--addr HOST:PORT [--daemon-pid PID]]\n"
               "                  [--put-clients N] [--get-clients N] [--generate-clients N]\n"
               "                  [--block-bytes SIZE] [--get-blocks N] [--max-tokens N]\n"
               "                  [--kvtierd PATH] [--model PATH] [--daemon-args \"FLAGS\"]\n"
               "                  [--api-key KEY]\n",
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
    auto count = [&](int lo) {
      const std::string v = value();
      Result<int64_t> n = ParseInt(v);
      if (!n.ok() || *n < lo || *n > 4096)
        Usage(f + " needs an integer in [" + std::to_string(lo) + ", 4096]");
      return static_cast<int>(*n);
    };
    if (f == "--json") {
      a.json = true;
    } else if (f == "--seconds") {
      Result<double> s = ParseNonNegative(value());
      if (!s.ok() || *s <= 0 || *s > 3600) Usage("--seconds needs a number in (0, 3600]");
      a.seconds = *s;
    } else if (f == "--addr") {
      a.addr = value();
    } else if (f == "--daemon-pid") {
      Result<int64_t> pid = ParseInt(value());
      if (!pid.ok() || *pid < 1 || *pid > (1 << 30)) Usage("--daemon-pid needs a process id");
      a.daemon_pid = static_cast<int>(*pid);
    } else if (f == "--put-clients") {
      a.put_clients = count(0);
    } else if (f == "--get-clients") {
      a.get_clients = count(0);
    } else if (f == "--generate-clients") {
      a.generate_clients = count(0);
    } else if (f == "--block-bytes") {
      Result<uint64_t> b = ParseBytes(value());
      if (!b.ok() || *b == 0 || *b > (64u << 20)) Usage("--block-bytes needs a size in (0, 64M]");
      a.block_bytes = *b;
    } else if (f == "--get-blocks") {
      a.get_blocks = count(1);
    } else if (f == "--max-tokens") {
      a.max_tokens = count(1);
    } else if (f == "--kvtierd") {
      a.kvtierd = value();
    } else if (f == "--model") {
      a.model = value();
    } else if (f == "--daemon-args") {
      a.daemon_args = value();
    } else if (f == "--api-key") {
      a.api_key = value();
    } else {
      Usage("unknown flag " + f);
    }
  }
  if (a.put_clients + a.get_clients + a.generate_clients == 0) Usage("no clients");
  if (!a.addr.empty() && (!a.kvtierd.empty() || !a.model.empty() || !a.daemon_args.empty())) {
    Usage("--kvtierd, --model and --daemon-args are for a daemon load_bench starts, not --addr");
  }
  return a;
}

// VmRSS and VmHWM of a process, bytes (0 when unreadable).
std::pair<uint64_t, uint64_t> Rss(int pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  uint64_t rss = 0, hwm = 0;
  for (std::string line; std::getline(in, line);) {
    auto kib = [&](const char* key, uint64_t* out) {
      if (line.rfind(key, 0) == 0)
        *out = std::strtoull(line.c_str() + std::strlen(key), nullptr, 10) << 10;
    };
    kib("VmRSS:", &rss);
    kib("VmHWM:", &hwm);
  }
  return {rss, hwm};
}

// Loopback TCP, bytes/s: one connection, a writer thread sending `block`-byte
// writes and a reader draining them, for `seconds`.
double LoopbackTcpBytesPerSecond(size_t block, double seconds) {
  int listener = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (listener < 0 || bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      listen(listener, 1) != 0 ||
      getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    if (listener >= 0) close(listener);
    return 0;
  }
  int client = socket(AF_INET, SOCK_STREAM, 0);
  if (connect(client, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    close(client);
    close(listener);
    return 0;
  }
  int server = accept(listener, nullptr, nullptr);
  close(listener);
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    std::string buf(block, 'x');
    while (!stop.load()) {
      size_t off = 0;
      while (off < buf.size()) {
        ssize_t n = send(client, buf.data() + off, buf.size() - off, MSG_NOSIGNAL);
        if (n <= 0) return;
        off += static_cast<size_t>(n);
      }
    }
  });
  std::vector<char> buf(std::max<size_t>(block, 64 << 10));
  uint64_t bytes = 0;
  const auto t0 = Clock::now();
  auto t = t0;
  while (Seconds(t0, t = Clock::now()) < seconds) {
    ssize_t n = read(server, buf.data(), buf.size());
    if (n <= 0) break;
    bytes += static_cast<uint64_t>(n);
  }
  stop = true;
  shutdown(server, SHUT_RDWR);
  shutdown(client, SHUT_RDWR);
  writer.join();
  close(server);
  close(client);
  return static_cast<double>(bytes) / Seconds(t0, t);
}

// memcpy, bytes/s: `block`-byte copies through a 64 MiB working set (beyond
// the caches, as a Get of a DRAM-tier block is), for `seconds`.
double MemcpyBytesPerSecond(size_t block, double seconds) {
  const size_t n = std::max<size_t>(2, (64u << 20) / block);
  std::vector<char> src(n * block, 1), dst(n * block, 0);
  uint64_t bytes = 0;
  const auto t0 = Clock::now();
  auto t = t0;
  for (size_t i = 0; Seconds(t0, t = Clock::now()) < seconds; i = (i + 1) % n) {
    std::memcpy(dst.data() + i * block, src.data() + ((i + n / 2) % n) * block, block);
    bytes += block;
  }
  volatile char sink = dst[bytes % dst.size()];
  (void)sink;
  return static_cast<double>(bytes) / Seconds(t0, t);
}

// What one RPC saw: latencies of successful calls, payload bytes, errors.
struct RpcTally {
  std::vector<double> latency_s;
  uint64_t bytes = 0;  // payload bytes moved (Put, Get) or tokens generated (Generate)
  std::map<std::string, uint64_t> errors;  // status code name -> calls
  std::map<std::string, uint64_t> tiers;   // Put, Get: the tier that took or served each block

  void Merge(const RpcTally& o) {
    latency_s.insert(latency_s.end(), o.latency_s.begin(), o.latency_s.end());
    bytes += o.bytes;
    for (const auto& [k, v] : o.errors) errors[k] += v;
    for (const auto& [k, v] : o.tiers) tiers[k] += v;
  }
};

double Quantile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(q * static_cast<double>(v.size())))];
}

std::string Payload(size_t n, uint64_t seed) {
  std::string s(n, '\0');
  uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
  for (size_t i = 0; i + 8 <= n; i += 8) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    std::memcpy(s.data() + i, &x, 8);
  }
  return s;
}

std::span<const std::byte> AsBytes(const std::string& s) {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

void Count(RpcTally* t, const Status& s) {
  ++t->errors[GrpcCodeName(ToGrpcStatus(s).error_code())];
}

int Main(int argc, char** argv) {
  const Args args = ParseArgs(argc, argv);
  bench::OwnDaemon own;
  std::string addr = args.addr;
  int pid = args.daemon_pid;
  std::string model = args.model;
  if (addr.empty()) {
    if (model.empty()) {
      const char* env = std::getenv("KVTIER_SHARED_DATA");
      const std::string p = std::string(env != nullptr ? env : "../shared/data") +
                            "/models/stories260K/stories260K.bin";
      if (std::filesystem::exists(p)) model = p;
    }
    std::vector<std::string> flags = {"--metrics-listen",     "",    "--flash-bytes", "256M",
                                      "--flash-region-bytes", "16M", "--rocks-bytes", "2G"};
    if (!model.empty()) flags.insert(flags.end(), {"--model", model});
    std::istringstream extra(args.daemon_args);
    for (std::string w; extra >> w;) flags.push_back(w);
    if (!own.Start(args.kvtierd, flags, "load_bench")) return 1;
    addr = own.address();
    pid = own.pid();
  }
  ClientOptions co;
  co.address = addr;
  co.api_key = args.api_key;
  co.timeout_ms = 60'000;
  Client probe(co);
  Result<v1::HealthResponse> health = probe.Health();
  if (!health.ok()) {
    std::fprintf(stderr, "load_bench: no kvtierd at %s: %s\n", addr.c_str(),
                 health.status().ToString().c_str());
    return 1;
  }
  std::printf("kvtierd at %s%s, model %s\n", addr.c_str(),
              args.addr.empty() ? " (started by load_bench)" : "",
              args.addr.empty() ? (model.empty() ? "(the daemon's default)" : model.c_str())
                                : "(the daemon's)");

  // The references, before the load.
  const size_t block = args.block_bytes;
  const double tcp_before = LoopbackTcpBytesPerSecond(block, 1.0);
  const double memcpy_before = MemcpyBytesPerSecond(block, 0.5);

  // The blocks the Get clients read, stored first.
  const uint64_t run_salt = std::random_device{}();
  std::vector<BlockKey> stored;
  for (int i = 0; i < (args.get_clients > 0 ? args.get_blocks : 0); ++i) {
    v1::PutHeader h;
    const BlockKey key{run_salt, static_cast<uint64_t>(i)};
    h.set_key(key.ToByteString());
    Result<v1::PutResponse> r = probe.Put(h, AsBytes(Payload(block, key.lo)));
    if (!r.ok()) {
      std::fprintf(stderr, "load_bench: storing the Get clients' blocks: %s\n",
                   r.status().ToString().c_str());
      return 1;
    }
    stored.push_back(key);
  }

  // The load.
  std::atomic<bool> stop{false};
  std::mutex mu;
  std::map<std::string, RpcTally> tallies;  // by RPC, guarded by mu
  std::vector<std::thread> clients;
  auto run = [&](const std::string& rpc, auto body) {
    clients.emplace_back([&, rpc, body]() mutable {
      ClientOptions own = co;
      own.own_connection = true;  // as independent clients: one connection each
      Client c(own);
      RpcTally t;
      while (!stop.load()) body(c, t);
      std::lock_guard<std::mutex> l(mu);
      tallies[rpc].Merge(t);
    });
  };
  for (int w = 0; w < args.put_clients; ++w) {
    const std::string payload = Payload(block, run_salt + static_cast<uint64_t>(w));
    run("Put", [&, w, payload, i = uint64_t{0}](Client& c, RpcTally& t) mutable {
      v1::PutHeader h;
      h.set_key(BlockKey{run_salt + 1 + static_cast<uint64_t>(w), i++}.ToByteString());
      const auto t0 = Clock::now();
      Result<v1::PutResponse> r = c.Put(h, AsBytes(payload));
      if (!r.ok()) return Count(&t, r.status());
      t.latency_s.push_back(Seconds(t0, Clock::now()));
      t.bytes += payload.size();
      ++t.tiers[r->block().tier()];
    });
  }
  for (int w = 0; w < args.get_clients; ++w) {
    run("Get", [&, rng = std::mt19937_64(run_salt + 100 + static_cast<uint64_t>(w))](
                   Client& c, RpcTally& t) mutable {
      const BlockKey key = stored[rng() % stored.size()];
      const auto t0 = Clock::now();
      Result<FetchedBlock> r = c.Get(key);
      if (!r.ok()) return Count(&t, r.status());
      t.latency_s.push_back(Seconds(t0, Clock::now()));
      t.bytes += r->payload.size();
      ++t.tiers[r->info.tier()];
    });
  }
  // Generate: a 64-token prefix every request shares (cached after the
  // first) and a 32-token tail of its own.
  for (int w = 0; w < args.generate_clients; ++w) {
    run("Generate", [&, rng = std::mt19937_64(run_salt + 200 + static_cast<uint64_t>(w))](
                        Client& c, RpcTally& t) mutable {
      v1::GenerateRequest req;
      for (int i = 0; i < 64; ++i) req.add_token_ids(3 + (i * 37) % 500);
      for (int i = 0; i < 32; ++i) req.add_token_ids(3 + static_cast<int32_t>(rng() % 500));
      req.set_max_tokens(static_cast<uint32_t>(args.max_tokens));
      req.set_ignore_eos(true);
      req.set_tenant("load-bench");
      v1::GenerateResponse resp;
      const auto t0 = Clock::now();
      grpc::Status s = c.GenerateRaw(req, &resp);
      if (!s.ok()) {
        ++t.errors[GrpcCodeName(s.error_code())];
        return;
      }
      t.latency_s.push_back(Seconds(t0, Clock::now()));
      t.bytes += static_cast<uint64_t>(resp.token_ids_size());
    });
  }
  const auto t0 = Clock::now();
  std::this_thread::sleep_for(std::chrono::duration<double>(args.seconds));
  stop = true;
  for (auto& t : clients) t.join();
  const double elapsed = Seconds(t0, Clock::now());
  const auto [rss, hwm] = pid > 0 ? Rss(pid) : std::pair<uint64_t, uint64_t>{0, 0};

  // The references, after the load.
  const double tcp_after = LoopbackTcpBytesPerSecond(block, 1.0);
  const double memcpy_after = MemcpyBytesPerSecond(block, 0.5);
  const double tcp = (tcp_before + tcp_after) / 2, mem = (memcpy_before + memcpy_after) / 2;

  nlohmann::json out = {{"bench", "load_bench"},
                        {"seconds", elapsed},
                        {"block_bytes", block},
                        {"put_clients", args.put_clients},
                        {"get_clients", args.get_clients},
                        {"generate_clients", args.generate_clients},
                        {"started_daemon", args.addr.empty()}};
  std::printf("%.1f s, %d Put, %d Get, %d Generate clients, %llu-byte blocks\n", elapsed,
              args.put_clients, args.get_clients, args.generate_clients,
              static_cast<unsigned long long>(block));
  std::printf("%-9s %9s %9s %12s %10s %10s  %s\n", "rpc", "calls", "calls/s", "MB/s|tok/s",
              "p50 ms", "p99 ms", "errors");
  for (const char* rpc : {"Put", "Get", "Generate"}) {
    auto it = tallies.find(rpc);
    if (it == tallies.end()) continue;
    const RpcTally& t = it->second;
    const double calls = static_cast<double>(t.latency_s.size());
    const double rate = static_cast<double>(t.bytes) / elapsed;
    std::string errors;
    nlohmann::json err = nlohmann::json::object();
    for (const auto& [code, n] : t.errors) {
      errors += code + "=" + std::to_string(n) + " ";
      err[code] = n;
    }
    const bool tokens = std::string(rpc) == "Generate";
    std::printf("%-9s %9.0f %9.1f %12.1f %10.2f %10.2f  %s\n", rpc, calls, calls / elapsed,
                tokens ? rate : rate / 1e6, Quantile(t.latency_s, 0.5) * 1e3,
                Quantile(t.latency_s, 0.99) * 1e3, errors.empty() ? "none" : errors.c_str());
    nlohmann::json j = {{"calls", t.latency_s.size()},
                        {"calls_per_s", calls / elapsed},
                        {"p50_ms", Quantile(t.latency_s, 0.5) * 1e3},
                        {"p99_ms", Quantile(t.latency_s, 0.99) * 1e3},
                        {"errors", err}};
    if (tokens) {
      j["tokens_per_s"] = rate;
    } else {
      j["bytes_per_s"] = rate;
    }
    if (!t.tiers.empty()) j["tiers"] = t.tiers;
    out[tokens ? "generate" : (std::string(rpc) == "Put" ? "put" : "get")] = j;
  }
  for (const char* rpc : {"Put", "Get"}) {
    auto it = tallies.find(rpc);
    if (it == tallies.end() || it->second.tiers.empty()) continue;
    std::string tiers;
    for (const auto& [tier, n] : it->second.tiers) tiers += " " + tier + "=" + std::to_string(n);
    std::printf("%s blocks by tier:%s\n", rpc, tiers.c_str());
  }
  if (pid > 0) {
    std::printf("daemon RSS %.1f MiB, peak %.1f MiB (pid %d)\n",
                static_cast<double>(rss) / (1 << 20), static_cast<double>(hwm) / (1 << 20), pid);
    out["daemon_rss_bytes"] = rss;
    out["daemon_peak_rss_bytes"] = hwm;
  } else {
    std::printf("daemon RSS: unknown (give --daemon-pid with --addr)\n");
  }
  std::printf("loopback TCP %.2f GB/s (%.2f before, %.2f after), memcpy %.2f GB/s\n", tcp / 1e9,
              tcp_before / 1e9, tcp_after / 1e9, mem / 1e9);
  out["loopback_tcp_bytes_per_s"] = tcp;
  out["memcpy_bytes_per_s"] = mem;
  if (auto it = tallies.find("Get"); it != tallies.end() && tcp > 0 && mem > 0) {
    const double get = static_cast<double>(it->second.bytes) / elapsed;
    std::printf("Get bytes/s vs loopback TCP: %.3f   vs memcpy: %.4f\n", get / tcp, get / mem);
    out["get_ratio_vs_loopback_tcp"] = get / tcp;
    out["get_ratio_vs_memcpy"] = get / mem;
  }
  if (args.json) std::printf("%s\n", out.dump().c_str());
  return 0;
}

}  // namespace
}  // namespace kvtier

int main(int argc, char** argv) { return kvtier::Main(argc, argv); }
