// LocalRedisCluster: a real Redis Cluster on loopback for tests: redis-server
// processes in cluster mode (Debian's redis-server 7), joined with
// `redis-cli --cluster create`, in a temporary directory, stopped when the
// object goes. tools/cluster.sh does the same for people.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "common/status.h"

namespace kvtier::testing {

struct LocalRedisClusterOptions {
  int masters = 3;
  int replicas = 0;            // per master
  int node_timeout_ms = 1000;  // cluster-node-timeout: how soon a replica takes over
  std::string maxmemory;       // e.g. "64mb"; empty: none
};

class LocalRedisCluster {
 public:
  // Starts the nodes, creates the cluster and waits until every node says
  // cluster_state:ok (and every replica is in sync). kUnavailable with the
  // reason when redis-server is missing or the cluster does not form.
  static Result<std::unique_ptr<LocalRedisCluster>> Start(const LocalRedisClusterOptions& o);
  ~LocalRedisCluster();

  // "127.0.0.1:port" of every node started (masters first, as created).
  const std::vector<std::string>& nodes() const { return nodes_; }
  // Waits until every replica of master `node` has acknowledged all of its
  // writes (replication is asynchronous: a failover loses what a replica has
  // not received); false after `timeout_ms`.
  bool WaitReplicated(const std::string& node, int timeout_ms) const;
  // Kills a node (SIGKILL: no goodbye to its peers).
  void Kill(const std::string& node);
  // Waits until every live node says cluster_state:ok and sees the slot map
  // covered; false after `timeout_ms`.
  bool WaitHealthy(int timeout_ms) const;
  // Runs redis-cli against `node` with `args`; its stdout.
  std::string Cli(const std::string& node, const std::vector<std::string>& args) const;

 private:
  LocalRedisCluster() = default;
  std::string dir_;
  std::vector<std::string> nodes_;
  std::vector<int> pids_;
  std::vector<bool> alive_;
};

// True when redis-server and redis-cli are installed (tools/deps.sh does).
bool RedisInstalled();

}  // namespace kvtier::testing
