// kvtierd: the kvtier cache daemon. Serves the BlockStore and Admin gRPC
// services until SIGTERM or SIGINT, then drains in-flight calls and exits 0.
#include <pthread.h>
#include <signal.h>

#include <cstdio>
#include <iostream>
#include <thread>

#include "common/log.h"
#include "server/daemon.h"

int main(int argc, char** argv) {
  using namespace kvtier;
  bool help = false;
  Result<DaemonOptions> options = ParseDaemonFlags(argc, argv, &help);
  if (!options.ok()) {
    std::cerr << "kvtierd: " << options.status().message() << "\n" << DaemonUsage();
    return 2;
  }
  if (help) {
    std::cout << DaemonUsage();
    return 0;
  }
  // Block the shutdown signals in every thread; one thread waits for them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  Result<std::unique_ptr<Daemon>> daemon = Daemon::Open(*options);
  if (!daemon.ok()) {
    std::cerr << "kvtierd: " << daemon.status().ToString() << "\n";
    return 1;
  }
  if (Status s = (*daemon)->Start(); !s.ok()) {
    std::cerr << "kvtierd: " << s.ToString() << "\n";
    return 1;
  }
  // The line scripts and tests wait for.
  std::printf("kvtierd serving on %s\n", (*daemon)->bound_address().c_str());
  std::fflush(stdout);

  std::thread signal_thread([&] {
    int sig = 0;
    sigwait(&signals, &sig);
    LogInfo("kvtierd_shutdown", LogFields().Add("signal", sig == SIGTERM ? "SIGTERM" : "SIGINT"));
    (*daemon)->Shutdown();
  });
  (*daemon)->Wait();
  signal_thread.join();
  daemon->reset();
  LogInfo("kvtierd_stopped");
  return 0;
}
