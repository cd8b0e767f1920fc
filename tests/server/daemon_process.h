// DaemonProcess: runs the real kvtierd binary as a child process for
// integration tests, on a loopback port it picks itself (--listen
// 127.0.0.1:0), and reads the bound address from its first stdout line.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace kvtier::testing {

class DaemonProcess {
 public:
  ~DaemonProcess();
  // Starts kvtierd with `args` (after --listen 127.0.0.1:0 and --data-dir DIR)
  // and waits for its "kvtierd serving on ADDR" line. Returns false, with its
  // exit status in exit_code(), if it exited instead.
  bool Start(const std::string& data_dir, const std::vector<std::string>& args = {});
  // Sends `signal` and waits for the process; returns its exit status
  // (128 + signal number if it was killed by one).
  int Stop(int signal);

  const std::string& address() const { return address_; }
  int exit_code() const { return exit_code_; }
  int pid() const { return pid_; }

 private:
  int pid_ = -1;
  int exit_code_ = -1;
  std::string address_;
};

// Runs a binary from the build's bin/ with args; returns its exit status and
// its stdout in *out.
int RunTool(const std::string& name, const std::vector<std::string>& args, std::string* out);

std::string BinDir();

// A string's bytes, as the client's Put takes them.
inline std::span<const std::byte> AsBytes(const std::string& s) {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

// n deterministic pseudo-random bytes, different for each seed.
inline std::string Bytes(size_t n, uint32_t seed) {
  std::string s(n, '\0');
  uint32_t x = seed * 2654435761u + 1;
  for (auto& c : s) {
    x = x * 1664525u + 1013904223u;
    c = static_cast<char>(x >> 24);
  }
  return s;
}
std::string TempDir(const std::string& tag);

}  // namespace kvtier::testing
