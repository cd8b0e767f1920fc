#include "tests/tiers/local_redis_cluster.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <thread>

#include "tests/free_port.h"

namespace kvtier::testing {
namespace {

int Spawn(const std::vector<std::string>& args, const std::string& log) {
  const int pid = ::fork();
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // no orphan servers when a test dies
    const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
      ::dup2(fd, 1);
      ::dup2(fd, 2);
    }
    std::vector<char*> argv;
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execvp(argv[0], argv.data());
    ::_exit(127);
  }
  return pid;
}

std::string Capture(const std::vector<std::string>& args) {
  std::string cmd;
  for (const std::string& a : args) cmd += "'" + a + "' ";
  cmd += "2>/dev/null";
  std::string out;
  FILE* f = ::popen(cmd.c_str(), "r");
  if (f == nullptr) return out;
  char buf[4096];
  for (size_t n; (n = std::fread(buf, 1, sizeof(buf), f)) > 0;) out.append(buf, n);
  ::pclose(f);
  return out;
}

}  // namespace

bool RedisInstalled() {
  return std::system(
             "command -v redis-server >/dev/null 2>&1 && "
             "command -v redis-cli >/dev/null 2>&1") == 0;
}

std::string LocalRedisCluster::Cli(const std::string& node,
                                   const std::vector<std::string>& args) const {
  const size_t colon = node.rfind(':');
  std::vector<std::string> full = {"redis-cli", "-h", node.substr(0, colon), "-p",
                                   node.substr(colon + 1)};
  full.insert(full.end(), args.begin(), args.end());
  return Capture(full);
}

Result<std::unique_ptr<LocalRedisCluster>> LocalRedisCluster::Start(
    const LocalRedisClusterOptions& o) {
  if (!RedisInstalled()) {
    return Status::Unavailable("redis-server or redis-cli is not installed (tools/deps.sh)");
  }
  std::unique_ptr<LocalRedisCluster> c(new LocalRedisCluster());
  std::random_device rd;
  std::mt19937 rng(rd());
  c->dir_ = (std::filesystem::temp_directory_path() /
             ("kvtier_redis_" + std::to_string(::getpid()) + "_" + std::to_string(rng())))
                .string();
  std::filesystem::create_directories(c->dir_);
  const int n = o.masters * (1 + o.replicas);
  for (int i = 0; i < n; ++i) {
    // Bus ports (port + 10000) stay below the ephemeral range too; a node
    // spawned a moment ago may not have bound its port yet, so no repeats.
    int port = 0;
    do {
      port = FreeLoopbackPort(20000, 22767, 10000);
    } while (port != 0 && std::find(c->nodes_.begin(), c->nodes_.end(),
                                    "127.0.0.1:" + std::to_string(port)) != c->nodes_.end());
    if (port == 0) return Status::Unavailable("no free loopback port for a redis node");
    const std::string p = std::to_string(port);
    std::vector<std::string> args = {"redis-server",
                                     "--port",
                                     p,
                                     "--bind",
                                     "127.0.0.1",
                                     "--cluster-enabled",
                                     "yes",
                                     "--cluster-config-file",
                                     c->dir_ + "/nodes-" + p + ".conf",
                                     "--cluster-node-timeout",
                                     std::to_string(o.node_timeout_ms),
                                     "--dir",
                                     c->dir_,
                                     "--save",
                                     "",
                                     "--appendonly",
                                     "no",
                                     "--daemonize",
                                     "no"};
    if (!o.maxmemory.empty()) {
      args.insert(args.end(), {"--maxmemory", o.maxmemory, "--maxmemory-policy", "allkeys-lru"});
    }
    c->pids_.push_back(Spawn(args, c->dir_ + "/redis-" + p + ".log"));
    c->alive_.push_back(true);
    c->nodes_.push_back("127.0.0.1:" + p);
  }
  // Every node answers PING.
  for (const std::string& node : c->nodes_) {
    bool up = false;
    for (int i = 0; i < 200 && !up; ++i) {
      up = c->Cli(node, {"PING"}).find("PONG") != std::string::npos;
      if (!up) std::this_thread::sleep_for(std::chrono::milliseconds(25));
    }
    if (!up) return Status::Unavailable("redis node " + node + " did not start (" + c->dir_ + ")");
  }
  std::vector<std::string> create = {"redis-cli", "--cluster", "create"};
  create.insert(create.end(), c->nodes_.begin(), c->nodes_.end());
  create.insert(create.end(), {"--cluster-replicas", std::to_string(o.replicas), "--cluster-yes"});
  const std::string out = Capture(create);
  if (out.find("All 16384 slots covered") == std::string::npos) {
    return Status::Unavailable("redis-cli --cluster create failed: " + out);
  }
  if (!c->WaitHealthy(30000)) return Status::Unavailable("the redis cluster did not become ok");
  // Replicas in sync with their masters, so a failover has data to serve.
  if (o.replicas > 0) {
    for (int i = 0; i < 400; ++i) {
      int synced = 0;
      for (const std::string& node : c->nodes_) {
        const std::string info = c->Cli(node, {"INFO", "replication"});
        if (info.find("role:slave") != std::string::npos &&
            info.find("master_link_status:up") != std::string::npos) {
          ++synced;
        }
      }
      if (synced == o.masters * o.replicas) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
  return c;
}

LocalRedisCluster::~LocalRedisCluster() {
  for (size_t i = 0; i < pids_.size(); ++i) {
    if (pids_[i] > 0 && alive_[i]) ::kill(pids_[i], SIGKILL);
  }
  for (int pid : pids_) {
    if (pid > 0) ::waitpid(pid, nullptr, 0);
  }
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
}

void LocalRedisCluster::Kill(const std::string& node) {
  for (size_t i = 0; i < nodes_.size(); ++i) {
    if (nodes_[i] == node && alive_[i]) {
      ::kill(pids_[i], SIGKILL);
      ::waitpid(pids_[i], nullptr, 0);
      alive_[i] = false;
    }
  }
}

bool LocalRedisCluster::WaitReplicated(const std::string& node, int timeout_ms) const {
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (std::chrono::steady_clock::now() < until) {
    // "master_repl_offset:N" against each "slaveK:ip=...,offset=M,...".
    const std::string info = Cli(node, {"INFO", "replication"});
    const size_t at = info.find("master_repl_offset:");
    if (at != std::string::npos) {
      const long long master = std::atoll(info.c_str() + at + 19);
      bool all = info.find("connected_slaves:0") == std::string::npos;
      for (size_t pos = 0; (pos = info.find(",offset=", pos)) != std::string::npos; ++pos) {
        all = all && std::atoll(info.c_str() + pos + 8) >= master;
      }
      if (all) return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

bool LocalRedisCluster::WaitHealthy(int timeout_ms) const {
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (std::chrono::steady_clock::now() < until) {
    bool ok = true;
    for (size_t i = 0; i < nodes_.size() && ok; ++i) {
      if (!alive_[i]) continue;
      const std::string info = Cli(nodes_[i], {"CLUSTER", "INFO"});
      ok = info.find("cluster_state:ok") != std::string::npos &&
           info.find("cluster_slots_ok:16384") != std::string::npos;
    }
    if (ok) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

}  // namespace kvtier::testing
