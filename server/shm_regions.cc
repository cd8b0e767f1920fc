#include "server/shm_regions.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <sstream>
#include <vector>

#include "server/random_id.h"

namespace kvtier {
namespace {

constexpr size_t kMaxLineBytes = 1024;
// Connections that have not finished their handshake, at most; and how long
// one may take.
constexpr size_t kMaxPending = 64;
constexpr auto kHandshakeTimeout = std::chrono::seconds(5);

Status Errno(const std::string& what) {
  return Status::IOError(what + ": " + std::strerror(errno));
}

// Sends `line` with `fd` attached (fd < 0: none). Best effort: a client that
// does not read its answer loses its region when it is closed.
bool SendLine(int sock, const std::string& line, int fd) {
  iovec iov{const_cast<char*>(line.data()), line.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  if (fd >= 0) {
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(c), &fd, sizeof(int));
  }
  return ::sendmsg(sock, &msg, MSG_NOSIGNAL | MSG_DONTWAIT) == static_cast<ssize_t>(line.size());
}

}  // namespace

ShmRegion::~ShmRegion() {
  if (base_ == nullptr) return;
  // Free the pages, not only this mapping: the client may keep the memfd
  // (and its mapping) open after it let the region go, and the daemon has
  // stopped counting them. Its mapping reads zeros from now on.
  (void)::madvise(base_, size_, MADV_REMOVE);
  ::munmap(base_, size_);
}

std::span<std::byte> ShmRegion::Range(uint64_t offset, uint64_t bytes) const {
  if (offset > size_ || bytes > size_ - offset) return {};
  return {base_ + offset, static_cast<size_t>(bytes)};
}

struct ShmRegistry::Conn {
  int fd = -1;
  std::string line;       // the handshake so far
  std::string region_id;  // after the handshake
  std::chrono::steady_clock::time_point since;
};

Result<std::unique_ptr<ShmRegistry>> ShmRegistry::Open(const std::string& socket_path,
                                                       const ShmLimits& limits,
                                                       const Authenticator& auth) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socket_path.empty() || socket_path.size() >= sizeof addr.sun_path) {
    return Status::InvalidArgument("the shared-memory socket path must be 1.." +
                                   std::to_string(sizeof addr.sun_path - 1) + " bytes: '" +
                                   socket_path + "'");
  }
  if (limits.max_region_bytes == 0 || limits.max_regions == 0 ||
      limits.max_total_bytes < limits.max_region_bytes) {
    return Status::InvalidArgument(
        "shared-memory limits must be positive, the total at least "
        "one region");
  }
  std::memcpy(addr.sun_path, socket_path.c_str(), socket_path.size() + 1);
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return Errno("socket(AF_UNIX)");
  // A socket file left by a daemon that died is replaced; anything else at
  // that path is not ours to remove.
  struct stat st {};
  if (::lstat(socket_path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      ::close(fd);
      return Status::InvalidArgument("'" + socket_path + "' exists and is not a socket");
    }
    ::unlink(socket_path.c_str());
  }
  const mode_t old_mask = ::umask(0177);  // the socket file is created 0600
  const int bound = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  ::umask(old_mask);
  if (bound != 0 || ::listen(fd, 64) != 0) {
    Status s = Errno("cannot listen on '" + socket_path + "'");
    ::close(fd);
    return s;
  }
  const int wake = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wake < 0) {
    Status s = Errno("eventfd");
    ::close(fd);
    ::unlink(socket_path.c_str());
    return s;
  }
  std::unique_ptr<ShmRegistry> r(new ShmRegistry(socket_path, fd, wake, limits, auth));
  r->thread_ = std::thread([p = r.get()] { p->Serve(); });
  return r;
}

ShmRegistry::ShmRegistry(std::string path, int listen_fd, int wake_fd, const ShmLimits& limits,
                         const Authenticator& auth)
    : path_(std::move(path)),
      listen_fd_(listen_fd),
      wake_fd_(wake_fd),
      limits_(limits),
      auth_(auth) {}

ShmRegistry::~ShmRegistry() {
  const uint64_t one = 1;
  (void)!::write(wake_fd_, &one, sizeof one);
  if (thread_.joinable()) thread_.join();
  for (auto& [fd, conn] : conns_) ::close(fd);
  ::close(listen_fd_);
  ::close(wake_fd_);
  ::unlink(path_.c_str());
}

Result<std::shared_ptr<ShmRegion>> ShmRegistry::Find(const std::string& tenant,
                                                     const std::string& id) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = regions_.find(id);
  if (it == regions_.end() || it->second->tenant() != tenant) {
    return Status::NotFound("no shared-memory region " + id + " (closed, or never opened)");
  }
  return it->second;
}

ShmStats ShmRegistry::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void ShmRegistry::CloseConn(int fd) {
  auto it = conns_.find(fd);
  if (it == conns_.end()) return;
  if (!it->second->region_id.empty()) {
    std::lock_guard<std::mutex> lock(mu_);
    auto r = regions_.find(it->second->region_id);
    if (r != regions_.end()) {
      --stats_.open_regions;
      stats_.open_bytes -= r->second->size();
      regions_.erase(r);  // unmapped once no call uses it
    }
  }
  ::close(fd);
  conns_.erase(it);
}

bool ShmRegistry::Handshake(Conn& conn, const std::string& line) {
  // "ERR <gRPC code name> <why>": clients map the code to their error types.
  auto refuse = [&](const char* code, const std::string& why) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++stats_.refused;
    }
    (void)SendLine(conn.fd, std::string("ERR ") + code + " " + why + "\n", -1);
    return false;
  };
  std::istringstream in(line);
  std::string magic, key, extra;
  uint64_t bytes = 0;
  if (!(in >> magic >> bytes >> key) || (in >> extra) || magic != "KVTIER-SHM/1") {
    return refuse("INVALID_ARGUMENT", "expected \"KVTIER-SHM/1 <bytes> <api-key or ->\"");
  }
  Principal caller;
  grpc::Status auth = auth_.AuthenticateKey(key == "-" ? "" : key, "", "the handshake", &caller);
  if (!auth.ok()) return refuse("UNAUTHENTICATED", auth.error_message());
  if (bytes == 0 || bytes > limits_.max_region_bytes) {
    return refuse("INVALID_ARGUMENT", "a region of " + std::to_string(bytes) +
                                          " bytes is outside 1.." +
                                          std::to_string(limits_.max_region_bytes));
  }
  bool full = false, tenant_full = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    full = regions_.size() >= limits_.max_regions ||
           stats_.open_bytes + bytes > limits_.max_total_bytes;
    size_t tenant_regions = 0;
    uint64_t tenant_bytes = 0;
    for (const auto& [id, r] : regions_) {
      if (r->tenant() != caller.tenant) continue;
      ++tenant_regions;
      tenant_bytes += r->size();
    }
    const size_t max_regions =
        limits_.max_tenant_regions > 0 ? limits_.max_tenant_regions : limits_.max_regions / 2;
    const uint64_t max_bytes =
        limits_.max_tenant_bytes > 0 ? limits_.max_tenant_bytes : limits_.max_total_bytes / 2;
    tenant_full =
        tenant_regions >= std::max<size_t>(max_regions, 1) || tenant_bytes + bytes > max_bytes;
  }
  if (full)
    return refuse("RESOURCE_EXHAUSTED", "kvtierd holds its limit of shared memory; retry later");
  if (tenant_full) {
    return refuse("RESOURCE_EXHAUSTED",
                  "tenant " + caller.tenant + " holds its share of shared memory; close a region");
  }
  const int mfd = ::memfd_create("kvtier-block-shm", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (mfd < 0) return refuse("INTERNAL", std::string("memfd_create: ") + std::strerror(errno));
  // The region's memory is allocated now, all of it: a memfd page first
  // touched by a write is allocated then, and one the system cannot give
  // would kill the daemon with SIGBUS in the middle of a BatchGet. Here it is
  // a clear refusal instead. MAP_POPULATE maps every page up front too, so
  // the first load through the region pays no page faults (they cost more
  // than the copy: measured 40 MiB in ~30 ms on first touch, ~6 ms after).
  void* base = MAP_FAILED;
  if (::ftruncate(mfd, static_cast<off_t>(bytes)) != 0 ||
      ::fallocate(mfd, 0, 0, static_cast<off_t>(bytes)) != 0) {
    const std::string why = std::strerror(errno);
    ::close(mfd);
    return refuse("RESOURCE_EXHAUSTED",
                  "cannot allocate a region of " + std::to_string(bytes) + " bytes: " + why);
  }
  if (::fcntl(mfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) == 0) {
    base = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, mfd, 0);
  }
  if (base == MAP_FAILED) {
    const std::string why = std::strerror(errno);
    ::close(mfd);
    return refuse("INTERNAL", "cannot make the region: " + why);
  }
  auto region = std::make_shared<ShmRegion>(NewRandomId(), caller.tenant,
                                            static_cast<std::byte*>(base), bytes);
  const std::string answer = "OK " + region->id() + " " + std::to_string(bytes) + "\n";
  // Registered before the client hears of it: a client may call BatchGet
  // the moment it reads its answer. A failed send closes the connection,
  // and CloseConn takes the region back out.
  {
    std::lock_guard<std::mutex> lock(mu_);
    conn.region_id = region->id();
    ++stats_.open_regions;
    stats_.open_bytes += bytes;
    regions_.emplace(region->id(), std::move(region));
  }
  const bool sent = SendLine(conn.fd, answer, mfd);
  ::close(mfd);  // the mapping and the client's copy keep the memory
  if (!sent) return false;
  std::lock_guard<std::mutex> lock(mu_);
  ++stats_.opened;
  return true;
}

void ShmRegistry::Serve() {
  std::vector<pollfd> fds;
  for (;;) {
    fds.clear();
    fds.push_back({wake_fd_, POLLIN, 0});
    fds.push_back({listen_fd_, POLLIN, 0});
    for (auto& [fd, conn] : conns_) fds.push_back({fd, POLLIN, 0});
    const int n = ::poll(fds.data(), fds.size(), 1000);
    if (n < 0 && errno != EINTR) return;
    if (fds[0].revents != 0) return;  // stopping
    const auto now = std::chrono::steady_clock::now();
    for (size_t i = 2; i < fds.size(); ++i) {
      auto it = conns_.find(fds[i].fd);
      if (it == conns_.end()) continue;
      Conn& conn = *it->second;
      // A handshake has kHandshakeTimeout from the connection to its line,
      // however the bytes trickle in (one a second kept it open for 1 KiB).
      if (conn.region_id.empty() && now - conn.since > kHandshakeTimeout) {
        CloseConn(fds[i].fd);
        continue;
      }
      if (fds[i].revents == 0) continue;
      char buf[512];
      const ssize_t got = ::recv(conn.fd, buf, sizeof buf, MSG_DONTWAIT);
      if (got < 0 && (errno == EAGAIN || errno == EINTR)) continue;
      // EOF or an error: the client is gone, and its region with it. After
      // the handshake the client has nothing more to say; bytes are ignored.
      if (got <= 0) {
        CloseConn(fds[i].fd);
        continue;
      }
      if (!conn.region_id.empty()) continue;
      conn.line.append(buf, static_cast<size_t>(got));
      const size_t nl = conn.line.find('\n');
      if (nl == std::string::npos) {
        if (conn.line.size() > kMaxLineBytes) CloseConn(fds[i].fd);
        continue;
      }
      if (!Handshake(conn, conn.line.substr(0, nl))) CloseConn(fds[i].fd);
    }
    if (fds[1].revents != 0) {
      for (;;) {
        const int c = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (c < 0) break;
        size_t pending = 0;
        for (auto& [fd, conn] : conns_) pending += conn->region_id.empty() ? 1 : 0;
        if (pending >= kMaxPending || conns_.size() >= limits_.max_regions + kMaxPending) {
          (void)SendLine(c, "ERR RESOURCE_EXHAUSTED too many connections\n", -1);
          ::close(c);
          continue;
        }
        auto conn = std::make_unique<Conn>();
        conn->fd = c;
        conn->since = now;
        conns_.emplace(c, std::move(conn));
      }
    }
  }
}

}  // namespace kvtier
