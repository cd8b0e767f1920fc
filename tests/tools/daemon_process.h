// DaemonProcess: runs the real kvtierd binary as a child process for
// integration tests, on a loopback port it picks itself (--listen
// 127.0.0.1:0), and reads the bound address from its first stdout line.
#pragma once

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
std::string TempDir(const std::string& tag);

}  // namespace kvtier::testing
