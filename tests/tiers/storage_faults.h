// Storage faults for tests: a small tmpfs to fill (root only), a filler file
// written by another process until the file system is full, and byte flips
// in RocksDB SST files. Header-only; used by tiers_test, cache_test and
// tools_test.
#pragma once

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

namespace kvtier::testing_faults {

// A tmpfs of `bytes` mounted at a fresh directory under /tmp, unmounted (and
// the directory removed) by the destructor, also when a test fails.
class TmpfsMount {
 public:
  explicit TmpfsMount(uint64_t bytes) {
    dir_ = std::filesystem::temp_directory_path() /
           ("kvtier_tmpfs_" + std::to_string(getpid()) + "_" + std::to_string(counter_++));
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
    std::filesystem::create_directories(dir_, ec);
    const std::string opts = "size=" + std::to_string(bytes);
    if (mount("tmpfs", dir_.c_str(), "tmpfs", 0, opts.c_str()) != 0) {
      error_ =
          "mount -t tmpfs -o " + opts + " tmpfs " + dir_.string() + ": " + std::strerror(errno);
    } else {
      mounted_ = true;
    }
  }
  ~TmpfsMount() {
    if (mounted_) (void)umount2(dir_.c_str(), MNT_DETACH);
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  TmpfsMount(const TmpfsMount&) = delete;
  TmpfsMount& operator=(const TmpfsMount&) = delete;

  bool ok() const { return mounted_; }
  const std::string& error() const { return error_; }
  const std::filesystem::path& dir() const { return dir_; }

 private:
  static inline int counter_ = 0;
  std::filesystem::path dir_;
  bool mounted_ = false;
  std::string error_;
};

// Why a tmpfs test cannot run here, or "" when it can. Only root may mount;
// CI runs as root, so a skip there is visible in its log.
inline std::string TmpfsSkipReason() {
  if (geteuid() != 0) {
    return "mounting a tmpfs needs root (uid " + std::to_string(geteuid()) +
           "); CI runs this test as root";
  }
  return "";
}

// Writes `path` from a child process until the file system is full (or
// `max_bytes` are written); returns the bytes written. The child is another
// process, as an unrelated program filling the disk would be.
inline uint64_t FillFromAnotherProcess(const std::string& path, uint64_t max_bytes = UINT64_MAX) {
  int pipefd[2];
  if (pipe(pipefd) != 0) return 0;
  const pid_t pid = fork();
  if (pid == 0) {
    close(pipefd[0]);
    uint64_t written = 0;
    const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
      std::vector<char> chunk(64 << 10, 'f');
      while (written < max_bytes) {
        const size_t want =
            static_cast<size_t>(std::min<uint64_t>(chunk.size(), max_bytes - written));
        const ssize_t n = write(fd, chunk.data(), want);
        if (n <= 0) break;  // ENOSPC: full
        written += static_cast<uint64_t>(n);
      }
      close(fd);
    }
    (void)!write(pipefd[1], &written, sizeof(written));
    _exit(0);
  }
  close(pipefd[1]);
  uint64_t written = 0;
  if (pid > 0) {
    (void)!read(pipefd[0], &written, sizeof(written));
    int status = 0;
    waitpid(pid, &status, 0);
  }
  close(pipefd[0]);
  return written;
}

// Flips 8 bytes at the first occurrence of `pattern` in each *.sst file under
// `dir` (not recursive); returns how many files were changed. With
// compression off, a pattern taken from a stored key or value lands in a
// data block, whose checksum then fails.
inline int CorruptSstFilesAt(const std::filesystem::path& dir, const std::string& pattern) {
  int changed = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    if (e.path().extension() != ".sst") continue;
    std::string bytes;
    {
      std::ifstream in(e.path(), std::ios::binary);
      bytes.assign(std::istreambuf_iterator<char>(in), {});
    }
    const size_t at = bytes.find(pattern);
    if (at == std::string::npos) continue;
    for (size_t i = at; i < at + 8 && i < bytes.size(); ++i) bytes[i] ^= 0x5a;
    std::ofstream out(e.path(), std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    ++changed;
  }
  return changed;
}

}  // namespace kvtier::testing_faults
