#include "server/connection_listener.h"

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>

#include "common/log.h"

namespace kvtier {
namespace {

std::string ErrnoText(int err) { return std::strerror(err); }

// Splits "host:port" or "[v6]:port".
bool SplitHostPort(const std::string& address, std::string* host, std::string* port) {
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos || colon + 1 == address.size()) return false;
  *host = address.substr(0, colon);
  *port = address.substr(colon + 1);
  if (host->size() >= 2 && host->front() == '[' && host->back() == ']') {
    *host = host->substr(1, host->size() - 2);
  }
  return !host->empty() &&
         std::all_of(port->begin(), port->end(), [](char c) { return c >= '0' && c <= '9'; });
}

}  // namespace

size_t ConnectionListener::CapUnderLimit(size_t wanted, uint64_t nofile) {
  const uint64_t reserve = std::min<uint64_t>(512, nofile / 4);
  const uint64_t room = nofile > reserve ? nofile - reserve : 1;
  return static_cast<size_t>(std::max<uint64_t>(1, std::min<uint64_t>(wanted, room)));
}

uint64_t RaiseDescriptorLimit(uint64_t ceiling) {
  rlimit lim{};
  if (::getrlimit(RLIMIT_NOFILE, &lim) != 0) return 1024;
  const rlim_t target = std::min<rlim_t>(lim.rlim_max, static_cast<rlim_t>(ceiling));
  if (lim.rlim_cur < target) {
    rlimit raised = lim;
    raised.rlim_cur = target;
    if (::setrlimit(RLIMIT_NOFILE, &raised) == 0) lim = raised;
  }
  return static_cast<uint64_t>(lim.rlim_cur);
}

Result<std::unique_ptr<ConnectionListener>> ConnectionListener::Bind(
    const ListenerOptions& options) {
  std::string host, port;
  if (!SplitHostPort(options.address, &host, &port)) {
    return Status::InvalidArgument("listen address \"" + options.address + "\" is not HOST:PORT");
  }
  if (options.max_connections == 0) {
    return Status::InvalidArgument("max_connections must be at least 1");
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* found = nullptr;
  if (int rc = ::getaddrinfo(host.c_str(), port.c_str(), &hints, &found); rc != 0) {
    return Status::InvalidArgument("cannot resolve listen address " + options.address + ": " +
                                   ::gai_strerror(rc));
  }
  std::unique_ptr<ConnectionListener> l(new ConnectionListener(options));
  std::string why = "no address";
  for (addrinfo* a = found; a != nullptr && l->listen_fd_ < 0; a = a->ai_next) {
    const int fd =
        ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, a->ai_protocol);
    if (fd < 0) {
      why = ErrnoText(errno);
      continue;
    }
    // SO_REUSEADDR only lets a restarted daemon bind past TIME_WAIT; unlike
    // SO_REUSEPORT it never lets two listeners share the port.
    const int one = 1;
    (void)::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (::bind(fd, a->ai_addr, a->ai_addrlen) != 0 || ::listen(fd, options.backlog) != 0) {
      why = ErrnoText(errno);
      ::close(fd);
      continue;
    }
    l->listen_fd_ = fd;
  }
  ::freeaddrinfo(found);
  if (l->listen_fd_ < 0) {
    return Status::Unavailable("cannot listen on " + options.address + ": " + why);
  }
  sockaddr_storage bound{};
  socklen_t len = sizeof(bound);
  if (::getsockname(l->listen_fd_, reinterpret_cast<sockaddr*>(&bound), &len) == 0) {
    l->port_ =
        ntohs(bound.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port
                                          : reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  }
  l->wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  l->spare_fd_ = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (l->wake_fd_ < 0) return Status::IOError("eventfd: " + ErrnoText(errno));
  return l;
}

ConnectionListener::~ConnectionListener() {
  Stop();
  if (wake_fd_ >= 0) ::close(wake_fd_);
  if (spare_fd_ >= 0) ::close(spare_fd_);
}

void ConnectionListener::Start(std::function<void(int fd)> serve) {
  serve_ = std::move(serve);
  thread_ = std::thread([this] { Loop(); });
}

void ConnectionListener::Stop() {
  if (stopping_.exchange(true)) return;
  const uint64_t one = 1;
  if (wake_fd_ >= 0) (void)!::write(wake_fd_, &one, sizeof(one));
  if (thread_.joinable()) thread_.join();
  if (listen_fd_ >= 0) ::close(listen_fd_);
  listen_fd_ = -1;
}

ListenerStats ConnectionListener::stats() {
  std::lock_guard<std::mutex> lock(mu_);
  CountOpenLocked();
  return stats_;
}

void ConnectionListener::Loop() {
  while (!stopping_.load()) {
    pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {wake_fd_, POLLIN, 0}};
    const int n = ::poll(fds, 2, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      // poll itself cannot fail for want of descriptors; anything else is
      // unexpected: back off rather than spin.
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      continue;
    }
    if (fds[1].revents != 0) break;
    if (fds[0].revents & POLLIN) AcceptOne();
  }
}

size_t ConnectionListener::CountOpenLocked() {
  // A descriptor the server has closed is gone or now names another file:
  // either way its (device, inode) no longer matches.
  std::erase_if(open_, [](const Tracked& t) {
    struct stat st {};
    return ::fstat(t.fd, &st) != 0 || st.st_dev != t.dev || st.st_ino != t.ino;
  });
  stats_.open = open_.size();
  return open_.size();
}

void ConnectionListener::AcceptOne() {
  const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
  if (fd < 0) {
    const int err = errno;
    if (err == EAGAIN || err == EWOULDBLOCK || err == EINTR || err == ECONNABORTED) return;
    if (err == EMFILE || err == ENFILE) {
      // The pending connection stays queued and keeps the socket readable:
      // take it with the spare descriptor's slot and close it, so the
      // client hears at once and the loop does not spin, then back off.
      uint64_t count;
      {
        std::lock_guard<std::mutex> lock(mu_);
        count = ++stats_.descriptor_exhausted;
      }
      if (spare_fd_ >= 0) {
        ::close(spare_fd_);
        const int dropped = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
        if (dropped >= 0) ::close(dropped);
        spare_fd_ = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
      }
      if ((count & (count - 1)) == 0) {  // 1, 2, 4, 8, ...: logged, not flooded
        LogWarn("kvtierd_descriptors_exhausted",
                LogFields().Add("error", ErrnoText(err)).Add("times", count));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      return;
    }
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.accept_errors;
    return;
  }
  struct stat st {};
  (void)::fstat(fd, &st);
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (open_.size() >= options_.max_connections && CountOpenLocked() >= options_.max_connections) {
      ++stats_.refused_over_limit;
      ::close(fd);
      return;
    }
    open_.push_back({fd, st.st_dev, st.st_ino});
    ++stats_.accepted;
    stats_.open = open_.size();
  }
  const int one = 1;
  (void)::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  serve_(fd);
}

}  // namespace kvtier
