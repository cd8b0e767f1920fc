// Runs crash_writer in a child process, reads its acknowledgements until
// `acks` blocks are acknowledged, and SIGKILLs it mid-stream. Returns the
// highest acknowledged block id (-1 if none).
#pragma once

#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdint>
#include <string>

#include "tests/tiers/crash_payload.h"
#include "tiers/tier.h"

namespace kvtier::testing {

inline int64_t RunCrashWriterAndKill(const std::string& mode, const std::string& dir,
                                     int64_t acks) {
  int fds[2];
  if (pipe(fds) != 0) return -1;
  const std::string bin = std::string(KVTIER_BIN_DIR) + "/crash_writer";
  pid_t pid = fork();
  if (pid == 0) {
    dup2(fds[1], STDOUT_FILENO);
    close(fds[0]);
    execl(bin.c_str(), bin.c_str(), mode.c_str(), dir.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  close(fds[1]);
  // Acknowledgements arrive in block order, one "ack N" line each.
  int64_t last_ack = -1;
  std::string line;
  char c;
  pollfd p{fds[0], POLLIN, 0};
  while (last_ack < acks && poll(&p, 1, 60'000) > 0 && read(fds[0], &c, 1) == 1) {
    if (c != '\n') {
      line += c;
      continue;
    }
    last_ack = std::stoll(line.substr(4));
    line.clear();
  }
  kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  close(fds[0]);
  return last_ack;
}

// After the writer's death and a reopen: every acknowledged block reads back
// bit for bit; blocks past the last acknowledgement read exactly or not at
// all; nothing counts as corrupt.
inline void ExpectAcknowledgedBlocks(Tier& tier, int64_t last_ack) {
  std::vector<std::byte> buf(1 << 20);
  for (uint64_t id = 0; id <= static_cast<uint64_t>(last_ack) + 64; ++id) {
    Result<uint64_t> n = ReadOne(tier, CrashKey(id), buf);
    if (id <= static_cast<uint64_t>(last_ack)) {
      ASSERT_TRUE(n.ok()) << "acknowledged block " << id << ": " << n.status();
    }
    if (n.ok()) {
      EXPECT_EQ(std::vector<std::byte>(buf.begin(), buf.begin() + static_cast<long>(*n)),
                CrashPayload(id))
          << "block " << id;
    } else {
      EXPECT_TRUE(n.status().IsNotFound()) << n.status();
    }
  }
  EXPECT_EQ(tier.Info().corruption_errors, 0u);
}

}  // namespace kvtier::testing
