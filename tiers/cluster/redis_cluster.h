// RedisCluster: a small Redis Cluster client on hiredis (DESIGN §10).
//
// hiredis speaks to one server; this adds what a cluster needs and nothing
// more:
//  - slot routing: a key's slot is CRC16 (XMODEM) of the key, or of its
//    {hash tag}, mod 16384 (RedisKeySlot); the slot map comes from
//    CLUSTER SLOTS on any node that answers (masters only: replicas are not
//    read from, so a read never sees a lagging copy);
//  - redirections: MOVED updates the map (and a full refresh follows), ASK
//    sends ASKING and the command to the node named, once per round; at most
//    `max_redirects` rounds;
//  - pipelining: Run() groups its commands by node, writes every node's
//    pipeline before reading any reply, so the nodes work at the same time
//    (one round trip for a batch, however many nodes it spans);
//  - connections pooled per node; every connect and every call has a
//    timeout, so a dead node is an error within `command_timeout_ms`, never
//    a hang. A connection that failed is closed, not reused, and the slot map
//    is refreshed (a replica that took over is found there).
// Not built, because kvtier does not need them: transactions and scripts
// across slots, pub/sub, reading from replicas, TLS and AUTH.
//
// Thread-safe: Run may be called from many threads at once.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

struct redisReply;
struct redisContext;

namespace kvtier {

// The cluster slot of `key` (0..16383), hash tags included.
uint16_t RedisKeySlot(std::string_view key);

// "host:port" -> host and port; kInvalidArgument naming `what` otherwise.
Status ParseHostPort(std::string_view text, std::string* host, int* port, std::string_view what);

struct RedisClusterOptions {
  std::vector<std::string> seeds;  // "host:port" of any nodes; at least one
  int connect_timeout_ms = 200;
  int command_timeout_ms = 1000;
  int max_redirects = 5;         // MOVED/ASK rounds per Run
  size_t max_idle_per_node = 8;  // pooled connections kept per node
};

// One reply, sharing its hiredis reply tree (no copy of string payloads).
class RedisReply {
 public:
  enum class Type { kString, kArray, kInteger, kNil, kStatus, kError };
  RedisReply() = default;
  RedisReply(std::shared_ptr<redisReply> root, const redisReply* r)
      : root_(std::move(root)), r_(r) {}

  Type type() const;
  std::string_view str() const;   // kString, kStatus, kError
  long long integer() const;      // kInteger
  size_t size() const;            // kArray
  RedisReply at(size_t i) const;  // kArray

 private:
  std::shared_ptr<redisReply> root_;
  const redisReply* r_ = nullptr;
};

// One command: its arguments (valid until Run returns) and the key that
// routes it (one of the arguments; commands of several keys must keep them
// in one slot, e.g. by a hash tag).
struct RedisCommand {
  std::vector<std::string_view> args;
  std::string_view key;
};

struct RedisClusterStats {
  uint64_t commands = 0;
  uint64_t redirects = 0;       // MOVED and ASK replies followed
  uint64_t errors = 0;          // commands that failed (node down, timeout, error reply)
  uint64_t refreshes = 0;       // slot map refreshes
  uint64_t connects = 0;        // connections opened
  uint64_t bytes_sent = 0;      // argument bytes
  uint64_t bytes_received = 0;  // string reply bytes
};

class RedisCluster {
 public:
  // Connects to the seeds and loads the slot map; kUnavailable when no seed
  // answers CLUSTER SLOTS, or it does not cover every slot.
  static Result<std::unique_ptr<RedisCluster>> Connect(const RedisClusterOptions& options);
  ~RedisCluster();
  RedisCluster(const RedisCluster&) = delete;
  RedisCluster& operator=(const RedisCluster&) = delete;

  // Runs `commands`, pipelined per node; result i is command i's reply, or
  // kUnavailable (node down or timed out, cluster down, redirections
  // exhausted) or kIOError (an error reply: its text).
  std::vector<Result<RedisReply>> Run(std::span<const RedisCommand> commands);
  // Runs one command on the node "host:port" (SCAN, INFO: commands that
  // are about a node, not a key).
  Result<RedisReply> RunOn(const std::string& host_port, std::span<const std::string_view> args);
  // Reloads the slot map now.
  Status Refresh();
  // "host:port" of every master in the slot map.
  std::vector<std::string> Masters() const;
  // "host:port" of the master that owns `key`'s slot in the map ("" if none).
  std::string MasterOf(std::string_view key) const;
  RedisClusterStats Stats() const;

 private:
  struct Node;
  struct Connection;
  explicit RedisCluster(const RedisClusterOptions& options);
  // The node of "host:port", created on first use. Requires mu_.
  size_t NodeIndexLocked(const std::string& host, int port);
  std::unique_ptr<Connection> Acquire(size_t node, Status* error);
  void Release(size_t node, std::unique_ptr<Connection> c);
  Status RefreshFrom(size_t node);
  // One node's share of a round: its commands, and the connection they
  // went out on.
  struct Pending;
  struct Exchange {
    size_t node = 0;
    std::vector<Pending*> batch;
    std::unique_ptr<Connection> connection;  // null once failed or done
  };
  // Sends every exchange's pipeline, then reads each one's replies in order;
  // a node that fails fails its commands (kUnavailable) and no other's.
  void RunExchanges(std::span<Exchange> exchanges);
  bool Send(Exchange* x);
  void Receive(Exchange* x);
  void FailExchange(Exchange* x, const Status& s, bool node_down);
  Status IoError(size_t node, const redisContext* ctx);

  const RedisClusterOptions options_;
  mutable std::mutex mu_;
  std::vector<std::unique_ptr<Node>> nodes_;  // guarded by mu_ (the vector; nodes lock themselves)
  std::vector<int32_t> slots_;                // guarded by mu_: slot -> node index, -1 none
  bool stale_ = false;                        // guarded by mu_: refresh before the next Run
  mutable std::mutex stats_mu_;
  RedisClusterStats stats_;  // guarded by stats_mu_
};

}  // namespace kvtier
