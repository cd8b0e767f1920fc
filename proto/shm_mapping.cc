// ShmMapping: the client's side of kvtierd's shared-memory handshake
// (server/shm_regions.h).
#include <grpcpp/grpcpp.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <sstream>

#include "proto/client.h"
#include "proto/status_codes.h"

namespace kvtier {

Result<std::unique_ptr<ShmMapping>> ShmMapping::Open(const std::string& socket_path, uint64_t bytes,
                                                     const std::string& api_key) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socket_path.empty() || socket_path.size() >= sizeof addr.sun_path) {
    return Status::InvalidArgument("bad socket path '" + socket_path + "'");
  }
  std::memcpy(addr.sun_path, socket_path.c_str(), socket_path.size() + 1);
  const int sock = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (sock < 0) return Status::IOError(std::string("socket: ") + std::strerror(errno));
  auto fail = [&](Status s) {
    ::close(sock);
    return s;
  };
  if (::connect(sock, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    return fail(
        Status::IOError("cannot connect to '" + socket_path + "': " + std::strerror(errno)));
  }
  const std::string hello =
      "KVTIER-SHM/1 " + std::to_string(bytes) + " " + (api_key.empty() ? "-" : api_key) + "\n";
  if (::send(sock, hello.data(), hello.size(), MSG_NOSIGNAL) !=
      static_cast<ssize_t>(hello.size())) {
    return fail(Status::IOError("cannot send the handshake"));
  }
  // The answer is one line, with the memfd on its first bytes.
  std::string line;
  int fd = -1;
  while (line.find('\n') == std::string::npos && line.size() < 1024) {
    char buf[256];
    iovec iov{buf, sizeof buf};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    const ssize_t n = ::recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
    if (n <= 0) break;
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS && fd < 0) {
        std::memcpy(&fd, CMSG_DATA(c), sizeof(int));
      }
    }
    line.append(buf, static_cast<size_t>(n));
  }
  std::istringstream in(line.substr(0, line.find('\n')));
  std::string word, id;
  uint64_t size = 0;
  if (!(in >> word) || word != "OK" || !(in >> id >> size) || fd < 0 || size != bytes) {
    if (fd >= 0) ::close(fd);
    // "ERR <code> <why>": the code as a gRPC status, so it maps as a call's would.
    std::istringstream err(line.substr(0, line.find('\n')));
    std::string tag, code;
    if (err >> tag >> code && tag == "ERR") {
      std::string why;
      std::getline(err >> std::ws, why);
      for (int c = 0; c <= grpc::StatusCode::UNAUTHENTICATED; ++c) {
        const auto status = static_cast<grpc::StatusCode>(c);
        if (code == GrpcCodeName(status)) {
          return fail(FromGrpcStatus(grpc::Status(status, "shared-memory region refused: " + why)));
        }
      }
    }
    return fail(Status::Unavailable("kvtierd answered the shared-memory handshake with '" +
                                    line.substr(0, line.find('\n')) + "'"));
  }
  // kvtierd allocated the region's memory; MAP_POPULATE maps it all now, so
  // the first blocks read through it pay no page faults.
  void* base = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
  ::close(fd);
  if (base == MAP_FAILED) {
    return fail(Status::IOError(std::string("mmap: ") + std::strerror(errno)));
  }
  return std::unique_ptr<ShmMapping>(
      new ShmMapping(sock, id, static_cast<std::byte*>(base), static_cast<size_t>(size)));
}

ShmMapping::~ShmMapping() {
  ::munmap(base_, size_);
  ::close(sock_);  // the daemon releases the region
}

}  // namespace kvtier
