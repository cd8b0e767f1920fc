#include "tests/server/daemon_process.h"

#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>

namespace kvtier::testing {
namespace {

int Decode(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

// fork + exec of bin/<name>, stdout to a pipe whose read end is returned.
int Spawn(const std::string& name, const std::vector<std::string>& args, int* read_fd) {
  int fds[2];
  if (pipe(fds) != 0) return -1;
  const std::string path = BinDir() + "/" + name;
  std::vector<std::string> argv_s = {path};
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);
  int pid = fork();
  if (pid == 0) {
    dup2(fds[1], STDOUT_FILENO);
    close(fds[0]);
    close(fds[1]);
    execv(path.c_str(), argv.data());
    _exit(127);
  }
  close(fds[1]);
  *read_fd = fds[0];
  return pid;
}

}  // namespace

// $KVTIER_TEST_BIN_DIR runs the tests against binaries elsewhere (e.g. a copy
// taken while the build directory is being rebuilt).
std::string BinDir() {
  const char* dir = std::getenv("KVTIER_TEST_BIN_DIR");
  return dir != nullptr && *dir != '\0' ? dir : KVTIER_BIN_DIR;
}

std::string TempDir(const std::string& tag) {
  auto dir =
      std::filesystem::temp_directory_path() / ("kvtier_" + tag + "_" + std::to_string(getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir.string();
}

DaemonProcess::~DaemonProcess() {
  if (pid_ > 0) Stop(SIGKILL);
}

bool DaemonProcess::Start(const std::string& data_dir, const std::vector<std::string>& args) {
  std::vector<std::string> all = {"--listen", "127.0.0.1:0", "--data-dir", data_dir};
  // A small flash log unless the test sizes its own: tests must not take a
  // quarter of the disk.
  if (std::find(args.begin(), args.end(), "--flash-bytes") == args.end()) {
    all.insert(all.end(), {"--flash-bytes", "64M", "--flash-region-bytes", "4M"});
  }
  all.insert(all.end(), args.begin(), args.end());
  int fd = -1;
  pid_ = Spawn("kvtierd", all, &fd);
  if (pid_ < 0) return false;
  // Read the first line. The 60 s bound only keeps a broken daemon from
  // hanging the suite; nothing here depends on how fast it starts.
  std::string line;
  char c;
  pollfd p{fd, POLLIN, 0};
  while (poll(&p, 1, 60'000) > 0 && read(fd, &c, 1) == 1 && c != '\n') line += c;
  close(fd);
  const std::string prefix = "kvtierd serving on ";
  if (line.rfind(prefix, 0) != 0) {
    int status = 0;
    waitpid(pid_, &status, 0);
    exit_code_ = Decode(status);
    pid_ = -1;
    return false;
  }
  address_ = line.substr(prefix.size());
  return true;
}

int DaemonProcess::Stop(int signal) {
  if (pid_ <= 0) return exit_code_;
  kill(pid_, signal);
  int status = 0;
  waitpid(pid_, &status, 0);
  pid_ = -1;
  exit_code_ = Decode(status);
  return exit_code_;
}

int RunTool(const std::string& name, const std::vector<std::string>& args, std::string* out) {
  int fd = -1;
  int pid = Spawn(name, args, &fd);
  if (pid < 0) return -1;
  out->clear();
  char buf[4096];
  ssize_t n;
  while ((n = read(fd, buf, sizeof buf)) > 0) out->append(buf, static_cast<size_t>(n));
  close(fd);
  int status = 0;
  waitpid(pid, &status, 0);
  return Decode(status);
}

}  // namespace kvtier::testing
