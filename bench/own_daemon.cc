#include "bench/own_daemon.h"

#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>

namespace kvtier::bench {

OwnDaemon::~OwnDaemon() {
  if (pid_ > 0) {
    kill(pid_, SIGTERM);
    int status = 0;
    waitpid(pid_, &status, 0);
  }
  if (!dir_.empty()) std::filesystem::remove_all(dir_);
}

bool OwnDaemon::Start(const std::string& bin_arg, const std::vector<std::string>& args,
                      const std::string& tag) {
  std::string bin = bin_arg;
  if (bin.empty()) {
    bin = (std::filesystem::read_symlink("/proc/self/exe").parent_path() / "kvtierd").string();
  }
  std::string tmpl = "/tmp/kvtier_" + tag + "_XXXXXX";
  if (mkdtemp(tmpl.data()) == nullptr) return false;
  dir_ = tmpl;
  std::vector<std::string> argv_s = {bin, "--listen", "127.0.0.1:0", "--data-dir", dir_ + "/data"};
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& s : argv_s) argv.push_back(s.data());
  argv.push_back(nullptr);
  int out[2];
  if (pipe(out) != 0) return false;
  const std::string log = dir_ + "/kvtierd.log";
  pid_ = fork();
  if (pid_ == 0) {
    dup2(out[1], STDOUT_FILENO);
    FILE* err = std::fopen(log.c_str(), "w");
    if (err != nullptr) dup2(fileno(err), STDERR_FILENO);
    close(out[0]);
    close(out[1]);
    execv(argv_s[0].c_str(), argv.data());
    _exit(127);
  }
  close(out[1]);
  // The first line names the bound address; 60 s only keeps a broken
  // daemon from hanging the bench.
  std::string line;
  char c;
  pollfd p{out[0], POLLIN, 0};
  while (poll(&p, 1, 60'000) > 0 && read(out[0], &c, 1) == 1 && c != '\n') line += c;
  close(out[0]);
  const std::string prefix = "kvtierd serving on ";
  if (line.rfind(prefix, 0) != 0) {
    std::fprintf(stderr, "%s did not start (its log: %s)\n", bin.c_str(), log.c_str());
    std::ifstream in(log);
    std::fprintf(stderr, "%s", std::string(std::istreambuf_iterator<char>(in), {}).c_str());
    return false;
  }
  address_ = line.substr(prefix.size());
  return true;
}

}  // namespace kvtier::bench
