// MetricsHttpServer: the daemon's Prometheus endpoint, a small HTTP/1.1 server
// (cpp-httplib) that answers
//   GET /metrics  the text a render callback returns, as
//                 `Content-Type: text/plain; version=0.0.4`
//   GET /healthz  "ok"
// HEAD is served like GET without the body. Other paths answer 404, other
// methods on these paths 405.
//
// It runs on its own threads: one accepts connections and `threads` serve
// them. Connections are not kept alive (one request each, which suits a
// scraper), so Stop returns at once when no client is connected and within
// about `client_timeout_s` when one is still sending its request. The server's
// threads block SIGPIPE, so a scraper that hangs up mid-response costs that
// response, not the process. Stop is thread-safe and idempotent; the
// destructor stops.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "common/status.h"

namespace httplib {
class Server;
}

namespace kvtier {

struct MetricsHttpOptions {
  // Address to listen on, "host:port" ("[::1]:9464" for IPv6). Port 0 picks a
  // free port; bound_port() tells which.
  std::string listen = "127.0.0.1:9464";
  // Renders the whole /metrics text for one scrape. Required. Called on the
  // server's threads, several at once when `threads` > 1, so it must be
  // thread-safe; an exception it throws answers 500.
  std::function<std::string()> render;
  // Threads serving requests, 1..64 (plus one that accepts connections).
  int threads = 2;
  // Seconds a connection may wait before sending its request, and the limit
  // on each read and write of it; 1..60. Bounds how long Stop waits for a
  // connected client.
  int client_timeout_s = 1;
};

class MetricsHttpServer {
 public:
  // Validates `options`, binds the address and serves from a new thread.
  // InvalidArgument for bad options (no render callback, a malformed address,
  // a count out of range); Unavailable, naming the address, when it cannot be
  // bound (e.g. the port is in use).
  static Result<std::unique_ptr<MetricsHttpServer>> Start(const MetricsHttpOptions& options);

  ~MetricsHttpServer();
  MetricsHttpServer(const MetricsHttpServer&) = delete;
  MetricsHttpServer& operator=(const MetricsHttpServer&) = delete;

  // The port the server listens on (the chosen one when `listen` gave 0).
  int bound_port() const { return bound_port_; }

  // Stops accepting, finishes or drops the requests in progress and joins the
  // server's threads. Safe to call more than once and from several threads;
  // each call returns once the server has stopped.
  void Stop();

 private:
  MetricsHttpServer(std::unique_ptr<httplib::Server> server, std::string listen, int bound_port);
  void Serve();  // the accepting thread's body

  const std::unique_ptr<httplib::Server> server_;
  const std::string listen_;  // the address, for logs
  const int bound_port_;

  std::atomic<bool> serve_returned_{false};  // set when Serve() ends, for whatever reason
  std::atomic<bool> stopping_{false};        // set by Stop() before it stops the server

  std::mutex stop_mu_;  // serializes Stop()
  std::thread thread_;  // runs Serve(); joined (under stop_mu_) by the first Stop()
};

}  // namespace kvtier
