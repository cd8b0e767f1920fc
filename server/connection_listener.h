// ConnectionListener: kvtierd's own TCP accept loop in front of gRPC.
//
// gRPC 1.51 (Debian 12) owns its listening socket in a way a daemon cannot
// trust: it binds with SO_REUSEPORT, so a second daemon on the same port
// silently takes half the connections, and after one accept4() fails with
// EMFILE it never accepts again (grpc/grpc#20418, fixed upstream only in
// 1.57). So kvtierd binds and accepts itself and hands every connection to
// the gRPC server (grpc::AddInsecureChannelFromFd):
//   - the port is bound exclusively: a port already taken is an error at
//     start, never a shared listener;
//   - open connections are capped (max_connections, kept below the
//     descriptor limit with a reserve for files): a connection beyond the
//     cap is closed at once, which the client sees as UNAVAILABLE and
//     retries;
//   - when descriptors run out anyway (EMFILE/ENFILE), the listener drops
//     the pending connection through a spare descriptor it keeps for that,
//     backs off briefly and keeps accepting: it recovers by itself as soon
//     as descriptors come back.
// A connection counts as open until the server closes its descriptor; the
// listener notices lazily (an fstat per tracked connection, only when the
// count reaches the cap).
//
// Plaintext only: AddInsecureChannelFromFd has no TLS twin, so with TLS the
// daemon keeps gRPC's listener (with SO_REUSEPORT off) and has no cap.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/status.h"

namespace kvtier {

struct ListenerOptions {
  std::string address;            // "host:port" or "[v6]:port"; port 0 picks a free one
  size_t max_connections = 1024;  // at least 1
  int backlog = 1024;
};

struct ListenerStats {
  uint64_t accepted = 0;              // handed to the server
  uint64_t refused_over_limit = 0;    // closed at once: max_connections were open
  uint64_t descriptor_exhausted = 0;  // accept failed with EMFILE/ENFILE
  uint64_t accept_errors = 0;         // other accept failures
  size_t open = 0;                    // connections open at the last count
};

class ConnectionListener {
 public:
  // Binds and listens (without SO_REUSEPORT). kUnavailable naming the address
  // when it is taken or cannot be bound; kInvalidArgument when it is not
  // "host:port".
  static Result<std::unique_ptr<ConnectionListener>> Bind(const ListenerOptions& options);
  ~ConnectionListener();  // Stop()s
  ConnectionListener(const ConnectionListener&) = delete;
  ConnectionListener& operator=(const ConnectionListener&) = delete;

  int port() const { return port_; }
  // Starts the accept thread. `serve` takes ownership of each accepted
  // descriptor (a connected, non-blocking TCP socket) and must not block.
  void Start(std::function<void(int fd)> serve);
  // Stops accepting and closes the listening socket. Connections already
  // handed over stay with the server. Idempotent.
  void Stop();
  // Counts the open connections first.
  ListenerStats stats();

  // The connection cap kvtierd uses under a descriptor soft limit of
  // `nofile`: `wanted`, but leaving a reserve for the files, databases and
  // pipes the daemon itself opens (a quarter of the limit, at most 512).
  static size_t CapUnderLimit(size_t wanted, uint64_t nofile);

 private:
  explicit ConnectionListener(const ListenerOptions& options) : options_(options) {}
  void Loop();
  void AcceptOne();
  // Forgets connections the server has closed; returns how many are open.
  size_t CountOpenLocked();

  struct Tracked {
    int fd;
    dev_t dev;
    ino_t ino;
  };

  const ListenerOptions options_;
  int listen_fd_ = -1;
  int wake_fd_ = -1;   // eventfd: wakes the loop for Stop
  int spare_fd_ = -1;  // kept open to be closed when descriptors run out
  int port_ = 0;
  std::function<void(int)> serve_;
  std::thread thread_;
  std::atomic<bool> stopping_{false};

  mutable std::mutex mu_;
  std::vector<Tracked> open_;  // GUARDED_BY(mu_)
  ListenerStats stats_;        // GUARDED_BY(mu_)
};

// Raises the descriptor soft limit to the hard limit (at most `ceiling`)
// and returns the soft limit in force afterwards.
uint64_t RaiseDescriptorLimit(uint64_t ceiling = 1 << 20);

}  // namespace kvtier
