#include "server/daemon_flags.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

namespace kvtier {
namespace {

Result<DaemonOptions> Parse(std::vector<std::string> args, bool* help = nullptr) {
  args.insert(args.begin(), "kvtierd");
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  bool ignored = false;
  return ParseDaemonFlags(static_cast<int>(argv.size()), argv.data(),
                          help != nullptr ? help : &ignored);
}

TEST(DaemonFlagsTest, NoFlagsGiveTheDefaults) {
  bool help = true;
  Result<DaemonOptions> o = Parse({}, &help);
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_FALSE(help);
  const DaemonOptions defaults;
  EXPECT_EQ(o->listen, defaults.listen);
  EXPECT_EQ(o->dram_bytes, defaults.dram_bytes);
  EXPECT_EQ(o->hbm_bytes, -1);
  EXPECT_TRUE(o->flash);
  EXPECT_TRUE(o->engine);
  EXPECT_TRUE(o->engine_keep_staged_tiles);
  EXPECT_EQ(o->max_threads, 1024);
  EXPECT_EQ(o->max_streams, 768);
  EXPECT_EQ(o->max_tenant_streams, 512);
  EXPECT_EQ(o->max_concurrent_requests, 256);
  EXPECT_EQ(o->metrics_listen, defaults.metrics_listen);
  EXPECT_FALSE(o->metrics_listen_required);
  EXPECT_DOUBLE_EQ(o->placement.remat.cost_per_s, defaults.placement.remat.cost_per_s);
  EXPECT_DOUBLE_EQ(o->placement.fetch_budget_s, defaults.placement.fetch_budget_s);
  EXPECT_TRUE(Parse({"--help"}, &help).ok());
  EXPECT_TRUE(help);
  Result<DaemonOptions> no_tiles = Parse({"--no-staged-tiles"});
  ASSERT_TRUE(no_tiles.ok()) << no_tiles.status();
  EXPECT_FALSE(no_tiles->engine_keep_staged_tiles);
}

TEST(DaemonFlagsTest, CommandLineOverridesTheConfigFile) {
  const std::string path = (std::filesystem::temp_directory_path() /
                            ("kvtier_flags_" + std::to_string(getpid()) + ".json"))
                               .string();
  std::ofstream(path) << R"({"dram-bytes": "4G", "max-batch": 3, "no-flash": true,
                             "gpu-price": 3.6})";
  Result<DaemonOptions> o = Parse({"--max-batch", "7", "--config", path});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->dram_bytes, uint64_t{4} << 30);
  EXPECT_EQ(o->engine_max_batch, 7);
  EXPECT_FALSE(o->flash);
  EXPECT_DOUBLE_EQ(o->placement.remat.cost_per_s, 0.001);
  std::ofstream(path) << R"({"config": "other.json"})";
  Result<DaemonOptions> nested = Parse({"--config=" + path});
  ASSERT_FALSE(nested.ok());
  EXPECT_EQ(nested.status().message(), "config file " + path + " may not name another config");
  std::filesystem::remove(path);
}

TEST(DaemonFlagsTest, StreamLimitsFollowTheThreadLimit) {
  Result<DaemonOptions> o = Parse({"--max-threads", "100"});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->max_streams, 75);
  EXPECT_EQ(o->max_tenant_streams, 50);
  Result<DaemonOptions> bad = Parse({"--max-threads", "8", "--max-streams", "8"});
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().message(),
            "--max-streams must be below --max-threads (8): unary calls and Health need "
            "threads too");
}

TEST(DaemonFlagsTest, BadValuesAreRefusedNamingTheFlag) {
  for (const auto& [args, message] : std::vector<std::pair<std::vector<std::string>, std::string>>{
           {{"--rocks-bytes", "0"}, "--rocks-bytes needs a positive size"},
           {{"--hbm-bytes", "2T"}, "--hbm-bytes needs a size up to 1T"},
           {{"--flash-write-budget", "x"}, "--flash-write-budget needs a size per second"},
           {{"--dram-bytes", "zz"}, "--dram-bytes: 'zz' is not a size (like 4096, 64K, 512M, 2G)"},
           {{"--max-tenant-payload-bytes", "0"},
            "--max-tenant-payload-bytes needs a positive size"},
           {{"--block-tokens", "100"}, "--block-tokens must be a power of two in [16, 1024]"},
           {{"--default-ttl", "4294967296"}, "--default-ttl needs seconds, at most 4294967295"},
           {{"--kv-dtype", "f64"}, "--kv-dtype must be f32, f16 or bf16"},
           {{"--model-preset", "nope"}, "--model-preset: unknown preset 'nope'"},
           {{"--kv-bytes", "2T"}, "--kv-bytes needs a positive size"},
           {{"--min-cacheable-tokens", "0"},
            "--min-cacheable-tokens needs an integer in [1, 1048576]"},
           {{"--device", "tpu"}, "--device must be cpu, cuda or auto"},
           {{"--gpu-weights", "f16"}, "--gpu-weights must be f32 or bf16"},
           {{"--cpu-weights", "int8"}, "--cpu-weights must be f32 or bf16"},
           {{"--max-batch", "4097"}, "--max-batch needs an integer in [1, 4096]"},
           {{"--price-storage", "-2"}, "--price-storage needs a price >= 0"},
           {{"--tls-cert", "/c"}, "--tls-cert and --tls-key go together"},
           {{"--max-connections", "0"}, "--max-connections needs an integer in [1, 1048576]"},
           {{"--stream-idle-ms", "9"}, "--stream-idle-ms needs milliseconds in [10, 86400000]"},
           {{"--grpc-memory-bytes", "15M"}, "--grpc-memory-bytes needs a size of at least 16M"},
           {{"--sweep-interval-ms", "3600001"},
            "--sweep-interval-ms needs an integer in [1, 3600000]"},
           {{"--model-id", std::string(300, 'a')},
            "namespace model_id is 300 bytes; the limit is 256"},
           {{"--cluster-redis", "127.0.0.1:7000,nohost"},
            "--cluster-redis needs HOST:PORT[,HOST:PORT...], got \"nohost\""},
           {{"--cluster-redis", "h:70000"},
            "--cluster-redis needs HOST:PORT[,HOST:PORT...], got \"h:70000\""},
           {{"--cluster-value-bytes", "1K"}, "--cluster-value-bytes needs a size in [4K, 512M]"},
           {{"--cluster-timeout-ms", "0"}, "--cluster-timeout-ms needs an integer in [1, 60000]"},
           {{"--cluster-prefix", "a{b"}, "--cluster-prefix needs a name without {, } or spaces"},
           {{"--cluster-policy", "nope"}, "--cluster-policy: unknown policy 'nope'"},
           {{"--cluster-admission", "nope"},
            "--cluster-admission: unknown admission filter 'nope'"},
           {{"--cluster-price", "-1"}, "--cluster-price needs a non-negative number"},
           {{"extra"}, "unexpected argument 'extra'"},
       }) {
    Result<DaemonOptions> o = Parse(args);
    ASSERT_FALSE(o.ok()) << args[0];
    EXPECT_EQ(o.status().code(), StatusCode::kInvalidArgument) << args[0];
    EXPECT_EQ(o.status().message(), message);
  }
}

TEST(DaemonFlagsTest, ClusterFlags) {
  Result<DaemonOptions> o =
      Parse({"--cluster-redis", "10.0.0.1:7000,10.0.0.2:7001", "--cluster-bytes", "2G",
             "--cluster-prefix", "prod", "--cache-secret", "/etc/kvtier/secret"});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->cluster_redis, (std::vector<std::string>{"10.0.0.1:7000", "10.0.0.2:7001"}));
  EXPECT_EQ(o->cluster_bytes, 2ull << 30);
  EXPECT_EQ(o->cluster_prefix, "prod");
  EXPECT_EQ(o->cache_secret_file, "/etc/kvtier/secret");
  EXPECT_TRUE(Parse({}).value().cluster_redis.empty()) << "no cluster tier by default";
}

TEST(DaemonFlagsTest, PlacementFlags) {
  Result<DaemonOptions> o = Parse({"--dram-policy", "s3fifo", "--rocks-policy", "arc",
                                   "--flash-price", "0.2", "--gpu-price", "3.6", "--remat-flops",
                                   "1e15", "--fetch-budget-ms", "250", "--default-idle", "30"});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->dram_policy, "s3fifo");
  EXPECT_EQ(o->flash_policy, "lru");
  EXPECT_EQ(o->rocks_policy, "arc");
  EXPECT_DOUBLE_EQ(o->flash_usd_per_gib_month, 0.2);
  EXPECT_DOUBLE_EQ(o->dram_usd_per_gib_month, 3.0);
  EXPECT_DOUBLE_EQ(o->placement.remat.cost_per_s, 0.001);
  EXPECT_DOUBLE_EQ(o->placement.remat.flops_per_s, 1e15);
  EXPECT_DOUBLE_EQ(o->placement.fetch_budget_s, 0.25);
  EXPECT_DOUBLE_EQ(o->placement.default_idle_s, 30);
  Result<DaemonOptions> bad = Parse({"--flash-policy", "mru"});
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("--flash-policy: unknown policy 'mru'"), std::string::npos)
      << bad.status();
  EXPECT_NE(bad.status().message().find("s3fifo"), std::string::npos) << "names the choices";
  EXPECT_EQ(o->dram_admission, "none") << "no filter unless asked";
  Result<DaemonOptions> filtered =
      Parse({"--dram-admission", "tinylfu", "--hbm-admission", "prefix"});
  ASSERT_TRUE(filtered.ok()) << filtered.status();
  EXPECT_EQ(filtered->dram_admission, "tinylfu");
  EXPECT_EQ(filtered->hbm_admission, "prefix");
  EXPECT_EQ(filtered->flash_admission, "none");
  Result<DaemonOptions> unknown_filter = Parse({"--flash-admission", "bloom"});
  ASSERT_FALSE(unknown_filter.ok());
  EXPECT_NE(
      unknown_filter.status().message().find("--flash-admission: unknown admission filter 'bloom'"),
      std::string::npos)
      << unknown_filter.status();
  EXPECT_NE(unknown_filter.status().message().find("tinylfu"), std::string::npos);
  for (std::vector<std::string> args : {std::vector<std::string>{"--dram-price", "-1"},
                                        {"--remat-flops", "0"},
                                        {"--fetch-budget-ms", "abc"},
                                        {"--sweep-interval-ms", "0"}}) {
    Result<DaemonOptions> r = Parse(args);
    ASSERT_FALSE(r.ok()) << args[0];
    EXPECT_NE(r.status().message().find(args[0]), std::string::npos) << r.status();
  }
}

}  // namespace
}  // namespace kvtier
