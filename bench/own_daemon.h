// OwnDaemon: a kvtierd a bench starts for itself, on a loopback port it
// picks and a temporary data directory, stopped with SIGTERM and removed at
// the end. Its stderr goes to a log file in that directory, printed if it
// fails to start.
#pragma once

#include <string>
#include <vector>

namespace kvtier::bench {

class OwnDaemon {
 public:
  ~OwnDaemon();
  // Starts `bin` ("" = the kvtierd beside this binary) with --listen
  // 127.0.0.1:0, --data-dir and `args`; `tag` names the temporary directory.
  // False (with the daemon's log on stderr) when it does not start.
  bool Start(const std::string& bin, const std::vector<std::string>& args, const std::string& tag);

  const std::string& address() const { return address_; }
  const std::string& dir() const { return dir_; }
  int pid() const { return pid_; }

 private:
  int pid_ = -1;
  std::string dir_;
  std::string address_;
};

}  // namespace kvtier::bench
