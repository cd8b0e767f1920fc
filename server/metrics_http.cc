#include "server/metrics_http.h"

#include <httplib.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <exception>
#include <utility>

#include "common/log.h"
#include "server/listen_address.h"

namespace kvtier {
namespace {

constexpr char kMetricsContentType[] = "text/plain; version=0.0.4";
constexpr char kPlainText[] = "text/plain";

// Answers what /metrics and /healthz do not: 404 for other paths, 405 for
// methods other than GET and HEAD.
httplib::Server::HandlerResponse RefuseOthers(const httplib::Request& req, httplib::Response& res) {
  if (req.path != "/metrics" && req.path != "/healthz") {
    res.status = 404;
    res.set_content("not found\n", kPlainText);
    return httplib::Server::HandlerResponse::Handled;
  }
  if (req.method != "GET" && req.method != "HEAD") {
    res.status = 405;
    res.set_header("Allow", "GET, HEAD");
    res.set_content("method not allowed\n", kPlainText);
    return httplib::Server::HandlerResponse::Handled;
  }
  return httplib::Server::HandlerResponse::Unhandled;
}

}  // namespace

Result<std::unique_ptr<MetricsHttpServer>> MetricsHttpServer::Start(
    const MetricsHttpOptions& options) {
  if (!options.render) return Status::InvalidArgument("metrics server needs a render callback");
  if (options.threads < 1 || options.threads > 64) {
    return Status::InvalidArgument("metrics server threads must be 1..64, not " +
                                   std::to_string(options.threads));
  }
  if (options.client_timeout_s < 1 || options.client_timeout_s > 60) {
    return Status::InvalidArgument("metrics server client_timeout_s must be 1..60, not " +
                                   std::to_string(options.client_timeout_s));
  }
  std::string host;
  int port = 0;
  KVTIER_RETURN_IF_ERROR(
      ParseListenAddress(options.listen, "metrics listen address", "127.0.0.1:9464", &host, &port));

  // httplib may throw (std::regex, std::thread); nothing of it leaves here.
  try {
    auto server = std::make_unique<httplib::Server>();
    const size_t threads = static_cast<size_t>(options.threads);
    server->new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
    // httplib's default sets SO_REUSEPORT, which would let a second server
    // bind the same port and take half the scrapes; SO_REUSEADDR only lets a
    // restarted daemon rebind past TIME_WAIT.
    server->set_socket_options([](socket_t sock) {
      int yes = 1;
      setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
    });
    server->set_keep_alive_max_count(1);
    server->set_keep_alive_timeout(options.client_timeout_s);
    server->set_read_timeout(options.client_timeout_s, 0);
    server->set_write_timeout(options.client_timeout_s, 0);
    server->set_payload_max_length(64 * 1024);  // bytes; no endpoint reads a body
    server->set_pre_routing_handler(RefuseOthers);
    server->Get(
        "/metrics", [render = options.render](const httplib::Request&, httplib::Response& res) {
          std::string text;
          try {
            text = render();
          } catch (const std::exception& e) {
            res.status = 500;
            res.set_content(std::string("metrics render failed: ") + e.what() + "\n", kPlainText);
            return;
          } catch (...) {
            res.status = 500;
            res.set_content("metrics render failed\n", kPlainText);
            return;
          }
          res.set_content(text, kMetricsContentType);
        });
    server->Get("/healthz", [](const httplib::Request&, httplib::Response& res) {
      res.set_content("ok", kPlainText);
    });

    errno = 0;
    int bound_port = port;
    if (port == 0) {
      bound_port = server->bind_to_any_port(host);
    } else if (!server->bind_to_port(host, port)) {
      bound_port = -1;
    }
    if (bound_port <= 0) {
      const int err = errno;
      return Status::Unavailable("metrics server cannot listen on " + options.listen +
                                 (err != 0 ? std::string(": ") + std::strerror(err) : ""));
    }

    std::unique_ptr<MetricsHttpServer> self(
        new MetricsHttpServer(std::move(server), options.listen, bound_port));
    self->thread_ = std::thread([s = self.get()] { s->Serve(); });
    // httplib's stop() does nothing until the accept loop has begun, so Stop
    // may only be called after that; the loop begins at once.
    while (!self->server_->is_running() && !self->serve_returned_.load()) {
      std::this_thread::yield();
    }
    if (self->serve_returned_.load()) {
      return Status::Unavailable("metrics server on " + options.listen + " stopped at start");
    }
    return self;
  } catch (const std::exception& e) {
    return Status::ResourceExhausted("metrics server on " + options.listen +
                                     " failed to start: " + e.what());
  }
}

MetricsHttpServer::MetricsHttpServer(std::unique_ptr<httplib::Server> server, std::string listen,
                                     int bound_port)
    : server_(std::move(server)), listen_(std::move(listen)), bound_port_(bound_port) {}

MetricsHttpServer::~MetricsHttpServer() { Stop(); }

void MetricsHttpServer::Serve() {
  // A write to a client that hung up raises SIGPIPE in the writing thread
  // (httplib does not pass MSG_NOSIGNAL). httplib checks the peer before each
  // write and its Server constructor ignores SIGPIPE process-wide, but a
  // hang-up between check and write, once anything restores the default
  // disposition, would kill the daemon; blocked here, it only fails the write.
  // The workers httplib starts from this thread inherit the mask.
  sigset_t pipe;
  sigemptyset(&pipe);
  sigaddset(&pipe, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe, nullptr);
  std::string error;
  try {
    if (!server_->listen_after_bind()) error = "accept failed";
  } catch (const std::exception& e) {
    error = e.what();
  }
  serve_returned_ = true;
  if (!error.empty() && !stopping_.load()) {
    LogError("metrics_http_stopped", LogFields().Add("addr", listen_).Add("error", error));
  }
}

void MetricsHttpServer::Stop() {
  std::lock_guard<std::mutex> lock(stop_mu_);
  if (!thread_.joinable()) return;
  stopping_ = true;
  server_->stop();
  thread_.join();
}

}  // namespace kvtier
