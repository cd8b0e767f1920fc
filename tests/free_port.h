// A loopback TCP port for a test server that must be named before it starts
// (kvtierd nodes told of each other, an HTTP listener, a Redis Cluster node).
//
// Binding port 0 and closing hands out an *ephemeral* port, which the kernel
// may give to any process's next outgoing connection or port-0 listener
// before the server binds it; with tests running in parallel CI saw exactly
// that ("cannot listen on 127.0.0.1:38489: Address already in use"). So the
// port is drawn at random below the ephemeral range (Linux's default starts
// at 32768), where only explicit binds land, and checked to bind.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <random>

namespace kvtier::testing {

// Whether a TCP socket can bind 127.0.0.1:port now.
inline bool LoopbackPortFree(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return false;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
  ::close(fd);
  return ok;
}

// A free port in [lo, hi], drawn at random; with an offset, port + offset must
// be free too (a Redis Cluster node's bus port is port + 10000).
// 0 when 1000 draws found none.
inline int FreeLoopbackPort(int lo = 10000, int hi = 19999, int also_free_offset = 0) {
  static thread_local std::mt19937 rng{std::random_device{}()};
  std::uniform_int_distribution<int> d(lo, hi);
  for (int tries = 0; tries < 1000; ++tries) {
    const int p = d(rng);
    if (LoopbackPortFree(p) && (also_free_offset == 0 || LoopbackPortFree(p + also_free_offset)))
      return p;
  }
  return 0;
}

}  // namespace kvtier::testing
