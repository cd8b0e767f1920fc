// RunCli: runs one of the CLIs from the build's bin/ (BinDir(), so
// $KVTIER_TEST_BIN_DIR applies) as a child process and gathers everything it
// prints, stderr included, since the CLIs report their errors there.
#pragma once

#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "tests/server/daemon_process.h"

namespace kvtier::testing {

// Runs bin/`name` with `args` (as they are: no shell); returns its exit
// status (-1 when it did not exit), with its stdout and stderr, as they
// came, in *out.
inline int RunCli(const std::string& name, const std::vector<std::string>& args, std::string* out) {
  const std::string path = BinDir() + "/" + name;
  std::vector<std::string> argv_s = {path};
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);
  int fds[2];
  if (pipe(fds) != 0) return -1;
  const pid_t pid = fork();
  if (pid < 0) {
    close(fds[0]);
    close(fds[1]);
    return -1;
  }
  if (pid == 0) {
    dup2(fds[1], STDOUT_FILENO);
    dup2(fds[1], STDERR_FILENO);
    close(fds[0]);
    close(fds[1]);
    execv(path.c_str(), argv.data());
    _exit(127);
  }
  close(fds[1]);
  out->clear();
  char buf[4096];
  ssize_t n;
  while ((n = read(fds[0], buf, sizeof buf)) > 0) out->append(buf, static_cast<size_t>(n));
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

}  // namespace kvtier::testing
